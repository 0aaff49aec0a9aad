"""torchgfn side of ``bench_gflownet``: run inside the torchgfn venv as a persistent worker.

Reads one JSON command per line on stdin and answers one JSON line on stdout:

- ``{"cmd": "setup", "loss", "ndim", "height", "hidden", "depth", "batch", "lr", "lr_log_z",
  "seed", "threads"}``: build torchgfn's HyperGrid, K-hot preprocessor, MLPs (ReLU) and the
  GFlowNet of ``loss``: ``TBGFlowNet`` (P_F, P_B, log Z), ``DBGFlowNet`` / ``SubTBGFlowNet``
  (geometric_within, lambda 0.9; P_F, P_B and a ``ScalarEstimator`` state flow),
  ``FMGFlowNet`` (an edge-flow ``DiscretePolicyEstimator``) or
  ``LogPartitionVarianceGFlowNet`` (P_F, P_B); Adam with ``log Z`` in its own group
  (torchgfn's HyperGrid tutorial).
- ``{"cmd": "train", "iters": k}``: ``k`` iterations of ``batch`` on-policy trajectories;
  answers ``{"ms": wall milliseconds of those iterations, measured here, "cpu_ms": the
  process's CPU milliseconds over them, "loss": the last loss}``.
- ``{"cmd": "policy"}``: every state with its masked forward logits (P_F's, or FM's log edge
  flows), masked backward log-probabilities, log state flows (DB / SubTB) and ``log Z`` (TB),
  for the exact P_T and the log Z estimate computed by the driver.
- ``{"cmd": "quit"}``.

This file imports only torch and torchgfn (``gfn``), never flowfields.
"""

from __future__ import annotations

import json
import sys
import time

import torch


def _setup(cfg: dict) -> dict:
    from gfn.estimators import DiscretePolicyEstimator, ScalarEstimator
    from gfn.gflownet import (
        DBGFlowNet,
        FMGFlowNet,
        LogPartitionVarianceGFlowNet,
        SubTBGFlowNet,
        TBGFlowNet,
    )
    from gfn.gym import HyperGrid
    from gfn.preprocessors import KHotPreprocessor
    from gfn.utils.modules import MLP

    torch.set_num_threads(int(cfg.get("threads", 1)))
    torch.manual_seed(int(cfg["seed"]))
    loss = cfg.get("loss", "tb")
    env = HyperGrid(ndim=cfg["ndim"], height=cfg["height"], store_all_states=True)
    pre = KHotPreprocessor(height=cfg["height"], ndim=cfg["ndim"])
    kw = {"hidden_dim": cfg["hidden"], "n_hidden_layers": cfg["depth"]}
    n = env.n_actions

    def policy(out: int, backward: bool) -> DiscretePolicyEstimator:
        module = MLP(input_dim=pre.output_dim, output_dim=out, **kw)
        return DiscretePolicyEstimator(module, n, preprocessor=pre, is_backward=backward)

    out = {"env": env, "batch": cfg["batch"], "loss": loss, "pb": None, "log_f": None}
    if loss == "fm":
        out["pf"] = policy(n, False)
        gfn = FMGFlowNet(out["pf"])
    else:
        out["pf"], out["pb"] = policy(n, False), policy(n - 1, True)
        if loss in ("db", "subtb"):
            out["log_f"] = ScalarEstimator(
                MLP(input_dim=pre.output_dim, output_dim=1, **kw), preprocessor=pre
            )
        if loss == "tb":
            gfn = TBGFlowNet(pf=out["pf"], pb=out["pb"], init_logZ=0.0)
        elif loss == "db":
            gfn = DBGFlowNet(pf=out["pf"], pb=out["pb"], logF=out["log_f"])
        elif loss == "subtb":
            gfn = SubTBGFlowNet(
                pf=out["pf"],
                pb=out["pb"],
                logF=out["log_f"],
                weighting="geometric_within",
                lamda=0.9,
            )
        elif loss == "zvar":
            gfn = LogPartitionVarianceGFlowNet(pf=out["pf"], pb=out["pb"])
        else:
            raise ValueError(f"unknown loss {loss!r}")
    if loss == "tb":
        opt = torch.optim.Adam(gfn.pf_pb_parameters(), lr=cfg["lr"])
        opt.add_param_group({"params": gfn.logz_parameters(), "lr": cfg["lr_log_z"]})
    else:
        opt = torch.optim.Adam(gfn.parameters(), lr=cfg["lr"])
    out.update(gfn=gfn, opt=opt)
    return out


def _train(s: dict, iters: int) -> dict:
    env, gfn, opt = s["env"], s["gfn"], s["opt"]
    save = s["loss"] != "fm"
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        traj = gfn.sample_trajectories(env, n=s["batch"], save_logprobs=save)
        samples = gfn.to_training_samples(traj)
        opt.zero_grad()
        loss = gfn.loss(env, samples, recalculate_all_logprobs=not save)
        loss.backward()
        opt.step()
    ms, cpu_ms = (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3
    return {"ms": ms, "cpu_ms": cpu_ms, "loss": float(loss.detach())}


@torch.no_grad()
def _policy(s: dict) -> dict:
    env, gfn = s["env"], s["gfn"]
    states = env.all_states
    logits = s["pf"](states).masked_fill(~states.forward_masks, -1e30)
    out = {
        "states": states.tensor.tolist(),
        "pf_logits": logits.double().tolist(),
        "log_z": float(gfn.logZ) if s["loss"] == "tb" else None,
    }
    if s["pb"] is not None:
        lpb = s["pb"](states).masked_fill(~states.backward_masks, float("-inf"))
        out["log_pb"] = lpb.log_softmax(-1).nan_to_num(nan=-1e30).clamp(min=-1e30).tolist()
    if s["log_f"] is not None:
        out["log_f"] = s["log_f"](states)[:, 0].double().tolist()
    return out


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
