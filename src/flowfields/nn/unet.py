"""A small time-conditioned U-Net ``v(t, x)`` for 8x8 and 28x28 images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from flowfields.errors import FlowfieldsError, check, describe
from flowfields.nn.time import TimeEmbedding, broadcast_time

__all__ = ["UNet"]


def _groups(channels: int, groups: int) -> int:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice, time embedding added between, residual connection."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in, groups), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out, groups), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.time(emb)[:, :, None, None]
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        return self.skip(x) + h


class UNet(nn.Module):
    """Small U-Net vector field ``v(t, x)`` on images, for Flow Matching on digits / MNIST.

    As in Flow Matching (Lipman et al., "Flow Matching for Generative Modeling",
    arXiv:2210.02747), where image fields are U-Nets conditioned on time; this one is kept
    small for CPUs. Layout: a 3x3 input convolution; per resolution level ``num_res_blocks``
    residual blocks (GroupNorm, SiLU, 3x3 conv, time embedding added per channel) and a
    stride-2 downsampling between levels; two residual blocks in the middle; the mirror path
    up with skip connections (concatenation) and nearest-neighbour upsampling; GroupNorm, SiLU
    and a 3x3 output convolution. Every activation is SiLU (smooth).

    Args:
        in_channels: image channels C (also the output channels).
        image_size: H = W; must be divisible by ``2 ** (len(channel_mults) - 1)``
            (8 and 28 work with the default two levels: 8 -> 4, 28 -> 14).
        base_channels: channels at the first level.
        channel_mults: channel multiplier per level.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        time_embed_dim: width of the time embedding MLP.
        groups: GroupNorm groups (reduced to a divisor of the channel count where needed).
        dropout: dropout probability inside residual blocks.
        max_frequency: highest angular frequency of the sinusoidal time features.

    Shapes:
        forward(t, x): t a float, 0-d, (1,) or (B,); x (B, C, H, W) -> (B, C, H, W).
    """

    follows_field_convention = True

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 8,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        time_embed_dim: int = 64,
        groups: int = 8,
        dropout: float = 0.0,
        max_frequency: float = 100.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("image_size", image_size),
            ("base_channels", base_channels),
            ("num_res_blocks", num_res_blocks),
            ("groups", groups),
        ):
            check(
                isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                name,
                value,
                "an integer >= 1",
            )
        mults = tuple(channel_mults)
        check(
            len(mults) >= 1 and all(isinstance(m, int) and m >= 1 for m in mults),
            "channel_mults",
            channel_mults,
            "a non-empty sequence of positive integers",
        )
        factor = 2 ** (len(mults) - 1)
        check(
            image_size % factor == 0,
            "image_size",
            image_size,
            f"a multiple of 2 ** (len(channel_mults) - 1) = {factor}",
            hint="Use fewer levels in channel_mults.",
        )
        check(0.0 <= dropout < 1.0, "dropout", dropout, "a float in [0, 1)")
        self.in_channels = in_channels
        self.image_size = image_size

        t_dim = time_embed_dim
        self.time_embedding = nn.Sequential(
            TimeEmbedding(t_dim, max_frequency=max_frequency),
            nn.Linear(t_dim, t_dim),
            nn.SiLU(),
            nn.Linear(t_dim, t_dim),
        )
        chans = [base_channels * m for m in mults]
        self.conv_in = nn.Conv2d(in_channels, chans[0], 3, padding=1)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [chans[0]]
        c = chans[0]
        for level, c_level in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock(c, c_level, t_dim, groups, dropout))
                c = c_level
                skips.append(c)
            self.down.append(blocks)
            if level < len(chans) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)

        self.mid = nn.ModuleList(
            [_ResBlock(c, c, t_dim, groups, dropout), _ResBlock(c, c, t_dim, groups, dropout)]
        )

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(chans))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(_ResBlock(c + skips.pop(), chans[level], t_dim, groups, dropout))
                c = chans[level]
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))

        self.norm_out = nn.GroupNorm(_groups(c, groups), c)
        self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        if not (
            isinstance(x, Tensor)
            and x.ndim == 4
            and x.shape[1] == self.in_channels
            and x.shape[2] == self.image_size
            and x.shape[3] == self.image_size
        ):
            raise FlowfieldsError(
                f"x: got {describe(x)}, expected shape (B, {self.in_channels}, "
                f"{self.image_size}, {self.image_size})."
            )
        emb = self.time_embedding(broadcast_time(t, x))
        h = self.conv_in(x)
        hs = [h]
        for level, blocks in enumerate(self.down):
            for block in cast(nn.ModuleList, blocks):
                h = block(h, emb)
                hs.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                hs.append(h)
        for block in self.mid:
            h = block(h, emb)
        for i, blocks in enumerate(self.up):
            for block in cast(nn.ModuleList, blocks):
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            if i < len(self.upsample):
                h = nn.functional.interpolate(h, scale_factor=2.0, mode="nearest")
                h = self.upsample[i](h)
        return self.conv_out(self.act(self.norm_out(h)))
