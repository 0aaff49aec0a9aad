"""Wall time of the SMAC experiments' ``train()`` with ``jobs=1`` and ``jobs=2`` (docs/rl.md).

Run: ``PYTHONPATH=src python benchmarks/smac_jobs_wall.py``; a small config (2 seeds x 600
steps, 64 units, batch 64, both agents: 4 runs), one torch thread per process.
"""

from __future__ import annotations

import tempfile
import time

import torch

from flowfields.experiments.smac_pendulum import Config, SMACPendulum

SMALL = {"seeds": 2, "steps": 600, "hidden": 64, "batch_size": 64, "eval_every": 300,
         "eval_episodes": 2, "checkpoint_every": 300}  # fmt: skip

if __name__ == "__main__":  # spawned workers re-import this file
    torch.set_num_threads(1)
    for jobs in (1, 2):
        exp = SMACPendulum(Config(**SMALL, jobs=jobs), tempfile.mkdtemp(), progress=False)
        exp.reseed()
        t0 = time.perf_counter()
        exp.train()
        cpu = sum(v for k, v in exp.metrics.items() if k.endswith("train_cpu_s"))
        print(f"jobs={jobs}: wall {time.perf_counter() - t0:.1f} s, training CPU summed over "
              f"the runs {cpu:.1f} s")  # fmt: skip
