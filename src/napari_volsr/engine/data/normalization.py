"""Percentile intensity normalisation of volumes (numpy or dask)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_PERCENTILES = (1.0, 99.8)
# Percentiles of very big inputs come from a strided sample of about this many voxels.
_SAMPLE_VOXELS = 8_000_000


@dataclass(frozen=True)
class Normalization:
    """Affine map from input units to network units: ``(x - low) / (high - low)``."""

    low: float
    high: float

    @property
    def span(self) -> float:
        """Denominator, never zero: a constant volume maps to 0 without dividing by 0."""
        span = self.high - self.low
        return span if span > 0 else 1.0

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Input units to network units (float32, unclipped)."""
        return ((np.asarray(x, dtype=np.float32) - np.float32(self.low)) / np.float32(self.span))

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Network units back to input units (float32)."""
        return np.asarray(y, dtype=np.float32) * np.float32(self.span) + np.float32(self.low)


def strided_sample(data, max_voxels: int = _SAMPLE_VOXELS) -> np.ndarray:
    """A regular subsample of ``data`` (numpy or dask) with at most ``max_voxels``."""
    size = math.prod(data.shape)
    if size <= max_voxels:
        sample = data
    else:
        step = math.ceil((size / max_voxels) ** (1 / data.ndim))
        sample = data[(slice(None, None, step),) * data.ndim]
    return np.asarray(sample.compute() if hasattr(sample, "compute") else sample)


def percentile_normalization(data, percentiles=DEFAULT_PERCENTILES) -> Normalization:
    """Normalisation mapping the given low/high percentiles of ``data`` to 0 and 1.

    Raises
    ------
    ValueError
        If the percentiles are out of order or the data has no finite value.
    """
    p_low, p_high = (float(p) for p in percentiles)
    if not 0 <= p_low < p_high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    sample = strided_sample(data).astype(np.float64, copy=False)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        raise ValueError("the volume has no finite values (all NaN or Inf)")
    low, high = np.percentile(finite, [p_low, p_high])
    return Normalization(float(low), float(high))
