"""The slab grid: z-factors, and where upsampled volumes and regions of them sit."""

from __future__ import annotations

from collections.abc import Sequence


def validate_z_factor(z_factor) -> int:
    """Return ``z_factor`` as an int if it is an integer 1..16; else a ValueError naming it."""
    if isinstance(z_factor, bool) or int(z_factor) != z_factor or not 1 <= z_factor <= 16:
        raise ValueError(f"z_factor must be an integer from 1 to 16, got {z_factor!r}")
    return int(z_factor)


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


def output_geometry(spacing, origin, z_factor: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Spacing and origin of a z-upsampled volume on the slab grid (DESIGN 3).

    ``scale_z_out = scale_z / f`` and ``translate_z_out = translate_z - (f - 1) / 2 *
    scale_z_out``; y and x are unchanged.

    Parameters
    ----------
    spacing, origin
        Of the input; ``origin`` None means zeros.
    z_factor
        The upsampling of the first axis.
    """
    spacing = tuple(float(s) for s in spacing)
    origin = tuple(float(o) for o in (origin if origin is not None else (0.0,) * len(spacing)))
    z_out = spacing[0] / z_factor
    return (z_out, *spacing[1:]), (origin[0] - (z_factor - 1) / 2 * z_out, *origin[1:])


def region_geometry(spacing, origin, start: Sequence[int], z_factor: int):
    """Output ``(scale, translate)`` of a region starting at voxel ``start``.

    The region's first voxel sits at ``origin + start * spacing``; the slab convention
    (:func:`output_geometry`) then applies as for a whole volume.
    """
    origin = origin if origin is not None else (0.0,) * len(spacing)
    corner = tuple(float(o) + int(i) * float(s)
                   for o, i, s in zip(origin, start, spacing, strict=True))
    return output_geometry(spacing, corner, z_factor)
