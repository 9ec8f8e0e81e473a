"""Scores against references: restored volumes, intensity fits and validation patches."""

from __future__ import annotations

import numpy as np

from .metrics import data_range_of, nrmse, psnr, ssim

# Rows per chunk when fitting, so a large volume is never copied to float64 whole.
_FIT_CHUNK_VOXELS = 2**22


def check_same_shape(result_shape, reference_shape, what: str = "result") -> None:
    """ValueError saying how the shapes differ when they do."""
    result_shape, reference_shape = tuple(result_shape), tuple(reference_shape)
    if result_shape != reference_shape:
        raise ValueError(
            f"{what} {result_shape} and reference {reference_shape} differ in shape: compare "
            "volumes on the same voxel grid (restore with the factors that give the "
            "reference's shape: its depth for the z-factor)"
        )


def compare(result, reference) -> dict[str, float | None]:
    """PSNR (dB), SSIM and NRMSE of ``result`` against ``reference``.

    The data range of PSNR and SSIM is the reference's peak-to-peak range, as NRMSE
    normalises by it too. SSIM is None for volumes thinner than 3 voxels along an axis.

    Parameters
    ----------
    result, reference
        Arrays of the same shape (numpy, or anything ``np.asarray`` reads).

    Returns
    -------
    dict
        ``psnr``, ``ssim``, ``nrmse`` and the ``data_range`` used.
    """
    result, reference = np.asarray(result), np.asarray(reference)
    check_same_shape(result.shape, reference.shape)
    data_range = data_range_of(reference)
    try:
        structural = ssim(result, reference, data_range=data_range)
    except ValueError:
        structural = None
    return {
        "psnr": psnr(result, reference, data_range=data_range),
        "ssim": structural,
        "nrmse": nrmse(result, reference),
        "data_range": data_range,
    }


def _chunks(a, b):
    """Yield matching float64 pieces of two same-shaped arrays, finite voxels only."""
    rows = max(1, _FIT_CHUNK_VOXELS // max(1, int(np.prod(a.shape[1:], dtype=np.int64))))
    for start in range(0, a.shape[0], rows):
        x = np.asarray(a[start : start + rows], dtype=np.float64).ravel()
        y = np.asarray(b[start : start + rows], dtype=np.float64).ravel()
        keep = np.isfinite(x) & np.isfinite(y)
        yield x[keep], y[keep]


def affine_fit(values, reference) -> tuple[float, float]:
    """Gain ``a`` and offset ``b`` minimising ``sum((a * values + b - reference) ** 2)``.

    The ordinary least-squares line, as 3D-RCAN's ``--rescale`` fits its output to the
    ground truth before comparing. Non-finite voxels are ignored; a constant ``values``
    gives ``a = 0`` and ``b`` = the reference's mean.
    """
    check_same_shape(values.shape, reference.shape)
    if values.ndim == 0:
        values, reference = values[None], reference[None]
    n, sum_x, sum_y = 0, 0.0, 0.0
    for x, y in _chunks(values, reference):
        n += x.size
        sum_x += float(x.sum())
        sum_y += float(y.sum())
    if n == 0:
        raise ValueError("cannot fit intensities: no finite voxels in both volumes")
    mean_x, mean_y = sum_x / n, sum_y / n
    # Second pass about the means: the one-pass formula loses precision for large means.
    sxx, sxy = 0.0, 0.0
    for x, y in _chunks(values, reference):
        dx = x - mean_x
        sxx += float(np.dot(dx, dx))
        sxy += float(np.dot(dx, y - mean_y))
    gain = sxy / sxx if sxx > 0 else 0.0
    return gain, mean_y - gain * mean_x


def rescale_to(values, reference) -> tuple[np.ndarray, float, float]:
    """``values`` mapped by :func:`affine_fit` onto ``reference``: (float32 array, a, b)."""
    gain, offset = affine_fit(values, reference)
    fitted = np.asarray(values, dtype=np.float32) * np.float32(gain) + np.float32(offset)
    return fitted, gain, offset


def validation_scores(predictions, pairs) -> dict[str, float]:
    """Mean PSNR (and SSIM where patches allow) of predictions against the pairs' targets.

    Targets may hold NaN where nothing is known (blind-spot validation pairs): PSNR then
    compares the finite voxels only, and SSIM, which needs whole windows, is computed
    only on targets that are finite everywhere.

    Parameters
    ----------
    predictions
        One ``(C, *patch)`` array per pair, normalised.
    pairs
        The (input, target) validation pairs.

    Returns
    -------
    dict
        ``psnr`` (dB) and, when some target allowed it, ``ssim``.
    """
    scores_psnr, scores_ssim = [], []
    for p, (_, target) in zip(predictions, pairs, strict=True):
        prediction, reference = np.asarray(p[0]), np.asarray(target[0])
        known = np.isfinite(reference)
        # Normalised units: the percentiles map to 0 and 1, so the range is 1.
        if not known.all():
            scores_psnr.append(psnr(prediction[known], reference[known], data_range=1.0))
            continue
        scores_psnr.append(psnr(prediction, reference, data_range=1.0))
        if min(reference.shape) >= 3:
            scores_ssim.append(ssim(prediction, reference, data_range=1.0))
    out = {"psnr": float(np.mean(scores_psnr))}
    if scores_ssim:
        out["ssim"] = float(np.mean(scores_ssim))
    return out


def baseline_validation(data) -> dict[str, float] | None:
    """The interpolation baseline's scores on a TrainingData's validation patches.

    ``cubic`` (the prefiltered B-spline on the slab grid) along every upsampled axis of
    the patches (z, y and x of volumes, the first axis of isotropic planes, y and x of
    lateral planes) at the data's factors; without upsampling the input itself. A model
    is worth its training when it scores above this. None when the data has no
    validation patches.
    """
    import torch

    from .interp import upsample

    if not data.validation:
        return None
    inputs = torch.from_numpy(np.stack([pair[0] for pair in data.validation]))
    centre = inputs.shape[1] // 2  # 2.5D inputs: the plane restored sits between its neighbours
    inputs = inputs[:, centre : centre + 1]
    # Data without per-axis factors upsamples the first axis by its z-factor.
    factors = getattr(data, "factors", None) or data.z_factor
    return validation_scores(upsample(inputs, factors, "cubic").numpy(), data.validation)
