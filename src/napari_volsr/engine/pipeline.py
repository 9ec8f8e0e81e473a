"""Whole restore jobs: a model by name on an array, or a file restored into a file."""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .chain import NOT_DISTRIBUTED, get_chain, iter_load_chain, iter_restore_chain, model_list
from .io import format_suffix, read_volume, remove_tree, with_ngff_version, write_volume
from .geometry import describe_factors
from .predict import (
    DEFAULT_OUTPUT_DTYPE,
    RestoreProgress,
    RestoreResult,
    as_volume_array,
    to_output_dtype,
)
from .restore_factors import resolve_z_factor
from .restorers import release
from .tiling import factors_of


def iter_restore_job(data, model, z_factor: int | None = None, *, factors=None,
                     restorer_options=None, spacing=None, origin=None, **restore_kwargs
                     ) -> Generator[RestoreProgress, None, RestoreResult]:
    """Restore ``data`` with a model named by the user; yields a ``load`` stage first.

    The model is loaded once and kept while its files are unchanged
    (``get_restorer(..., cache=True)``); a GPU it ran on is freed afterwards.

    Parameters
    ----------
    data
        ZYX or CZYX numpy or dask array.
    model, z_factor, factors, restorer_options
        As for :func:`~.restorers.get_restorer`; with neither ``z_factor`` nor
        ``factors`` (z, y, x), baselines follow ``spacing`` (z only) and models use
        their own factors. A list of models is a chain, applied one after the other
        (:mod:`~.chain`; ``z_factor`` and ``factors`` are the whole job's).
    spacing, origin, **restore_kwargs
        As for :func:`~.predict.iter_restore`.
    """
    restorers = yield from iter_load_chain(model, z_factor, factors=factors, spacing=spacing,
                                           **(restorer_options or {}))
    try:
        return (yield from iter_restore_chain(data, restorers, spacing=spacing, origin=origin,
                                              **restore_kwargs))
    finally:
        for restorer in restorers:
            release(restorer)


def check_distributable(model) -> None:
    """Refuse a chain of models for dask workers, which restore with one model."""
    if len(model_list(model)) > 1:
        raise ValueError(NOT_DISTRIBUTED)


@dataclass(frozen=True)
class WrittenVolume:
    """What :func:`iter_restore_file` wrote: where, what, and how it was made."""

    path: Path
    result: RestoreResult
    shape: tuple[int, ...]
    dtype: np.dtype
    unit: str | None = None
    note: str = ""

    def describe(self) -> str:
        """One line for people: ``wrote PATH: shape dtype, spacing ... (method xF; plan)``."""
        result = self.result
        spacing = " x ".join(f"{s:g}" for s in result.spacing)
        workers = result.settings.get("workers")
        where = f" on {workers} dask workers" if workers is not None else ""
        unit = f" {self.unit}" if self.unit else ""
        return (f"wrote {self.path}: {self.shape} {self.dtype}, spacing {spacing}{unit} "
                f"({result.settings['method']} {describe_factors(result.factors)}; "
                f"{result.plan}{where}{self.note})")


