"""The intensity scale a restore will see: percentiles of a degraded copy of a clean volume.

A restore normalises its (noisy, blurred, anisotropic) input by that input's own
percentiles, and noise widens them: a FIB-SEM volume at 30 photons has its 1 / 99.8 %
percentiles at 0.02 / 1.25 of the clean volume's. Synthetic pairs are degraded from
clean crops normalised by the clean percentiles, so without correction the network
trains on inputs 1.3 (peak 30) to 1.7 (peak 10) times wider than those it restores.
Mapping each training pair by the degraded copy's percentiles puts training on the
scale the restore uses; the target follows the same map, so outputs mapped back by the
input's percentiles land in the clean volume's intensities.
"""

from __future__ import annotations

import math

import numpy as np

from ..degrade import DegradationConfig, degrade
from .sampling import NormalizedVolume

# Voxels degraded to estimate the scale: plenty for two percentiles, cheap for any volume.
_SAMPLE_VOXELS = 4_000_000


def _middle(config: DegradationConfig) -> DegradationConfig:
    """The degradation at the middle of every range (geometric for photon counts)."""
    values = {}
    for name in ("blur_sigma", "lateral_blur_sigma", "gaussian_sigma"):
        low, high = getattr(config, name)
        values[name] = ((low + high) / 2,) * 2
    if config.poisson_peak is not None:
        low, high = config.poisson_peak
        values["poisson_peak"] = (math.sqrt(low * high),) * 2
    return config.model_copy(update=values)


def _sample(volume: NormalizedVolume, factors: tuple[int, int, int]) -> np.ndarray:
    """A central crop of at most ``_SAMPLE_VOXELS`` voxels, whole blocks along every axis."""
    shape = np.array(volume.data.shape)
    scale = min(1.0, (_SAMPLE_VOXELS / shape.prod()) ** (1 / 3))
    size = np.maximum(np.round(shape * scale).astype(int), 1)
    for axis, f in enumerate(factors):
        size[axis] = max(f, size[axis] // f * f)
    size = np.minimum(size, shape)
    start = (shape - size) // 2
    return volume.crop(start, size)


def degraded_scale(volume: NormalizedVolume, z_factor, degradation: DegradationConfig,
                   percentiles, seed: int = 0) -> tuple[float, float]:
    """Percentiles ``(low, high)``, in the volume's normalised units, of its degraded copy.

    Parameters
    ----------
    volume
        A clean volume with its normalisation.
    z_factor
        Slab thickness of the degradation along z, or its factors ``(fz, fy, fx)``.
    degradation
        Ranges of blur and noise; their middle values are used.
    percentiles
        The model's normalisation percentiles (what a restore computes).
    seed
        Seed of the noise draw.

    Returns
    -------
    tuple of float
        ``(0.0, 1.0)`` when the degraded copy is flat.
    """
    factors = (tuple(int(f) for f in z_factor) if isinstance(z_factor, (tuple, list))
               else (int(z_factor), 1, 1))
    sample = _sample(volume, factors)
    if any(n < f for n, f in zip(sample.shape, factors, strict=True)):
        return 0.0, 1.0
    degraded = degrade(sample, factors, _middle(degradation), np.random.default_rng(seed))
    low, high = (float(v) for v in np.percentile(degraded, percentiles))
    if not high - low > 1e-6:
        return 0.0, 1.0
    return low, high


def rescale(array: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """``array`` mapped so that ``scale`` becomes ``(0, 1)`` (float32)."""
    low, high = scale
    return ((array - np.float32(low)) / np.float32(high - low)).astype(np.float32, copy=False)
