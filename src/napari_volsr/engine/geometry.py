"""The slab grid: upsampling factors, and where upsampled volumes and regions of them sit.

A model's factors are ``(fz, fy, fx)``, each an integer 1..16 (DESIGN 3): today's
"z-factor f" is ``(f, 1, 1)``. The slab convention applies to every upsampled axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

MAX_FACTOR = 16


def validate_z_factor(z_factor) -> int:
    """Return ``z_factor`` as an int if it is an integer 1..16; else a ValueError naming it."""
    if isinstance(z_factor, bool) or int(z_factor) != z_factor or not 1 <= z_factor <= 16:
        raise ValueError(f"z_factor must be an integer from 1 to 16, got {z_factor!r}")
    return int(z_factor)


def validate_factors(factors, ndim: int = 3) -> tuple[int, ...]:
    """Per-axis factors as a tuple of ``ndim`` ints 1..16; an int ``f`` means ``(f, 1, ...)``.

    Raises a ValueError naming the value otherwise (a string such as ``"4,2,2"`` is the
    doors' job to split).
    """
    # numbers.Real: numpy integers count as integers, as validate_z_factor lets them.
    if isinstance(factors, Real) and not isinstance(factors, bool):
        factors = (validate_z_factor(factors),) + (1,) * (ndim - 1)
    try:
        values = tuple(factors)
    except TypeError:
        raise ValueError(f"factors must be {ndim} integers from 1 to {MAX_FACTOR} (z, y, x), "
                         f"got {factors!r}") from None
    ok = len(values) == ndim and all(
        not isinstance(f, bool) and isinstance(f, Real) and int(f) == f
        and 1 <= f <= MAX_FACTOR for f in values)
    if not ok:
        names = "(z, y, x)" if ndim == 3 else f"({ndim} axes)"
        raise ValueError(f"factors must be {ndim} integers from 1 to {MAX_FACTOR} {names}, "
                         f"got {factors!r}")
    return tuple(int(f) for f in values)


def resolve_factors(z_factor=None, factors=None) -> tuple[int, int, int] | None:
    """One ``(fz, fy, fx)`` from a door's ``z_factor`` and/or ``factors``; None if neither.

    ``z_factor`` is the shorthand for ``(z_factor, 1, 1)``; given with ``factors``, it
    must equal ``factors[0]``.
    """
    if factors is None:
        return None if z_factor is None else validate_factors(z_factor)
    out = validate_factors(factors)
    if z_factor is not None and validate_z_factor(z_factor) != out[0]:
        raise ValueError(f"z_factor {z_factor} disagrees with factors {out}: give one of them")
    return out


def describe_factors(factors) -> str:
    """``x4`` for ``(4, 1, 1)``, ``x1`` for none, else ``x(4,2,2)`` (z, y, x)."""
    factors = validate_factors(factors)
    if factors[1:] == (1, 1):
        return f"x{factors[0]}"
    return "x(" + ",".join(str(f) for f in factors) + ")"


def default_z_factor(scale) -> int:
    """Return ``round(scale_z / scale_x)`` of a ZYX scale, within 1..16.

    Parameters
    ----------
    scale
        Voxel spacing, z first among the last three axes (a layer's scale, a file's
        spacing). Fewer than three values, or a non-positive x spacing, give 1.
    """
    scale = tuple(float(s) for s in scale)
    if len(scale) < 3 or scale[-1] <= 0:
        return 1
    # Clamped before rounding: an infinite ratio (a zero x spacing) means "as much as allowed".
    return int(round(min(16.0, max(1.0, scale[-3] / scale[-1]))))


def output_geometry(spacing, origin, z_factor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Spacing and origin of an upsampled volume on the slab grid (DESIGN 3).

    Per upsampled axis ``scale_out = scale / f`` and ``translate_out = translate - (f - 1)
    / 2 * scale_out``; other axes are unchanged.

    Parameters
    ----------
    spacing, origin
        Of the input; ``origin`` None means zeros.
    z_factor
        The upsampling of the first axis (an int), or per-axis factors for the leading
        spatial axes (``(fz, fy, fx)``; fewer values leave the rest at 1).
    """
    spacing = tuple(float(s) for s in spacing)
    origin = tuple(float(o) for o in (origin if origin is not None else (0.0,) * len(spacing)))
    factors = (z_factor,) if isinstance(z_factor, Real) else tuple(z_factor)
    factors = tuple(int(f) for f in factors) + (1,) * (len(spacing) - len(factors))
    out = tuple(s / f for s, f in zip(spacing, factors, strict=False))
    moved = tuple(o - (f - 1) / 2 * s for o, f, s in zip(origin, factors, out, strict=False))
    return out, moved


def region_geometry(spacing, origin, start: Sequence[int], z_factor):
    """Output ``(scale, translate)`` of a region starting at voxel ``start``.

    The region's first voxel sits at ``origin + start * spacing``; the slab convention
    (:func:`output_geometry`) then applies as for a whole volume.
    """
    origin = origin if origin is not None else (0.0,) * len(spacing)
    corner = tuple(float(o) + int(i) * float(s)
                   for o, i, s in zip(origin, start, spacing, strict=True))
    return output_geometry(spacing, corner, z_factor)
