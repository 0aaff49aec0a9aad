"""Fake experiment for the CLI tests: a small MLP fit to a toy regression.

It is written into a temporary directory and registered by the tests (monkeypatched REGISTRY);
it depends on nothing but the engine and report, so the CLI tests do not depend on the papers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from flowfields.experiments import Experiment
from flowfields.report import Claim

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


class FakeFrame(Experiment, config=Config):
    """A small MLP fit to sin or cos; saves its EMA and raw weights."""

    NAME, PAPER = NAME, PAPER
    VARIANTS = ("ema", "raw")

    def train(self) -> dict[str, nn.Module]:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        model = make_model(cfg).to(cfg.device)
        target = torch.sin if cfg.mode == "sin" else torch.cos

        def loss_fn(m, step):
            if cfg.sleep:
                time.sleep(cfg.sleep)
            x = torch.randn(64, 2, device=cfg.device)
            return ((m(x) - target(x)) ** 2).mean()

        self.res = self.fit(
            "model",
            model,
            loss_fn,
            steps=cfg.steps,
            lr=cfg.lr,
            checkpoint_every=cfg.checkpoint_every,
            ema_decay=0.9,
        )
        return {"ema": self.res.ema, "raw": self.res.model}

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        losses = self.res.losses
        self.final = sum(losses[-5:]) / 5
        self.metrics.update(
            {
                "train/final_loss": self.final,
                "train/first_loss": losses[0],
                "train/steps": self.res.steps,
                "train/nan_metric": float("nan"),
                "torch_threads": torch.get_num_threads(),
            }
        )
        self.tables["losses"] = [{"step": i, "loss": v} for i, v in enumerate(losses[:3])]

    def claims(self) -> list[Claim]:
        first = self.res.losses[0]
        return [
            Claim("loss-drops", "training lowers the loss", self.final, f"< {first:.4f}",
                  self.final < first),
            Claim("impossible", "the loss reaches zero", self.final, 0.0, self.final == 0.0,
                  note="cannot hold with a finite network"),
        ]  # fmt: skip

    def figures(self, models: dict[str, nn.Module]) -> None:
        fig, ax = self.plt.subplots(figsize=(3, 2))
        ax.plot(self.res.losses)
        self.save_figure(fig, "losses.png")

    @classmethod
    def build_model(cls, cfg: Config, variant: str) -> nn.Module:
        return make_model(cfg)


EXPERIMENT = FakeFrame
