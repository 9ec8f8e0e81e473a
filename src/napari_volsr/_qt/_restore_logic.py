"""What the Restore panel computes, without Qt: plans, model cards, preview regions, jobs.

Nothing here imports qtpy, napari, magicgui or superqt, so tests call these functions
directly and the panel stays a thin form around them.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..engine.data import DEFAULT_PERCENTILES, Normalization, percentile_normalization
from ..engine.interp import INTERPOLATION_MODES
from ..engine.predict import (
    RestoreProgress,
    RestoreResult,
    iter_restore,
    memory_budget,
    output_geometry,
    resolve_device,
)
from ..engine.tiling import BlockPlan, auto_block_shape

BASELINE_DESCRIPTIONS = {
    "nearest": "nearest-slice copy along z (baseline: no training, any z-factor)",
    "linear": "linear interpolation along z (baseline: no training, any z-factor)",
    "cubic": "cubic interpolation along z (baseline: no training, any z-factor)",
}


# ---------------------------------------------------------------------- block override
def parse_block_shape(text: str | Sequence[int] | None):
    """``"auto"`` or a Z,Y,X core block shape from the form's text.

    Accepts ``auto`` (or nothing), one integer (a cube) or three integers separated by
    commas, ``x`` or spaces: ``16,128,128``, ``16x128x128``.

    Raises
    ------
    ValueError
        With a sentence saying what to type.
    """
    if text is None:
        return "auto"
    if not isinstance(text, str):
        values = [int(v) for v in text]
    else:
        stripped = text.strip().lower()
        if stripped in ("", "auto"):
            return "auto"
        parts = [p for p in re.split(r"[,x\s;]+", stripped) if p]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or any(v < 1 for v in values):
        raise ValueError(
            f"block shape {text!r} is not understood: type 'auto' or three positive "
            "integers Z,Y,X such as 16,128,128"
        )
    return tuple(values)


# ---------------------------------------------------------------------- geometry and plans
@dataclass(frozen=True)
class RestorerGeometry:
    """What block planning needs from a restorer: no weights, no device."""

    name: str
    z_factor: int
    halo: tuple[int, int, int]
    divisor: tuple[int, int, int]
    overlap: tuple[int, int, int]
    bytes_per_voxel: float
    outputs: tuple[str, ...] = ("restored",)


def geometry_of(restorer) -> RestorerGeometry:
    """Return the planning geometry of a built restorer."""
    return RestorerGeometry(
        name=restorer.name, z_factor=int(restorer.z_factor),
        halo=tuple(int(h) for h in restorer.halo),
        divisor=tuple(int(d) for d in restorer.divisor),
        overlap=tuple(int(o) for o in restorer.overlap),
        bytes_per_voxel=float(restorer.bytes_per_voxel),
        outputs=tuple(restorer.outputs),
    )


def _model_stamp(folder: Path) -> float:
    """Latest modification time of a model folder's files (a retrained model differs)."""
    stamps = [p.stat().st_mtime for p in folder.iterdir() if p.is_file()]
    return max(stamps, default=0.0)


@lru_cache(maxsize=32)
def _network_geometry(folder: str, stamp: float, samples: int | None) -> RestorerGeometry:
    import torch

    from ..engine.models import LoadedModel, read_model_config
    from ..engine.registry import build_network
    from ..engine.restorers import NetworkRestorer

    config = read_model_config(folder)
    try:
        # Shapes only: halo and divisor are plain integers, so no memory is allocated.
        with torch.device("meta"):
            net = build_network(config)
            restorer = NetworkRestorer(LoadedModel(config, net, Path(folder)),
                                       diffusion_samples=samples)
    except Exception:  # a family that needs real tensors to build: do it on the CPU
        net = build_network(config)
        restorer = NetworkRestorer(LoadedModel(config, net, Path(folder)),
                                   diffusion_samples=samples)
    return geometry_of(restorer)


def restorer_geometry(model: str, z_factor: int = 1,
                      diffusion_samples: int | None = None) -> RestorerGeometry:
    """Geometry of a baseline or saved model, from its config alone (never its weights).

    Networks are built on torch's ``meta`` device and cached per folder and file times.

    Raises
    ------
    ValueError
        Unknown model names, unusable folders (the message says why).
    """
    from ..engine.models import ModelError, resolve_model_path
    from ..engine.restorers import InterpolationRestorer

    if model in INTERPOLATION_MODES:
        return geometry_of(InterpolationRestorer(model, z_factor))
    try:
        folder = resolve_model_path(model).resolve()
        return _network_geometry(str(folder), _model_stamp(folder), diffusion_samples)
    except ModelError as exc:
        raise ValueError(str(exc)) from None


