"""Tiled restoration as a dask graph, for dask.distributed clusters (DESIGN 10)."""

# The block plan is the one iter_restore uses (tiling.plan_restore); each block becomes a
# task that reads its region, runs the restorer and weights the result. Output cells
# (where the same blocks overlap) sum their blocks in plan order, so the result equals
# single-process restoration. Workers build the restorer from a small picklable
# RestorerSpec once per process and keep it.

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import Normalization, percentile_normalization
from .io import (
    VolumeIOError,
    atomic_path,
    check_writable,
    format_suffix,
    ome_zarr_array,
    read_volume,
    with_ngff_version,
)
from .io.zarr import fill_pyramid
from .devices import memory_budget, resolve_device, resolve_precision
from .geometry import output_geometry
from .predict import (
    DEFAULT_OUTPUT_DTYPE,
    RestoreProgress,
    RestoreResult,
    as_volume_array,
    assemble,
    check_output_dtype,
    model_percentiles,
    predict_block,
)
from .tiling import BlockPlan, plan_restore


@dataclass(frozen=True)
class RestorerSpec:
    """What a worker needs to build a restorer itself: cheap to pickle, hashable.

    Attributes
    ----------
    model
        A baseline name (``cubic``...) or a model folder path every worker can read.
    z_factor, factors
        As for :func:`~napari_volsr.engine.restorers.get_restorer` (``factors``: z, y, x).
    device, precision
        Resolved on each worker (``auto``: its GPU if it has one).
    torch_threads
        Intra-op threads per worker (None: torch's default; dask's nanny sets 1).
    options
        Further :class:`~napari_volsr.engine.restorers.NetworkRestorer` options as pairs.
    """

    model: str
    z_factor: int | None = None
    device: str = "auto"
    precision: str = "auto"
    torch_threads: int | None = None
    options: tuple[tuple[str, Any], ...] = ()
    factors: tuple[int, int, int] | None = None

    def __post_init__(self):
        if self.factors is not None:  # a tuple: workers cache restorers by (hashable) spec
            object.__setattr__(self, "factors", tuple(int(f) for f in self.factors))

    def build(self):
        """Load the restorer (on the calling process)."""
        from .restorers import get_restorer

        return get_restorer(self.model, self.z_factor, factors=self.factors,
                            **dict(self.options))


@functools.lru_cache(maxsize=4)
def worker_restorer(spec: RestorerSpec):
    """The restorer of ``spec`` on this process, loaded and moved to its device once."""
    import torch

    from .allocator import bound_heap_growth

    bound_heap_growth()
    if spec.torch_threads:
        torch.set_num_threads(spec.torch_threads)
    restorer = spec.build()
    device = resolve_device(spec.device)
    autocast = resolve_precision(spec.precision, device)
    restorer.prepare(device, autocast)
    return restorer, device, autocast


def _predict_task(raw: np.ndarray, spec: RestorerSpec, plan: BlockPlan, index: tuple[int, ...],
                  norms: list[Normalization]) -> np.ndarray:
    """One block: pad, predict, crop to the write region, weight for blending."""
    block = plan.block(index)
    if any(a or b for a, b in block.pad):
        raw = np.pad(raw, [(0, 0), *block.pad], mode="symmetric")
    restorer, device, autocast = worker_restorer(spec)
    pred = predict_block(raw, norms, restorer, device, autocast, keep=block.crop)
    return pred[(slice(None), *block.crop)] * plan.weight(block)


def _sum_task(cell: tuple[slice, ...], writes: list[tuple[slice, ...]], *preds) -> np.ndarray:
    """Sum the blocks covering ``cell`` (output coordinates), in plan order."""
    shape = tuple(s.stop - s.start for s in cell)
    out = np.zeros((preds[0].shape[0], *shape), dtype=np.float32)
    for write, pred in zip(writes, preds):
        local = tuple(slice(c.start - w.start, c.stop - w.start) for c, w in zip(cell, write))
        out += pred[(slice(None), *local)]
    return out


def _cells(plan: BlockPlan) -> list[list[tuple[int, int, list[int]]]]:
    """Per axis: output intervals covered by one fixed set of blocks, with that set."""
    axes = []
    for axis, scale in enumerate(plan.scale):
        # An aligned last block may reach past the volume; it writes only up to its end.
        stop = plan.shape[axis]
        intervals = [(s * scale, min(s + plan.block_shape[axis], stop) * scale)
                     for s in plan.starts[axis]]
        edges = sorted({e for pair in intervals for e in pair})
        axes.append([
            (lo, hi, [i for i, (a, b) in enumerate(intervals) if a <= lo and hi <= b])
            for lo, hi in itertools.pairwise(edges)
        ])
    return axes


@functools.lru_cache(maxsize=8)
def _worker_volume(path: str):
    return as_volume_array(read_volume(path, lazy=True).data)


def _read_task(path: str, region: tuple[slice, ...]) -> np.ndarray:
    """Read one block region (all channels) of the file ``path`` on a worker.

    Workers open the file themselves: lazy TIFF readers hold locks and cannot travel.
    """
    values = _worker_volume(path)[(slice(None), *region)]
    return np.asarray(values.compute(scheduler="sync") if hasattr(values, "compute") else values)


