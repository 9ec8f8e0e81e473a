"""RCAN: residual channel-attention network (after 3D-RCAN, Chen et al., Nat. Methods 2021)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from napari_volsr.engine.nets._common import (
    check_input, check_int, check_net_args, net_factors, to_output_grid,
)
from napari_volsr.engine.nets.blocks import adaptive_avg_pool, conv

# New models upsample z on features (sub-pixel): on self-supervised x4 EM it trained 2.7x
# more steps per minute and scored higher than running on the interpolated input
# (benchmarks/quality.py). The class default stays "input" for configs saved before.
PRESETS: dict[str, dict] = {
    "tiny": {"channels": 4, "n_groups": 1, "n_blocks": 2, "reduction": 2,
             "upsampling": "features"},
    # Half the width: a quarter of the convolution cost of the default.
    "small": {"channels": 16, "n_groups": 5, "n_blocks": 3, "reduction": 4,
              "upsampling": "features"},
    "default": {"channels": 32, "n_groups": 5, "n_blocks": 3, "reduction": 8,
                "upsampling": "features"},
}


class _ChannelAttention(nn.Module):
    """Squeeze-and-excitation: rescale channels by a gate computed from their global mean."""

    def __init__(self, spatial_dims: int, channels: int, reduction: int):
        super().__init__()
        squeezed = max(1, channels // reduction)
        # Linear layers on the pooled vector are the paper's 1x1 convs; on CPU a 1x1x1
        # Conv3d on one voxel costs milliseconds of overhead, a Linear microseconds.
        self.gate = nn.Sequential(
            adaptive_avg_pool(spatial_dims),
            nn.Flatten(),
            nn.Linear(channels, squeezed),
            nn.ReLU(inplace=True),
            nn.Linear(squeezed, channels),
            nn.Sigmoid(),
        )
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate(x).view(*x.shape[:2], *[1] * self.spatial_dims)
        return x * gate


class _RCAB(nn.Module):
    """Residual channel-attention block: x + CA(conv(relu(conv(x))))."""

    def __init__(self, spatial_dims: int, channels: int, reduction: int, attention: bool):
        super().__init__()
        self.body = nn.Sequential(
            conv(spatial_dims, channels, channels),
            nn.ReLU(inplace=True),
            conv(spatial_dims, channels, channels),
            _ChannelAttention(spatial_dims, channels, reduction) if attention else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _ResidualGroup(nn.Module):
    """``n_blocks`` RCABs and a conv, wrapped in a skip connection."""

    def __init__(self, spatial_dims, channels, n_blocks, reduction, attention):
        super().__init__()
        blocks = [_RCAB(spatial_dims, channels, reduction, attention) for _ in range(n_blocks)]
        self.body = nn.Sequential(*blocks, conv(spatial_dims, channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _cubic_support(u: int, z_factor: int) -> tuple[int, int]:
    """Return the first and last input slice with non-zero cubic weight for output slice ``u``.

    Output slice ``u`` sits at input coordinate ``t = (2u + 1 - f) / (2f)``; Catmull-Rom
    reads ``floor(t) - 1 .. floor(t) + 2``, except that at integer ``t`` only ``t`` itself
    has non-zero weight.
    """
    base, rem = divmod(2 * u + 1 - z_factor, 2 * z_factor)
    return (base, base) if rem == 0 else (base - 1, base + 2)


class RCAN(nn.Module):
    """Residual channel-attention network for restoration and upsampling.

    Head conv; ``n_groups`` residual groups of ``n_blocks`` residual channel-attention
    blocks, each group closed by a conv and a skip; a trunk conv with a long skip; a tail
    conv. No normalisation layers. With factors > 1 the network learns a correction of
    the cubic interpolation (slab convention) of its input, every axis by its factor.
    With ``upsampling="input"`` (3D-RCAN) it runs on the interpolated input, on the
    output grid; with ``"features"`` (RCAN for super-resolution, Zhang et al. 2018) it
    runs on the input grid and its tail makes ``prod(factors)`` values per voxel that a
    sub-pixel shuffle spreads over the output voxels the input voxel covers: the same
    depth for ``prod(factors)`` times fewer voxels.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels, out_channels
        Channel counts. When equal, the (interpolated) input is added to the output as a
        global residual.
    z_factor
        Upsampling factor of the first spatial axis, 1..16 (shorthand for ``factors``).
    channels
        Feature width C.
    n_groups
        Number of residual groups G.
    n_blocks
        Residual channel-attention blocks B per group.
    reduction
        Channel-attention reduction r (the gate has ``channels // r`` channels).
    channel_attention
        Turn the attention gates off to make the network strictly local (tests of the halo).
    upsampling
        ``"input"`` or ``"features"`` (see above); the same when every factor is 1.
    factors
        Upsampling factor per spatial axis, 1..16 each; takes precedence over ``z_factor``.

    Attributes
    ----------
    factors : tuple of int
        Upsampling factor per spatial axis (``z_factor`` is the first).
    halo : tuple of int
        Radius of the convolutions' receptive field per spatial axis, in input voxels.
        Channel attention pools over the whole block, so outputs also depend weakly on
        everything in the block: blend tiles.
    divisor : tuple of int
        Input size multiple per axis (all 1).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        z_factor: int = 1,
        channels: int = 32,
        n_groups: int = 5,
        n_blocks: int = 3,
        reduction: int = 8,
        channel_attention: bool = True,
        upsampling: str = "input",
        factors: Sequence[int] | None = None,
    ):
        super().__init__()
        check_net_args(spatial_dims, in_channels, out_channels, z_factor)
        self.factors = net_factors(spatial_dims, z_factor, factors)
        check_int("channels", channels)
        check_int("n_groups", n_groups)
        check_int("n_blocks", n_blocks)
        check_int("reduction", reduction, 1, channels)
        if upsampling not in ("input", "features"):
            raise ValueError(f"upsampling must be 'input' or 'features', got {upsampling!r}")
        self.upsampling = upsampling
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.z_factor = self.factors[0]
        self.global_residual = in_channels == out_channels

        sd = spatial_dims
        self.head = conv(sd, in_channels, channels)
        groups = [
            _ResidualGroup(sd, channels, n_blocks, reduction, channel_attention)
            for _ in range(n_groups)
        ]
        self.trunk = nn.Sequential(*groups, conv(sd, channels, channels))
        upsampled = math.prod(self.factors)
        self.shuffle = upsampling == "features" and upsampled > 1
        self.tail = conv(sd, channels, out_channels * (upsampled if self.shuffle else 1))

        # Every 3-wide conv on the longest path: head, 2 per RCAB + 1 per group, trunk, tail.
        radius = 1 + n_groups * (2 * n_blocks + 1) + 1 + 1
        # On the input grid the convs reach ``radius`` voxels; the cubic skip reaches 2
        # along every upsampled axis.
        if self.shuffle:
            self.halo = tuple(max(radius, 2) if f > 1 else radius for f in self.factors)
        else:
            self.halo = tuple(_axis_halo(radius, f) for f in self.factors)
        self.divisor = (1,) * sd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, in, *S) to (B, out, *(s * f for each axis's factor f))."""
        check_input(x, self.spatial_dims, self.in_channels)
        base = to_output_grid(x, self.factors, "catmull-rom")
        features = self.head(x if self.shuffle else base)
        out = self.tail(features + self.trunk(features))
        if self.shuffle:
            out = _shuffle(out, self.factors)
        return out + base if self.global_residual else out


def _axis_halo(radius: int, f: int) -> int:
    """Convert an output-grid radius into input voxels through the cubic upsampling."""
    if f == 1:
        return radius
    return max(
        max(-_cubic_support(p - radius, f)[0], _cubic_support(p + radius, f)[1])
        for p in range(f)
    )


def _shuffle_z(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C * f, D, ...) -> (B, C, D * f, ...): channel ``c * f + k`` becomes slice ``d * f + k``."""
    b, cf, d, *rest = x.shape
    c = cf // factor
    x = x.reshape(b, c, factor, d, *rest).transpose(2, 3)
    return x.reshape(b, c, d * factor, *rest)


def _shuffle(x: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Sub-pixel shuffle of every axis: (B, C * prod(f), *S) -> (B, C, *(s * f)).

    Channel ``c * prod(f) + k``, with ``k`` the row-major index of the offsets
    ``(k_0, k_1, ...)`` (``k_i < f_i``), becomes output voxel ``s_i * f_i + k_i``. With
    only the first axis upsampled this is :func:`_shuffle_z`.
    """
    if all(f == 1 for f in factors[1:]):
        return _shuffle_z(x, factors[0])
    b, cf, *sizes = x.shape
    n = len(sizes)
    c = cf // math.prod(factors)
    x = x.reshape(b, c, *factors, *sizes)
    # (B, C, f_0.., s_0..) -> (B, C, s_0, f_0, s_1, f_1, ...)
    order = [0, 1] + [axis for i in range(n) for axis in (2 + n + i, 2 + i)]
    x = x.permute(*order)
    return x.reshape(b, c, *(s * f for s, f in zip(sizes, factors, strict=True)))