_BUDGETS: dict[str, tuple[float, str, float]] = {}
_BUDGET_TTL_S = 30.0


def device_budget(device: str = "auto") -> tuple[str, float]:
    """Return ``(resolved device, bytes a block may use)``, cached for a few seconds.

    Raises
    ------
    ValueError
        Unknown devices or a GPU that is not there.
    """
    now = time.monotonic()
    hit = _BUDGETS.get(device)
    if hit is not None and now - hit[0] < _BUDGET_TTL_S:
        return hit[1], hit[2]
    torch_device = resolve_device(device)
    budget = memory_budget(torch_device)
    _BUDGETS[device] = (now, str(torch_device), budget)
    return str(torch_device), budget


def format_bytes(n: float) -> str:
    """``12.5 MiB``: binary units, three significant digits."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"  # pragma: no cover


def _xyz(values) -> str:
    return "x".join(str(int(v)) for v in values)


@dataclass(frozen=True)
class PlanSummary:
    """The tiling a restore of a layer will use, for people and for tests."""

    shape: tuple[int, ...]
    block_shape: tuple[int, ...]
    halo: tuple[int, ...]
    overlap: tuple[int, ...]
    grid: tuple[int, ...]
    n_blocks: int
    block_bytes: float
    budget_bytes: float
    auto: bool
    out_shape: tuple[int, ...]

    @property
    def over_budget(self) -> bool:
        """A fixed block whose estimate exceeds the memory budget."""
        return self.block_bytes > self.budget_bytes

    def describe(self) -> str:
        """Two short lines: blocks and memory."""
        mode = "auto" if self.auto else "fixed"
        blocks = f"{self.n_blocks} block" + ("" if self.n_blocks == 1 else "s")
        text = (
            f"{mode}: {blocks} of {_xyz(self.block_shape)} (grid {_xyz(self.grid)}), "
            f"halo {_xyz(self.halo)}\n~{format_bytes(self.block_bytes)} per block of "
            f"{format_bytes(self.budget_bytes)} budget; output {_xyz(self.out_shape)}"
        )
        if self.over_budget:
            text += "\nblocks exceed the memory budget: use 'auto' or smaller blocks"
        return text


def plan_for(layer_shape: Sequence[int], geometry: RestorerGeometry, block_shape="auto",
             budget_bytes: float = 2**30) -> PlanSummary:
    """Plan blocks as :func:`~napari_volsr.engine.predict.iter_restore` will.

    Parameters
    ----------
    layer_shape
        ZYX shape of the input.
    geometry
        From :func:`restorer_geometry`.
    block_shape
        ``"auto"`` or a core block shape (clipped to the volume).
    budget_bytes
        Memory a block may use (:func:`device_budget`).
    """
    shape = tuple(int(n) for n in layer_shape)
    auto = isinstance(block_shape, str)
    if auto:
        core = auto_block_shape(shape, geometry.halo, geometry.z_factor,
                                geometry.bytes_per_voxel, budget_bytes, geometry.divisor,
                                overlap=geometry.overlap)
    else:
        core = tuple(int(b) for b in block_shape)
    plan = BlockPlan(shape, core, geometry.halo, geometry.z_factor, geometry.divisor,
                     geometry.overlap)
    block_bytes = math.prod(plan.max_input_shape()) * geometry.z_factor * geometry.bytes_per_voxel
    return PlanSummary(
        shape=shape, block_shape=plan.block_shape, halo=plan.halo, overlap=plan.overlap,
        grid=plan.grid_shape, n_blocks=len(plan), block_bytes=float(block_bytes),
        budget_bytes=float(budget_bytes), auto=auto, out_shape=plan.out_shape,
    )


# ---------------------------------------------------------------------- model card
def _spacing_text(spacing) -> str:
    return " x ".join(f"{float(s):g}" for s in spacing)


def model_card(config) -> str:
    """Describe in a few lines what a saved model is and what it was trained on."""
    from ..engine.registry import DISPLAY_NAMES, family

    try:
        fam = DISPLAY_NAMES[family(config.family)]
    except ValueError:
        fam = str(config.family)
    lines = [f"{fam} · {config.task} · x{config.z_factor} · {config.spatial_dims}D network"]
    training = config.training or {}
    data = training.get("data") or {}
    if not training:
        lines.append("no training record (untrained or imported weights)")
    else:
        source = training.get("source") or data.get("source")
        trained = [f"{source} data" if source else "data"]
        shapes = data.get("shapes") or []
        if shapes:
            count = f"{len(shapes)} volume" + ("" if len(shapes) == 1 else "s")
            trained.append(f"{count} {_xyz(shapes[0])}")
        spacing = training.get("voxel_spacing")
        if spacing:
            trained.append(f"spacing {_spacing_text(spacing)}")
        lines.append("trained on " + ", ".join(trained))
        run = []
        if training.get("steps") is not None:
            run.append(f"{training['steps']} steps")
        if training.get("minutes") is not None:
            run[-1:] = [f"{run[-1]} ({float(training['minutes']):.3g} min)"] if run else []
        validation = training.get("final_validation") or {}
        if validation.get("psnr") is not None:
            run.append(f"val PSNR {float(validation['psnr']):.2f} dB")
        if validation.get("ssim") is not None:
            run.append(f"SSIM {float(validation['ssim']):.3f}")
        if not validation:
            run.append("no validation recorded")
        lines.append(", ".join(run))
    if config.family == "diffusion":
        lines.append(f"sampler default: {config.network.sample_steps} steps x "
                     f"{config.network.n_samples} samples")
    return "\n".join(lines)


# ---------------------------------------------------------------------- preview regions
def visible_region(shape: Sequence[int], lower: Sequence[float], upper: Sequence[float],
                   sliced: Sequence[bool], context: int = 2) -> tuple[slice, ...] | None:
    """Voxels of a layer seen in a 2D view, plus a few slices around the current one.

    Parameters
    ----------
    shape
        Layer data shape.
    lower, upper
        Per axis, the smallest and largest visible data coordinate (napari puts voxel
        centres at integers). On sliced axes both are the current slice's coordinate.
    sliced
        True for axes that are not displayed (the slider axes).
    context
        Slices kept either side of the current one on sliced axes.

    Returns
    -------
    tuple of slice or None
        Clipped to the layer; None when the layer is not in view.
    """
    region = []
    for n, lo, hi, is_sliced in zip(shape, lower, upper, sliced, strict=True):
        if is_sliced:
            index = math.floor(float(lo) + 0.5)
            if not 0 <= index < n:
                return None
            region.append(slice(max(0, index - context), min(n, index + context + 1)))
        else:
            # Voxel i covers [i - 0.5, i + 0.5): visible when that overlaps [lo, hi].
            start = max(0, math.floor(float(lo) + 0.5))
            stop = min(int(n), math.ceil(float(hi) + 0.5))
            if start >= stop:
                return None
            region.append(slice(start, stop))
    return tuple(region)


def expand_region(region: Sequence[slice], halo: Sequence[int],
                  shape: Sequence[int]) -> tuple[slice, ...]:
    """``region`` grown by ``halo`` voxels per side (real context), clipped to ``shape``."""
    return tuple(slice(max(0, r.start - h), min(n, r.stop + h))
                 for r, h, n in zip(region, halo, shape, strict=True))


def trim_slices(read: Sequence[slice], keep: Sequence[slice], z_factor: int) -> tuple[slice, ...]:
    """Where ``keep`` lies in the restored ``read`` region (z scaled by ``z_factor``)."""
    out = []
    for axis, (r, k) in enumerate(zip(read, keep, strict=True)):
        s = z_factor if axis == 0 else 1
        out.append(slice((k.start - r.start) * s, (k.stop - r.start) * s))
    return tuple(out)


def region_geometry(spacing, origin, start: Sequence[int], z_factor: int):
    """Output ``(scale, translate)`` of a region starting at voxel ``start``.

    The region's first voxel sits at ``origin + start * spacing``; the slab convention
    (:func:`~napari_volsr.engine.predict.output_geometry`) then applies as for a volume.
    """
    origin = origin if origin is not None else (0.0,) * len(spacing)
    corner = tuple(float(o) + int(i) * float(s)
                   for o, i, s in zip(origin, start, spacing, strict=True))
    return output_geometry(spacing, corner, z_factor)


class RenormalizedRestorer:
    """A restorer that sees a crop as if the whole volume had been normalised.

    ``iter_restore`` normalises what it is given: a crop's percentiles differ from the
    volume's, so a network would see other numbers than in a full restore. This wrapper
    maps the crop's network units to the volume's before the network and back after,
    so a preview equals the full result over the same voxels.
    """

    def __init__(self, inner, crop_norm: Normalization, volume_norm: Normalization):
        self.inner = inner
        self.crop_norm = crop_norm
        self.volume_norm = volume_norm

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def prepare(self, device, dtype) -> None:
        """Prepare the wrapped restorer."""
        self.inner.prepare(device, dtype)

    def __call__(self, x):
        import torch

        c, v = self.crop_norm, self.volume_norm
        ratio = c.span / v.span
        shift = (c.low - v.low) / v.span
        out = self.inner(x * ratio + shift)
        parts = []
        for k, name in enumerate(self.inner.outputs):
            part = out[:, k : k + 1]
            parts.append(part / ratio if name == "uncertainty" else (part - shift) / ratio)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


# ---------------------------------------------------------------------- jobs for the worker
_LOADED: dict = {}
_LOADED_LOCK = threading.Lock()


def load_model_cached(model: str):
    """Load a model, reusing it while its folder's files are unchanged (one kept)."""
    from ..engine.models import load_model, resolve_model_path

    folder = resolve_model_path(model).resolve()
    key = (str(folder), _model_stamp(folder))
    with _LOADED_LOCK:
        hit = _LOADED.get(key)
    if hit is not None:
        return hit
    loaded = load_model(folder)
    with _LOADED_LOCK:
        _LOADED.clear()
        _LOADED[key] = loaded
    return loaded