def is_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zarr store (written block by block)."""
    return format_suffix(Path(path)) in (".zarr", ".ome.zarr")


def check_output_path(input_path, output_path, ngff_version: str | None = None) -> None:
    """Refuse an output that is the input, lies inside it (a zarr store) or contains it.

    Paths are compared resolved, so ``..`` and symbolic links do not hide them. An
    OME-Zarr ``ngff_version`` is refused for outputs that are not zarr.

    Raises
    ------
    ValueError
        Saying which and what to choose instead.
    """
    if ngff_version is not None and not is_zarr(output_path):
        raise ValueError(f"an OME-Zarr version ({ngff_version}) applies to .zarr outputs, "
                         f"not {Path(output_path).name}")
    source, target = Path(input_path).resolve(), Path(output_path).resolve()
    if source == target:
        raise ValueError("the output path equals the input path; choose another output name")
    if source in target.parents:
        raise ValueError(f"the output {output_path} lies inside the input {input_path}: writing "
                         "it would change the input; choose an output outside it")
    if target in source.parents:
        raise ValueError(f"the input {input_path} lies inside the output {output_path}: "
                         "replacing the output would delete the input; choose another output")


def iter_restore_file(input_path, output_path, model="cubic",
                      z_factor: int | None = None, *, factors=None, reference=None,
                      overwrite: bool = False, restorer_options=None, client=None, spec=None,
                      **restore_kwargs) -> Generator[RestoreProgress, None, WrittenVolume]:
    """Read a volume file, restore it and write the result atomically.

    Zarr outputs are streamed: blocks merge into a scratch store beside the output
    (or, with a dask ``client``, workers write the output directly), so memory is
    bounded by the block plan, not the volume. Other formats are written whole to a
    temporary sibling and renamed (:func:`~.io.write_volume`).

    Parameters
    ----------
    input_path, output_path
        Volume files; the output format follows the suffix. An output inside the
        input (a zarr store), or one holding it, is refused (:func:`check_output_path`).
    model, z_factor, factors, restorer_options
        As for :func:`~.restorers.get_restorer` (cached: a batch loads a model once).
        With neither ``z_factor`` nor ``factors``, baselines follow the file's spacing
        (z only). A list of models
        is a chain (:func:`~.chain.iter_restore_chain`): one read, one write; with a
        zarr output each stage streams into a scratch store beside it.
    reference
        Ground truth on the output grid: the result is fitted to it by least squares
        (``a * x + b``) before writing, as 3D-RCAN does.
    overwrite
        Replace an existing output.
    client, spec
        A dask.distributed client and the :class:`~.dask_restore.RestorerSpec` its
        workers build (instead of ``model``): distributed restoration, zarr output.
    **restore_kwargs
        As for :func:`~.predict.iter_restore` (``block_shape``, ``percentiles``,
        ``output_dtype``, ``device``, ``precision``...); ``ngff_version`` of zarr outputs.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    ngff_version = restore_kwargs.pop("ngff_version", None)
    check_output_path(input_path, output_path, ngff_version)
    volume = read_volume(input_path, lazy=True)
    as_volume_array(volume.data)  # refuse 2D images and the like before loading a model
    if client is not None:
        from .dask_restore import iter_restore_to_zarr

        check_distributable(model)
        spec = _resolved_spec(spec, volume.spacing)
        run = {k: v for k, v in restore_kwargs.items() if k not in ("device", "precision")}
        result = yield from iter_restore_to_zarr(input_path, spec, output_path, client,
                                                 overwrite=overwrite, ngff_version=ngff_version,
                                                 **run)
        return WrittenVolume(output_path, result, tuple(result.data.shape), result.data.dtype,
                             volume.unit)
    # Interpolation at z-factor 1 changes nothing, unless the result is fitted to a reference.
    restorers = get_chain(model, z_factor, factors=factors, spacing=volume.spacing, cache=True,
                          allow_identity=reference is not None, **(restorer_options or {}))
    total = [math.prod(f) for f in zip(*(factors_of(r) for r in restorers), strict=True)]
    ground_truth = _reference_volume(reference, volume, total, input_path)
    output_dtype = restore_kwargs.pop("output_dtype", DEFAULT_OUTPUT_DTYPE)
    scratch = []
    if is_zarr(output_path) and ground_truth is None:
        # Named like io.atomic_path's temporaries, so an interrupt's cleanup finds them.
        scratch = [Path(tempfile.mkdtemp(prefix=f".{output_path.name}.",
                                         suffix=".part-merge.zarr", dir=output_path.parent))
                   for _ in restorers]
        restore_kwargs["out_store"] = str(scratch[-1])
        if len(scratch) > 1:
            restore_kwargs["stage_stores"] = [str(p) for p in scratch[:-1]]
    try:
        result = yield from iter_restore_chain(
            volume.data, restorers, spacing=volume.spacing, origin=volume.origin,
            output_dtype="float32" if ground_truth is not None else output_dtype, **restore_kwargs)
        data, note = result.data, ""
        if ground_truth is not None:
            data, note = _fit_to(data, ground_truth.data, output_dtype, volume.data.dtype)
            note = f"; fitted to {Path(reference).name}: {note}"
        out = volume.with_data(data, spacing=result.spacing, origin=result.origin)
        write_volume(output_path, with_ngff_version(out, ngff_version), overwrite=overwrite)
    finally:
        for path in scratch:
            remove_tree(path)
    return WrittenVolume(output_path, result, tuple(data.shape), data.dtype, volume.unit, note)


def _resolved_spec(spec, spacing):
    """``spec`` with a baseline's automatic z-factor from the file's ``spacing``."""
    if spec.factors is not None:
        return spec
    return dataclasses.replace(spec, z_factor=resolve_z_factor(spec.model, spec.z_factor,
                                                               spacing))


def _reference_volume(reference, volume, factors, input_path: Path):
    """The ground truth to fit to (lazy), checked against the output shape; None without one.

    ``factors``: the job's (z, y, x).
    """
    if reference is None:
        return None
    from .evaluate import check_same_shape

    ground_truth = read_volume(reference, lazy=True)
    shape = list(volume.data.shape)
    for axis, f in zip((-3, -2, -1), factors, strict=True):
        shape[axis] *= f
    check_same_shape(shape, ground_truth.data.shape, what=f"the result of {input_path.name}")
    return ground_truth


def _fit_to(restored, ground_truth, output_dtype: str, input_dtype) -> tuple[np.ndarray, str]:
    """Least-squares ``gain * x + offset`` of ``restored`` to ``ground_truth``, converted."""
    from .evaluate import rescale_to

    data, gain, offset = rescale_to(np.asarray(restored), ground_truth)
    return to_output_dtype(data, output_dtype, input_dtype), f"{gain:.6g} * x + {offset:.6g}"