def restore_graph(source, spec: RestorerSpec, norms: list[Normalization], plan: BlockPlan,
                  n_outputs: int, n_channels: int):
    """Lazy merged network output (C * K, *out_shape), normalised, as a dask array.

    Parameters
    ----------
    source
        A volume file every worker can read (path), or a CZYX numpy/dask array.
    spec
        How workers build the restorer.
    norms
        Per-channel normalisation (input units -> network units).
    plan
        The block plan (as single-process restoration would use).
    n_outputs, n_channels
        Number of restorer outputs K and of channels C.
    """
    import dask
    import dask.array as da

    n_values = n_channels * n_outputs
    predict = dask.delayed(_predict_task, pure=True)
    read = dask.delayed(_read_task, pure=True)
    preds = {}
    for block in plan:
        if isinstance(source, (str, os.PathLike)):
            region = read(str(source), block.read)
        else:
            region = source[(slice(None), *block.read)]
        preds[block.index] = predict(region, spec, plan, block.index, norms)
    writes = {block.index: block.write for block in plan}
    axes = _cells(plan)
    summed = dask.delayed(_sum_task, pure=True)
    grid = np.empty([len(a) for a in axes], dtype=object)
    for pos in np.ndindex(*grid.shape):
        parts = [axes[axis][p] for axis, p in enumerate(pos)]
        cell = tuple(slice(lo, hi) for lo, hi, _ in parts)
        covering = list(itertools.product(*[ids for _, _, ids in parts]))
        value = summed(cell, [writes[i] for i in covering], *[preds[i] for i in covering])
        shape = (n_values, *[hi - lo for lo, hi, _ in parts])
        grid[pos] = da.from_delayed(value, shape, dtype=np.float32)
    return da.block(grid.tolist())


def iter_restore_to_zarr(
    input_path: str | os.PathLike,
    spec: RestorerSpec,
    path: str | os.PathLike,
    client,
    *,
    block_shape: Sequence[int] | str = "auto",
    overlap: Sequence[int] | None = None,
    percentiles=None,
    output_dtype: str = DEFAULT_OUTPUT_DTYPE,
    overwrite: bool = False,
    ngff_version: str | None = None,
) -> Generator[RestoreProgress, None, RestoreResult]:
    """Restore the volume file ``input_path`` on a dask.distributed ``client`` into ``path``.

    Workers read their blocks from ``input_path`` and write their output chunks
    straight into one OME-Zarr store (a temporary sibling of ``path``, renamed when
    complete), so both must be on storage every worker reaches. Yields progress per
    chunk written; closing the generator cancels the work and leaves no partial output.
    ``ngff_version``: as for :func:`~.io.zarr.write_zarr` (None: the input's, else 0.4).

    Returns
    -------
    RestoreResult
        ``outputs["restored"]`` reads the written store lazily.
    """
    import dask
    import dask.array as da

    path = check_writable(path, overwrite)
    if format_suffix(path) not in (".zarr", ".ome.zarr"):
        raise VolumeIOError(f"{path}: distributed restoration writes zarr; name it *.zarr")
    check_output_dtype(output_dtype)
    volume = read_volume(input_path, lazy=True)
    data = as_volume_array(volume.data)
    n_channels = data.shape[0]
    restorer = spec.build()  # on the client too: plan geometry, and fail early on bad models
    percentiles = model_percentiles(restorer, percentiles)
    yield RestoreProgress("normalise", 0, n_channels, "computing percentiles")
    with dask.config.set(scheduler="threads"):  # a strided sample, read here
        norms = [percentile_normalization(data[c], percentiles) for c in range(n_channels)]
    budget = memory_budget(resolve_device(spec.device)) / max(n_channels, 1)
    plan = plan_restore(data.shape[1:], restorer, block_shape, budget, overlap)
    merged = restore_graph(Path(input_path).resolve(), spec, norms, plan, len(restorer.outputs),
                           n_channels)
    restored = assemble(merged, plan, restorer.outputs, norms, output_dtype, data.dtype,
                        channels=volume.channel_axis is not None)["restored"]
    spacing, origin = output_geometry(volume.spacing, volume.origin, plan.factors)
    out = with_ngff_version(volume.with_data(restored, spacing=spacing, origin=origin),
                            ngff_version)
    where = f"{plan.describe()} on {_n_workers(client)} workers"
    yield from _write_on_workers(client, path, out, where)
    yield RestoreProgress("finalise", 1, 1, "done")
    written = da.from_zarr(str(path), component="0")
    settings = {"method": restorer.name, "z_factor": plan.z_factor,
                "factors": list(plan.factors), "block_shape": list(plan.block_shape),
                "halo": list(plan.halo),
                "percentiles": list(percentiles), "workers": _n_workers(client),
                **getattr(restorer, "metadata", {})}
    return RestoreResult({"restored": written}, spacing, origin, plan.z_factor, plan.describe(),
                         norms, settings, plan.factors)


