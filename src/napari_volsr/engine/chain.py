"""Chains of models run as one restore job: e.g. a denoiser, then an isotropic model.

A chain runs stage by stage: each model restores the whole volume before the next one
starts, and each normalises what it is given, so a chain gives what restoring with the
first model and then restoring that result with the second would (float32 in between).
One job still reads once, writes once and counts its progress in blocks of all stages.
Between stages the result is held in memory, or, when the job streams its output into a
zarr store, in a scratch zarr store per stage (``stage_stores``).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from pathlib import Path

from .devices import memory_budget, resolve_device
from .dtypes import DEFAULT_OUTPUT_DTYPE, check_output_dtype
from .geometry import default_z_factor, output_geometry, resolve_factors, validate_z_factor
from .models import LoadedModel
from .predict import (
    RestoreProgress,
    RestoreResult,
    as_volume_array,
    check_result_fits,
    iter_restore,
)
from .restore_factors import axes_text, resolve_restore_factors, tuple_text
from .restorers import BASELINES, get_restorer, iter_load, resolve_z_factor, restorer_geometry
from .tiling import BlockPlan, RestorerGeometry, factors_of, plan_restore

THEN = " then "  # joins the models' names: ``stack [n2v then iso x2]``
NOT_DISTRIBUTED = ("a chain of models runs in this process, stage by stage: restore without "
                   "--workers/--scheduler, or restore with one model at a time")


def model_list(model) -> list:
    """The models of a restore job: ``model`` alone, or the models of a list or tuple."""
    if not isinstance(model, (list, tuple)):
        return [model]
    if not model:
        raise ValueError("no model given: name one model, or several to apply one after "
                         "the other")
    return list(model)


def stage_name(model) -> str:
    """A model's name as people wrote it: a library name, a folder's name, a baseline."""
    if isinstance(model, LoadedModel):
        return model.config.name
    return Path(str(model)).name or str(model)


def chain_label(names: Sequence[str]) -> str:
    """``n2v then iso``: what a chain's result is named after."""
    return THEN.join(names)


def _own_factors(model) -> tuple[int, int, int] | None:
    """A trained model's (fz, fy, fx), from its config alone; None for a baseline."""
    if isinstance(model, LoadedModel):
        return tuple(model.config.factors)
    if _is_baseline(model):
        return None
    return restorer_geometry(str(model)).factors


