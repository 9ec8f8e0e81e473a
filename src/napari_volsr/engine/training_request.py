"""One training request, resolved once for every door: source, defaults, checks, resume."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .training_config import (
    default_family,
    TrainingRequestError,
    network_values,
    preset_split,
    build_training_config,
    file_network,
)
# The pair and factor rules live beside; doors import them from here too.
from .training_factors import (  # noqa: F401
    check_pair,
    pair_factors,
    pair_z_factor,
    resolve_request_factors,
)

SOURCE_ROLES = {"paired": ("raw", "target"), "synthetic": ("target",), "isotropic": ("volume",),
                "noise2void": ("volume",), "noise2noise": ("volume",)}
SOURCES = tuple(SOURCE_ROLES)
# Model settings a request may name; on resume they must agree with the checkpoint.
MODEL_OPTIONS = ("family", "preset", "z_factor", "factors", "spatial_dims", "context_planes",
                 "network")
ROLE_WORDS = {"raw": "a raw (degraded) volume", "target": "a target volume",
              "volume": "an anisotropic volume"}
# What a role holds for a source, where it differs from ROLE_WORDS.
SOURCE_ROLE_WORDS = {("noise2void", "volume"): "a noisy volume",
                     ("noise2noise", "volume"): "two or more acquisitions of the same sample"}


def role_words(source: str, role: str) -> str:
    """What ``role`` holds for ``source``, for messages: ``"a noisy volume"``."""
    return SOURCE_ROLE_WORDS.get((source, role), ROLE_WORDS[role])


@dataclass(frozen=True)
class VolumeInput:
    """One training volume as a door hands it over: data plus what is known about it.

    Attributes
    ----------
    data
        ZYX array-like (numpy, dask, zarr or a lazy file reader); never modified.
    spacing
        Voxel spacing (z, y, x) in physical units, when known.
    name
        A name for messages and the default model name (layer name, file stem).
    origin
        Position of the first voxel (z, y, x), when known.
    unit
        The spacing's unit (``"micrometer"``, ``"nm"``, ...), when known.
    """

    data: Any
    spacing: tuple[float, ...] | None = None
    name: str | None = None
    origin: tuple[float, ...] | None = None
    unit: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The data's shape."""
        return tuple(int(n) for n in self.data.shape)


@dataclass
class TrainingRequest:
    """A validated request: the config, its inputs, where the model goes, where it starts.

    ``data`` builds the training pairs on first use (it reads the volumes, so doors with
    a user interface touch it off their UI thread).
    """

    config: Any
    inputs: dict[str, list[VolumeInput]]
    folder: Path
    start_step: int = 0
    history: list = field(default_factory=list)
    resume: bool = False
    overwrite: bool = False
    note: str = ""

    @property
    def spacing(self) -> tuple[float, ...] | None:
        """Voxel spacing of the first input that has one (recorded on the model card)."""
        for role in SOURCE_ROLES[self.config.source]:
            for item in self.inputs[role]:
                if item.spacing is not None:
                    return item.spacing
        return None

    @cached_property
    def data(self):
        """The :class:`~napari_volsr.engine.data.TrainingData` for this request.

        Reads every volume once; NaN or infinite values are refused here, naming the
        volume, before anything trains.
        """
        from .data import make_training_data
        from .data.normalization import read_finite

        arrays = {f"{role}s": [read_finite(item.data, item.name or role) for item in items]
                  for role, items in self.inputs.items()}
        return make_training_data(self.config, **arrays)

    def iter_train(self, **kwargs):
        """:func:`~napari_volsr.engine.train.iter_train` on this request (same keywords)."""
        from .train import iter_train

        unit = next((item.unit for items in self.inputs.values() for item in items
                     if item.spacing is not None), None)
        return iter_train(self.config, self.data, output_dir=self.folder, resume=self.resume,
                          overwrite=self.overwrite, voxel_spacing=self.spacing, voxel_unit=unit,
                          **kwargs)


