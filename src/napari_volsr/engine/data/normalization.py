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


# Finite checks read this many voxels at a time, so the mask stays small.
_CHECK_VOXELS = 16_000_000


class NonFiniteError(ValueError):
    """A training volume holds NaN or infinite values; the message names it."""


def count_nonfinite(data: np.ndarray) -> int:
    """NaN and infinite voxels of a numpy array (0 for integer types), block by block."""
    if not np.issubdtype(data.dtype, np.inexact) or data.size == 0:
        return 0
    flat = data.reshape(-1) if data.flags.c_contiguous else data.ravel()
    return sum(int(np.count_nonzero(~np.isfinite(flat[i:i + _CHECK_VOXELS])))
               for i in range(0, flat.size, _CHECK_VOXELS))


def read_finite(array, name: str) -> np.ndarray:
    """``array`` read into memory (numpy, dask, zarr, tensors), refused if not finite.

    Raises
    ------
    NonFiniteError
        Naming the volume and how many voxels are NaN or infinite.
    """
    data = np.asarray(array.compute() if hasattr(array, "compute") else array)
    bad = count_nonfinite(data)
    if bad:
        raise NonFiniteError(
            f"'{name}' holds {bad} NaN or infinite voxel{'s' if bad > 1 else ''} (of "
            f"{data.size}): training needs finite values everywhere; replace them (e.g. with "
            "the volume's minimum) or crop them away, then train again")
    return data


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
