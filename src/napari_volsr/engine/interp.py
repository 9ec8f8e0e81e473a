"""Interpolation on the slab grid (DESIGN 3): along z, or separably along every upsampled axis."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# "cubic" is the prefiltered cubic B-spline (scipy.ndimage's order 3), the strongest
# standard baseline; "catmull-rom" (Keys a = -0.5) is the 4-tap kernel networks use inside.
INTERPOLATION_MODES = ("nearest", "linear", "cubic", "catmull-rom")
# The B-spline prefilter is recursive (pole sqrt(3) - 2): a slice's weight on a result
# n slices away falls as 0.268^n, below 1e-6 past 10 slices, so 12 input slices of halo
# make tiled restores equal whole ones within 1e-6 of the range.
SPLINE_HALO = 12
# Input slices each mode reads on either side of an output slice (its tiling halo).
INTERPOLATION_REACH = {"nearest": 0, "linear": 1, "catmull-rom": 2, "cubic": SPLINE_HALO}


def _keys_cubic(s: float, a: float = -0.5) -> float:
    # Keys (1981) kernel; a = -0.5 (Catmull-Rom) is the only choice that reproduces
    # quadratics. torch's bicubic uses a = -0.75, which does not even reproduce a ramp.
    s = abs(s)
    if s <= 1:
        return (a + 2) * s**3 - (a + 3) * s**2 + 1
    if s < 2:
        return a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a
    return 0.0


def _taps(z_factor: int, mode: str) -> list[tuple[int, list[float]]]:
    """Per output phase: first input offset and the weights of consecutive input slices."""
    taps = []
    for phase in range(z_factor):
        t = (phase + 0.5) / z_factor - 0.5  # input coordinate relative to slice i
        base = math.floor(t)
        frac = t - base
        if mode == "linear":
            taps.append((base, [1.0 - frac, frac]))
        elif mode == "cubic":  # cubic B-spline basis, on prefiltered coefficients
            taps.append((base - 1, [(1 - frac) ** 3 / 6,
                                    (3 * frac**3 - 6 * frac**2 + 4) / 6,
                                    (-3 * frac**3 + 3 * frac**2 + 3 * frac + 1) / 6,
                                    frac**3 / 6]))
        else:
            taps.append((base - 1, [_keys_cubic(frac + 1 - k) for k in range(4)]))
    return taps


def upsample_z(x: torch.Tensor, z_factor: int, mode: str = "cubic") -> torch.Tensor:
    """Upsample the first spatial axis of ``x`` by ``z_factor``.

    Input slice ``i`` is the thick section covering output slices ``i*f .. i*f+f-1``,
    so output slice ``j`` sits at input coordinate ``(j + 0.5) / f - 0.5`` (the
    ``align_corners=False`` grid). Borders replicate the edge slice.

    Parameters
    ----------
    x
        Tensor (B, C, D, ...) with one or two further spatial axes.
    z_factor
        Integer upsampling factor (1 returns ``x`` unchanged).
    mode
        ``"nearest"``, ``"linear"``, ``"cubic"`` (prefiltered cubic B-spline, as
        ``scipy.ndimage.zoom(order=3, mode="reflect", grid_mode=True)`` along this axis)
        or ``"catmull-rom"`` (Keys a = -0.5; the edge slice replicated).

    Returns
    -------
    torch.Tensor
        (B, C, D * z_factor, ...), same dtype as ``x``.
    """
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"mode must be one of {INTERPOLATION_MODES}, got {mode!r}")
    if int(z_factor) != z_factor or z_factor < 1:
        raise ValueError(f"z_factor must be an integer >= 1, got {z_factor}")
    if z_factor == 1:
        return x
    if mode == "nearest":
        return x.repeat_interleave(z_factor, dim=2)
    if mode == "cubic":
        return _spline_z(x, z_factor)
    b, c, d = x.shape[:3]
    rest = x.shape[3:]
    work = x if x.is_floating_point() else x.float()
    pad = 2
    # Replicate padding along z only: fold lateral axes into one for F.pad.
    padded = F.pad(work.reshape(b, c, d, -1), (0, 0, pad, pad), mode="replicate")
    phases = []
    for start, weights in _taps(z_factor, mode):
        acc = None
        for k, w in enumerate(weights):
            if w == 0.0:
                continue
            lo = pad + start + k
            term = padded[:, :, lo : lo + d] * w
            acc = term if acc is None else acc + term
        phases.append(acc)
    out = torch.stack(phases, dim=3)  # (B, C, D, f, L)
    return out.reshape(b, c, d * z_factor, *rest).to(x.dtype)


def _spline_z(x: torch.Tensor, z_factor: int) -> torch.Tensor:
    """Cubic B-spline interpolation along dim 2 on the slab grid, edges mirrored.

    The coefficients come from scipy's recursive prefilter (half-sample symmetric
    boundary, ``mode="reflect"``), so the result is scipy's own; the evaluation is four
    taps per output phase on the mirrored coefficients.
    """
    from scipy.ndimage import spline_filter1d

    b, c, d = x.shape[:3]
    values = x.detach().to("cpu", torch.float64).numpy().reshape(b, c, d, -1)
    coefficients = spline_filter1d(values, order=3, axis=2, mode="reflect")
    pad = 2
    padded = np.pad(coefficients, ((0, 0), (0, 0), (pad, pad), (0, 0)), mode="symmetric")
    phases = []
    for start, weights in _taps(z_factor, "cubic"):
        acc = sum(w * padded[:, :, pad + start + k: pad + start + k + d]
                  for k, w in enumerate(weights))
        phases.append(acc)
    out = np.stack(phases, axis=3).reshape(b, c, d * z_factor, *x.shape[3:])
    return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


def upsample(x: torch.Tensor, factors, mode: str = "cubic") -> torch.Tensor:
    """Upsample every spatial axis of ``x`` by its factor, separably, on the slab grid.

    Each axis is interpolated as :func:`upsample_z` does the first one (the 1D kernels
    commute, so the order of axes does not change the result beyond rounding).

    Parameters
    ----------
    x
        Tensor (B, C, *S) with two or three spatial axes.
    factors
        One int per spatial axis (an int alone: the first axis only, as ``upsample_z``).
    mode
        As for :func:`upsample_z`.

    Returns
    -------
    torch.Tensor
        (B, C, *(s * f for s, f in zip(S, factors))), same dtype as ``x``.
    """
    spatial = x.ndim - 2
    if isinstance(factors, int):
        factors = (factors,) + (1,) * (spatial - 1)
    factors = tuple(int(f) for f in factors)
    if len(factors) != spatial:
        raise ValueError(f"factors {factors} do not match the {spatial} spatial axes of "
                         f"a tensor of shape {tuple(x.shape)}")
    for axis, f in enumerate(factors):
        if f == 1:
            continue
        moved = x.movedim(2 + axis, 2)
        x = upsample_z(moved, f, mode).movedim(2, 2 + axis)
    return x.contiguous()
