"""Test-time augmentation: a restore averaged over every flip of the network's axes.

One rule for every door (panel, console, CLI, dask workers): whether a model restores
with flips by default, and what they cost.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def flip_passes(spatial_dims: int) -> int:
    """Network passes per block with flips: every subset of the network's axes."""
    return 2**spatial_dims


def default_flips(config) -> bool:
    """Whether a model restores with test-time flips unless told otherwise.

    On for same-shape 2D (and 2.5D) networks: restored with and without flips, the same
    model gained +0.02 to +1.06 dB on three volumes and never lost (benchmarks/tta_gain.py,
    README), for 4x the restore time of networks that restore fast. Off for upsampling
    models, isotropic (RCAN x4: +0.03 dB) or lateral (not measured), and 3D networks,
    where 8 passes cost most; diffusion averages samples instead and never flips.
    """
    factors = getattr(config, "factors", (config.z_factor, 1, 1))
    return config.family != "diffusion" and max(factors) == 1 and config.spatial_dims == 2


def resolve_flips(config, flips: bool | None) -> bool:
    """``flips``, or the model's default when None; never for diffusion (it averages samples)."""
    wanted = default_flips(config) if flips is None else bool(flips)
    return wanted and config.family != "diffusion"


def describe_flips(spatial_dims: int) -> str:
    """What flips cost, in words for a status line or a tooltip."""
    n = flip_passes(spatial_dims)
    return f"test-time flips: {n} passes, about {n}x the restore time"


def average_over_flips(run: Callable[[torch.Tensor], torch.Tensor],
                       x: torch.Tensor) -> torch.Tensor:
    """Mean of ``run`` over every combination of flips of ``x``'s spatial axes.

    Each output is flipped back before averaging. Valid along every upsampled axis:
    the slab grid is symmetric under reversal. Flips never move one axis onto another,
    so axes with different factors stay apart; no rotations are used, since turning y
    onto x is only valid when both have the same factor.
    """
    axes = list(range(2, x.ndim))
    total = None
    for mask in range(2 ** len(axes)):
        dims = [a for j, a in enumerate(axes) if mask >> j & 1]
        out = run(x.flip(dims)).flip(dims) if dims else run(x)
        total = out if total is None else total + out
    return total / 2 ** len(axes)
