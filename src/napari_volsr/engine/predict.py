"""Block-tiled restoration: normalise -> tiles -> restorer -> merge -> undo."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .data import DEFAULT_PERCENTILES, Normalization, percentile_normalization
from .devices import (
    available_memory,
    host_memory,
    memory_budget,
    resolve_device,
    resolve_precision,
)
from .dtypes import (  # noqa: F401  (OUTPUT_DTYPES, output_dtype_for: used from here too)
    DEFAULT_OUTPUT_DTYPE,
    OUTPUT_DTYPES,
    check_output_dtype,
    output_dtype_for,
    output_dtype_of,
    to_output_dtype,
)
from .geometry import output_geometry, validate_factors
from .text import format_bytes
from .tiling import (
    ArrayMerger,
    Block,
    BlockPlan,
    ZarrMerger,
    factors_of,
    plan_restore,
    read_block,
)
from .volume_array import as_volume_array  # noqa: F401  (imported from here by callers)

# Small blocks go through the network several at a time, up to this many padded input
# voxels per call (blocks_per_call).
BATCH_VOXELS = 2**21
MAX_BATCH = 16
# A network spreads one NaN over its receptive field (RCAN's attention: the whole block).
NON_FINITE = ("the volume has NaN or Inf values (or values beyond the float32 range); "
              "replace them first (e.g. numpy.nan_to_num) or crop them away")


class RestoreCancelled(Exception):
    """Raised when ``should_stop`` asked restoration to stop between blocks."""


@dataclass(frozen=True)
class RestoreProgress:
    """One progress record: ``done`` of ``total`` units of ``stage``."""

    stage: str
    done: int
    total: int
    message: str = ""


@dataclass
class RestoreResult:
    """Restored volume(s) and the geometry they live on.

    Attributes
    ----------
    outputs
        ``{"restored": array}`` plus e.g. ``"uncertainty"``; arrays are ZYX (or CZYX
        when the input had channels), numpy or dask (zarr-backed) arrays.
    spacing, origin
        Voxel spacing and first-voxel position of the outputs (slab convention).
    z_factor, factors
        The upsampling of z, and of every axis (z, y, x; default ``(z_factor, 1, 1)``).
    """

    outputs: dict[str, Any]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    z_factor: int
    plan: str
    normalization: list[Normalization] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    factors: tuple[int, int, int] | None = None

    def __post_init__(self):
        if self.factors is None:
            self.factors = (int(self.z_factor), 1, 1)
        self.factors = validate_factors(self.factors)

    @property
    def data(self):
        """The restored volume."""
        return self.outputs["restored"]


class Restorer(Protocol):
    """What the tiled predictor needs from a model (or a baseline).

    ``__call__`` maps a normalised float tensor (B, 1, D, H, W) to
    (B, len(outputs), D * fz, H * fy, W * fx) on the same device, ``factors`` being
    ``(fz, fy, fx)`` (a restorer without it upsamples z by ``z_factor`` only, as
    :func:`~.tiling.factors_of` reads it). A restorer that sets
    ``batchable = True`` gives each batch item the result it would give alone, so
    small blocks may share a call (:func:`blocks_per_call`). A restorer class that sets
    ``accepts_keep = True`` is called as ``restorer(x, keep=...)`` with the output
    region its caller keeps (:func:`call_restorer`), and may leave the rest unfinished.
    """

    name: str
    z_factor: int
    factors: tuple[int, int, int]
    halo: tuple[int, int, int]
    divisor: tuple[int, int, int]
    overlap: tuple[int, int, int]
    outputs: tuple[str, ...]
    bytes_per_voxel: float

    def prepare(self, device, dtype) -> None:
        """Move weights to ``device``; ``dtype`` is the autocast precision or None."""

    def __call__(self, x): ...


def to_output_units(values: np.ndarray, *, norm: Normalization, output: str, output_dtype: str,
                    input_dtype) -> np.ndarray:
    """Undo the normalisation of merged network values and convert to the output dtype."""
    if output == "uncertainty":
        # A standard deviation scales with the span but has no offset.
        return np.asarray(values, dtype=np.float32) * np.float32(norm.span)
    return to_output_dtype(norm.inverse(values), output_dtype, input_dtype)


def predict_block(raw: np.ndarray, norms: list[Normalization], restorer: Restorer, device,
                  autocast_dtype=None, keep: Sequence[slice] | None = None) -> np.ndarray:
    """Run ``restorer`` on one padded block ``raw`` (C, *padded) of input units.

    ``keep``: the part of the output that will be used (e.g. ``block.crop``), if known.

    Returns
    -------
    numpy.ndarray
        Normalised predictions (C * K, *padded output), channel-major, K = outputs;
        outside ``keep`` the values may be unfinished.
    """
    return predict_blocks([raw], norms, restorer, device, autocast_dtype, keep)[0]


def predict_blocks(raws: list[np.ndarray], norms: list[Normalization], restorer: Restorer,
                   device, autocast_dtype=None, keep: Sequence[slice] | None = None
                   ) -> list[np.ndarray]:
    """Run ``restorer`` once on equally shaped padded blocks, stacked along the batch axis.

    ``keep``: the output region used of any of them (:func:`kept_region` of their crops).
    Returns one array per block, as :func:`predict_block` does.
    """
    import torch

    x = np.stack([norm.forward(raw[c]) for raw in raws for c, norm in enumerate(norms)])[:, None]
    if not np.isfinite(x).all():
        raise ValueError(NON_FINITE)
    with torch.inference_mode():
        tensor = torch.from_numpy(x).to(device)
        if autocast_dtype is not None:
            with torch.autocast(device.type, dtype=autocast_dtype):
                pred = call_restorer(restorer, tensor, keep)
        else:
            pred = call_restorer(restorer, tensor, keep)
        pred = pred.float().cpu().numpy()  # (blocks * C, K, *out)
    pred = pred.reshape(len(raws), -1, *pred.shape[2:])
    return list(pred)


def call_restorer(restorer: Restorer, x, keep: Sequence[slice] | None = None):
    """``restorer(x)``, told the kept output region where its class accepts one.

    The flag is read from the class: wrappers that forward unknown attributes to an
    inner restorer (``__getattr__``) would otherwise claim it without taking ``keep``.
    """
    if keep is not None and getattr(type(restorer), "accepts_keep", False):
        return restorer(x, keep=tuple(keep))
    return restorer(x)


def kept_region(blocks: Sequence[Block]) -> tuple[slice, ...]:
    """The bounding box of the crops of equally shaped ``blocks`` (output grid)."""
    return tuple(slice(min(s.start for s in axis), max(s.stop for s in axis))
                 for axis in zip(*(block.crop for block in blocks), strict=True))


def blocks_per_call(plan: BlockPlan, restorer: Restorer, budget: float) -> int:
    """How many blocks one network call takes: 1, or several small ones.

    Per-call costs dominate small blocks on the CPU (oneDNN threads over the batch too,
    and PyTorch convolves small single images with a slower kernel), so blocks are
    stacked up to :data:`BATCH_VOXELS` padded voxels within the memory ``budget``.
    Restorers whose result depends on the call (diffusion draws noise per call) set
    ``batchable = False``.
    """
    if not getattr(restorer, "batchable", False):
        return 1
    voxels = math.prod(plan.max_input_shape())
    fits = int(budget // max(plan.block_bytes(restorer.bytes_per_voxel), 1.0))
    return max(1, min(MAX_BATCH, fits, BATCH_VOXELS // voxels, len(plan)))


def _check_block_fits(plan: BlockPlan, bytes_per_voxel: float, device) -> None:
    """Refuse a requested block shape whose estimate exceeds the memory free on ``device``."""
    need = plan.block_bytes(bytes_per_voxel)
    free = available_memory(device)
    if need > free:
        raise ValueError(
            f"blocks of {'x'.join(map(str, plan.block_shape))} voxels need about "
            f"{need / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB free on {device}: "
            "use block shape 'auto' or smaller blocks"
        )


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def check_result_fits(shape, z_factor, outputs: Sequence[str], output_dtype: str,
                      input_dtype) -> None:
    """Refuse, before any work, a result that cannot be held in the RAM available.

    In-memory restoration holds the merged float32 network values and the outputs in
    their dtype; a lazy input (a dask array) can be far larger than memory.

    Parameters
    ----------
    shape
        CZYX shape of the input.
    z_factor
        The upsampling: an int (z only) or ``(fz, fy, fx)``.
    """
    channels, *spatial = (int(n) for n in shape)
    out_spatial = tuple(n * f for n, f in zip(spatial, validate_factors(z_factor), strict=True))
    voxels = channels * math.prod(out_spatial)
    per_voxel = sum(4 + output_dtype_of(name, output_dtype, input_dtype).itemsize
                    for name in outputs)
    need, free = float(voxels) * per_voxel, host_memory()
    if need > free:
        out_shape = out_spatial if channels == 1 else (channels, *out_spatial)
        raise ValueError(
            f"the result, {out_shape} voxels, needs about {format_bytes(need)} of memory but "
            f"{format_bytes(free)} is available: write it to a zarr store instead (e.g. volsr "
            "restore -o result.zarr), which is streamed block by block, or restore part of it"
        )


def _check_options(output_dtype: str, spacing) -> tuple[float, ...]:
    """Refuse an unknown output dtype or a spacing without three values; return the spacing."""
    check_output_dtype(output_dtype)
    spacing = tuple(spacing) if spacing is not None else (1.0, 1.0, 1.0)
    if len(spacing) != 3:
        raise ValueError(f"spacing needs 3 values (z, y, x), got {spacing}")
    return spacing


def model_percentiles(restorer, percentiles=None) -> tuple[float, float]:
    """The percentiles a restore normalises with: the given ones, else the model's own.

    A model trained with other percentiles than the default must restore with them in
    every door (panel, console, CLI, dask), or its input would be scaled differently
    from its training patches; interpolation uses the default.
    """
    if percentiles is not None:
        return tuple(percentiles)
    own = getattr(getattr(restorer, "config", None), "percentiles", None)
    return tuple(own) if own is not None else tuple(DEFAULT_PERCENTILES)


def iter_restore(
    data,
    restorer: Restorer,
    *,
    spacing=None,
    origin=None,
    block_shape="auto",
    overlap=None,
    percentiles=None,
    output_dtype: str = DEFAULT_OUTPUT_DTYPE,
    device: str = "auto", precision: str = "auto",
    out_store=None,
    should_stop: Callable[[], bool] | None = None, input_dtype=None,
) -> Generator[RestoreProgress, None, RestoreResult]:
    """Restore a volume block by block, yielding progress; returns a RestoreResult.

    Three steps: normalise, run the blocks (:func:`iter_blocks`), assemble the outputs.

    Parameters
    ----------
    data
        ZYX or CZYX numpy or dask array; never modified. Dask input is read block by
        block (percentiles from a strided sample).
    restorer
        A model or the interpolation baseline (see :class:`Restorer`).
    spacing, origin
        Voxel spacing / origin of ``data`` (defaults: ones / zeros).
    block_shape
        ``"auto"`` (largest block within the memory budget, shrunk on out-of-memory)
        or a core block shape in input voxels.
    overlap
        Blending overlap in input voxels; default: the restorer's.
    percentiles
        Low/high percentiles mapped to 0/1, undone after; default: the model's own.
    output_dtype
        ``auto`` (default: the input's dtype where the values fit, rounded and clipped
        to its range, never wrapped; :func:`output_dtype_for`), ``input``, ``float32``
        (every value kept), ``uint8`` or ``uint16`` (clipped).
    device, precision
        Where and how to run (``auto`` = CUDA, MPS, CPU; fp32 on CPUs).
    out_store
        A zarr path or store: merge there instead of in memory (bounded memory); else
        a result larger than the RAM available is refused (:func:`check_result_fits`).
    should_stop
        Polled between blocks; when it returns True, :class:`RestoreCancelled` is raised.
    input_dtype
        What ``auto`` and ``input`` output types follow (default: ``data``'s type).
    """
    from .allocator import bound_heap_growth

    bound_heap_growth()
    volume = as_volume_array(data)
    spacing = _check_options(output_dtype, spacing)
    factors = factors_of(restorer)
    torch_device = resolve_device(device)
    input_dtype = volume.dtype if input_dtype is None else np.dtype(input_dtype)
    autocast_dtype = resolve_precision(precision, torch_device)
    if out_store is None:  # before reading anything: a lazy input may be huge
        check_result_fits(volume.shape, factors, restorer.outputs, output_dtype, input_dtype)
    percentiles = model_percentiles(restorer, percentiles)
    yield RestoreProgress("normalise", 0, volume.shape[0], "computing percentiles")
    norms = [percentile_normalization(volume[c], percentiles) for c in range(volume.shape[0])]
    # Fail before any block for in-memory input (a float64 sum has no temporary array).
    if isinstance(volume, np.ndarray) and not np.isfinite(volume.sum(dtype=np.float64)):
        raise ValueError(NON_FINITE)
    restorer.prepare(torch_device, autocast_dtype)
    plan, merged = yield from iter_blocks(volume, restorer, norms, torch_device, autocast_dtype,
                                          block_shape=block_shape, overlap=overlap,
                                          out_store=out_store, should_stop=should_stop)
    outputs = assemble(merged, plan, restorer.outputs, norms, output_dtype, input_dtype,
                       channels=np.ndim(data) == 4)
    yield RestoreProgress("finalise", 1, 1, "done")
    spacing_out, origin_out = output_geometry(spacing, origin, factors)
    settings = _settings(restorer, plan, percentiles, torch_device, autocast_dtype)
    return RestoreResult(outputs, spacing_out, origin_out, factors[0], plan.describe(), norms,
                         settings, factors)


def _settings(restorer: Restorer, plan: BlockPlan, percentiles, device, autocast_dtype) -> dict:
    """How a restore ran, for the result's metadata."""
    return {
        "method": restorer.name, "z_factor": plan.factors[0], "factors": list(plan.factors),
        "block_shape": list(plan.block_shape), "halo": list(plan.halo),
        "percentiles": list(percentiles), "device": str(device),
        "precision": "fp32" if autocast_dtype is None else str(autocast_dtype).removeprefix("torch."),
        **getattr(restorer, "metadata", {}),
    }


def iter_blocks(volume, restorer: Restorer, norms: list[Normalization], device, autocast_dtype,
                *, block_shape="auto", overlap=None, out_store=None, should_stop=None):
    """Plan, predict and merge every block of a CZYX ``volume``; yield per block.

    With ``block_shape="auto"``, running out of memory plans smaller blocks (a quarter
    of the budget) and starts again, down to blocks of 8 voxels (or the halo).

    Returns
    -------
    (BlockPlan, array)
        The plan used and the merged normalised values (C * K, *out_shape): numpy, or
        the zarr array in ``out_store``.
    """
    auto = isinstance(block_shape, str)
    n_channels, spatial = volume.shape[0], tuple(volume.shape[1:])
    budget = memory_budget(device) / max(n_channels, 1)  # blocks are planned per channel
    n_values = len(restorer.outputs) * n_channels
    while True:
        plan = plan_restore(spatial, restorer, block_shape, budget, overlap)
        if not auto:
            _check_block_fits(plan, restorer.bytes_per_voxel * n_channels, device)
        if out_store is None:
            merger = ArrayMerger(plan, n_values)
        else:
            merger = ZarrMerger(plan, out_store, n_values)
        try:
            yield from _predict_into(merger, volume, restorer, norms, device, autocast_dtype,
                                     blocks_per_call(plan, restorer, budget), should_stop)
            return plan, merger.result()
        except Exception as exc:
            smallest = all(c <= max(8, h) for c, h in zip(plan.block_shape, restorer.halo))
            if not (auto and _is_out_of_memory(exc)) or smallest:
                raise
            if device.type == "cuda":
                import torch

                torch.cuda.empty_cache()
            budget /= 4
            yield RestoreProgress("blocks", 0, len(plan), "out of memory: retrying with smaller blocks")


def _predict_into(merger, volume, restorer: Restorer, norms, device, autocast_dtype, batch: int,
                  should_stop) -> Generator[RestoreProgress, None, None]:
    """Predict the blocks of ``merger.plan``, ``batch`` per network call, and merge them."""
    plan = merger.plan
    blocks = list(plan)
    for start in range(0, len(blocks), batch):
        group = blocks[start : start + batch]
        raws = []
        for block in group:
            if should_stop is not None and should_stop():
                raise RestoreCancelled("restoration cancelled")
            raws.append(read_block(volume, block))
        preds = predict_blocks(raws, norms, restorer, device, autocast_dtype,
                               kept_region(group))
        for i, (block, pred) in enumerate(zip(group, preds, strict=True), start + 1):
            merger.add(block, pred)
            yield RestoreProgress("blocks", i, len(plan), plan.describe())


def output_values(values, norm: Normalization, output: str, output_dtype: str, input_dtype):
    """:func:`to_output_units` on a numpy array, or lazily block by block on a dask array."""
    convert = functools.partial(to_output_units, norm=norm, output=output,
                                output_dtype=output_dtype, input_dtype=input_dtype)
    if hasattr(values, "map_blocks"):
        return values.map_blocks(convert, dtype=output_dtype_of(output, output_dtype, input_dtype))
    return convert(values)


def assemble(merged, plan: BlockPlan, outputs: Sequence[str], norms: list[Normalization],
             output_dtype: str, input_dtype, *, channels: bool) -> dict[str, Any]:
    """Split merged values (C * K, *out_shape) into named outputs in the output units.

    Parameters
    ----------
    merged
        From :func:`iter_blocks`: numpy, or a zarr or dask array (then the outputs are
        dask arrays computed lazily).
    outputs
        The restorer's output names (K of them).
    norms
        One normalisation per channel (C of them), undone here.
    channels
        Keep the channel axis (CZYX input); else the outputs are ZYX.
    """
    lazy = not isinstance(merged, np.ndarray)
    if lazy:
        import dask.array as da

        if not hasattr(merged, "map_blocks"):  # a zarr array, not yet a dask one
            merged = da.from_zarr(merged)
    merged = merged.reshape(len(norms), len(outputs), *plan.out_shape)
    result: dict[str, Any] = {}
    for k, name in enumerate(outputs):
        per_channel = [output_values(merged[c, k], norm, name, output_dtype, input_dtype)
                       for c, norm in enumerate(norms)]
        if not channels:
            result[name] = per_channel[0]
        else:
            result[name] = da.stack(per_channel) if lazy else np.stack(per_channel)
    return result


def drain(generator: Generator):
    """Run a progress generator to its end and return its result."""
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value


def restore(data, restorer: Restorer, **kwargs) -> RestoreResult:
    """Restore a volume; the blocking form of :func:`iter_restore`."""
    return drain(iter_restore(data, restorer, **kwargs))
