"""Argument checks and receptive-field arithmetic shared by the network classes."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

from napari_volsr.engine.interp import upsample, upsample_z

MAX_Z_FACTOR = 16


def check_int(name: str, value, low: int = 1, high: int | None = None) -> int:
    """Return ``value`` as an int, or raise a ValueError naming ``name``.

    Parameters
    ----------
    name
        Argument name used in the error message.
    value
        The value to check; bools are rejected although Python counts them as ints.
    low, high
        Inclusive bounds (``high=None``: no upper bound).

    Returns
    -------
    int
        The checked value.
    """
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return int(value)


def check_net_args(spatial_dims, in_channels, out_channels, z_factor) -> None:
    """Validate the four arguments every network takes (DESIGN 4).

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels, out_channels
        Positive channel counts.
    z_factor
        Integer upsampling factor of the first spatial axis, 1..16.
    """
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    check_int("in_channels", in_channels)
    check_int("out_channels", out_channels)
    check_int("z_factor", z_factor, 1, MAX_Z_FACTOR)


def net_factors(spatial_dims: int, z_factor=1, factors: Sequence[int] | None = None
                ) -> tuple[int, ...]:
    """Return a network's upsampling factor per spatial axis.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    z_factor
        The shorthand ``(z_factor, 1[, 1])``, used when ``factors`` is None.
    factors
        One integer 1..16 per spatial axis; takes precedence over ``z_factor``, which
        must then be 1 (its default) or equal to ``factors[0]``.

    Returns
    -------
    tuple of int
        ``spatial_dims`` factors, the first axis first.
    """
    check_int("z_factor", z_factor, 1, MAX_Z_FACTOR)
    if factors is None:
        return (int(z_factor),) + (1,) * (spatial_dims - 1)
    sized = hasattr(factors, "__len__") and not isinstance(factors, str)
    if not sized or len(factors) != spatial_dims:
        raise ValueError(f"factors must be {spatial_dims} integers (one per spatial axis), "
                         f"got {factors!r}")
    values = tuple(check_int("factors", f, 1, MAX_Z_FACTOR) for f in factors)
    if z_factor != 1 and z_factor != values[0]:
        raise ValueError(f"z_factor {z_factor} disagrees with factors {values}: give one "
                         "or make z_factor equal to factors[0]")
    return values


def to_output_grid(x, factors: Sequence[int], mode: str = "catmull-rom"):
    """Interpolate ``x`` (B, C, *S) onto the output grid, every axis by its factor.

    Factors on the first axis alone go through ``upsample_z``, so z-only networks compute
    exactly what they did before lateral factors existed (same tensor, same memory layout).
    """
    if all(f == 1 for f in factors[1:]):
        return upsample_z(x, factors[0], mode)
    return upsample(x, tuple(factors), mode)


def check_input(x, spatial_dims: int, in_channels: int) -> None:
    """Raise a ValueError if ``x`` is not (B, in_channels, *spatial) for this net."""
    if x.ndim != spatial_dims + 2 or x.shape[1] != in_channels:
        raise ValueError(
            f"expected input of shape (B, {in_channels}, {spatial_dims} spatial axes), "
            f"got {tuple(x.shape)}"
        )


def z_halo(input_radius: int, output_radius: int, z_factor: int) -> int:
    """Return the halo along z, in input slices, around a kernel = stride upsampling.

    The net sees ``input_radius`` slices on the input grid, upsamples z by a transposed
    convolution with kernel = stride = ``z_factor`` (output slice ``u`` reads only input
    slice ``u // f``), then sees ``output_radius`` slices on the output grid. The halo is
    the largest distance between the input slice that owns an output slice and any input
    slice that output depends on.

    Parameters
    ----------
    input_radius
        Radius of the convolutions before the upsampling, in input slices.
    output_radius
        Radius of the convolutions after it, in output slices.
    z_factor
        The upsampling factor.

    Returns
    -------
    int
        Halo in input slices.
    """
    f = z_factor
    # Output slice p of the slab owned by input slice 0 (p in 0..f-1) reaches output
    # slices p - r .. p + r, which read input slices (p - r) // f .. (p + r) // f.
    reach = max(max(-((p - output_radius) // f), (p + output_radius) // f) for p in range(f))
    return input_radius + reach


def kernel_stride_halo(input_radius: int, output_radius: int, factors: Sequence[int]
                       ) -> tuple[int, ...]:
    """:func:`z_halo` of every axis, each with its own factor (1: the radii add up)."""
    return tuple(z_halo(input_radius, output_radius, f) for f in factors)
