"""Patch samplers with foreground rejection, the validation split, and TrainingData."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..degrade import DegradationConfig, degrade
from .normalization import Normalization

# A target voxel counts as foreground above this normalised intensity (3D-RCAN's rule).
FOREGROUND_LEVEL = 0.2
# Training patches drawn at construction to judge foreground before training starts.
_N_PROBE = 16
# Batches use the seed key [seed, step]. SeedSequence pads keys with zeros, so [s, k]
# and [s, k, 0] are the same stream; the fixed sets use a non-zero third word instead.
_VALIDATION_KEY = (0, 1)
_PROBE_KEY = (0, 2)
# Completes "validation PSNR ...": the sources with clean targets compare with them.
DEFAULT_VALIDATION_LABEL = "against the target"


@dataclass
class TrainingData:
    """Fixed validation pairs plus a deterministic source of augmented training batches.

    Attributes
    ----------
    spatial_dims
        3 for volumetric patches, 2 for planes (isotropic reconstruction or slice-wise
        restoration).
    z_factor
        Upsampling factor along the first spatial axis.
    patch_shape
        Patch shape on the input grid, ``len == spatial_dims``.
    validation
        Fixed (input, target) pairs, float32 normalised, shapes ``(C, *patch_shape)`` and
        ``(1, *target_patch_shape)``; cropped from a region no training patch touches.
        ``C`` is 1, or ``2c + 1`` planes for a 2.5D model (``context_planes`` c).
    warnings
        Sentences for the user (misaligned pairs, little foreground).
    summary
        JSON-able description of the data, saved with the model.
    seed
        Seed of the training stream.
    validation_label
        What the validation PSNR compares, for people (blind-spot sources compare noisy
        values, not clean ones).
    """

    spatial_dims: int
    z_factor: int
    patch_shape: tuple[int, ...]
    validation: list[tuple[np.ndarray, np.ndarray]]
    warnings: list[str]
    summary: dict
    seed: int = 0
    validation_label: str = DEFAULT_VALIDATION_LABEL
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
            Inputs ``(B, C, *patch_shape)`` (C as in ``validation``) and targets
            ``(B, 1, *target_patch_shape)``, float32.
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
        sd = self.spatial_dims
        inputs = np.stack([_with_channels(inp, sd) for inp, _ in pairs])
        targets = np.stack([_with_channels(tgt, sd) for _, tgt in pairs])
        return inputs.astype(np.float32, copy=False), targets.astype(np.float32, copy=False)


def _with_channels(array: np.ndarray, spatial_dims: int) -> np.ndarray:
    """``array`` with a leading channel axis, unless it has one (2.5D inputs)."""
    return array if array.ndim == spatial_dims + 1 else array[None]


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
                 max_tries: int):
        self.z_factor = z_factor
        self.patch_shape = patch_shape
        self.foreground = foreground
        self.max_tries = max_tries

    def propose(self, rng, split):  # pragma: no cover - abstract
        raise NotImplementedError

    def finish(self, key, target, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def output_patch_shape(self) -> tuple[int, ...]:
        """Input patch shape of the pairs handed out: the last ``spatial_dims`` axes."""
        return self.patch_shape[len(self.patch_shape) - self.spatial_dims:]

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

    def _target_start(self, rng, split, depth_step: int):
        """Random (volume, start) of a target crop; z starts on multiples of ``depth_step``."""
        i = _choose(rng, self.weights[split])
        lo, hi = self.rows[split][i]
        _, py, px = self.patch_shape
        depth, _, width = self.targets[i].data.shape
        z0 = int(rng.integers(0, (depth - self.target_shape()[0]) // depth_step + 1)) * depth_step
        y0 = int(rng.integers(lo, hi - py + 1))
        x0 = int(rng.integers(0, width - px + 1))
        return i, (z0, y0, x0)

    def target_shape(self) -> tuple[int, ...]:
        """Target crop shape: ``(pz * z_factor, py, px)``, plus the context slices."""
        pz, py, px = self.patch_shape
        return (pz * self.z_factor + 2 * self.context, py, px)

    def input_shape(self) -> tuple[int, ...]:
        """Input crop shape: ``(pz, py, px)``, plus the context slices."""
        pz, py, px = self.patch_shape
        return (pz + 2 * self.context, py, px)


class PairedSampler(_VolumeSampler):
    """Raw and target crops at the same place; target z starts on slab boundaries."""

    def __init__(self, raws: list[NormalizedVolume], targets: list[NormalizedVolume],
                 splits: list[int], **kwargs):
        super().__init__(targets, splits, **kwargs)
        self.raws = raws

    def propose(self, rng, split):
        """A target crop in ``split`` whose z start lies on the raw's slab grid."""
        i, start = self._target_start(rng, split, depth_step=self.z_factor)
        return (i, start), self.targets[i].crop(start, self.target_shape())

    def finish(self, key, target, rng):
        """The raw crop under the accepted target crop."""
        i, (z0, y0, x0) = key
        raw = self.raws[i].crop((z0 // self.z_factor, y0, x0), self.input_shape())
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
        """The target's synthetic degradation along z, both on the restore's scale."""
        inp = degrade(target, self.z_factor, self.degradation, rng, axis=0)
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
    return TrainingData(
        spatial_dims=sampler.spatial_dims,
        z_factor=sampler.z_factor,
        patch_shape=sampler.output_patch_shape,
        validation=validation,
        warnings=warnings,
        summary=summary,
        seed=seed,
        _sample=sampler.train_pair,
    )
