"""fit under torchrun with 2 gloo processes: identical weights on both ranks, equal to training
on the rank-averaged gradient, and bit-for-bit resume of a distributed run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from torch import nn

    from flowfields.engine import fit, rank

    torch.set_num_threads(1)
    out = Path(sys.argv[1])


    def loss_fn(model, step):
        x = torch.randn(16, 2, dtype=torch.float64)
        return ((model(x) - torch.sin(x)) ** 2).mean()


    def train(tag, steps, resume):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
        if rank() == 1:
            with torch.no_grad():  # DDP must broadcast rank 0's initial weights
                for p in net.parameters():
                    p.add_(1.0)
        res = fit(net, loss_fn, steps=steps, seed=11, ema_decay=0.5, progress=False,
                  optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                  checkpoint=out / tag / "ckpt.pt", checkpoint_every=2, resume=resume)
        torch.save({"model": res.model.state_dict(), "ema": res.ema.state_dict(),
                    "losses": res.losses}, out / f"{tag}-rank{rank()}.pt")


    train("full", 6, False)
    train("part", 4, False)  # an interrupted run ...
    train("part", 6, True)  # ... resumed from its checkpoint at step 4
    dist.destroy_process_group()
    """
)


def torchrun(tmp_path: Path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


def reference(steps: int) -> nn.Module:
    """Single-process SGD on the mean of the two ranks' gradients, ranks seeded 11 and 12."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    states = []
    for r in range(2):
        torch.manual_seed(11 + r)
        states.append(torch.get_rng_state())
    for _ in range(steps):
        grads = []
        for r in range(2):
            torch.set_rng_state(states[r])
            x = torch.randn(16, 2, dtype=torch.float64)
            states[r] = torch.get_rng_state()
            loss = ((net(x) - torch.sin(x)) ** 2).mean()
            grads.append(torch.autograd.grad(loss, list(net.parameters())))
        with torch.no_grad():
            for p, g0, g1 in zip(net.parameters(), *grads):
                p.sub_(0.1 * (g0 + g1) / 2)
    return net


@pytest.mark.slow
def test_ddp_two_gloo_ranks_identical_and_averaged(tmp_path):
    torchrun(tmp_path)
    r0 = torch.load(tmp_path / "full-rank0.pt")
    r1 = torch.load(tmp_path / "full-rank1.pt")
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k
        assert torch.equal(r0["ema"][k], r1["ema"][k]), k
    assert r0["losses"] == r1["losses"]  # mean over ranks, all-reduced
    ref = reference(6).state_dict()
    for k in ref:
        torch.testing.assert_close(r0["model"][k], ref[k], rtol=0, atol=1e-12)
    # Interrupted at step 4 and resumed to 6: the same weights bit for bit on both ranks.
    p0 = torch.load(tmp_path / "part-rank0.pt")
    p1 = torch.load(tmp_path / "part-rank1.pt")
    for k in r0["model"]:
        assert torch.equal(p0["model"][k], r0["model"][k]), k
        assert torch.equal(p1["model"][k], r0["model"][k]), k
        assert torch.equal(p0["ema"][k], r0["ema"][k]), k
    assert p0["losses"] == r0["losses"]
