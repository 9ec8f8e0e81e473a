"""Blind-spot masking (Noise2Void, N2V2, structN2V) and the self-supervised samplers."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .sampling import NormalizedVolume, _VolumeSampler

# The replacement of a masked voxel comes from the (2r+1)^d box around it: 5 x 5 in 2D,
# 5 x 5 x 5 in 3D. A small box keeps the replacement a local estimate of the signal
# (N2V2's median); a large one tends to the patch median and costs more per batch.
NEIGHBOURHOOD_RADIUS = 2
# The training and validation targets hold the noisy value at masked voxels only.
BLIND_SPOT_LABEL = "on blind-spot voxels against their noisy values (no clean data)"
NOISE2NOISE_LABEL = "against the other noisy acquisition"
# Sources that learn from noisy data alone: they denoise on the volume's own grid.
SELF_SUPERVISED_SOURCES = ("noise2void", "noise2noise")


class BlindSpotConfig(BaseModel):
    """Blind-spot masking of the noise2void source (N2V with N2V2's and structN2V's changes).

    Part of ``TrainingConfig`` (``blind_spot``); strict like every config there.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Only masked voxels carry a loss. CAREamics masks 0.2%: about 8 voxels of a 64 x 64
    # patch, a noisy gradient for the few hundred steps a CPU affords. The original N2V
    # masked 64 pixels per 64 x 64 patch (1/64), and its ablations found quality nearly
    # flat up to a few percent, so 1/64 gives 8x the signal per step at no known cost.
    masked_fraction: float = Field(
        1 / 64, gt=0, le=0.25,
        description="Share of voxels masked per patch, one per grid cell (1/64: a voxel in "
        "8 x 8 in 2D, 4 x 4 x 4 in 3D).",
    )
    replacement: Literal["median", "neighbour"] = Field(
        "median", description="What replaces a masked voxel: the median of its 5 x 5 (x 5) "
        "neighbourhood without it (N2V2), or one random neighbour other than itself.",
    )
    mask_axis: Literal["z", "y", "x"] | None = Field(
        None, description="Axis along which the noise is correlated (structN2V): a line of "
        "mask_span voxels through each masked voxel is masked with random values; None: "
        "independent noise.",
    )
    mask_span: int = Field(
        5, ge=3, le=15, description="Length of the structured mask's line, odd, the masked "
        "voxel at its centre.",
    )

    @model_validator(mode="after")
    def _odd_span(self):
        if self.mask_span % 2 == 0:
            raise ValueError(f"mask_span must be odd (the masked voxel at its centre), got "
                             f"{self.mask_span}")
        return self


def check_self_supervised(config: Any) -> None:
    """Raise ValueError when a TrainingConfig's self-supervised source cannot train its model.

    Both sources denoise on the volume's grid (task ``restore``, z-factor 1) with a pixel
    loss (a NaN blind-spot target would poison a GAN's or diffusion model's losses, and
    noisy targets teach them to draw noise); a structured mask along z needs z neighbours.
    """
    from ..config import method_kind
    from ..registry import family_names

    source, model = config.source, config.model
    if source not in SELF_SUPERVISED_SOURCES:
        return
    if model.task != "restore":
        lateral = tuple(model.factors[1:]) != (1, 1)
        raise ValueError(
            f"source '{source}' denoises on the volume's own grid: it trains a model with "
            f"task 'restore' and z_factor 1{', lateral factors 1, 1' if lateral else ''}, "
            f"not task '{model.task}' with "
            + (f"factors {tuple(model.factors)}" if lateral else f"z_factor {model.z_factor}")
        )
    if method_kind(model.family) != "supervised":
        pixel = ", ".join(f for f in family_names() if method_kind(f) == "supervised")
        raise ValueError(
            f"source '{source}' trains with a pixel loss on noisy targets, which a "
            f"{model.family} model cannot learn from: choose one of {pixel}"
        )
    if source == "noise2void" and _adds_its_input(model):
        raise ValueError(
            f"a {model.family} network with an input residual cannot learn blind-spot "
            "denoising: it adds each voxel's own noise back at restore time (the blind spot "
            "hides it only in training); use the unet family without residual (the "
            "noise2void default) or srunet"
        )
    if source == "noise2void" and config.blind_spot.mask_axis == "z" and model.spatial_dims == 2:
        raise ValueError("blind_spot.mask_axis 'z' needs a 3D model: slice-wise (2D) patches "
                         "have no z neighbours")


def _adds_its_input(model: Any) -> bool:
    """Whether the network's output is its input plus a correction (a global residual)."""
    network = model.network
    if network.family == "rcan":  # a global residual whenever channels in == out
        return model.in_channels == model.out_channels
    return bool(getattr(network, "residual", False))


