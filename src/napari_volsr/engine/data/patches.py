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


def model_factors(z_factor, factors=None) -> tuple[int, int, int]:
    """``(fz, fy, fx)`` from a z-factor (an int, or already the factors) and/or ``factors``.

    As :func:`~napari_volsr.engine.geometry.resolve_factors`: given both, they agree on z.
    """
    from ..geometry import resolve_factors, validate_factors

    if factors is None:
        return validate_factors(z_factor)
    return resolve_factors(None if isinstance(z_factor, (tuple, list)) else z_factor, factors)


def default_patch_shape(source: str, spatial_dims: int, z_factor,
                        factors: Sequence[int] | None = None) -> tuple[int, ...]:
    """The patch (input grid) a model trains on when its volumes are large enough.

    Upsampling patches keep their target size: 3D ones span 32 output slices and 64 x 64
    target pixels (inputs 64 // f laterally), isotropic ones a 64 x 64 target plane
    (e.g. 16 x 64 inputs at x4, the recipe measured best on the EM volume in 10 CPU
    minutes); slice-wise 2D patches are 64 x 64 target pixels. The denoising sources
    (noise2void, noise2noise) restore at factors 1: 32 x 64 x 64 or 64 x 64.
    ``z_factor`` may be the model's factors ``(fz, fy, fx)``, or ``factors`` given.
    """
    fz, fy, fx = model_factors(z_factor, factors)
    if source == "isotropic":
        return (max(MIN_PATCH, DEFAULT_LATERAL // fz), DEFAULT_LATERAL)
    lateral = (max(MIN_PATCH, DEFAULT_LATERAL // fy), max(MIN_PATCH, DEFAULT_LATERAL // fx))
    if spatial_dims == 2:
        return lateral
    return (max(MIN_PATCH, DEFAULT_TARGET_DEPTH // fz), *lateral)


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


def _limits(source: str, spatial_dims: int, factors: tuple[int, int, int],
            shape: Sequence[int], val_fraction: float, validation: bool) -> tuple[int, ...]:
    """The largest patch (input grid) one volume holds, per axis of the patch.

    Paired shapes are the raws' (the input grid); the other sources' volumes are on the
    target grid, so each axis holds its length // factor input voxels. Validation bands
    split the rows the sampler crops from (raw rows for pairs, target rows otherwise).
    """
    depth, rows, cols = (int(n) for n in shape)
    rows = _training_rows(rows, val_fraction, validation)
    if source == "isotropic":  # (y, x) on the input grid; the target is (y * f, x)
        return (rows // factors[0], cols)
    if source != "paired":
        depth, rows, cols = (n // f for n, f in zip((depth, rows, cols), factors, strict=True))
    return (rows, cols) if spatial_dims == 2 else (depth, rows, cols)


def _minimum(spatial_dims: int, factors: tuple[int, int, int], divisor: Sequence[int],
             min_target: int, isotropic: bool) -> tuple[int, ...]:
    """The smallest patch the network and the config accept, per axis of the patch."""
    upsampled = ((factors[0], 1) if isotropic else
                 factors if spatial_dims == 3 else factors[1:])
    sizes = []
    for f, step in zip(upsampled, divisor, strict=True):
        low = max(MIN_PATCH, math.ceil(min_target / f))
        sizes.append(math.ceil(low / step) * step)
    return tuple(sizes)


def fit_patch_shape(source: str, spatial_dims: int, z_factor,
                    shapes: Sequence[Sequence[int]], *, divisor: Sequence[int] | None = None,
                    min_target: int = 1, n_val: int = 8, val_fraction: float = 0.1,
                    names: Sequence[str] | None = None, context_planes: int = 0,
                    factors: Sequence[int] | None = None) -> PatchFit:
    """The default patch, shrunk until every volume holds it beside its validation band.

    Parameters
    ----------
    source
        ``paired``, ``synthetic``, ``isotropic``, ``noise2void`` or ``noise2noise`` (the
        last two denoise at z-factor 1: their patches are those of a same-shape restore).
    spatial_dims, z_factor
        Of the model; ``z_factor`` may be its factors ``(fz, fy, fx)``.
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
    factors
        The model's ``(fz, fy, fx)``, when lateral axes upsample too.

    Raises
    ------
    PatchFitError
        When not even the smallest patch fits; names the smallest usable volume.
    """
    _check_context(shapes, context_planes, names)
    f = model_factors(z_factor, factors)
    dims = 2 if source == "isotropic" else spatial_dims
    divisor = tuple(divisor or (1,) * dims)
    want = default_patch_shape(source, dims, f)
    least = _minimum(dims, f, divisor, min_target, source == "isotropic")
    for validation in ((True, False) if n_val else (False,)):
        limits = [_limits(source, spatial_dims, f, s, val_fraction, validation)
                  for s in shapes]
        room = tuple(min(axis) for axis in zip(*limits, strict=True))
        patch = tuple(_round_down(min(w, r), d) for w, r, d in zip(want, room, divisor,
                                                                    strict=True))
        if all(p >= low for p, low in zip(patch, least, strict=True)):
            patch = tuple(max(p, low) for p, low in zip(patch, least, strict=True))
            return _described(patch, want, validation, n_val)
    raise PatchFitError(_too_small(source, spatial_dims, f, shapes, least, names))


def check_patch_shape(source: str, spatial_dims: int, z_factor,
                      shapes: Sequence[Sequence[int]], patch_shape: Sequence[int], *,
                      n_val: int = 8, val_fraction: float = 0.1,
                      names: Sequence[str] | None = None, context_planes: int = 0,
                      factors: Sequence[int] | None = None) -> PatchFit:
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
    f = model_factors(z_factor, factors)
    dims = 2 if source == "isotropic" else spatial_dims
    patch = tuple(int(p) for p in patch_shape)
    if len(patch) != dims:
        return PatchFit(patch)  # the config's own check names the length
    for validation in ((True, False) if n_val else (False,)):
        fits = [all(p <= r for p, r in zip(patch, _limits(source, spatial_dims, f, s,
                                                           val_fraction, validation),
                                            strict=True)) for s in shapes]
        if all(fits):
            return _described(patch, patch, validation, n_val)
    worst = fits.index(False)
    name = names[worst] if names else f"volume {worst}"
    need = _volume_for(source, dims, f, patch)
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


def _volume_for(source: str, dims: int, factors: tuple[int, int, int],
                patch: tuple[int, ...]) -> tuple[int, ...]:
    """The (z, y, x) a volume needs to hold ``patch`` (input grid), validation aside.

    Paired volumes are the raws (the input grid); the others hold target-grid crops.
    """
    if source == "isotropic":
        return (1, patch[0] * factors[0], patch[1])
    if source == "paired":
        return (1, *patch) if dims == 2 else tuple(patch)
    if dims == 2:  # one z plane, upsampled in Y and X only
        return (1, patch[0] * factors[1], patch[1] * factors[2])
    return tuple(p * f for p, f in zip(patch, factors, strict=True))


def _too_small(source, spatial_dims, factors, shapes, least, names) -> str:
    """'x' (shape) is too small ...: the smallest volume that trains, in (z, y, x)."""
    need = _volume_for(source, spatial_dims, factors, least)
    worst = min(range(len(shapes)), key=lambda i: min(
        s / n for s, n in zip(shapes[i], need, strict=True)))
    name = names[worst] if names else f"volume {worst}"
    return (f"'{name}' {tuple(shapes[worst])} is too small to train on: the smallest patch "
            f"this model takes needs a volume of at least {need} voxels (z, y, x)")
