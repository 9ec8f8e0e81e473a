"""Patch samplers with foreground rejection, the validation split, and build_training_data."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..degrade import DegradationConfig, degrade
from .normalization import Normalization
# TrainingData lives in its own module; the sources and tests import it from here too.
from .training_data import DEFAULT_VALIDATION_LABEL, TrainingData, _with_channels  # noqa: F401

# A target voxel counts as foreground above this normalised intensity (3D-RCAN's rule).
FOREGROUND_LEVEL = 0.2
# Training patches drawn at construction to judge foreground before training starts.
_N_PROBE = 16
# Batches use the seed key [seed, step]. SeedSequence pads keys with zeros, so [s, k]
# and [s, k, 0] are the same stream; the fixed sets use a non-zero third word instead.
_VALIDATION_KEY = (0, 1)
_PROBE_KEY = (0, 2)


@dataclass(frozen=True)
class NormalizedVolume:
    """A read-only ZYX volume and its normalisation; crops come out normalised."""

    data: np.ndarray
    norm: Normalization

    def crop(self, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
        """The normalised crop of ``shape`` voxels starting at ``start``."""
        index = tuple(slice(int(s), int(s) + int(n)) for s, n in zip(start, shape, strict=True))
        return self.norm.forward(self.data[index])


def split_rows(n_rows: int, patch_rows: int, n_val: int, val_fraction: float,
               what: str, patch_desc: str) -> int:
    """First row of the validation band at the end of Y (``n_rows`` when there is none).

    The band is ``val_fraction`` of the rows but at least one patch tall, and leaves at
    least one patch height for training.

    Raises
    ------
    ValueError
        If ``n_rows`` cannot hold a validation band and a training band of one patch each.
    """
    if n_val == 0:
        return n_rows
    val_rows = min(max(math.ceil(val_fraction * n_rows), patch_rows), n_rows - patch_rows)
    if val_rows < patch_rows:
        raise ValueError(
            f"{what} has {n_rows} rows along Y, too few to keep validation and training "
            f"patches apart: patch shape {patch_desc} needs at least {2 * patch_rows} rows "
            f"({patch_rows} for validation, {patch_rows} for training); use a smaller "
            "patch or a larger volume"
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
    # Slice-wise samplers crop one-slice 3D patches and hand them out as 2D planes.
    slice_wise = False
    # 2.5D: planes each side of a slice-wise patch, handed out as input channels.
    context = 0

    def __init__(self, z_factor: int, patch_shape: tuple[int, ...], foreground: float,
                 max_tries: int, factors: tuple[int, ...] | None = None):
        self.z_factor = z_factor
        self.patch_shape = patch_shape
        self.foreground = foreground
        self.max_tries = max_tries
        # One factor per axis of patch_shape; the z-factor alone means (f, 1, ...).
        self.factors = (tuple(int(f) for f in factors) if factors is not None
                        else (int(z_factor),) + (1,) * (len(patch_shape) - 1))

    def propose(self, rng, split):  # pragma: no cover - abstract
        raise NotImplementedError

    def finish(self, key, target, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def output_patch_shape(self) -> tuple[int, ...]:
        """Input patch shape of the pairs handed out: the last ``spatial_dims`` axes."""
        return self.patch_shape[len(self.patch_shape) - self.spatial_dims:]

    @property
    def output_factors(self) -> tuple[int, ...]:
        """Factors of the axes handed out (slice-wise pairs: ``(fy, fx)``)."""
        return self.factors[len(self.factors) - self.spatial_dims:]

    def as_output(self, inp: np.ndarray, tgt: np.ndarray):
        """A drawn pair with the axes the network sees (subclasses may drop some)."""
        return inp, tgt

    def draw(self, rng: np.random.Generator, split: str, tally: _Tally | None = None):
        """One pair whose target has enough foreground, or the best of ``max_tries``."""
        best = None
        ok = False
        c = self.context
        for _ in range(self.max_tries):
            key, target = self.propose(rng, split)
            # 2.5D targets hold context planes too; only the centre one is restored.
            fraction = _foreground_fraction(target[c : len(target) - c] if c else target)
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
        """Flips of Y and X, and 90-degree turns in YX for square patches; z untouched.

        Targets hold whole blocks of every factor, so flips keep input and target voxels
        over each other. Turns swap Y and X: only when their factors agree.
        """
        flips = rng.random(2) < 0.5
        axes = tuple(ax for ax, flip in zip((1, 2), flips, strict=True) if flip)
        if axes:
            inp, tgt = np.flip(inp, axes), np.flip(tgt, axes)
        if self.patch_shape[1] == self.patch_shape[2] and self.factors[1] == self.factors[2]:
            k = int(rng.integers(4))
            inp, tgt = np.rot90(inp, k, axes=(1, 2)), np.rot90(tgt, k, axes=(1, 2))
        return np.ascontiguousarray(inp), np.ascontiguousarray(tgt)

    def train_pair(self, rng: np.random.Generator):
        """One augmented training pair (the sampler behind ``TrainingData.batch``)."""
        return self.as_output(*self.augment(rng, *self.draw(rng, "train")))


def _choose(rng: np.random.Generator, weights: np.ndarray) -> int:
    return int(rng.choice(len(weights), p=weights)) if len(weights) > 1 else 0


def _region_weights(volumes: list[NormalizedVolume], rows: list[tuple[int, int]]) -> np.ndarray:
    # Larger regions give proportionally more patches, so every voxel is about as
    # likely to be seen whichever volume it sits in.
    sizes = np.array([(hi - lo) * v.data.shape[0] * v.data.shape[2]
                      for v, (lo, hi) in zip(volumes, rows, strict=True)], dtype=np.float64)
    return sizes / sizes.sum()


def _bands(volumes: list[NormalizedVolume], splits: list[int]):
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
    """3D crops of target volumes, train and validation bands split along Y.

    With ``slice_wise`` the patches are one slice thick (``patch_shape[0] == 1``,
    ``z_factor == 1``) and pairs are handed out as 2D planes, the z axis dropped; the
    crops, augmentations and random stream are those of the 3D one-slice patches.
    With ``context`` c > 0 (slice-wise only) crops are ``2c + 1`` slices deep: inputs
    are handed out with the slices as channels, targets as their centre slice.
    """

    def __init__(self, targets: list[NormalizedVolume], splits: list[int], *,
                 slice_wise: bool = False, context: int = 0, **kwargs):
        super().__init__(**kwargs)
        if context and not slice_wise:
            raise ValueError("context planes need slice-wise (2D) patches")
        self.slice_wise = slice_wise
        self.context = int(context)
        self.spatial_dims = 2 if slice_wise else 3
        self.targets = targets
        self.rows, self.weights = _bands(targets, splits)

    def as_output(self, inp, tgt):
        """The pair as the network sees it: slice-wise z dropped, or 2.5D slices as channels."""
        if self.context:
            return inp, tgt[self.context]
        return (inp[0], tgt[0]) if self.slice_wise else (inp, tgt)

    def _target_start(self, rng, split, depth_step=1):
        """Random (volume, start) of a target crop, starting on multiples of ``depth_step``.

        ``depth_step`` is z's step, or one step per axis (z, y, x); rows step from the
        band's first row, which then must lie on the same grid.
        """
        steps = tuple(depth_step) if isinstance(depth_step, tuple) else (depth_step, 1, 1)
        i = _choose(rng, self.weights[split])
        lo, hi = self.rows[split][i]
        tz, ty, tx = self.target_shape()
        depth, _, width = self.targets[i].data.shape
        z0 = int(rng.integers(0, (depth - tz) // steps[0] + 1)) * steps[0]
        if steps[1] == 1:
            y0 = int(rng.integers(lo, hi - ty + 1))
        else:
            y0 = lo + int(rng.integers(0, (hi - lo - ty) // steps[1] + 1)) * steps[1]
        x0 = int(rng.integers(0, (width - tx) // steps[2] + 1)) * steps[2]
        return i, (z0, y0, x0)

    def target_shape(self) -> tuple[int, ...]:
        """Target crop shape: ``(pz * fz, py * fy, px * fx)``, plus the context slices."""
        (pz, py, px), (fz, fy, fx) = self.patch_shape, self.factors
        return (pz * fz + 2 * self.context, py * fy, px * fx)

    def input_shape(self) -> tuple[int, ...]:
        """Input crop shape: ``(pz, py, px)``, plus the context slices."""
        pz, py, px = self.patch_shape
        return (pz + 2 * self.context, py, px)


class PairedSampler(_VolumeSampler):
    """Raw and target crops at the same place; target starts on block boundaries.

    Splits (and so the bands' first rows) are on the target grid, multiples of ``fy``.
    """

    def __init__(self, raws: list[NormalizedVolume], targets: list[NormalizedVolume],
                 splits: list[int], **kwargs):
        super().__init__(targets, splits, **kwargs)
        self.raws = raws

    def propose(self, rng, split):
        """A target crop in ``split`` whose start lies on the raw's block grid."""
        i, start = self._target_start(rng, split, depth_step=self.factors)
        return (i, start), self.targets[i].crop(start, self.target_shape())

    def finish(self, key, target, rng):
        """The raw crop under the accepted target crop."""
        i, start = key
        raw = self.raws[i].crop(tuple(s // f for s, f in zip(start, self.factors, strict=True)),
                                self.input_shape())
        return raw, target


class SyntheticSampler(_VolumeSampler):
    """Target crops anywhere; the input is a fresh synthetic degradation of each."""

    def __init__(self, targets: list[NormalizedVolume], splits: list[int],
                 degradation: DegradationConfig, input_scales=None, **kwargs):
        super().__init__(targets, splits, **kwargs)
        self.degradation = degradation
        # Per volume, the (low, high) a restore's normalisation will see (input_scale).
        self.input_scales = input_scales

    def propose(self, rng, split):
        """A target crop in ``split`` at any z."""
        i, start = self._target_start(rng, split, depth_step=1)
        return (i, start), self.targets[i].crop(start, self.target_shape())

    def finish(self, key, target, rng):
        """The target's synthetic degradation (per axis), both on the restore's scale."""
        if self.factors[1:] == (1, 1):  # z alone: the slab degradation along z
            inp = degrade(target, self.z_factor, self.degradation, rng, axis=0)
        else:
            inp = degrade(target, self.factors, self.degradation, rng, axis=0)
        if self.input_scales is None:
            return inp, target
        from .input_scale import rescale

        scale = self.input_scales[key[0]]
        return rescale(inp, scale), rescale(target, scale)


class IsotropicSampler(_Sampler):
    """YX-plane crops degraded along their first axis as z was (CARE isotropic).

    A target is ``(py * f, px)``: rows along Y, or, for training crops drawn
    transposed, along X, so both lateral axes take turns playing z.
    """

    spatial_dims = 2

    def __init__(self, volumes: list[NormalizedVolume], splits: list[int],
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
        """A ``(py * f, px)`` target from one YX plane, transposed for some training crops."""
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
        """The target's synthetic degradation along its first axis."""
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


def _judge_foreground(tally: _Tally, sampler: _Sampler, warnings: list[str]) -> None:
    """Raise if no crop had foreground; warn if most patches fell back to the best crop."""
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


def build_training_data(sampler: _Sampler, *, n_val: int, seed: int, warnings: list[str],
                        summary: dict) -> TrainingData:
    """Draw the fixed validation set and a probe of training patches, then judge foreground.

    Parameters
    ----------
    sampler
        The source's sampler.
    n_val
        Number of fixed validation pairs.
    seed
        Seed of the validation crops, the probe and the training stream.
    warnings
        Sentences so far; a foreground warning may be appended.
    summary
        Description of the data; ``"foreground"`` (and ``"slice_wise"``) are added.

    Returns
    -------
    TrainingData
        The validation pairs and the sampler's training stream.

    Raises
    ------
    ValueError
        If none of the crops tried has enough foreground.
    """
    tally = _Tally()
    val_rng = np.random.default_rng([seed, *_VALIDATION_KEY])
    validation = []
    for _ in range(n_val):
        inp, tgt = sampler.as_output(*sampler.draw(val_rng, "val", tally))
        sd = sampler.spatial_dims
        validation.append((_with_channels(inp, sd).astype(np.float32),
                           _with_channels(tgt, sd).astype(np.float32)))
    probe_rng = np.random.default_rng([seed, *_PROBE_KEY])
    for _ in range(_N_PROBE):
        sampler.draw(probe_rng, "train", tally)
    _judge_foreground(tally, sampler, warnings)
    summary["foreground"] = _foreground_summary(tally, sampler.foreground)
    if sampler.slice_wise:
        summary["slice_wise"] = True
    if sampler.context:
        summary["context_planes"] = sampler.context
    if any(f > 1 for f in sampler.factors[1:]):
        summary["factors"] = list(sampler.factors)
    return TrainingData(
        spatial_dims=sampler.spatial_dims,
        factors=sampler.output_factors,
        z_factor=sampler.z_factor,
        patch_shape=sampler.output_patch_shape,
        validation=validation,
        warnings=warnings,
        summary=summary,
        seed=seed,
        _sample=sampler.train_pair,
    )