def _baseline_factors(model: str, trained, z_factor, factors, spacing, label: str
                      ) -> tuple[int, int, int]:
    """What the one baseline of a chain upsamples, per axis: what the trained models leave.

    Given ``factors`` are the whole job's on every axis; ``z_factor`` alone, or the
    spacing, speak for z only (the baseline leaves y and x as the models give them).
    """
    if factors is not None:
        total = resolve_factors(z_factor, factors)
        if any(t % m for t, m in zip(total, trained, strict=True)):
            raise ValueError(f"the models of the chain {label} upsample by "
                             f"{tuple_text(trained)}, so its factors must be multiples of "
                             f"those on every axis, not {tuple_text(total)}")
        filled = tuple(t // m for t, m in zip(total, trained, strict=True))
        why = f" (factors {tuple_text(total)}, of which the models give {tuple_text(trained)})"
    elif z_factor is not None:
        total = validate_z_factor(z_factor)
        if total % trained[0]:
            raise ValueError(f"the models of the chain {label} upsample z by {trained[0]}, so "
                             f"its z-factor must be a multiple of {trained[0]}, not {total}")
        filled = (total // trained[0], 1, 1)
        why = f" (z-factor {total}, of which the models give x{trained[0]})"
    else:
        # The result's voxels as the models leave them: the baseline makes those isotropic.
        rest = None if spacing is None else tuple(
            float(s) / t for s, t in zip(spacing[-3:], trained, strict=True))
        filled = (resolve_z_factor(model, None, rest), 1, 1)
        why = (" (no voxel spacing was given)" if spacing is None else
               f" (the voxel spacing asks for x{default_z_factor(spacing)} and the models "
               f"give x{trained[0]})")
    if filled == (1, 1, 1):
        raise ValueError(f"{model} interpolation in the chain {label} would have z-factor 1 "
                         f"and change nothing{why}: leave it out of the chain, or give a "
                         "larger z-factor")
    return filled


def _is_baseline(model) -> bool:
    return isinstance(model, str) and model in BASELINES


def _one_baseline(models: Sequence) -> list[int]:
    """Where the chain's baseline is (at most one: interpolating twice only blurs)."""
    baselines = [i for i, m in enumerate(models) if _is_baseline(m)]
    if len(baselines) > 1:
        twice = " and ".join(models[i] for i in baselines)
        raise ValueError(f"the chain {chain_label([stage_name(m) for m in models])} "
                         f"interpolates twice ({twice}), which only blurs: keep one "
                         "interpolation baseline at most")
    return baselines


def stage_factors(models: Sequence, z_factor: int | None = None, spacing=None, *,
                  factors=None) -> list[tuple[int, int, int]]:
    """The (fz, fy, fx) of each model of a chain: the rule every door's chains follow.

    Trained models keep their own factors. One interpolation baseline may join a chain:
    it upsamples what the models leave of the whole job's ``factors`` on every axis, or
    of its ``z_factor`` (z only), or without either, of the spacing's anisotropy (z
    only). Several upsampling stages are allowed, since the slab grid composes (x2 of x2
    is the slab grid of x4), up to 16 in all per axis.

    Parameters
    ----------
    models
        Baseline names, model names or folders, or LoadedModels, in the order they run.
    z_factor, factors
        The job's z-factor, or its factors (z, y, x); None: the models' own, and the
        spacing for a baseline. ``z_factor`` alone constrains z only.
    spacing
        Voxel spacing of the job's input.

    Raises
    ------
    ValueError
        One sentence: two baselines, factors the models do not give, a baseline left
        with nothing to do, more than 16 in all, or an unusable model.
    """
    names = [stage_name(m) for m in models]
    label = chain_label(names)
    found = [_own_factors(m) for m in models]
    baselines = _one_baseline(models)
    trained = tuple(math.prod(f[a] for f in found if f is not None) for a in range(3))
    if baselines:
        i = baselines[0]
        found[i] = _baseline_factors(models[i], trained, z_factor, factors, spacing, label)
    elif factors is not None and resolve_factors(z_factor, factors) != trained:
        steps = " x ".join(tuple_text(f) for f in found)
        asked = resolve_factors(z_factor, factors)
        raise ValueError(f"the chain {label} upsamples by {steps} = {tuple_text(trained)}, "
                         f"not {tuple_text(asked)}: leave the factors out or choose "
                         f"{tuple_text(trained)}")
    elif factors is None and z_factor is not None and validate_z_factor(z_factor) != trained[0]:
        steps = " x ".join(str(f[0]) for f in found)
        raise ValueError(f"the chain {label} upsamples z by {steps} = {trained[0]}, not "
                         f"{z_factor}: leave the z-factor out or choose {trained[0]}")
    for axis, name in enumerate("zyx"):
        total = math.prod(f[axis] for f in found)
        if total > 16:
            steps = " x ".join(str(f[axis]) for f in found)
            raise ValueError(f"the chain {label} upsamples {name} by {steps} = {total}, "
                             "beyond 16: leave out an upsampling model")
    return found


def stage_geometries(models, z_factor: int | None = None, spacing=None,
                     diffusion_samples: int | None = None, *, factors=None
                     ) -> list[RestorerGeometry]:
    """Planning geometry of each model of a job (one model, or a chain), from configs only.

    A single model is planned as today (:func:`~.restorers.restorer_geometry`); a chain
    follows :func:`stage_factors` and is refused in its words.
    """
    models = model_list(models)
    if len(models) == 1:
        chosen = resolve_restore_factors(models[0], z_factor, factors, spacing)
        return [restorer_geometry(models[0], 1, diffusion_samples, factors=chosen)]
    found = stage_factors(models, z_factor, spacing, factors=factors)
    return [restorer_geometry(str(m), 1, diffusion_samples, factors=f)
            for m, f in zip(models, found)]


def chain_geometry(geometries: Sequence) -> RestorerGeometry:
    """One geometry for a whole chain: its factors, and the context in input voxels a
    region needs so that every stage sees its own halo (a preview's read region)."""
    if len(geometries) == 1:
        return geometries[0]
    halo, before = [0, 0, 0], [1, 1, 1]
    for g in geometries:
        # A later stage's halo is in voxels already upsampled by the stages before it.
        halo = [h + math.ceil(gh / b) for h, gh, b in zip(halo, g.halo, before, strict=True)]
        before = [b * f for b, f in zip(before, factors_of(g), strict=True)]
    return RestorerGeometry(
        name=chain_label([g.name for g in geometries]), z_factor=before[0], halo=tuple(halo),
        divisor=(1, 1, 1), overlap=(0, 0, 0),
        bytes_per_voxel=max(g.bytes_per_voxel for g in geometries),
        outputs=tuple(geometries[-1].outputs), factors=tuple(before))


def plan_chain(shape: Sequence[int], geometries: Sequence, block_shape="auto",
               budget: float = 2**30, overlap=None) -> list[BlockPlan]:
    """The block plan of each stage (:func:`~.tiling.plan_restore` on what it is given)."""
    plans, shape = [], tuple(int(n) for n in shape)
    for geometry in geometries:
        plans.append(plan_restore(shape, geometry, block_shape, budget, overlap))
        shape = plans[-1].out_shape
    return plans


def chain_notes(names: Sequence[str], stages: Sequence) -> list[str]:
    """What a person should know about a chain that is allowed (restorers or geometries)."""
    notes = []
    for (a, first), (b, then) in zip(zip(names, stages), zip(names[1:], stages[1:])):
        if "uncertainty" in first.outputs:
            notes.append(f"{a} passes its mean to {b}; its uncertainty is not kept")
        up, same = factors_of(first), factors_of(then)
        if max(up) > 1 and max(same) == 1:
            notes.append(f"{a} upsamples {axes_text(up)} before {b} restores: same-shape "
                         "models usually go first, on the voxels they were trained on")
    return notes


def get_chain(models, z_factor: int | None = None, *, factors=None, spacing=None,
              cache: bool = False, allow_identity: bool = False, **options) -> list:
    """Restorers for one model (:func:`~.restorers.get_restorer`) or a chain of them."""
    models = model_list(models)
    if len(models) == 1:
        return [get_restorer(models[0], z_factor, factors=factors, spacing=spacing,
                             cache=cache, allow_identity=allow_identity, **options)]
    found = stage_factors(models, z_factor, spacing, factors=factors)
    # A baseline left at z-factor 1 was refused above, in the chain's words.
    return [get_restorer(m, factors=f, cache=cache, allow_identity=True, **options)
            for m, f in zip(models, found)]


def check_models(model, z_factor: int | None = None, *, factors=None,
                 allow_identity: bool = False) -> None:
    """Refuse, before any volume is read, what does not depend on its spacing.

    Trained models are loaded into the cache, where each file's restore finds them. A
    baseline's automatic z-factor follows each volume's spacing: checked per volume.
    """
    models = model_list(model)
    if z_factor is not None or factors is not None or not any(_is_baseline(m) for m in models):
        get_chain(models, z_factor, factors=factors, cache=True, allow_identity=allow_identity)
        return
    _one_baseline(models)
    for m in models:
        if not _is_baseline(m):
            get_restorer(m, cache=True)


def iter_load_chain(model, z_factor: int | None = None, *, factors=None, spacing=None,
                    **options) -> Generator[RestoreProgress, None, list]:
    """Cached restorers for one model or a chain, yielding a ``load`` stage around them."""
    models = model_list(model)
    if len(models) == 1:
        return [(yield from iter_load(models[0], z_factor, factors=factors, spacing=spacing,
                                      **options))]
    found = stage_factors(models, z_factor, spacing, factors=factors)
    restorers = []
    for i, (m, f) in enumerate(zip(models, found, strict=True)):
        yield RestoreProgress("load", i, len(models), f"loading {stage_name(m)}")
        restorers.append(get_restorer(m, factors=f, cache=True, allow_identity=True, **options))
    yield RestoreProgress("load", len(models), len(models),
                          "; then ".join(getattr(r, "description", r.name) for r in restorers))
    return restorers


def restorer_name(restorer) -> str:
    """A built restorer's model name (a trained model's, else the baseline's)."""
    return str(getattr(restorer, "metadata", {}).get("model") or restorer.name)


def _planned_blocks(volume, restorers, stores, output_dtype, block_shape, overlap,
                    device) -> list[int]:
    """Refuse, before any work, a stage whose result does not fit in memory; return the
    number of blocks each stage is planned to take."""
    shape = tuple(int(n) for n in volume.shape)
    budget = memory_budget(resolve_device(device)) / max(shape[0], 1)
    counts = []
    for k, (restorer, store) in enumerate(zip(restorers, stores, strict=True)):
        last = k == len(restorers) - 1
        if store is None:
            check_result_fits(shape, factors_of(restorer), restorer.outputs,
                              output_dtype if last else "float32", volume.dtype)
        plan = plan_restore(shape[1:], restorer, block_shape, budget, overlap)
        counts.append(len(plan))
        shape = (shape[0], *plan.out_shape)
    return counts


def _stage_progress(run, label: str, done: int, planned: int, later: int, first: bool):
    """Run one stage, its progress in blocks of the whole job; return (result, blocks).

    The first stage's ``normalise`` is the job's; a later stage's counts as blocks, so
    the job's stages stay in order (load, normalise, blocks, finalise).
    """
    blocks = planned
    try:
        while True:
            try:
                record = next(run)
            except StopIteration as stop:
                return stop.value, blocks
            message = f"{label}: {record.message}"
            if record.stage == "blocks":
                blocks = record.total
                yield RestoreProgress("blocks", done + record.done,
                                      done + record.total + later, message)
            elif record.stage == "normalise" and first:
                yield RestoreProgress("normalise", record.done, record.total, message)
            elif record.stage == "normalise":
                yield RestoreProgress("blocks", done, done + blocks + later, message)
    finally:
        run.close()


def iter_restore_chain(data, restorers: Sequence, *, spacing=None, origin=None,
                       output_dtype: str = DEFAULT_OUTPUT_DTYPE, out_store=None,
                       stage_stores=None, block_shape="auto", overlap=None,
                       **restore_kwargs) -> Generator[RestoreProgress, None, RestoreResult]:
    """Restore ``data`` with one restorer, or with several one after the other.

    Parameters
    ----------
    data, spacing, origin, block_shape, overlap, **restore_kwargs
        As for :func:`~.predict.iter_restore`, for every stage.
    restorers
        From :func:`get_chain` or :func:`iter_load_chain`. One: exactly
        :func:`~.predict.iter_restore`.
    output_dtype, out_store
        Of the job's result: the last stage's, in the type of ``data``. Earlier stages
        hand float32 to the next (a diffusion model its mean).
    stage_stores
        A zarr store per stage but the last, for results beyond memory; else in memory.

    Returns
    -------
    RestoreResult
        On the composed grid (:func:`~.geometry.output_geometry` of the per-axis product
        of the factors); ``settings`` name the chain (``model``: ``a then b``) and hold each
        stage's settings under ``chain``.
    """
    run = dict(block_shape=block_shape, overlap=overlap, **restore_kwargs)
    if len(restorers) == 1:
        return (yield from iter_restore(data, restorers[0], spacing=spacing, origin=origin,
                                        output_dtype=output_dtype, out_store=out_store, **run))
    check_output_dtype(output_dtype)
    volume = as_volume_array(data)
    n = len(restorers)
    stores = [*(stage_stores or [None] * (n - 1)), out_store]
    planned = _planned_blocks(volume, restorers, stores, output_dtype, block_shape, overlap,
                              restore_kwargs.get("device", "auto"))
    names = [restorer_name(r) for r in restorers]
    current, where, done, stages = data, (spacing, origin), 0, []
    for k, restorer in enumerate(restorers):
        last = k == n - 1
        stage = iter_restore(current, restorer, spacing=where[0], origin=where[1],
                             output_dtype=output_dtype if last else "float32",
                             input_dtype=volume.dtype if last else None, out_store=stores[k],
                             **run)
        result, blocks = yield from _stage_progress(
            stage, f"{names[k]} ({k + 1}/{n})", done, planned[k], sum(planned[k + 1:]), k == 0)
        done += blocks
        stages.append({**result.settings, "plan": result.plan})
        if not last:  # the next stage gets the values (a mean), not a diffusion's spread
            current, where = result.data, (result.spacing, result.origin)
            del result
    yield RestoreProgress("finalise", 1, 1, "done")
    total = tuple(math.prod(f) for f in zip(*(factors_of(r) for r in restorers), strict=True))
    spacing_out, origin_out = output_geometry(spacing if spacing is not None else (1.0,) * 3,
                                              origin, total)
    label = chain_label(names)
    settings = {"method": label, "model": label, "models": names, "z_factor": total[0],
                "factors": list(total),
                **{key: result.settings[key] for key in ("percentiles", "device", "precision")},
                "chain": stages, "notes": chain_notes(names, restorers)}
    plan = "; ".join(f"{name}: {s['plan']}" for name, s in zip(names, stages))
    return RestoreResult(result.outputs, spacing_out, origin_out, total[0], plan,
                         result.normalization, settings, total)
