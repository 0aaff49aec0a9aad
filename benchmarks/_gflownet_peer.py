"""torchgfn side of ``bench_gflownet``: run inside the torchgfn venv as a persistent worker.

Reads one JSON command per line on stdin and answers one JSON line on stdout:

- ``{"cmd": "setup", "ndim", "height", "hidden", "depth", "batch", "lr", "lr_log_z", "seed",
  "threads"}``: build torchgfn's HyperGrid, K-hot preprocessor, MLP P_F / P_B (ReLU) and
  ``TBGFlowNet``, Adam with ``log Z`` in its own group (torchgfn's HyperGrid TB tutorial).
- ``{"cmd": "train", "iters": k}``: ``k`` TB iterations of ``batch`` on-policy trajectories;
  answers ``{"ms": wall milliseconds of those iterations, measured here}``.
- ``{"cmd": "policy"}``: every state and its forward log-probabilities (masked log-softmax
  of P_F's logits) and ``log Z``, for the exact P_T computed by the driver.
- ``{"cmd": "quit"}``.

This file imports only torch and torchgfn (``gfn``), never flowfields.
"""

from __future__ import annotations

import json
import sys
import time

import torch


def _setup(cfg: dict) -> dict:
    from gfn.estimators import DiscretePolicyEstimator
    from gfn.gflownet import TBGFlowNet
    from gfn.gym import HyperGrid
    from gfn.preprocessors import KHotPreprocessor
    from gfn.utils.modules import MLP

    torch.set_num_threads(int(cfg.get("threads", 1)))
    torch.manual_seed(int(cfg["seed"]))
    env = HyperGrid(ndim=cfg["ndim"], height=cfg["height"], store_all_states=True)
    pre = KHotPreprocessor(height=cfg["height"], ndim=cfg["ndim"])
    kw = {"hidden_dim": cfg["hidden"], "n_hidden_layers": cfg["depth"]}
    pf_mod = MLP(input_dim=pre.output_dim, output_dim=env.n_actions, **kw)
    pb_mod = MLP(input_dim=pre.output_dim, output_dim=env.n_actions - 1, **kw)
    pf = DiscretePolicyEstimator(pf_mod, env.n_actions, preprocessor=pre, is_backward=False)
    pb = DiscretePolicyEstimator(pb_mod, env.n_actions, preprocessor=pre, is_backward=True)
    gfn = TBGFlowNet(pf=pf, pb=pb, init_logZ=0.0)
    opt = torch.optim.Adam(gfn.pf_pb_parameters(), lr=cfg["lr"])
    opt.add_param_group({"params": gfn.logz_parameters(), "lr": cfg["lr_log_z"]})
    return {"env": env, "gfn": gfn, "pf": pf, "opt": opt, "batch": cfg["batch"]}


def _train(s: dict, iters: int) -> dict:
    env, gfn, opt = s["env"], s["gfn"], s["opt"]
    t0 = time.perf_counter()
    for _ in range(iters):
        traj = gfn.sample_trajectories(env, n=s["batch"], save_logprobs=True)
        opt.zero_grad()
        loss = gfn.loss(env, traj, recalculate_all_logprobs=False)
        loss.backward()
        opt.step()
    return {"ms": (time.perf_counter() - t0) * 1e3, "loss": float(loss.detach())}


@torch.no_grad()
def _policy(s: dict) -> dict:
    env, pf, gfn = s["env"], s["pf"], s["gfn"]
    states = env.all_states
    logits = pf(states)
    log_pf = logits.masked_fill(~states.forward_masks, float("-inf")).log_softmax(-1)
    return {
        "states": states.tensor.tolist(),
        "log_pf": log_pf.double().tolist(),
        "log_z": float(gfn.logZ),
    }


def main() -> None:
    state: dict = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        if cmd["cmd"] == "setup":
            state = _setup(cmd)
            out: dict = {"ok": True}
        elif cmd["cmd"] == "train":
            out = _train(state, int(cmd["iters"]))
        elif cmd["cmd"] == "policy":
            out = _policy(state)
        else:
            out = {"error": f"unknown command {cmd['cmd']!r}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
