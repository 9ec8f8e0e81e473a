"""Intensity normalisation and training-pair sources (paired, synthetic, isotropic)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .degrade import DegradationConfig, degrade

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


# --------------------------------------------------------------------------------------
# Training pairs (DESIGN 5)
# --------------------------------------------------------------------------------------

# A target voxel counts as foreground above this normalised intensity (3D-RCAN's rule).
FOREGROUND_LEVEL = 0.2
# Training patches drawn at construction to judge foreground before training starts.
_N_PROBE = 16
# Batches use the seed key [seed, step]. SeedSequence pads keys with zeros, so [s, k]
# and [s, k, 0] are the same stream; the fixed sets use a non-zero third word instead.
_VALIDATION_KEY = (0, 1)
_PROBE_KEY = (0, 2)


@dataclass
class TrainingData:
    """Fixed validation pairs plus a deterministic source of augmented training batches.

    Attributes
    ----------
    spatial_dims
        3 for volumetric patches, 2 for planes (isotropic reconstruction).
    z_factor
        Upsampling factor along the first spatial axis.
    patch_shape
        Patch shape on the input grid, ``len == spatial_dims``.
    validation
        Fixed (input, target) pairs, float32 normalised, shapes ``(1, *patch_shape)`` and
        ``(1, *target_patch_shape)``; cropped from a region no training patch touches.
    warnings
        Sentences for the user (misaligned pairs, little foreground).
    summary
        JSON-able description of the data, saved with the model.
    seed
        Seed of the training stream.
    """

    spatial_dims: int
    z_factor: int
    patch_shape: tuple[int, ...]
    validation: list[tuple[np.ndarray, np.ndarray]]
    warnings: list[str]
    summary: dict
    seed: int = 0
    _sample: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def target_patch_shape(self) -> tuple[int, ...]:
        """Patch shape on the target grid: the first axis times ``z_factor``."""
        return (self.patch_shape[0] * self.z_factor, *self.patch_shape[1:])

    def batch(self, step: int, batch_size: int, rank: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Augmented training pairs for one step.

        The random stream is ``np.random.default_rng([seed, step])``: the same step
        always gives the same arrays, so resuming needs no saved RNG state and a
        prefetch thread may compute later steps ahead. Data-parallel replicas other
        than rank 0 draw from ``[seed, step, rank]``, so each sees different pairs.

        Parameters
        ----------
        step
            Training step, ``>= 0``.
        batch_size
            Number of pairs, ``>= 1``.
        rank
            Data-parallel replica (0 when training in one process).

        Returns
        -------
        tuple of numpy.ndarray
            Inputs ``(B, 1, *patch_shape)`` and targets ``(B, 1, *target_patch_shape)``,
            float32.
        """
        if self._sample is None:
            raise RuntimeError("this TrainingData has no sampler; build it with paired_data, "
                               "synthetic_data or isotropic_data")
        if int(step) != step or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size}")
        key = [self.seed, int(step)] + ([int(rank)] if rank else [])
        rng = np.random.default_rng(key)
        pairs = [self._sample(rng) for _ in range(int(batch_size))]
        inputs = np.stack([inp for inp, _ in pairs])[:, None]
        targets = np.stack([tgt for _, tgt in pairs])[:, None]
        return inputs.astype(np.float32, copy=False), targets.astype(np.float32, copy=False)


@dataclass(frozen=True)
class _Volume:
    """A read-only ZYX volume and its normalisation; crops come out normalised."""

    data: np.ndarray
    norm: Normalization

    def crop(self, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
        index = tuple(slice(int(s), int(s) + int(n)) for s, n in zip(start, shape, strict=True))
        return self.norm.forward(self.data[index])


def _as_list(arrays) -> list:
    return list(arrays) if isinstance(arrays, (list, tuple)) else [arrays]


def _load(array, what: str, percentiles) -> _Volume:
    # Random crops with rejection read the volume many times; a lazy (dask) array would
    # recompute chunks for every try, so it is read once. Numpy inputs are not copied,
    # and normalisation happens per crop, so the volume is never modified.
    data = np.asarray(array.compute() if hasattr(array, "compute") else array)
    if data.ndim != 3:
        raise ValueError(f"{what} must be a ZYX volume (3 dimensions), got shape {data.shape}")
    return _Volume(data, percentile_normalization(data, percentiles))


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    if int(value) != value or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value}")
    return int(value)


