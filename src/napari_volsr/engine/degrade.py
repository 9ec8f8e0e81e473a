"""Synthetic degradations that turn clean patches into low-resolution, noisy inputs."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy import ndimage

# Bounds keep typos (a sigma of 300 voxels, a peak of 1e9 photons) from passing silently.
_Sigma = Annotated[float, Field(ge=0.0, le=64.0)]
_Peak = Annotated[float, Field(gt=0.0, le=1e6)]
_NoiseSigma = Annotated[float, Field(ge=0.0, le=10.0)]


def _axis_index(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {ndim} dimensions")
    return axis % ndim


def slab_downsample(volume, z_factor: int, axis: int = 0) -> np.ndarray:
    """Average each run of ``z_factor`` consecutive slices along ``axis``.

    This is the slab model of DESIGN 3: input slice ``i`` is the thick section covering
    output slices ``i*f .. i*f+f-1``. Trailing slices that do not fill a whole slab
    (``n % f`` of them) are cropped off the end.

    Parameters
    ----------
    volume
        Array of any dimensionality (numpy or array-like).
    z_factor
        Integer slab thickness ``f >= 1``.
    axis
        Axis to downsample.

    Returns
    -------
    numpy.ndarray
        float32, with ``n // f`` entries along ``axis``.

    Raises
    ------
    ValueError
        If ``z_factor`` is not a positive integer or the axis is shorter than one slab.
    """
    if int(z_factor) != z_factor or z_factor < 1:
        raise ValueError(f"z_factor must be an integer >= 1, got {z_factor}")
    f = int(z_factor)
    data = np.asarray(volume)
    axis = _axis_index(axis, data.ndim)
    n_out = data.shape[axis] // f
    if n_out == 0:
        raise ValueError(
            f"axis {axis} has {data.shape[axis]} entries, fewer than one slab of {f}"
        )
    index = [slice(None)] * data.ndim
    index[axis] = slice(0, n_out * f)
    cropped = data[tuple(index)]
    split = data.shape[:axis] + (n_out, f) + data.shape[axis + 1 :]
    # Accumulate in float64: sums of a few float32 values are then exact, so the
    # result does not depend on the order of the slices (flips commute with this).
    return cropped.reshape(split).mean(axis=axis + 1, dtype=np.float64).astype(np.float32)


def downsample(volume, factors) -> np.ndarray:
    """Area (slab) downsampling: the mean of each block of ``factors`` voxels.

    :func:`slab_downsample` applied to every axis whose factor is above 1: output voxel
    ``i`` along an axis with factor ``f`` covers input voxels ``i*f .. i*f+f-1`` (the slab
    convention of DESIGN 3 on every upsampled axis). Trailing voxels that do not fill a
    whole block are cropped off the end of each axis.

    Parameters
    ----------
    volume
        Array-like with one axis per factor.
    factors
        One integer ``>= 1`` per axis of ``volume``, e.g. ``(fz, fy, fx)``.

    Returns
    -------
    numpy.ndarray
        float32, ``n // f`` entries along each axis.

    Raises
    ------
    ValueError
        If the factors do not match the axes, are not positive integers, or an axis is
        shorter than one block.
    """
    data = np.asarray(volume)
    factors = tuple(factors)
    if len(factors) != data.ndim:
        raise ValueError(f"factors {factors} need one value per axis of an array with "
                         f"{data.ndim} dimensions")
    for f in factors:
        if isinstance(f, bool) or int(f) != f or f < 1:
            raise ValueError(f"factors must be integers >= 1, got {factors}")
    factors = tuple(int(f) for f in factors)
    counts = tuple(n // f for n, f in zip(data.shape, factors, strict=True))
    for axis, (n, f) in enumerate(zip(data.shape, factors, strict=True)):
        if n < f:
            raise ValueError(f"axis {axis} has {n} entries, fewer than one block of {f}")
    cropped = data[tuple(slice(0, c * f) for c, f in zip(counts, factors, strict=True))]
    split = tuple(v for c, f in zip(counts, factors, strict=True) for v in (c, f))
    # One mean over every block, accumulated in float64 as slab_downsample does (exact
    # for a few float32 values, so flips commute with it).
    blocks = tuple(range(1, 2 * data.ndim, 2))
    return cropped.reshape(split).mean(axis=blocks, dtype=np.float64).astype(np.float32)


def blur(volume, sigma) -> np.ndarray:
    """Gaussian blur (float32), ``sigma`` in voxels, a scalar or one value per axis.

    Borders are reflected, so a blurred patch keeps its mean near the edges.
    """
    data = np.asarray(volume, dtype=np.float32)
    sigmas = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (data.ndim,))
    if (sigmas < 0).any():
        raise ValueError(f"sigma must be non-negative, got {sigma}")
    if not sigmas.any():
        return data.copy()
    return ndimage.gaussian_filter(data, sigma=tuple(sigmas), mode="reflect")


def add_noise(
    volume,
    rng: np.random.Generator,
    poisson_peak: float | None = None,
    gaussian_sigma: float | None = None,
) -> np.ndarray:
    """Shot noise then read noise, on data normalised to about 0..1.

    Parameters
    ----------
    volume
        Normalised data; 1.0 is a bright voxel.
    rng
        Source of randomness.
    poisson_peak
        Photons collected at intensity 1.0. The data is scaled by it, Poisson-sampled and
        scaled back, so the variance is ``value / poisson_peak`` in normalised units.
        Negative values (below the low percentile) carry no photons and pass unchanged.
    gaussian_sigma
        Standard deviation of additive Gaussian noise, in normalised units.

    Returns
    -------
    numpy.ndarray
        A new float32 array; the input is not modified.
    """
    data = np.asarray(volume, dtype=np.float32)
    out = data.copy()
    if poisson_peak is not None:
        if poisson_peak <= 0:
            raise ValueError(f"poisson_peak must be positive, got {poisson_peak}")
        positive = np.maximum(data, 0.0)
        counts = rng.poisson(positive.astype(np.float64) * poisson_peak)
        out = (counts / poisson_peak + (data - positive)).astype(np.float32)
    if gaussian_sigma:
        if gaussian_sigma < 0:
            raise ValueError(f"gaussian_sigma must be non-negative, got {gaussian_sigma}")
        out += rng.normal(0.0, gaussian_sigma, size=out.shape).astype(np.float32)
    return out


class DegradationConfig(BaseModel):
    """Ranges from which each patch draws its own degradation (SemSR's multi-degradation).

    Every range is ``(low, high)``; each call of :func:`degrade` draws a value uniformly
    in it, so a network sees a family of degradations rather than one.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    blur_sigma: tuple[_Sigma, _Sigma] = Field(
        (0.0, 0.0),
        description="Gaussian sigma (target voxels) along the degraded axis (every axis "
        "with a factor above 1), applied before slab averaging: the PSF beyond the slab "
        "itself.",
    )
    lateral_blur_sigma: tuple[_Sigma, _Sigma] = Field(
        (0.0, 0.0),
        description="Gaussian sigma (voxels) along the other axes. Keep 0 for isotropic "
        "reconstruction, where lateral axes already carry the real lateral blur.",
    )
    poisson_peak: tuple[_Peak, _Peak] | None = Field(
        None,
        description="Photons at normalised intensity 1.0 for Poisson noise; None: no "
        "shot noise. Lower is noisier.",
    )
    gaussian_sigma: tuple[_NoiseSigma, _NoiseSigma] = Field(
        (0.0, 0.0),
        description="Standard deviation of additive Gaussian noise, normalised units.",
    )

    @field_validator("blur_sigma", "lateral_blur_sigma", "poisson_peak", "gaussian_sigma")
    @classmethod
    def _ordered(cls, value, info):
        if value is not None and value[0] > value[1]:
            raise ValueError(
                f"{info.field_name} must be a (low, high) range with low <= high, got {value}"
            )
        return value


# The one set of default degradations, per data source (every door starts from these).
# synthetic: clean volumes need a simulated acquisition; a little axial blur and read
# noise keep z-factor 1 (denoising/deblurring) meaningful and make the network robust
# to both. isotropic: the slab average of f planes is the degradation (the recipe
# measured on the EM volume); axial blur and noise stay opt-in. paired: none is used.
DEFAULT_DEGRADATION = {
    "synthetic": {"blur_sigma": (0.0, 1.0), "gaussian_sigma": (0.0, 0.03)},
    "isotropic": {},
    "paired": {},
}
# Photons at intensity 1.0 (from, to) offered when Poisson noise is switched on.
DEFAULT_POISSON_PEAK = (20.0, 200.0)


def default_degradation(source: str) -> DegradationConfig:
    """The default degradation ranges of a data source (``paired`` uses none).

    Parameters
    ----------
    source
        ``paired``, ``synthetic`` or ``isotropic``.

    Returns
    -------
    DegradationConfig
        A new config; ``TrainingConfig`` uses it when no degradation is given.
    """
    if source not in DEFAULT_DEGRADATION:
        raise ValueError(f"source must be one of {', '.join(DEFAULT_DEGRADATION)}, got "
                         f"{source!r}")
    return DegradationConfig(**DEFAULT_DEGRADATION[source])


def _draw(value_range, rng: np.random.Generator) -> float:
    low, high = value_range
    # Always consume one draw so the random stream does not depend on which ranges
    # are degenerate; that keeps batches reproducible across config edits.
    return float(rng.uniform(low, high))


def degrade(
    target,
    z_factor,
    config: DegradationConfig,
    rng: np.random.Generator,
    axis: int = 0,
) -> np.ndarray:
    """Make a synthetic low-resolution input for one clean ``target`` patch.

    Draws this patch's parameters from ``config``, then blurs (``blur_sigma`` along
    ``axis``, ``lateral_blur_sigma`` along the others), slab-averages ``z_factor``
    slices along ``axis`` (:func:`slab_downsample`), or area-averages every axis by its
    factor (:func:`downsample`), and adds Poisson then Gaussian noise.

    Parameters
    ----------
    target
        Normalised clean patch (2D or 3D).
    z_factor
        Slab thickness ``f``: the result has ``n // f`` entries along ``axis``. Or one
        factor per axis of ``target`` (e.g. ``(fz, fy, fx)``): each axis is
        area-averaged by its own, ``blur_sigma`` blurs the axes with a factor above 1
        and ``lateral_blur_sigma`` the others.
    config
        Parameter ranges.
    rng
        Source of randomness for the parameters and the noise.
    axis
        The axis playing z.

    Returns
    -------
    numpy.ndarray
        float32 degraded patch.
    """
    data = np.asarray(target, dtype=np.float32)
    axis = _axis_index(axis, data.ndim)
    sigma_axial = _draw(config.blur_sigma, rng)
    sigma_lateral = _draw(config.lateral_blur_sigma, rng)
    peak = _draw(config.poisson_peak, rng) if config.poisson_peak is not None else None
    noise_sigma = _draw(config.gaussian_sigma, rng)

    sigmas = [sigma_lateral] * data.ndim
    sigmas[axis] = sigma_axial
    if isinstance(z_factor, (tuple, list)) and max(z_factor) > 1:
        # The PSF beyond the slab belongs to every degraded axis: y and x for lateral
        # super-resolution, not a z that the model is not asked to upsample.
        sigmas = [sigma_axial if f > 1 else sigma_lateral for f in z_factor]
    blurred = blur(data, sigmas) if any(sigmas) else data
    if isinstance(z_factor, (tuple, list)):
        low_res = downsample(blurred, z_factor)
    else:
        low_res = slab_downsample(blurred, z_factor, axis=axis)
    return add_noise(low_res, rng, poisson_peak=peak, gaussian_sigma=noise_sigma or None)
