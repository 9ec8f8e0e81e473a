"""Self-supervised denoising sources: Noise2Void (blind spots) and Noise2Noise (pairs)."""

from __future__ import annotations

from collections.abc import Sequence

from .blind_spot import (
    BLIND_SPOT_LABEL,
    NOISE2NOISE_LABEL,
    BlindSpotConfig,
    BlindSpotSampler,
    Noise2NoiseSampler,
)
from .normalization import DEFAULT_PERCENTILES
from .sampling import TrainingData, build_training_data, split_rows
from .sources import (
    _as_list,
    _base_summary,
    _check_fits,
    _check_volume_patch,
    _load,
    check_context_depth,
)


def _splits(volumes, patch, n_val, val_fraction, what: str, context: int) -> list[int]:
    check_context_depth([v.data.shape for v in volumes], context,
                        [f"{what} {i}" for i in range(len(volumes))])
    splits = []
    for i, volume in enumerate(volumes):
        _check_fits(volume.data.shape, patch, f"{what} {i}", str(patch))
        splits.append(split_rows(volume.data.shape[1], patch[1], n_val, val_fraction,
                                 f"{what} {i}", str(patch)))
    return splits


def noise2void_data(volumes, patch_shape: Sequence[int], *, spatial_dims: int = 3,
                    context_planes: int = 0, blind_spot: BlindSpotConfig | None = None, percentiles=DEFAULT_PERCENTILES,
                    n_val: int = 8, val_fraction: float = 0.1, foreground: float = 0.0,
                    seed: int = 0, max_tries: int = 100) -> TrainingData:
    """Blind-spot pairs from noisy volumes alone (Noise2Void with N2V2's masking).

    Every pair is a noisy crop whose stratified masked voxels are replaced (see
    :func:`~napari_volsr.engine.data.blind_spot.blind_spot_mask`); its target is NaN
    except at those voxels, where it holds their noisy value, so losses and validation
    scores count the masked voxels only. Validation pairs are masked the same way, once.
    Keyword arguments are those of :func:`~napari_volsr.engine.data.paired_data`.

    Parameters
    ----------
    volumes
        Noisy ZYX volumes (numpy or dask), or a list of them; noise independent from
        voxel to voxel (or along ``blind_spot.mask_axis`` only).
    patch_shape
        ``(pz, py, px)``, or ``(py, px)`` for slice-wise pairs (``spatial_dims`` 2).
    spatial_dims
        3: volumetric patches; 2: single z slices, masked in the plane.
    context_planes
        2.5D: ``c`` slices each side of the masked centre slice as input channels,
        unmasked; the target is the centre slice's.
    blind_spot
        Masked fraction, replacement and structured mask (default: BlindSpotConfig()).

    Returns
    -------
    TrainingData
        Pairs with ``spatial_dims`` axes and a ``validation_label`` saying what the
        validation PSNR compares.
    """
    blind_spot = BlindSpotConfig() if blind_spot is None else blind_spot
    _, patch = _check_volume_patch(1, patch_shape, spatial_dims, n_val, val_fraction,
                                   foreground, max_tries, seed)
    vols = [_load(v, f"volume {i}", percentiles) for i, v in enumerate(_as_list(volumes))]
    splits = _splits(vols, patch, n_val, val_fraction, "volume", context_planes)
    sampler = BlindSpotSampler(vols, splits, masked_fraction=blind_spot.masked_fraction,
                               replacement=blind_spot.replacement,
                               mask_axis=blind_spot.mask_axis, mask_span=blind_spot.mask_span,
                               z_factor=1, patch_shape=patch, foreground=foreground,
                               max_tries=max_tries, slice_wise=spatial_dims == 2,
                               context=context_planes)
    summary = _base_summary("noise2void", vols, 1, patch, patch, splits, n_val=n_val,
                            val_fraction=val_fraction, percentiles=percentiles, seed=seed)
    summary["blind_spot"] = blind_spot.model_dump(mode="json")
    data = build_training_data(sampler, n_val=n_val, seed=seed, warnings=[], summary=summary)
    data.validation_label = BLIND_SPOT_LABEL
    return data


def noise2noise_data(acquisitions, patch_shape: Sequence[int], *, spatial_dims: int = 3,
                     context_planes: int = 0, percentiles=DEFAULT_PERCENTILES, n_val: int = 8, val_fraction: float = 0.1,
                     foreground: float = 0.0, seed: int = 0,
                     max_tries: int = 100) -> TrainingData:
    """Pairs of two noisy acquisitions of one sample (Noise2Noise, Lehtinen et al. 2018).

    Each pair crops the same place of acquisition ``i`` (input) and ``j`` (target),
    ``i != j`` drawn per patch; both get the same flips and turns. Each acquisition is
    normalised with its own percentiles. The validation PSNR compares the prediction
    with the other (noisy) acquisition, so it is bounded by that noise. Keyword
    arguments are those of :func:`~napari_volsr.engine.data.paired_data`.

    Parameters
    ----------
    acquisitions
        Two or more ZYX volumes of the same shape: the same field of view acquired
        again, registered, with independent noise.
    patch_shape
        ``(pz, py, px)``, or ``(py, px)`` for slice-wise pairs (``spatial_dims`` 2).
    spatial_dims
        3: volumetric patches; 2: single z slices.
    context_planes
        2.5D: ``2c + 1`` slices of acquisition ``i`` as channels, the target the centre
        slice of acquisition ``j``.

    Returns
    -------
    TrainingData
        Pairs with ``spatial_dims`` axes.

    Raises
    ------
    ValueError
        With fewer than two acquisitions or acquisitions of different shapes.
    """
    _, patch = _check_volume_patch(1, patch_shape, spatial_dims, n_val, val_fraction,
                                   foreground, max_tries, seed)
    items = _as_list(acquisitions)
    if len(items) < 2:
        raise ValueError(f"noise2noise needs two or more acquisitions of the same sample, got "
                         f"{len(items)}")
    vols = [_load(v, f"acquisition {i}", percentiles) for i, v in enumerate(items)]
    for i, volume in enumerate(vols[1:], start=1):
        if volume.data.shape != vols[0].data.shape:
            raise ValueError(f"acquisition {i} has shape {volume.data.shape} but acquisition 0 "
                             f"has {vols[0].data.shape}: noise2noise needs acquisitions of the "
                             "same field of view on the same voxel grid")
    splits = _splits(vols[:1], patch, n_val, val_fraction, "acquisition", context_planes)
    sampler = Noise2NoiseSampler(vols, splits, z_factor=1, patch_shape=patch,
                                 foreground=foreground, max_tries=max_tries,
                                 slice_wise=spatial_dims == 2, context=context_planes)
    summary = _base_summary("noise2noise", vols[:1], 1, patch, patch, splits, n_val=n_val,
                            val_fraction=val_fraction, percentiles=percentiles, seed=seed)
    summary.update(n_volumes=len(vols), shapes=[list(v.data.shape) for v in vols],
                   normalization=[[v.norm.low, v.norm.high] for v in vols])
    data = build_training_data(sampler, n_val=n_val, seed=seed, warnings=[], summary=summary)
    data.validation_label = NOISE2NOISE_LABEL
    return data