def _check_common(z_factor, patch_shape, spatial_dims, n_val, val_fraction, foreground,
                  max_tries, seed) -> tuple[int, tuple[int, ...]]:
    f = _check_int("z_factor", z_factor, 1, 16)
    patch = tuple(int(p) for p in patch_shape)
    if len(patch) != spatial_dims or any(p < 1 for p in patch) or patch != tuple(patch_shape):
        raise ValueError(
            f"patch_shape must be {spatial_dims} positive integers, got {tuple(patch_shape)}"
        )
    _check_int("n_val", n_val, 0)
    _check_int("max_tries", max_tries, 1)
    _check_int("seed", seed, 0)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0.0 <= foreground <= 1.0:
        raise ValueError(f"foreground must be a fraction in [0, 1], got {foreground}")
    return f, patch


def _check_fits(shape: tuple[int, ...], need: tuple[int, ...], what: str, patch_desc: str):
    if any(n > s for n, s in zip(need, shape, strict=True)):
        raise ValueError(
            f"patch shape {patch_desc} needs at least {need} voxels but {what} has "
            f"shape {shape}; use a smaller patch"
        )


def _split_rows(n_rows: int, patch_rows: int, n_val: int, val_fraction: float,
                what: str, patch_desc: str) -> int:
    """First row of the validation band at the end of Y (``n_rows`` when there is none).

    The band is ``val_fraction`` of the rows but at least one patch tall, and leaves at
    least one patch height for training.
    """
    if n_val == 0:
        return n_rows
    val_rows = min(max(math.ceil(val_fraction * n_rows), patch_rows), n_rows - patch_rows)
    if val_rows < patch_rows:
        raise ValueError(
            f"{what} has {n_rows} rows along Y, too few to keep validation and training "
            f"patches apart: patch shape {patch_desc} needs at least {2 * patch_rows} rows "
            f"({patch_rows} for validation, {patch_rows} for training); use a smaller "
            "patch, a larger volume, or n_val=0"
        )
    return n_rows - val_rows


def _foreground_fraction(target: np.ndarray) -> float:
    return float(np.mean(target > FOREGROUND_LEVEL))


@dataclass
class _Tally:
    """Foreground bookkeeping while building the fixed sets."""

    crops: int = 0
    hits: int = 0
    patches: int = 0
    failed: int = 0