def resolve_training(*, source: str | None = None, raw=None, target=None, volume=None,
                     family: str | None = None, preset: str | None = None,
                     z_factor: int | None = None, factors=None,
                     spatial_dims: int | None = None, context_planes: int | None = None,
                     network: dict | None = None, name: str | None = None,
                     resume: bool = False, overwrite: bool = False, output_dir=None,
                     file_values: dict | None = None, **overrides) -> TrainingRequest:
    """Resolve what every door asks for into one validated :class:`TrainingRequest`.

    Parameters
    ----------
    source
        ``paired``, ``synthetic``, ``isotropic``, ``noise2void`` or ``noise2noise``;
        default: the config file's, else from the inputs (``volume`` -> isotropic,
        ``raw`` -> paired, ``target`` alone -> synthetic).
    raw, target, volume
        :class:`VolumeInput` items (or lists of them).
    family, preset, z_factor, spatial_dims, context_planes, network
        Model settings; None means the default (from the data for the z-factor: target
        depth / raw depth, the z/x spacing ratio, or 1). On resume, the checkpoint's
        settings are used and any given here must agree with them.
    factors
        Upsampling per axis ``(fz, fy, fx)``, each 1..16; ``z_factor`` is the shorthand
        ``(z_factor, 1, 1)`` (both given: they must agree). None: from the data, as the
        z-factor is (a pair's per-axis shape ratios).
    name
        Library name; default ``<first input>-<family>``, unique in the folder.
    resume, overwrite
        Continue the named model's checkpoint, or replace an existing model.
    output_dir
        Folder the model folder goes into (default: the model library).
    file_values
        A config file's mapping of TrainingConfig fields (see
        :func:`~napari_volsr.engine.config_files.load_config_file`); arguments win.
    **overrides
        TrainingConfig fields (``steps``, ``minutes``, ``patch_shape``, ...); None values
        count as not given. A budget given without ``steps`` drops the default step
        budget, so ``minutes=30`` means thirty minutes.

    Raises
    ------
    TrainingRequestError
        One actionable sentence; every door shows it as it is.
    """
    from .config_files import model_section, network_section
    from .models import library_dir

    file_values = dict(file_values or {})
    file_model = model_section(file_values)
    network_section(file_values)  # a malformed network section fails here, with its path
    if resume and overwrite:
        raise TrainingRequestError("choose resume (continue the model) or overwrite (start it "
                                   "anew), not both")
    inputs = {"raw": _as_list(raw), "target": _as_list(target), "volume": _as_list(volume)}
    source = _resolve_source(source or file_values.get("source"), inputs)
    inputs = {role: inputs[role] for role in SOURCE_ROLES[source]}
    parent = Path(output_dir) if output_dir is not None else library_dir()
    family = family or network_section(file_values).get("family")
    z_factor, factors = _request_factors(source, inputs, z_factor, factors, file_model, resume)
    name = _resolve_name(name or file_model.get("name"), inputs[SOURCE_ROLES[source][0]][0],
                         family or default_family(source, factors or z_factor), parent, resume)
    folder = parent / name
    options = dict(family=family, preset=preset, spatial_dims=spatial_dims, network=network,
                   z_factor=z_factor, factors=factors, context_planes=context_planes)
    start_step, history, model = 0, [], None
    _check_name_free(folder, resume or overwrite)
    if resume:
        model, start_step, history = read_checkpoint(folder)
        _check_resumable(model, source, options, file_values)
    config = build_training_config(file_values, source=source, name=name, model=model,
                                   overrides=overrides, depth=_thinnest(inputs, source),
                                   **options)
    _check_inputs(config, inputs)
    config, note = _fit_patch(config, inputs, file_values, overrides)
    note = _with_log_note(config, folder, note)
    if (resume and config.steps is not None and config.minutes is None
            and config.epochs is None and config.steps <= start_step):
        raise TrainingRequestError(f"'{name}' has trained {start_step} steps already: set a "
                                   f"step budget above {start_step} to continue")
    return TrainingRequest(config, inputs, folder, start_step, history, resume, overwrite, note)


def _with_log_note(config, folder: Path, note: str) -> str:
    """``note`` plus where the TensorBoard log goes, if asked for; refused without the package.

    Checked here, so every door refuses before training starts rather than failing mid-run.
    """
    if not config.tensorboard:
        return note
    from .tb_log import log_note, require_tensorboard

    require_tensorboard()
    return "\n".join(filter(None, [note, log_note(folder)]))


def _thinnest(inputs: dict, source: str) -> int | None:
    """Planes of the thinnest training volume: the default 2.5D context asks no more."""
    shapes = [v.shape for v in inputs[SOURCE_ROLES[source][0]]]
    return min((s[-3] if len(s) >= 3 else 1 for s in shapes), default=None)


def network_divisor(model) -> tuple[int, ...]:
    """The input size multiple per axis the model's network needs (built on no device)."""
    import torch

    from .registry import build_network

    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            return tuple(build_network(model).divisor)
    except Exception:  # a network that needs real tensors to build
        return tuple(build_network(model).divisor)


def _check_name_free(folder: Path, replacing: bool) -> None:
    """Refuse a name another live run is training, or a saved model's unless replacing."""
    from . import ddp
    from .checkpoints import name_exists_message, name_taken_message, reservation_holder

    replica = ddp.from_environment()
    # Under torchrun rank 0 holds the name for the whole group: the others must not
    # mistake its marker for another run's.
    holder = reservation_holder(folder) if replica is None or replica.is_main else None
    if holder is not None:
        raise TrainingRequestError(name_taken_message(folder, holder))
    if folder.exists() and not replacing:
        raise TrainingRequestError(name_exists_message(folder))