def _write_on_workers(client, path: Path, out, message: str):
    """Write the lazy volume ``out`` into a new OME-Zarr ``path``, one worker task per chunk.

    Yields progress per chunk; the store appears at ``path`` only when complete.
    """
    import dask
    from distributed import as_completed

    futures = []
    try:
        with atomic_path(path) as tmp:
            array = ome_zarr_array(tmp, out)
            # One future per store chunk: workers write disjoint chunks, and each
            # finished one moves the progress bar.
            chunked = out.data.rechunk(array.chunks)
            write = dask.delayed(_write_region, pure=False)
            futures = client.compute([
                write(array, piece, region)
                for piece, region in zip(chunked.to_delayed().ravel(), _chunk_regions(chunked.chunks))
            ])
            for done, future in enumerate(as_completed(futures), start=1):
                future.result()  # raise a worker's error here
                yield RestoreProgress("blocks", done, len(futures), message)
            fill_pyramid(tmp)  # the levels below 0, streamed from what the workers wrote
    except OSError as exc:
        raise VolumeIOError(f"{path}: could not write ({exc.strerror or exc})") from exc
    finally:
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)


def _chunk_regions(chunks: tuple[tuple[int, ...], ...]):
    bounds = [np.cumsum((0, *c)) for c in chunks]
    for pos in itertools.product(*[range(len(c)) for c in chunks]):
        yield tuple(slice(int(b[i]), int(b[i + 1])) for b, i in zip(bounds, pos))


def _write_region(array, values: np.ndarray, region: tuple[slice, ...]) -> None:
    array[region] = values


def _n_workers(client) -> int:
    return len(client.nthreads())


def local_cluster_client(n_workers: int, threads_per_worker: int = 1):
    """A dask.distributed client on a new LocalCluster of ``n_workers`` processes (loopback)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                           processes=True, host="127.0.0.1", dashboard_address=":0")
    return Client(cluster)


# What one local worker process holds besides its blocks: Python, torch, a model.
WORKER_MEMORY = 2**30


def cap_local_workers(requested: int) -> tuple[int, str | None]:
    """The number of local workers to start: ``requested``, capped by cores and memory.

    Returns
    -------
    (int, str or None)
        The number, and a sentence for people when it is less than asked for.
    """
    from .devices import host_memory
    from .text import format_bytes

    cores = os.cpu_count() or 1
    memory = host_memory()
    cap = max(1, min(cores, int(memory // WORKER_MEMORY)))
    if requested <= cap:
        return requested, None
    return cap, (f"{requested} local workers are more than this machine can run ({cores} cores, "
                 f"{format_bytes(memory)} of memory available, about "
                 f"{format_bytes(WORKER_MEMORY)} per worker): starting {cap}")


_SCHEMES = ("tcp", "tls", "inproc", "ucx", "ws", "wss")


def check_scheduler_address(address: str) -> str:
    """Return a dask scheduler address that looks usable, stripped; else a ValueError.

    Accepts ``[scheme://]host:port`` (``tcp://10.0.0.5:8786``, ``node7:8786``,
    ``tls://[::1]:8786``) and ``inproc://...``, schemes as dask.distributed knows them.
    """
    text = str(address).strip()
    scheme, sep, rest = text.rpartition("://")
    example = "give one like tcp://host:8786"
    if not text or (sep and scheme.lower() not in _SCHEMES):
        raise ValueError(f"{address!r} is not a dask scheduler address ({example}; schemes: "
                         f"{', '.join(_SCHEMES)})")
    if scheme.lower() == "inproc":
        return text
    host, port = rest, ""
    if rest.startswith("["):  # [IPv6]:port
        host, _, port = rest[1:].partition("]")
        port = port.removeprefix(":")
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    elif ":" in rest:
        raise ValueError(f"{address!r} is not a dask scheduler address ({example}; an IPv6 "
                         "address goes in brackets: tcp://[::1]:8786)")
    if not host or any(c in host for c in "/ ?#@") or not (port.isdigit() and
                                                           0 < int(port) < 65536):
        raise ValueError(f"{address!r} is not a dask scheduler address ({example}: a host name "
                         "or IP address and a port from 1 to 65535)")
    return text


def torch_threads_per_worker(n_workers: int) -> int:
    """Split this machine's cores among ``n_workers`` local workers."""
    return max(1, (os.cpu_count() or 1) // max(1, n_workers))


def model_spec(model: str, z_factor: int | None, device: str = "auto", precision: str = "auto",
               torch_threads: int | None = None, options: dict | None = None, *,
               factors=None) -> RestorerSpec:
    """A spec that names the model by its absolute folder, so workers need no library.

    ``options`` are :class:`~napari_volsr.engine.restorers.NetworkRestorer` options
    (``flips``...), ignored by baselines. ``factors`` (z, y, x): beside or instead of
    ``z_factor``, as for :func:`~napari_volsr.engine.restorers.get_restorer`.
    """
    from .models import resolve_model_path
    from .restorers import BASELINES

    if model not in BASELINES:
        model = str(Path(resolve_model_path(model)).resolve())
    pairs = tuple(sorted((options or {}).items())) if model not in BASELINES else ()
    return RestorerSpec(model, z_factor, device, precision, torch_threads, pairs, factors)
