"""Image quality metrics: PSNR, SSIM (scikit-image) and NRMSE."""

from __future__ import annotations

import numpy as np


def _pair(prediction, reference) -> tuple[np.ndarray, np.ndarray]:
    prediction = np.asarray(prediction, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if prediction.shape != reference.shape:
        raise ValueError(
            f"prediction {prediction.shape} and reference {reference.shape} differ in shape"
        )
    return prediction, reference


def data_range_of(reference) -> float:
    """Peak-to-peak of the reference (1 for a constant one)."""
    span = float(np.ptp(np.asarray(reference)))
    return span if span > 0 else 1.0


def psnr(prediction, reference, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB; ``data_range`` defaults to the reference's range."""
    prediction, reference = _pair(prediction, reference)
    data_range = data_range_of(reference) if data_range is None else float(data_range)
    mse = float(np.mean((prediction - reference) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)


def ssim(prediction, reference, data_range: float | None = None) -> float:
    """Structural similarity (Wang et al. 2004) over 2D or 3D data, via scikit-image."""
    from skimage.metrics import structural_similarity

    prediction, reference = _pair(prediction, reference)
    data_range = data_range_of(reference) if data_range is None else float(data_range)
    win = min(7, *[n if n % 2 else n - 1 for n in reference.shape])
    if win < 3:
        raise ValueError(f"SSIM needs at least 3 voxels per axis, got {reference.shape}")
    return float(structural_similarity(prediction, reference, data_range=data_range, win_size=win))


def nrmse(prediction, reference) -> float:
    """Root-mean-square error divided by the reference's range."""
    prediction, reference = _pair(prediction, reference)
    return float(np.sqrt(np.mean((prediction - reference) ** 2)) / data_range_of(reference))