def _fit_patch(config, inputs: dict, file_values: dict, overrides: dict):
    """The config with its patch fitted to the volumes (or the given one checked).

    A volume that holds the patch but no validation band beside it trains without
    validation (``n_val`` 0, said in the note) unless ``n_val`` was given.
    """
    from .data.patches import PatchFitError, check_patch_shape, fit_patch_shape

    role = SOURCE_ROLES[config.source][0]
    model = config.model
    network = model.network
    shapes, names = [i.shape for i in inputs[role]], [i.name or role for i in inputs[role]]
    try:
        if config.patch_shape is not None:
            fit = check_patch_shape(config.source, model.spatial_dims, model.z_factor, shapes,
                                    config.patch_shape, n_val=config.n_val,
                                    val_fraction=config.val_fraction, names=names,
                                    context_planes=model.context_planes, factors=model.factors)
        else:
            fit = fit_patch_shape(
                config.source, model.spatial_dims, model.z_factor, shapes,
                divisor=network_divisor(model), names=names, n_val=config.n_val,
                min_target=getattr(network, "min_target_patch", 1),
                val_fraction=config.val_fraction, context_planes=model.context_planes,
                factors=model.factors)
    except PatchFitError as exc:
        raise TrainingRequestError(str(exc)) from None
    if fit.n_val is None and fit.patch_shape == config.patch_shape:
        return config, fit.note
    given = {**overrides, "patch_shape": fit.patch_shape}
    if fit.n_val is not None and overrides.get("n_val") is None and "n_val" not in file_values:
        given["n_val"] = fit.n_val
    return build_training_config(file_values, source=config.source, name=model.name,
                                 model=model, overrides=given), fit.note


def _as_list(value) -> list[VolumeInput]:
    if value is None:
        return []
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    return [item if isinstance(item, VolumeInput) else VolumeInput(item) for item in items]


def _resolve_source(source: str | None, inputs: dict[str, list]) -> str:
    if source is None:
        if inputs["volume"] and (inputs["raw"] or inputs["target"]):
            raise TrainingRequestError("pass either one anisotropic volume (self-supervised "
                                       "isotropic) or raw and target volumes, not both")
        if not any(inputs.values()):
            raise TrainingRequestError(
                "nothing to train on: pass raw and target volumes (paired), a clean target "
                "alone (synthetic degradation) or one anisotropic volume (self-supervised "
                "isotropic)")
        source = "isotropic" if inputs["volume"] else "paired" if inputs["raw"] else "synthetic"
    if source not in SOURCE_ROLES:
        raise TrainingRequestError(f"source: must be one of {', '.join(SOURCES)}, got {source!r}")
    needed = SOURCE_ROLES[source]
    for role, items in inputs.items():
        if items and role not in needed:
            reads = " and ".join(role_words(source, r) for r in needed)
            raise TrainingRequestError(f"the {source} source does not use {ROLE_WORDS[role]}: "
                                       f"it reads {reads}")
    for role in needed:
        if not inputs[role]:
            raise TrainingRequestError(f"the {source} source needs {role_words(source, role)}")
    if source == "noise2noise" and len(inputs["volume"]) < 2:
        raise TrainingRequestError(f"the noise2noise source needs {role_words(source, 'volume')}"
                                   ", got one volume: pass each acquisition as a volume")
    if source == "paired" and len(inputs["raw"]) != len(inputs["target"]):
        raise TrainingRequestError(f"pass one target per raw volume (got {len(inputs['raw'])} "
                                   f"raw and {len(inputs['target'])} target volumes)")
    for role in needed:
        for item in inputs[role]:
            if len(item.shape) != 3:
                raise TrainingRequestError(
                    f"{item.name or role}: the {role} must be a single-channel 3D volume "
                    f"(Z, Y, X), got shape {item.shape}")
    return source


def free_model_name(parent: Path, base: str | None, family: str) -> str:
    """``<base>-<family>``, cleaned into a valid model name not yet used in ``parent``.

    A name a running training holds (its reservation marker) counts as used.
    """
    from .checkpoints import reservation_path

    cleaned = re.sub(r"[^A-Za-z0-9._ +-]+", "-", str(base or "")).strip(" .-_+")[:80]
    stem = f"{cleaned}-{family}" if cleaned else str(family)
    name, i = stem, 2
    while (Path(parent) / name).exists() or reservation_path(Path(parent) / name).exists():
        name, i = f"{stem}-{i}", i + 1
    return name


def _resolve_name(name, first: VolumeInput, family: str, parent: Path, resume: bool) -> str:
    from .config import check_model_name

    if name is None:
        if resume:
            raise TrainingRequestError("resume needs the name of the model to continue")
        return free_model_name(parent, first.name, family)
    try:
        return check_model_name(name)
    except ValueError as exc:
        raise TrainingRequestError(str(exc)) from None