def _cells(n: int, width: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """First voxels and sizes of the cells along one axis, ``width`` wide on average.

    Integer edges at a random phase; the first and last cells may reach past the axis.
    """
    phase = rng.random() * width
    edges = np.floor(np.arange(-1, n / width + 2) * width + phase).astype(np.int64)
    edges = edges[: np.searchsorted(edges, n) + 1]  # the last edge at or past the end
    return edges[:-1], np.diff(edges)


def stratified_coordinates(shape: tuple[int, ...], fraction: float,
                           rng: np.random.Generator) -> np.ndarray:
    """One random voxel per cell of a regular grid, so about ``fraction`` of them.

    The cells are ``fraction ** (-1 / ndim)`` voxels wide on average (integer edges at
    a random phase per axis), so picks are distinct, never bunch up (as in N2V and
    CAREamics), and every voxel is masked with probability ``fraction``: a cell holds
    one pick whatever its size, and picks falling outside the patch are dropped. At
    least one voxel is returned, so a small patch always carries a loss.

    Parameters
    ----------
    shape
        The patch shape (2 or 3 axes).
    fraction
        Share of voxels to mask, in (0, 1).
    rng
        The random stream.

    Returns
    -------
    numpy.ndarray
        ``(n, ndim)`` integer coordinates, distinct.
    """
    size = np.asarray(shape)
    width = max(float(fraction) ** (-1.0 / len(shape)), 1.0)
    cells = [_cells(int(n), width, rng) for n in shape]
    lows = np.meshgrid(*(low for low, _ in cells), indexing="ij")
    sizes = np.meshgrid(*(cell for _, cell in cells), indexing="ij")
    lows = np.stack([a.ravel() for a in lows], axis=1)
    sizes = np.stack([a.ravel() for a in sizes], axis=1)
    coords = lows + np.floor(rng.random(lows.shape) * sizes).astype(np.int64)
    coords = coords[np.all((coords >= 0) & (coords < size), axis=1)]
    if len(coords) == 0:
        coords = np.array([[int(rng.integers(n)) for n in shape]], dtype=np.int64)
    return coords


def neighbour_offsets(ndim: int, radius: int = NEIGHBOURHOOD_RADIUS,
                      line_axis: int | None = None, line_half: int = 0) -> np.ndarray:
    """Offsets of the box around a voxel, without the voxel itself (N2V2).

    With ``line_axis``, the offsets along that axis within ``line_half`` voxels are
    left out too: under structured noise (structN2V) those voxels share the centre's
    noise, so they must not inform its replacement.

    Returns
    -------
    numpy.ndarray
        ``(k, ndim)`` integer offsets, never all zero.
    """
    axes = np.meshgrid(*[np.arange(-radius, radius + 1)] * ndim, indexing="ij")
    offsets = np.stack([a.ravel() for a in axes], axis=1)
    nonzero = np.count_nonzero(offsets, axis=1)
    drop = nonzero == 0
    if line_axis is not None:
        drop |= (nonzero == 1) & (offsets[:, line_axis] != 0) & (
            np.abs(offsets[:, line_axis]) <= line_half)
    return offsets[~drop]


def _neighbourhoods(patch: np.ndarray, coords: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``(n, k)`` values at ``coords + offsets``; NaN where that falls outside the patch."""
    radius = int(np.abs(offsets).max())
    padded = np.pad(patch, radius, constant_values=np.nan)
    strides = np.array(padded.strides) // padded.itemsize
    # Flat indices into the padded copy: one gather instead of per-axis index arrays.
    flat = (coords + radius) @ strides
    return padded.ravel()[flat[:, None] + (offsets @ strides)[None, :]]


def _row_medians(values: np.ndarray) -> np.ndarray:
    """The median of each row's finite values (at least one per row)."""
    ordered = np.sort(values, axis=1)  # NaN sorts last
    count = np.isfinite(values).sum(axis=1)
    rows = np.arange(len(values))
    return 0.5 * (ordered[rows, (count - 1) // 2] + ordered[rows, count // 2])


def _random_neighbours(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One value per row, drawn uniformly among the row's finite values."""
    pick = np.argmax(rng.random(values.shape) * np.isfinite(values), axis=1)
    return values[np.arange(len(values)), pick]


def blind_spot_mask(patch: np.ndarray, rng: np.random.Generator, *, masked_fraction: float,
                    replacement: str = "median", mask_axis: int | None = None,
                    mask_span: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A blind-spot training pair from one noisy patch (Noise2Void with N2V2's changes).

    Stratified voxels are masked (:func:`stratified_coordinates`); each is replaced by
    the median of its neighbourhood without the voxel itself (N2V2, Höck et al. 2022:
    N2V's random neighbour could be the voxel, which lets the network learn the
    identity), or by one random neighbour other than itself. With ``mask_axis``
    (structN2V, Broaddus et al. 2020) the ``mask_span - 1`` voxels on a line through
    each masked voxel along that axis get random values of the patch, so noise
    correlated along the axis cannot leak in; the loss stays on the centres.

    Parameters
    ----------
    patch
        Normalised noisy patch, 2 or 3 axes; not modified.
    rng
        The random stream (the same stream gives the same pair).
    masked_fraction
        Share of voxels masked.
    replacement
        ``"median"`` or ``"neighbour"``.
    mask_axis
        Axis of ``patch`` along which noise is correlated, or None.
    mask_span
        Length of the masked line along ``mask_axis`` (odd, centre included).

    Returns
    -------
    tuple of numpy.ndarray
        The input (``patch`` with masked voxels replaced) and the target: the noisy
        value at masked centres and NaN everywhere else.
    """
    if replacement not in ("median", "neighbour"):
        raise ValueError(f"replacement must be 'median' or 'neighbour', got {replacement!r}")
    patch = np.asarray(patch, dtype=np.float32)
    coords = stratified_coordinates(patch.shape, masked_fraction, rng)
    half = int(mask_span) // 2 if mask_axis is not None else 0
    offsets = neighbour_offsets(patch.ndim, line_axis=mask_axis, line_half=half)
    size = np.asarray(patch.shape)
    values = _neighbourhoods(patch, coords, offsets)
    replaced = (_row_medians(values) if replacement == "median"
                else _random_neighbours(values, rng))
    inputs = patch.copy()
    if mask_axis is not None:
        line = np.concatenate([coords + k * np.eye(patch.ndim, dtype=np.int64)[mask_axis]
                               for k in range(-half, half + 1) if k])
        line = line[np.all((line >= 0) & (line < size), axis=1)]
        inputs[tuple(line.T)] = patch.ravel()[rng.integers(patch.size, size=len(line))]
    centres = tuple(coords.T)
    inputs[centres] = replaced  # after the lines: a centre on another's line stays blind
    target = np.full_like(patch, np.nan)
    target[centres] = patch[centres]
    return inputs, target


class BlindSpotSampler(_VolumeSampler):
    """Noisy crops anywhere; each pair is the crop blind-spot masked (Noise2Void).

    Masking happens before augmentation, on the crop as the volume holds it, so a
    structured mask follows the volume's axis whatever flip or turn comes after.
    Slice-wise crops are masked as 2D planes (neighbours in the same slice only); with
    context slices only the centre slice is masked, so the network sees the neighbouring
    slices as they are (their noise is independent of the centre's).
    """

    def __init__(self, volumes: list[NormalizedVolume], splits: list[int], *,
                 masked_fraction: float, replacement: str, mask_axis: str | None,
                 mask_span: int, **kwargs):
        super().__init__(volumes, splits, **kwargs)
        self.masked_fraction = masked_fraction
        self.replacement = replacement
        self.mask_span = mask_span
        if mask_axis is not None and self.slice_wise and mask_axis == "z":
            raise ValueError("mask_axis 'z' needs 3D patches: slice-wise patches have no z "
                             "neighbours")
        self.mask_axis = None if mask_axis is None else "zyx".index(mask_axis) - (
            3 - self.spatial_dims)

    def propose(self, rng, split):
        """A noisy crop in ``split`` at any z."""
        i, start = self._target_start(rng, split, depth_step=1)
        return (i, start), self.targets[i].crop(start, self.target_shape())

    def finish(self, key, target, rng):
        """The masked crop and its NaN-elsewhere target."""
        c = self.context
        plane = target[c] if self.slice_wise else target
        inputs, blind = blind_spot_mask(plane, rng, masked_fraction=self.masked_fraction,
                                        replacement=self.replacement, mask_axis=self.mask_axis,
                                        mask_span=self.mask_span)
        if not self.slice_wise:
            return inputs, blind
        stack, blinds = target.astype(np.float32), np.full_like(target, np.nan, np.float32)
        stack[c], blinds[c] = inputs, blind
        return stack, blinds


class Noise2NoiseSampler(_VolumeSampler):
    """The same crop of two different acquisitions: input one, target the other.

    All acquisitions share one shape, so crops are placed on the first and cut from
    the pair drawn for each patch.
    """

    def __init__(self, acquisitions: list[NormalizedVolume], splits: list[int], **kwargs):
        super().__init__(acquisitions[:1], splits[:1], **kwargs)
        self.acquisitions = acquisitions

    def propose(self, rng, split):
        """A crop in ``split`` of a random target acquisition; the key names the input's."""
        _, start = self._target_start(rng, split, depth_step=1)
        i, j = (int(k) for k in rng.choice(len(self.acquisitions), 2, replace=False))
        return (i, start), self.acquisitions[j].crop(start, self.target_shape())

    def finish(self, key, target, rng):
        """The input acquisition's crop at the same place."""
        i, start = key
        return self.acquisitions[i].crop(start, self.input_shape()), target