class _Sampler:
    """Proposes target crops, turns an accepted one into a pair, and augments pairs.

    Subclasses implement ``propose(rng, split) -> (key, target)`` and
    ``finish(key, target, rng) -> (input, target)``; ``split`` is "train" or "val".
    Samplers only read their volumes, so one may serve several threads.
    """

    spatial_dims = 3

    def __init__(self, z_factor: int, patch_shape: tuple[int, ...], foreground: float,
                 max_tries: int):
        self.z_factor = z_factor
        self.patch_shape = patch_shape
        self.foreground = foreground
        self.max_tries = max_tries

    def propose(self, rng, split):  # pragma: no cover - abstract
        raise NotImplementedError

    def finish(self, key, target, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    def draw(self, rng: np.random.Generator, split: str, tally: _Tally | None = None):
        """One pair whose target has enough foreground, or the best of ``max_tries``."""
        best = None
        ok = False
        for _ in range(self.max_tries):
            key, target = self.propose(rng, split)
            fraction = _foreground_fraction(target)
            ok = fraction >= self.foreground
            if tally is not None:
                tally.crops += 1
                tally.hits += ok
            if best is None or fraction > best[0]:
                best = (fraction, key, target)
            if ok:
                break
        if tally is not None:
            tally.patches += 1
            tally.failed += not ok
        _, key, target = best
        return self.finish(key, target, rng)

    def augment(self, rng: np.random.Generator, inp: np.ndarray, tgt: np.ndarray):
        """Flips of Y and X, and 90-degree turns in YX for square patches; z untouched."""
        flips = rng.random(2) < 0.5
        axes = tuple(ax for ax, flip in zip((1, 2), flips, strict=True) if flip)
        if axes:
            inp, tgt = np.flip(inp, axes), np.flip(tgt, axes)
        if self.patch_shape[1] == self.patch_shape[2]:
            k = int(rng.integers(4))
            inp, tgt = np.rot90(inp, k, axes=(1, 2)), np.rot90(tgt, k, axes=(1, 2))
        return np.ascontiguousarray(inp), np.ascontiguousarray(tgt)

    def train_pair(self, rng: np.random.Generator):
        """One augmented training pair (the sampler behind ``TrainingData.batch``)."""
        return self.augment(rng, *self.draw(rng, "train"))


def _choose(rng: np.random.Generator, weights: np.ndarray) -> int:
    return int(rng.choice(len(weights), p=weights)) if len(weights) > 1 else 0


def _region_weights(volumes: list[_Volume], rows: list[tuple[int, int]]) -> np.ndarray:
    # Larger regions give proportionally more patches, so every voxel is about as
    # likely to be seen whichever volume it sits in.
    sizes = np.array([(hi - lo) * v.data.shape[0] * v.data.shape[2]
                      for v, (lo, hi) in zip(volumes, rows, strict=True)], dtype=np.float64)
    return sizes / sizes.sum()


def _bands(volumes: list[_Volume], splits: list[int]):
    """Y row ranges of the training and validation bands, and volume sampling weights."""
    rows = {
        "train": [(0, s) for s in splits],
        "val": [(s, v.data.shape[1]) for s, v in zip(splits, volumes, strict=True)],
    }
    # With n_val=0 the validation bands are empty; they are then never sampled.
    weights = {name: _region_weights(volumes, bands) for name, bands in rows.items()
               if all(hi > lo for lo, hi in bands)}
    return rows, weights


class _VolumeSampler(_Sampler):
    """3D crops of target volumes, train and validation bands split along Y."""

    def __init__(self, targets: list[_Volume], splits: list[int], **kwargs):
        super().__init__(**kwargs)
        self.targets = targets
        self.rows, self.weights = _bands(targets, splits)

    def _target_start(self, rng, split, depth_step: int):
        """Random (volume, start) of a target crop; z starts on multiples of ``depth_step``."""
        i = _choose(rng, self.weights[split])
        lo, hi = self.rows[split][i]
        pz, py, px = self.patch_shape
        f = self.z_factor
        depth, _, width = self.targets[i].data.shape
        z0 = int(rng.integers(0, (depth - pz * f) // depth_step + 1)) * depth_step
        y0 = int(rng.integers(lo, hi - py + 1))
        x0 = int(rng.integers(0, width - px + 1))
        return i, (z0, y0, x0)

    def target_shape(self) -> tuple[int, ...]:
        pz, py, px = self.patch_shape
        return (pz * self.z_factor, py, px)


class _PairedSampler(_VolumeSampler):
    """Raw and target crops at the same place; target z starts on slab boundaries."""

    def __init__(self, raws: list[_Volume], targets: list[_Volume], splits: list[int], **kwargs):
        super().__init__(targets, splits, **kwargs)
        self.raws = raws

    def propose(self, rng, split):
        i, start = self._target_start(rng, split, depth_step=self.z_factor)
        return (i, start), self.targets[i].crop(start, self.target_shape())

    def finish(self, key, target, rng):
        i, (z0, y0, x0) = key
        raw = self.raws[i].crop((z0 // self.z_factor, y0, x0), self.patch_shape)
        return raw, target


class _SyntheticSampler(_VolumeSampler):
    """Target crops anywhere; the input is a fresh synthetic degradation of each."""

    def __init__(self, targets: list[_Volume], splits: list[int],
                 degradation: DegradationConfig, **kwargs):
        super().__init__(targets, splits, **kwargs)
        self.degradation = degradation

    def propose(self, rng, split):
        i, start = self._target_start(rng, split, depth_step=1)
        return (i, start), self.targets[i].crop(start, self.target_shape())

    def finish(self, key, target, rng):
        return degrade(target, self.z_factor, self.degradation, rng, axis=0), target


class _IsotropicSampler(_Sampler):
    """YX-plane crops degraded along their first axis as z was (CARE isotropic).

    A target is ``(py * f, px)``: rows along Y, or, for training crops drawn
    transposed, along X, so both lateral axes take turns playing z.
    """

    spatial_dims = 2

    def __init__(self, volumes: list[_Volume], splits: list[int],
                 degradation: DegradationConfig, **kwargs):
        super().__init__(**kwargs)
        self.volumes = volumes
        self.degradation = degradation
        self.rows, self.weights = _bands(volumes, splits)
        py, px = self.patch_shape
        tall = py * self.z_factor
        # Transposed crops need px training rows and py*f columns.
        self.transposable = [s >= px and v.data.shape[2] >= tall
                             for s, v in zip(splits, volumes, strict=True)]

    def propose(self, rng, split):
        i = _choose(rng, self.weights[split])
        lo, hi = self.rows[split][i]
        volume = self.volumes[i]
        depth, _, width = volume.data.shape
        py, px = self.patch_shape
        tall = py * self.z_factor
        z = int(rng.integers(depth))
        transposed = split == "train" and self.transposable[i] and rng.random() < 0.5
        if transposed:
            y0 = int(rng.integers(lo, hi - px + 1))
            x0 = int(rng.integers(0, width - tall + 1))
            target = volume.crop((z, y0, x0), (1, px, tall))[0].T
        else:
            y0 = int(rng.integers(lo, hi - tall + 1))
            x0 = int(rng.integers(0, width - px + 1))
            target = volume.crop((z, y0, x0), (1, tall, px))[0]
        return (i, z, y0, x0, transposed), np.ascontiguousarray(target)

    def finish(self, key, target, rng):
        return degrade(target, self.z_factor, self.degradation, rng, axis=0), target

    def augment(self, rng, inp, tgt):
        """Flips of either axis, the same for input and target; never a transpose.

        Flipping the degraded axis is safe because the target holds whole slabs.
        """
        flips = rng.random(2) < 0.5
        axes = tuple(ax for ax, flip in zip((0, 1), flips, strict=True) if flip)
        if axes:
            inp, tgt = np.flip(inp, axes), np.flip(tgt, axes)
        return np.ascontiguousarray(inp), np.ascontiguousarray(tgt)


def _foreground_summary(tally: _Tally, foreground: float) -> dict:
    return {
        "threshold": foreground,
        "level": FOREGROUND_LEVEL,
        "crops_tried": tally.crops,
        "crop_pass_rate": tally.hits / max(tally.crops, 1),
        "patches_without_foreground": tally.failed / max(tally.patches, 1),
    }


def _build(sampler: _Sampler, *, n_val: int, seed: int, warnings: list[str],
           summary: dict) -> TrainingData:
    """Draw the fixed validation set and a probe of training patches, then judge foreground."""
    tally = _Tally()
    val_rng = np.random.default_rng([seed, *_VALIDATION_KEY])
    validation = []
    for _ in range(n_val):
        inp, tgt = sampler.draw(val_rng, "val", tally)
        validation.append((inp[None].astype(np.float32), tgt[None].astype(np.float32)))
    probe_rng = np.random.default_rng([seed, *_PROBE_KEY])
    for _ in range(_N_PROBE):
        sampler.draw(probe_rng, "train", tally)

    rule = (f"at least {sampler.foreground:.0%} of target voxels above {FOREGROUND_LEVEL} "
            "(normalised intensity)")
    if tally.hits == 0:
        raise ValueError(
            f"none of {tally.crops} random crops has enough foreground ({rule}); lower "
            "foreground or crop to the sample"
        )
    if tally.failed > tally.patches / 2:
        share = 1 - tally.failed / tally.patches
        warnings.append(
            f"only {share:.0%} of patches have enough foreground ({rule}); the others use "
            f"the best of {sampler.max_tries} crops. Lower foreground or crop to the sample."
        )
    summary["foreground"] = _foreground_summary(tally, sampler.foreground)
    return TrainingData(
        spatial_dims=sampler.spatial_dims,
        z_factor=sampler.z_factor,
        patch_shape=sampler.patch_shape,
        validation=validation,
        warnings=warnings,
        summary=summary,
        seed=seed,
        _sample=sampler.train_pair,
    )


def _base_summary(source: str, volumes: list[_Volume], f: int, patch: tuple[int, ...],
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


def _central_slab(volume: _Volume, start: int, stop: int) -> np.ndarray:
    return volume.crop((start, 0, 0), (stop - start, *volume.data.shape[1:])).mean(axis=0)


def _lateral_shift(raw: _Volume, target: _Volume, z_factor: int) -> tuple[float, float] | None:
    """Lateral displacement (dy, dx) of ``target`` relative to ``raw``, or None if flat.

    Compares the mean of a central slab of at most 8 raw slices with the mean of the
    target slices covering the same depth, so it stays cheap for big volumes.
    """
    from skimage.registration import phase_cross_correlation

    depth = raw.data.shape[0]
    start = max(0, depth // 2 - 4)
    stop = min(depth, start + 8)
    images = []
    for image in (_central_slab(raw, start, stop),
                  _central_slab(target, start * z_factor, stop * z_factor)):
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


def _alignment_warnings(raws: list[_Volume], targets: list[_Volume], z_factor: int) -> list[str]:
    warnings = []
    for i, (raw, target) in enumerate(zip(raws, targets, strict=True)):
        shift = _lateral_shift(raw, target, z_factor)
        if shift is not None and math.hypot(*shift) > 1.0:
            warnings.append(
                f"pair {i}: the target looks shifted by (dy, dx) = ({shift[0]:.1f}, "
                f"{shift[1]:.1f}) pixels from the raw; register the pair first, or the "
                "network learns to move structures instead of restoring them."
            )
    return warnings


def paired_data(raws, targets, z_factor: int, patch_shape: Sequence[int], *,
                percentiles=DEFAULT_PERCENTILES, n_val: int = 8, val_fraction: float = 0.1,
                foreground: float = 0.0, seed: int = 0, max_tries: int = 100) -> TrainingData:
    """Training pairs from registered raw and target volumes.

    Parameters
    ----------
    raws, targets
        ZYX arrays (numpy or dask), or lists of them, pair by pair. Each target has the
        raw's shape (``z_factor=1``) or ``z_factor`` times its depth.
    z_factor
        Upsampling factor along z, 1..16.
    patch_shape
        ``(pz, py, px)`` on the raw grid; target patches are ``(pz * f, py, px)``.
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
        3D pairs; ``warnings`` names pairs that look laterally shifted (> 1 pixel).

    Raises
    ------
    ValueError
        On mismatched shapes, patches that do not fit, volumes too small to hold a
        validation band, or no foreground in any crop.
    """
    f, patch = _check_common(z_factor, patch_shape, 3, n_val, val_fraction, foreground,
                             max_tries, seed)
    raw_list, target_list = _as_list(raws), _as_list(targets)
    if len(raw_list) != len(target_list) or not raw_list:
        raise ValueError(f"need one target per raw volume, got {len(raw_list)} raw and "
                         f"{len(target_list)} target volumes")
    raw_vols = [_load(r, f"raw {i}", percentiles) for i, r in enumerate(raw_list)]
    target_vols = [_load(t, f"target {i}", percentiles) for i, t in enumerate(target_list)]
    splits = []
    for i, (raw, target) in enumerate(zip(raw_vols, target_vols, strict=True)):
        depth, height, width = raw.data.shape
        expected = (depth * f, height, width)
        if target.data.shape != expected:
            raise ValueError(
                f"pair {i}: target shape {target.data.shape} does not match raw shape "
                f"{raw.data.shape} with z_factor {f}; expected {expected} (same Y and X, "
                "depth = raw depth x z_factor)"
            )
        _check_fits(raw.data.shape, patch, f"raw {i}", str(patch))
        splits.append(_split_rows(height, patch[1], n_val, val_fraction, f"raw {i}",
                                  str(patch)))
    warnings = _alignment_warnings(raw_vols, target_vols, f)
    sampler = _PairedSampler(raw_vols, target_vols, splits, z_factor=f, patch_shape=patch,
                             foreground=foreground, max_tries=max_tries)
    summary = _base_summary("paired", target_vols, f, patch, sampler.target_shape(), splits,
                            n_val=n_val, val_fraction=val_fraction, percentiles=percentiles,
                            seed=seed)
    summary["raw_shapes"] = [list(r.data.shape) for r in raw_vols]
    summary["raw_normalization"] = [[r.norm.low, r.norm.high] for r in raw_vols]
    return _build(sampler, n_val=n_val, seed=seed, warnings=warnings, summary=summary)


def synthetic_data(targets, z_factor: int, patch_shape: Sequence[int],
                   degradation: DegradationConfig, *, percentiles=DEFAULT_PERCENTILES,
                   n_val: int = 8, val_fraction: float = 0.1, foreground: float = 0.0,
                   seed: int = 0, max_tries: int = 100) -> TrainingData:
    """Training pairs from clean volumes alone, each input a fresh synthetic degradation.

    A target patch ``(pz * f, py, px)`` is cropped and its input ``(pz, py, px)`` made by
    :func:`~napari_volsr.engine.degrade.degrade` with parameters drawn per patch.
    Keyword arguments are those of :func:`paired_data`.

    Parameters
    ----------
    targets
        Clean (ideally isotropic) ZYX volumes, numpy or dask, or a list of them.
    z_factor
        Upsampling factor along z, 1..16.
    patch_shape
        ``(pz, py, px)`` on the input grid.
    degradation
        Ranges of blur and noise.

    Returns
    -------
    TrainingData
        3D pairs.
    """
    f, patch = _check_common(z_factor, patch_shape, 3, n_val, val_fraction, foreground,
                             max_tries, seed)
    volumes = [_load(t, f"target {i}", percentiles) for i, t in enumerate(_as_list(targets))]
    target_patch = (patch[0] * f, *patch[1:])
    splits = []
    for i, volume in enumerate(volumes):
        desc = f"{patch} (target {target_patch})"
        _check_fits(volume.data.shape, target_patch, f"target {i}", desc)
        splits.append(_split_rows(volume.data.shape[1], patch[1], n_val, val_fraction,
                                  f"target {i}", desc))
    sampler = _SyntheticSampler(volumes, splits, degradation, z_factor=f, patch_shape=patch,
                                foreground=foreground, max_tries=max_tries)
    summary = _base_summary("synthetic", volumes, f, patch, target_patch, splits, n_val=n_val,
                            val_fraction=val_fraction, percentiles=percentiles, seed=seed)
    summary["degradation"] = degradation.model_dump(mode="json")
    return _build(sampler, n_val=n_val, seed=seed, warnings=[], summary=summary)


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
    f, patch = _check_common(z_factor, patch_shape, 2, n_val, val_fraction, foreground,
                             max_tries, seed)
    vols = [_load(v, f"volume {i}", percentiles) for i, v in enumerate(_as_list(volumes))]
    target_patch = (patch[0] * f, patch[1])
    splits = []
    for i, volume in enumerate(vols):
        desc = f"{patch} (target {target_patch} on YX planes)"
        _check_fits(volume.data.shape, (1, *target_patch), f"volume {i}", desc)
        splits.append(_split_rows(volume.data.shape[1], target_patch[0], n_val, val_fraction,
                                  f"volume {i}", desc))
    sampler = _IsotropicSampler(vols, splits, degradation, z_factor=f, patch_shape=patch,
                                foreground=foreground, max_tries=max_tries)
    summary = _base_summary("isotropic", vols, f, patch, target_patch, splits, n_val=n_val,
                            val_fraction=val_fraction, percentiles=percentiles, seed=seed)
    summary["degradation"] = degradation.model_dump(mode="json")
    summary["transposed_crops"] = sampler.transposable
    return _build(sampler, n_val=n_val, seed=seed, warnings=[], summary=summary)