def _check_inputs(config, inputs: dict) -> None:
    if config.source == "noise2noise":
        first = inputs["volume"][0]
        for item in inputs["volume"][1:]:
            if item.shape != first.shape:
                raise TrainingRequestError(
                    f"the noise2noise acquisitions must have the same shape: "
                    f"'{item.name or 'volume'}' is {item.shape} but '{first.name or 'volume'}' "
                    f"is {first.shape}; register and crop them to the same field of view")
    if config.source == "paired":
        for raw, target in zip(inputs["raw"], inputs["target"], strict=True):
            check_pair(raw.shape, target.shape, config.model.factors, raw.name or "raw",
                       target.name or "target")


def read_checkpoint(folder: Path):
    """``(ModelConfig, step, history)`` of the checkpoint kept for a model folder."""
    from pydantic import ValidationError

    from .config import ModelConfig, describe_validation_error
    from .train import CHECKPOINT_META, checkpoint_dir_for

    folder = Path(folder)
    meta_path = checkpoint_dir_for(folder) / CHECKPOINT_META
    if not meta_path.is_file():
        raise TrainingRequestError(f"no checkpoint for the model name '{folder.name}' (looked in "
                                   f"{meta_path.parent}): train it anew instead of resuming")
    try:
        meta = json.loads(meta_path.read_text())
        model = ModelConfig.model_validate(meta["model"])
        return model, int(meta.get("step", 0)), list(meta.get("history", []))
    except ValidationError as exc:
        problem = describe_validation_error(exc)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problem = str(exc)
    raise TrainingRequestError(f"the checkpoint of '{folder.name}' is unreadable ({problem}); "
                               "train a new model")


def _check_resumable(model, source: str, options: dict, file_values: dict) -> None:
    """Refuse a resume whose data kind or named model settings differ from the checkpoint."""
    if (model.task == "isotropic") != (source == "isotropic"):
        kind = ("the isotropic source" if model.task == "isotropic"
                else "paired or synthetic data")
        raise TrainingRequestError(f"'{model.name}' was trained with {kind}: pass the same kind "
                                   "of data to resume it")
    differences = []
    if options["family"] is not None and str(options["family"]).lower() != model.family:
        differences.append(f"family {model.family} (not {options['family']})")
    if options["z_factor"] is not None and options["z_factor"] != model.z_factor:
        differences.append(f"z-factor {model.z_factor} (not {options['z_factor']})")
    given = options.get("factors")
    if given is not None:
        from .geometry import validate_factors

        try:
            given = validate_factors(given)
        except ValueError as exc:
            raise TrainingRequestError(f"model.factors: {exc}") from None
    if given is not None and given != tuple(model.factors):
        differences.append(f"factors {_listed(model.factors)} (not {_listed(given)})")
    if options["spatial_dims"] is not None and options["spatial_dims"] != model.spatial_dims:
        differences.append(f"{model.spatial_dims}D (not {options['spatial_dims']}D)")
    context = options.get("context_planes")
    if context is not None and context != model.context_planes:
        differences.append(f"context_planes {model.context_planes} (not {context})")
    if options["preset"] is not None or options["network"] or file_network(file_values):
        from .registry import network_config

        wanted = network_values(model.family, options["preset"], options["network"],
                                 file_values, source)
        if network_config(model.family, **preset_split(wanted)) != model.network:
            differences.append("other network sizes")
    if differences:
        raise TrainingRequestError(
            f"'{model.name}' was trained with {', '.join(differences)}: resume it with its own "
            "settings (leave family, preset and z-factor unset) or train a new model")


def _listed(factors) -> str:
    return ",".join(str(f) for f in factors)


def _request_factors(source: str, inputs: dict, z_factor, factors, file_model: dict,
                     resume: bool):
    """``(z_factor, factors)`` for the model options: given (door, then file) or implied.

    A new model's are resolved now, since the default family follows the task the
    factors set. ``factors`` is None only when nothing but a z-factor was given (the
    z-factor says it all, and the model config names a bad one): factors the door gave
    win over a config file's lateral factors, even when their y and x are 1. A file's
    lateral factors without a z-factor take the z the data implies. On resume they stay
    as given, to compare.
    """
    z_factor = z_factor if z_factor is not None else file_model.get("z_factor")
    lateral = file_model.get("lateral_factors")
    if factors is None and isinstance(lateral, (list, tuple)) and tuple(lateral) != (1, 1):
        if z_factor is None and not resume:
            z_factor = resolve_request_factors(source, inputs)[0]
        factors = None if z_factor is None else (z_factor, *lateral)
    if resume:
        return z_factor, factors
    given = factors is not None
    factors = resolve_request_factors(source, inputs, z_factor, factors)
    return factors[0], (factors if given or factors[1:] != (1, 1) else None)