def make_restorer(model: str, z_factor: int, **options):
    """Build a restorer from a baseline name or a (cached) saved model."""
    from ..engine.models import ModelError
    from ..engine.restorers import get_restorer

    if model in INTERPOLATION_MODES:
        return get_restorer(model, z_factor)
    try:
        loaded = load_model_cached(model)
    except ModelError as exc:
        raise ValueError(str(exc)) from None
    return get_restorer(loaded, z_factor, **options)


def _release(restorer) -> None:
    """Move a cached network back to the CPU so GPU memory is free between runs."""
    net = getattr(getattr(restorer, "inner", restorer), "net", None)
    if net is not None and hasattr(net, "to"):
        net.to("cpu")


def iter_restore_job(data, model: str, z_factor: int, *, restorer_options=None,
                     spacing=None, origin=None, **restore_kwargs
                     ) -> Generator[RestoreProgress, None, RestoreResult]:
    """Load the model, then :func:`iter_restore`; yields a ``load`` stage first."""
    yield RestoreProgress("load", 0, 1, f"loading {Path(str(model)).name}")
    restorer = make_restorer(model, z_factor, **(restorer_options or {}))
    yield RestoreProgress("load", 1, 1, getattr(restorer, "description", ""))
    try:
        return (yield from iter_restore(data, restorer, spacing=spacing, origin=origin,
                                        **restore_kwargs))
    finally:
        _release(restorer)


