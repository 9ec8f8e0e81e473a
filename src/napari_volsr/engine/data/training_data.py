"""TrainingData: fixed validation pairs and the deterministic stream of training batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

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
        The model's z upsampling factor (for isotropic planes: along their first axis).
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
    factors
        Upsampling per axis of the patches (``len == spatial_dims``): ``(fz, fy, fx)``
        for volumes, ``(fy, fx)`` for slice-wise YX planes, ``(f, 1)`` for isotropic
        planes. None (the default) means ``(z_factor, 1, ...)``.
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
    factors: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.factors is None:
            self.factors = (int(self.z_factor),) + (1,) * (int(self.spatial_dims) - 1)
        self.factors = tuple(int(f) for f in self.factors)

    @property
    def target_patch_shape(self) -> tuple[int, ...]:
        """Patch shape on the target grid: each axis times its factor."""
        return tuple(p * f for p, f in zip(self.patch_shape, self.factors, strict=True))

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
