"""Training-pair sources (paired, synthetic, isotropic), their checks and the dispatch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..degrade import DegradationConfig, downsample
from ..geometry import describe_factors, resolve_factors
from ..nets._common import MAX_Z_FACTOR, check_int
from .input_scale import degraded_scale
from .normalization import DEFAULT_PERCENTILES, percentile_normalization, read_finite
from .sampling import (
    IsotropicSampler,
    NormalizedVolume,
    PairedSampler,
    SyntheticSampler,
    TrainingData,
    build_training_data,
    split_rows,
)

if TYPE_CHECKING:
    from ..config import TrainingConfig


def _as_list(arrays) -> list:
    return list(arrays) if isinstance(arrays, (list, tuple)) else [arrays]


def _load(array, what: str, percentiles) -> NormalizedVolume:
    # Random crops with rejection read the volume many times; a lazy (dask) array would
    # recompute chunks for every try, so it is read once. Numpy inputs are not copied,
    # and normalisation happens per crop, so the volume is never modified.
    data = read_finite(array, what)
    if data.ndim != 3:
        raise ValueError(f"{what} must be a ZYX volume (3 dimensions), got shape {data.shape}")
    return NormalizedVolume(data, percentile_normalization(data, percentiles))


def source_factors(z_factor, factors=None) -> tuple[int, int, int]:
    """``(fz, fy, fx)`` of a source from its ``z_factor`` and/or ``factors``.

    ``z_factor`` is an int or already the three factors; ``factors`` given with an int
    must agree with it on z.
    """
    if factors is None and not isinstance(z_factor, (tuple, list)):
        return (check_int("z_factor", z_factor, 1, MAX_Z_FACTOR), 1, 1)
    if factors is None:
        z_factor, factors = None, z_factor
    return resolve_factors(z_factor, factors)


def _check_common(z_factor, patch_shape, spatial_dims, n_val, val_fraction, foreground,
                  max_tries, seed, factors=None) -> tuple[tuple[int, int, int], tuple[int, ...]]:
    f = source_factors(z_factor, factors)
    patch = tuple(int(p) for p in patch_shape)
    if len(patch) != spatial_dims or any(p < 1 for p in patch) or patch != tuple(patch_shape):
        raise ValueError(
            f"patch_shape must be {spatial_dims} positive integers, got {tuple(patch_shape)}"
        )
    check_int("n_val", n_val, 0)
    check_int("max_tries", max_tries, 1)
    check_int("seed", seed, 0)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0.0 <= foreground <= 1.0:
        raise ValueError(f"foreground must be a fraction in [0, 1], got {foreground}")
    return f, patch


def _check_volume_patch(z_factor, patch_shape, spatial_dims, *checks,
                        factors=None) -> tuple[tuple[int, int, int], tuple]:
    """Factors ``(fz, fy, fx)`` and 3D patch of the paired and synthetic sources.

    Slice-wise (``spatial_dims == 2``) patches ``(py, px)`` become one-slice-thick 3D
    patches ``(1, py, px)``; their z axis is dropped when pairs are handed out. They
    may upsample Y and X (lateral super-resolution on YX planes), never z.
    """
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    f, patch = _check_common(z_factor, patch_shape, spatial_dims, *checks, factors=factors)
    if spatial_dims == 3:
        return f, patch
    if f[0] != 1:
        raise ValueError(
            f"slice-wise pairs (spatial_dims 2) need z_factor 1, got {f[0]}: to upsample z "
            "use 3D patches, or the isotropic source for one anisotropic volume"
        )
    return f, (1, *patch)


def check_context_depth(shapes, context: int, names) -> None:
    """Raise ValueError when a volume has fewer than the ``2c + 1`` planes a 2.5D patch spans.

    Parameters
    ----------
    shapes
        ZYX shapes of the volumes patches are cut from.
    context
        Context planes c on each side (0: nothing to check).
    names
        A name per volume, for the message.
    """
    need = 2 * int(context) + 1
    for shape, name in zip(shapes, names, strict=True):
        if context and shape[0] < need:
            raise ValueError(f"context_planes {context} needs volumes of at least {need} z "
                             f"planes (the plane restored and {context} on each side), but "
                             f"{name} has {shape[0]}; lower context_planes")


def _check_fits(shape: tuple[int, ...], need: tuple[int, ...], what: str, patch_desc: str):
    if any(n > s for n, s in zip(need, shape, strict=True)):
        raise ValueError(
            f"patch shape {patch_desc} needs at least {need} voxels but {what} has "
            f"shape {shape}; use a smaller patch"
        )


def _base_summary(source: str, volumes: list[NormalizedVolume], f: int, patch: tuple[int, ...],
                  target_patch: tuple[int, ...], splits: list[int], *, n_val, val_fraction,
                  percentiles, seed) -> dict:
    return {
        "source": source,
        "n_volumes": len(volumes),
        "shapes": [list(v.data.shape) for v in volumes],
        "normalization": [[v.norm.low, v.norm.high] for v in volumes],
        "percentiles": [float(p) for p in percentiles],
        "z_factor": f,
        "patch_shape": list(patch),
        "target_patch_shape": list(target_patch),
        "n_val": n_val,
        "val_fraction": val_fraction,
        # Rows [start, Y) of each volume hold validation crops only.
        "validation_rows": [[s, v.data.shape[1]] for s, v in zip(splits, volumes, strict=True)],
        # Target-grid voxels that training crops come from: one epoch sees about this many.
        "train_voxels": int(sum(v.data.shape[0] * s * v.data.shape[2]
                                for s, v in zip(splits, volumes, strict=True))),
        "seed": seed,
    }


def _central_slab(volume: NormalizedVolume, start: int, stop: int) -> np.ndarray:
    return volume.crop((start, 0, 0), (stop - start, *volume.data.shape[1:])).mean(axis=0)


def _lateral_shift(raw: NormalizedVolume, target: NormalizedVolume,
                   factors: tuple[int, int, int]) -> tuple[float, float] | None:
    """Lateral displacement (dy, dx) of ``target`` relative to ``raw``, or None if flat.

    Compares the mean of a central slab of at most 8 raw slices with the mean of the
    target slices covering the same depth, so it stays cheap for big volumes. With
    lateral factors the target's image is area-averaged onto the raw's pixel grid
    first (as a raw pixel covers its block), so the shift is in raw pixels.
    """
    from skimage.registration import phase_cross_correlation

    fz, fy, fx = factors
    depth = raw.data.shape[0]
    start = max(0, depth // 2 - 4)
    stop = min(depth, start + 8)
    target_image = _central_slab(target, start * fz, stop * fz)
    if (fy, fx) != (1, 1):
        target_image = downsample(target_image, (fy, fx))
    images = []
    for image in (_central_slab(raw, start, stop), target_image):
        image = image - image.mean()
        if not np.any(image):
            return None
        # A Hann window stops the image borders (wrapped by the FFT) dominating the
        # correlation peak.
        if min(image.shape) >= 8:
            image = image * np.outer(np.hanning(image.shape[0]), np.hanning(image.shape[1]))
        images.append(image)
    shift, _, _ = phase_cross_correlation(images[0], images[1], upsample_factor=4,
                                          normalization=None)
    # skimage returns the shift that registers the moving image; the displacement of
    # the target is its opposite.
    # (Adding 0.0 turns -0.0 into 0.0 for the message.)
    return float(-shift[0]) + 0.0, float(-shift[1]) + 0.0


def _alignment_warnings(raws: list[NormalizedVolume], targets: list[NormalizedVolume],
                        factors: tuple[int, int, int]) -> list[str]:
    warnings = []
    for i, (raw, target) in enumerate(zip(raws, targets, strict=True)):
        shift = _lateral_shift(raw, target, factors)
        if shift is not None and math.hypot(*shift) > 1.0:
            warnings.append(
                f"pair {i}: the target looks shifted by (dy, dx) = ({shift[0]:.1f}, "
                f"{shift[1]:.1f}) pixels from the raw; register the pair first, or the "
                "network learns to move structures instead of restoring them."
            )
    return warnings


def _pair_splits(raws: list[NormalizedVolume], targets: list[NormalizedVolume],
                 f: tuple[int, int, int], patch: tuple[int, ...], n_val: int,
                 val_fraction: float) -> list[int]:
    """Check each pair's shapes against the factors and patch; its validation row split.

    Splits are target rows: the raw's split times ``fy``, so both bands start on a
    block boundary of the raw grid.
    """
    splits = []
    for i, (raw, target) in enumerate(zip(raws, targets, strict=True)):
        expected = tuple(n * k for n, k in zip(raw.data.shape, f, strict=True))
        if target.data.shape != expected:
            rule = ("same Y and X, depth = raw depth x z_factor" if f[1:] == (1, 1) else
                    "each axis = the raw's x its factor (z, y, x)")
            with_factor = (f"z_factor {f[0]}" if f[1:] == (1, 1)
                           else f"factors {describe_factors(f)[1:]}")
            raise ValueError(
                f"pair {i}: target shape {target.data.shape} does not match raw shape "
                f"{raw.data.shape} with {with_factor}; expected {expected} ({rule})"
            )
        _check_fits(raw.data.shape, patch, f"raw {i}", str(patch))
        splits.append(f[1] * split_rows(raw.data.shape[1], patch[1], n_val, val_fraction,
                                        f"raw {i}", str(patch)))
    return splits


def paired_data(raws, targets, z_factor, patch_shape: Sequence[int], *,
                factors: Sequence[int] | None = None, spatial_dims: int = 3,
                context_planes: int = 0, percentiles=DEFAULT_PERCENTILES, n_val: int = 8,
                val_fraction: float = 0.1, foreground: float = 0.0, seed: int = 0,
                max_tries: int = 100) -> TrainingData:
    """Training pairs from registered raw and target volumes.

    Parameters
    ----------
    raws, targets
        ZYX arrays (numpy or dask), or lists of them, pair by pair. Each target has the
        raw's shape times the factors on every axis (the raw's shape at factors 1).
    z_factor
        Upsampling factor along z, 1..16 (or the factors ``(fz, fy, fx)``; None when
        ``factors`` is given).
    patch_shape
        ``(pz, py, px)`` on the raw grid; target patches are ``(pz * fz, py * fy,
        px * fx)``, starting on the raw's block grid. ``(py, px)`` when ``spatial_dims``
        is 2.
    factors
        Upsampling per axis ``(fz, fy, fx)``, each 1..16; default ``(z_factor, 1, 1)``.
    spatial_dims
        3: volumetric pairs. 2: slice-wise pairs, single z slices with the z axis
        dropped, for a 2D network (``fz`` must be 1; ``fy``, ``fx`` may upsample).
    context_planes
        2.5D (slice-wise only): inputs are ``2c + 1`` slices as channels, the target
        their centre slice; every volume needs ``2c + 1`` slices.
    percentiles
        Low/high percentiles mapped to 0/1, computed per volume.
    n_val
        Number of fixed validation pairs (0: no validation band is held out).
    val_fraction
        Share of each volume's Y rows (at least one patch height) kept for validation.
    foreground
        Minimum share of target voxels above ``FOREGROUND_LEVEL`` for a patch to count.
    seed
        Seed for validation crops and the training stream.
    max_tries
        Crops tried per patch before the best one is taken.

    Returns
    -------
    TrainingData
        Pairs with ``spatial_dims`` axes; ``warnings`` names pairs that look laterally
        shifted (> 1 pixel).

    Raises
    ------
    ValueError
        On mismatched shapes, patches that do not fit, volumes too small to hold a
        validation band, or no foreground in any crop.
    """
    f, patch = _check_volume_patch(z_factor, patch_shape, spatial_dims, n_val, val_fraction,
                                   foreground, max_tries, seed, factors=factors)
    raw_list, target_list = _as_list(raws), _as_list(targets)
    if len(raw_list) != len(target_list) or not raw_list:
        raise ValueError(f"need one target per raw volume, got {len(raw_list)} raw and "
                         f"{len(target_list)} target volumes")
    raw_vols = [_load(r, f"raw {i}", percentiles) for i, r in enumerate(raw_list)]
    target_vols = [_load(t, f"target {i}", percentiles) for i, t in enumerate(target_list)]
    splits = _pair_splits(raw_vols, target_vols, f, patch, n_val, val_fraction)
    check_context_depth([r.data.shape for r in raw_vols], context_planes,
                        [f"raw {i}" for i in range(len(raw_vols))])
    warnings = _alignment_warnings(raw_vols, target_vols, f)
    sampler = PairedSampler(raw_vols, target_vols, splits, z_factor=f[0], factors=f,
                            patch_shape=patch, foreground=foreground, max_tries=max_tries,
                            slice_wise=spatial_dims == 2, context=context_planes)
    summary = _base_summary("paired", target_vols, f[0], patch, sampler.target_shape(), splits,
                            n_val=n_val, val_fraction=val_fraction, percentiles=percentiles,
                            seed=seed)
    summary["raw_shapes"] = [list(r.data.shape) for r in raw_vols]
    summary["raw_normalization"] = [[r.norm.low, r.norm.high] for r in raw_vols]
    return build_training_data(sampler, n_val=n_val, seed=seed, warnings=warnings, summary=summary)


def synthetic_data(targets, z_factor, patch_shape: Sequence[int],
                   degradation: DegradationConfig, *, factors: Sequence[int] | None = None,
                   spatial_dims: int = 3, context_planes: int = 0,
                   percentiles=DEFAULT_PERCENTILES, n_val: int = 8,
                   val_fraction: float = 0.1, foreground: float = 0.0, seed: int = 0,
                   max_tries: int = 100) -> TrainingData:
    """Training pairs from clean volumes alone, each input a fresh synthetic degradation.

    A target patch ``(pz * fz, py * fy, px * fx)`` is cropped and its input ``(pz, py,
    px)`` made by :func:`~napari_volsr.engine.degrade.degrade` (blocks of the factors
    area-averaged) with parameters drawn per patch; both
    are then mapped to the intensity scale a restore of a degraded volume normalises to
    (:func:`~napari_volsr.engine.data.input_scale.degraded_scale`).
    Keyword arguments are those of :func:`paired_data`.

    Parameters
    ----------
    targets
        Clean (ideally isotropic) ZYX volumes, numpy or dask, or a list of them.
    z_factor
        Upsampling factor along z, 1..16 (or the factors; None when ``factors`` is given).
    patch_shape
        ``(pz, py, px)`` on the input grid; ``(py, px)`` when ``spatial_dims`` is 2.
    degradation
        Ranges of blur and noise.
    factors
        Upsampling per axis ``(fz, fy, fx)``; default ``(z_factor, 1, 1)``.
    spatial_dims
        3: volumetric pairs. 2: slice-wise pairs (one-slice crops, z axis dropped,
        ``fz`` 1; ``fy``, ``fx`` may upsample).
    context_planes
        2.5D: the whole ``2c + 1``-slice crop is degraded (noise per voxel) and handed
        out as channels; the target is its clean centre slice.

    Returns
    -------
    TrainingData
        Pairs with ``spatial_dims`` axes.
    """
    f, patch = _check_volume_patch(z_factor, patch_shape, spatial_dims, n_val, val_fraction,
                                   foreground, max_tries, seed, factors=factors)
    volumes = [_load(t, f"target {i}", percentiles) for i, t in enumerate(_as_list(targets))]
    target_patch = tuple(p * k for p, k in zip(patch, f, strict=True))
    splits = []
    for i, volume in enumerate(volumes):
        desc = f"{patch} (target {target_patch})"
        _check_fits(volume.data.shape, target_patch, f"target {i}", desc)
        splits.append(split_rows(volume.data.shape[1], target_patch[1], n_val, val_fraction,
                                 f"target {i}", desc))
    check_context_depth([v.data.shape for v in volumes], context_planes,
                        [f"target {i}" for i in range(len(volumes))])
    degraded = f[0] if f[1:] == (1, 1) else f
    scales = [degraded_scale(v, degraded, degradation, percentiles, seed) for v in volumes]
    sampler = SyntheticSampler(volumes, splits, degradation, input_scales=scales, z_factor=f[0],
                               factors=f, patch_shape=patch, foreground=foreground,
                               max_tries=max_tries, slice_wise=spatial_dims == 2,
                               context=context_planes)
    summary = _base_summary("synthetic", volumes, f[0], patch, target_patch, splits, n_val=n_val,
                            val_fraction=val_fraction, percentiles=percentiles, seed=seed)
    summary["degradation"] = degradation.model_dump(mode="json")
    # Pairs sit on the scale a restore of a degraded volume sees (data/input_scale.py).
    summary["input_scale"] = [[round(lo, 6), round(hi, 6)] for lo, hi in scales]
    return build_training_data(sampler, n_val=n_val, seed=seed, warnings=[], summary=summary)


def isotropic_data(volumes, z_factor: int, patch_shape: Sequence[int],
                   degradation: DegradationConfig, *, percentiles=DEFAULT_PERCENTILES,
                   n_val: int = 8, val_fraction: float = 0.1, foreground: float = 0.0,
                   seed: int = 0, max_tries: int = 100) -> TrainingData:
    """Self-supervised 2D pairs from lateral planes of an anisotropic volume.

    After CARE's isotropic reconstruction (Weigert et al. 2018) and vEMDiffuse-a: a
    ``(py * f, px)`` crop of a YX plane (or, for some training crops, of an XY plane) is
    the target, and its slab average by ``f`` along the first axis, with the drawn
    blur and noise, is the ``(py, px)`` input. The trained 2D network is then applied to
    the XZ and YZ planes. Keyword arguments are those of :func:`paired_data`.

    Parameters
    ----------
    volumes
        Anisotropic ZYX volumes, numpy or dask, or a list of them.
    z_factor
        Anisotropy ``f`` (z spacing / lateral spacing), 1..16.
    patch_shape
        ``(py, px)`` on the input grid.
    degradation
        Ranges of blur and noise along the axis playing z.

    Returns
    -------
    TrainingData
        2D pairs (``spatial_dims == 2``).
    """
    factors, patch = _check_common(z_factor, patch_shape, 2, n_val, val_fraction, foreground,
                                   max_tries, seed)
    if factors[1:] != (1, 1):
        raise ValueError(
            "the isotropic source upsamples z only (the lateral planes are its reference), "
            f"not factors {describe_factors(factors)[1:]}: for lateral super-resolution use "
            "the paired or synthetic source")
    f = factors[0]
    vols = [_load(v, f"volume {i}", percentiles) for i, v in enumerate(_as_list(volumes))]
    target_patch = (patch[0] * f, patch[1])
    splits = []
    for i, volume in enumerate(vols):
        desc = f"{patch} (target {target_patch} on YX planes)"
        _check_fits(volume.data.shape, (1, *target_patch), f"volume {i}", desc)
        splits.append(split_rows(volume.data.shape[1], target_patch[0], n_val, val_fraction,
                                 f"volume {i}", desc))
    sampler = IsotropicSampler(vols, splits, degradation, z_factor=f, patch_shape=patch,
                               foreground=foreground, max_tries=max_tries)
    summary = _base_summary("isotropic", vols, f, patch, target_patch, splits, n_val=n_val,
                            val_fraction=val_fraction, percentiles=percentiles, seed=seed)
    summary["degradation"] = degradation.model_dump(mode="json")
    summary["transposed_crops"] = sampler.transposable
    return build_training_data(sampler, n_val=n_val, seed=seed, warnings=[], summary=summary)


def make_training_data(config: TrainingConfig, *, raws=None, targets=None,
                       volumes=None) -> TrainingData:
    """Build the training pairs the config's ``source`` and model ask for.

    A 2D model with the paired, synthetic, noise2void or noise2noise source trains
    slice-wise on single z slices (its z-factor must be 1); a 3D model on volumetric
    patches; the isotropic source on lateral planes.

    Parameters
    ----------
    config
        Training config (source, model dimensionality and z-factor, patch shape,
        validation split, degradation...).
    raws, targets
        Volumes for the paired source (``targets`` alone for the synthetic source).
    volumes
        Anisotropic volumes for the isotropic source; noisy volumes for noise2void; two
        or more acquisitions of one sample for noise2noise.

    Returns
    -------
    TrainingData
        Pairs with ``config.model.spatial_dims`` axes.

    Raises
    ------
    ValueError
        If the source's volumes are missing or do not fit the config.
    """
    model = config.model
    patch = config.resolved_patch_shape()
    common = dict(percentiles=model.percentiles, n_val=config.n_val,
                  val_fraction=config.val_fraction, foreground=config.foreground,
                  seed=config.seed)
    if config.source == "isotropic":
        if volumes is None:
            raise ValueError("the isotropic source needs the anisotropic volume(s)")
        return isotropic_data(volumes, model.z_factor, patch, config.degradation, **common)
    common.update(spatial_dims=model.spatial_dims, context_planes=model.context_planes)
    if config.source in ("noise2void", "noise2noise"):
        from .self_supervised import noise2noise_data, noise2void_data

        if volumes is None:
            raise ValueError(f"the {config.source} source needs the noisy volume(s)")
        if config.source == "noise2void":
            return noise2void_data(volumes, patch, blind_spot=config.blind_spot, **common)
        return noise2noise_data(volumes, patch, **common)
    if config.source == "paired":
        if raws is None or targets is None:
            raise ValueError("the paired source needs raw and target volumes")
        return paired_data(raws, targets, model.z_factor, patch, factors=model.factors,
                           **common)
    if targets is None:
        raise ValueError("the synthetic source needs clean target volumes")
    return synthetic_data(targets, model.z_factor, patch, config.degradation,
                          factors=model.factors, **common)
