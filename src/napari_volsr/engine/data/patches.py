"""Training patch shapes: the defaults, and the largest of them a user's volumes can hold."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_LATERAL = 64
DEFAULT_TARGET_DEPTH = 32  # 3D patches span this many output slices (input depth 32 // f)
MIN_PATCH = 4  # TrainingConfig refuses smaller patches
NICE_STEP = 8  # lateral sizes round down to multiples of 8 where they can


class PatchFitError(ValueError):
    """No patch fits the volume; the message names the smallest volume that would do."""


@dataclass(frozen=True)
class PatchFit:
    """A patch shape chosen for some volumes, and what had to give way for it.

    Attributes
    ----------
    patch_shape
        On the input grid: ``(z, y, x)`` for 3D models, ``(y, x)`` for 2D ones.
    n_val
        0 when the volumes are too small to hold validation patches apart (None: as asked).
    note
        A sentence for people saying what was chosen and why, or "".
    """

    patch_shape: tuple[int, ...]
    n_val: int | None = None
    note: str = ""


def default_patch_shape(source: str, spatial_dims: int, z_factor: int) -> tuple[int, ...]:
    """The patch (input grid) a model trains on when its volumes are large enough.

    Upsampling patches keep their target size: 3D ones span 32 output slices, isotropic
    ones a 64 x 64 target plane (e.g. 16 x 64 inputs at x4, the recipe measured best on
    the EM volume in 10 CPU minutes); slice-wise 2D patches are 64 x 64. The denoising
    sources (noise2void, noise2noise) restore at z-factor 1: 32 x 64 x 64 or 64 x 64.
    """
    if source == "isotropic":
        return (max(MIN_PATCH, DEFAULT_LATERAL // z_factor), DEFAULT_LATERAL)
    if spatial_dims == 2:
        return (DEFAULT_LATERAL, DEFAULT_LATERAL)
    return (max(MIN_PATCH, DEFAULT_TARGET_DEPTH // z_factor), DEFAULT_LATERAL, DEFAULT_LATERAL)


def _training_rows(rows: int, val_fraction: float, validation: bool) -> int:
    """Rows a patch may span when the validation band (``split_rows``) is kept apart."""
    if not validation:
        return rows
    return min(rows // 2, rows - math.ceil(val_fraction * rows))


def _round_down(value: int, step: int) -> int:
    nice = math.lcm(step, NICE_STEP)
    if value >= nice:
        return value // nice * nice
    return value // step * step


def _limits(source: str, spatial_dims: int, z_factor: int, shape: Sequence[int],
            val_fraction: float, validation: bool) -> tuple[int, ...]:
    """The largest patch (input grid) one volume holds, per axis of the patch."""
    depth, rows, cols = (int(n) for n in shape)
    rows = _training_rows(rows, val_fraction, validation)
    if source == "isotropic":  # (y, x) on the input grid; the target is (y * f, x)
        return (rows // z_factor, cols)
    if spatial_dims == 2:
        return (rows, cols)
    depth = depth if source == "paired" else depth // z_factor
    return (depth, rows, cols)


def _minimum(spatial_dims: int, z_factor: int, divisor: Sequence[int], min_target: int,
             isotropic: bool) -> tuple[int, ...]:
    """The smallest patch the network and the config accept, per axis of the patch."""
    upsampled = (z_factor,) + (1,) * (spatial_dims - 1) if (isotropic or spatial_dims == 3) \
        else (1,) * spatial_dims
    sizes = []
    for f, step in zip(upsampled, divisor, strict=True):
        low = max(MIN_PATCH, math.ceil(min_target / f))
        sizes.append(math.ceil(low / step) * step)
    return tuple(sizes)


def fit_patch_shape(source: str, spatial_dims: int, z_factor: int,
                    shapes: Sequence[Sequence[int]], *, divisor: Sequence[int] | None = None,
                    min_target: int = 1, n_val: int = 8, val_fraction: float = 0.1,
                    names: Sequence[str] | None = None, context_planes: int = 0) -> PatchFit:
    """The default patch, shrunk until every volume holds it beside its validation band.

    Parameters
    ----------
    source
        ``paired``, ``synthetic``, ``isotropic``, ``noise2void`` or ``noise2noise`` (the
        last two denoise at z-factor 1: their patches are those of a same-shape restore).
    spatial_dims, z_factor
        Of the model.
    shapes
        ZYX shapes of the volumes patches are cut from: the raw volumes (paired), the
        clean targets (synthetic), the anisotropic volumes (isotropic), the noisy
        volumes (noise2void) or the acquisitions (noise2noise).
    divisor
        The network's input size multiple per patch axis (default 1).
    min_target
        Smallest target patch size per axis (a GAN discriminator's receptive field).
    n_val, val_fraction
        The validation split asked for; when the volumes cannot hold it at the smallest
        patch, the fit trains without validation (``n_val`` 0) and says so.
    names
        Names of the volumes, for messages.
    context_planes
        Of a 2.5D model: every volume needs ``2c + 1`` z planes.

    Raises
    ------
    PatchFitError
        When not even the smallest patch fits; names the smallest usable volume.
    """
    _check_context(shapes, context_planes, names)
    dims = 2 if source == "isotropic" else spatial_dims
    divisor = tuple(divisor or (1,) * dims)
    want = default_patch_shape(source, dims, z_factor)
    least = _minimum(dims, z_factor, divisor, min_target, source == "isotropic")
    for validation in ((True, False) if n_val else (False,)):
        limits = [_limits(source, spatial_dims, z_factor, s, val_fraction, validation)
                  for s in shapes]
        room = tuple(min(axis) for axis in zip(*limits, strict=True))
        patch = tuple(_round_down(min(w, r), d) for w, r, d in zip(want, room, divisor,
                                                                    strict=True))
        if all(p >= low for p, low in zip(patch, least, strict=True)):
            patch = tuple(max(p, low) for p, low in zip(patch, least, strict=True))
            return _described(patch, want, validation, n_val)
    raise PatchFitError(_too_small(source, spatial_dims, z_factor, shapes, least, names))


def check_patch_shape(source: str, spatial_dims: int, z_factor: int,
                      shapes: Sequence[Sequence[int]], patch_shape: Sequence[int], *,
                      n_val: int = 8, val_fraction: float = 0.1,
                      names: Sequence[str] | None = None, context_planes: int = 0) -> PatchFit:
    """A given patch checked against the volumes, dropping validation when it must.

    Parameters are those of :func:`fit_patch_shape`; ``patch_shape`` is on the input
    grid, as the config takes it.

    Returns
    -------
    PatchFit
        The patch as given; ``n_val`` 0 (and a note) when the volumes hold the patch but
        not a validation band beside it.

    Raises
    ------
    PatchFitError
        When a volume cannot hold the patch at all; names the volume and what it needs.
    """
    _check_context(shapes, context_planes, names)
    dims = 2 if source == "isotropic" else spatial_dims
    patch = tuple(int(p) for p in patch_shape)
    if len(patch) != dims:
        return PatchFit(patch)  # the config's own check names the length
    for validation in ((True, False) if n_val else (False,)):
        fits = [all(p <= r for p, r in zip(patch, _limits(source, spatial_dims, z_factor, s,
                                                           val_fraction, validation),
                                            strict=True)) for s in shapes]
        if all(fits):
            return _described(patch, patch, validation, n_val)
    worst = fits.index(False)
    name = names[worst] if names else f"volume {worst}"
    if source == "isotropic":
        need = (1, patch[0] * z_factor, patch[1])
    elif dims == 2:
        need = (1, *patch)
    else:
        need = (patch[0] * (1 if source == "paired" else z_factor), *patch[1:])
    raise PatchFitError(f"patch shape {patch} needs a volume of at least {need} voxels "
                        f"(z, y, x) but '{name}' is {tuple(shapes[worst])}; use a smaller patch")


def _check_context(shapes, context_planes: int, names) -> None:
    from .sources import check_context_depth

    names = [f"'{n}'" for n in names] if names else [f"volume {i}" for i in range(len(shapes))]
    try:
        check_context_depth(shapes, context_planes, names)
    except ValueError as exc:
        raise PatchFitError(str(exc)) from None


def _described(patch, want, validation: bool, n_val: int) -> PatchFit:
    shown = " x ".join(map(str, patch))
    if not validation and n_val:
        what = "fitted to" if patch != want else "fits"
        return PatchFit(patch, 0, f"patch {shown} {what} the volume, which is too small to "
                        "hold validation patches apart: training without validation")
    if patch != want:
        return PatchFit(patch, None, f"patch {shown} fitted to the volume (default "
                        f"{' x '.join(map(str, want))})")
    return PatchFit(patch)


def _too_small(source, spatial_dims, z_factor, shapes, least, names) -> str:
    """'x' (shape) is too small ...: the smallest volume that trains, in (z, y, x)."""
    if source == "isotropic":
        need = (1, least[0] * z_factor, least[1])
    elif spatial_dims == 2:
        need = (1, *least)
    else:
        need = (least[0] * (1 if source == "paired" else z_factor), least[1], least[2])
    worst = min(range(len(shapes)), key=lambda i: min(
        s / n for s, n in zip(shapes[i], need, strict=True)))
    name = names[worst] if names else f"volume {worst}"
    return (f"'{name}' {tuple(shapes[worst])} is too small to train on: the smallest patch "
            f"this model takes needs a volume of at least {need} voxels (z, y, x)")