def iter_preview_job(data, model: str, z_factor: int, *, keep: Sequence[slice],
                     read: Sequence[slice], restorer_options=None, spacing=None,
                     origin=None, percentiles=DEFAULT_PERCENTILES, **restore_kwargs
                     ) -> Generator[RestoreProgress, None, RestoreResult]:
    """Restore the ``read`` region of ``data`` and return its ``keep`` part.

    Intensities are normalised with the whole volume's percentiles, so the preview
    matches a full restore; the result's origin and metadata describe ``keep``.
    """
    spacing = tuple(float(s) for s in (spacing or (1.0, 1.0, 1.0)))
    origin = tuple(float(o) for o in (origin or (0.0, 0.0, 0.0)))
    yield RestoreProgress("load", 0, 1, f"loading {Path(str(model)).name}")
    inner = make_restorer(model, z_factor, **(restorer_options or {}))
    yield RestoreProgress("load", 1, 1, getattr(inner, "description", ""))
    try:
        yield RestoreProgress("normalise", 0, 1, "percentiles of the whole volume")
        volume_norm = percentile_normalization(data, percentiles)
        read = tuple(read)
        crop = data[read]
        crop_norm = percentile_normalization(crop, percentiles)
        restorer = RenormalizedRestorer(inner, crop_norm, volume_norm)
        read_start = [r.start for r in read]
        _, read_origin = region_geometry(spacing, origin, read_start, 1)
        result = yield from iter_restore(crop, restorer, spacing=spacing, origin=read_origin,
                                         percentiles=percentiles, **restore_kwargs)
    finally:
        _release(inner)
    f = result.z_factor
    trim = trim_slices(read, keep, f)
    outputs = {name: out[trim] for name, out in result.outputs.items()}
    out_spacing, out_origin = region_geometry(spacing, origin, [k.start for k in keep], f)
    settings = {**result.settings, "preview": True,
                "preview_region": [[k.start, k.stop] for k in keep],
                "normalization": [volume_norm.low, volume_norm.high]}
    return dataclasses.replace(result, outputs=outputs, spacing=out_spacing,
                               origin=out_origin, settings=settings)
