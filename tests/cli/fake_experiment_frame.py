"""Fake experiment for the CLI tests: a small MLP fit to a toy regression.

It is written into a temporary directory and registered by the tests (monkeypatched REGISTRY);
it depends on nothing but the engine and report, so the CLI tests do not depend on the papers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from flowfields.engine import fit, load_weights
from flowfields.report import Claim, Result, save_figure

NAME = "fake-frame"
PAPER = "A Fake Paper for Testing the Runner (arXiv:0000.00000)"


@dataclass
class Config:
    seed: int = 0
    device: str = "cpu"
    steps: int = 40
    lr: float = 1e-2
    hidden: tuple[int, ...] = (16, 16)
    bias: bool = True
    label: str = "toy"
    scale: float | None = None
    mode: Literal["sin", "cos"] = "sin"
    sleep: float = 0.0
    checkpoint_every: int = 10

    @classmethod
    def quick(cls) -> Config:
        return cls(steps=20)

    @classmethod
    def full(cls) -> Config:
        return cls()


def make_model(cfg: Config) -> nn.Module:
    layers, width = [], 2
    for h in cfg.hidden:
        layers += [nn.Linear(width, h, bias=cfg.bias), nn.Tanh()]
        width = h
    layers.append(nn.Linear(width, 2, bias=cfg.bias))
    return nn.Sequential(*layers)


def run(cfg: Config, out_dir: Path, *, resume: bool = False, progress: bool = True) -> Result:
    torch.manual_seed(cfg.seed)
    model = make_model(cfg).to(cfg.device)
    target = torch.sin if cfg.mode == "sin" else torch.cos

    def loss_fn(m, step):
        if cfg.sleep:
            time.sleep(cfg.sleep)
        x = torch.randn(64, 2, device=cfg.device)
        return ((m(x) - target(x)) ** 2).mean()

    res = fit(
        model,
        loss_fn,
        steps=cfg.steps,
        lr=cfg.lr,
        checkpoint=out_dir / "checkpoint.pt",
        checkpoint_every=cfg.checkpoint_every,
        resume=resume,
        progress=progress,
        ema_decay=0.9,
    )
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(res.losses)
    fig_path = save_figure(fig, out_dir / "losses.png")
    final = sum(res.losses[-5:]) / 5
    claims = [
        Claim(
            "loss-drops",
            "training lowers the loss",
            final,
            f"< {res.losses[0]:.4f}",
            final < res.losses[0],
        ),
        Claim(
            "impossible",
            "the loss reaches zero",
            final,
            0.0,
            final == 0.0,
            note="cannot hold with a finite network",
        ),
    ]
    return Result(
        NAME,
        PAPER,
        config={},
        metrics={
            "train/final_loss": final,
            "train/first_loss": res.losses[0],
            "train/steps": res.steps,
            "train/nan_metric": float("nan"),
        },
        claims=claims,
        figures=[Path(fig_path.name)],
        tables={"losses": [{"step": i, "loss": v} for i, v in enumerate(res.losses[:3])]},
    )


def load_model(run_dir: Path, variant: str | None = None) -> nn.Module:
    from flowfields.experiments import load_config

    model = make_model(load_config(run_dir))
    return load_weights(Path(run_dir) / "checkpoint.pt", model, ema=variant != "raw")
