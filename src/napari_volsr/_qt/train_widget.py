"""The Train panel: pick data and a model family, train in a worker, watch it learn."""

from __future__ import annotations

import json
import math
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)

from ._workers import NO_THREADS, WorkerFailed, reporting_errors, tap

if TYPE_CHECKING:
    import napari


FAMILIES = [("RCAN", "rcan"), ("SRUNet", "srunet"), ("GAN", "gan"), ("diffusion", "diffusion")]
PRESETS = ["tiny", "small", "default"]
SOURCES = [
    ("paired layers (raw + target)", "paired"),
    ("target only (synthetic degradation)", "synthetic"),
    ("self-supervised isotropic (one anisotropic layer)", "isotropic"),
]
# The preview restores a central crop of at most this many input voxels (z, y, x).
PREVIEW_INPUT = (8, 64, 64)
# Status and progress bar refresh at most this often (plots throttle themselves).
STATUS_MS = 200
PREVIEW_KEY = "volsr_preview"


def _training_run(config, arrays: dict, *, stop: threading.Event, resume: bool,
                  overwrite: bool, preview_input, voxel_spacing):
    """Build the training data, then yield from ``iter_train``; return the saved model.

    Runs in the worker: arrays and configs only. ``stop`` is the engine's
    ``should_stop``: it finishes the step, checkpoints, saves and returns the model.
    """
    from .._training import training_data
    from ..engine.train import iter_train

    try:
        data = training_data(config, **arrays)
    except RuntimeError as exc:
        raise WorkerFailed(str(exc) or type(exc).__name__) from exc
    if stop.is_set():
        return None
    return (yield from reporting_errors(iter_train(
        config, data, resume=resume, overwrite=overwrite, should_stop=stop.is_set,
        preview_input=preview_input, voxel_spacing=voxel_spacing,
    )))


@dataclass
class _Run:
    """What the main thread prepared for one training run."""

    config: object
    arrays: dict
    spacing: tuple | None
    resume: bool
    overwrite: bool
    preview_input: np.ndarray | None = None
    preview_kwargs: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    start_step: int = 0

    @property
    def name(self) -> str:
        return self.config.model.name


class _Control:
    """State the panel's ``destroyed`` slot may touch: no Qt, no reference to the panel."""

    def __init__(self):
        self.stop = threading.Event()
        self.closed = False

    def close(self, *_):
        self.closed = True
        self.stop.set()


class TrainWidget(Container):
    """Train a restoration or z-upsampling model on image layers."""

    def __init__(self, viewer: napari.viewer.Viewer):
        from qtpy.QtCore import QTimer
        from superqt import QCollapsible

        from .loss_plot import LossPlot

        super().__init__(labels=True)
        self.viewer = viewer
        self.worker = None
        self.run_info: _Run | None = None
        self.last_model = None
        self._control = _Control()
        self._updating = False
        self._touched: set[str] = set()
        self._preview_layer = None
        self._preview_limits = None
        self._pending = None

        # -------- model
        self.family = ComboBox(
            label="family", choices=FAMILIES, value="rcan",
            tooltip="RCAN: robust default for denoising/deblurring and z-upsampling. SRUNet: "
            "U-Net, fast. GAN: sharper textures, may invent detail. diffusion: samples "
            "plausible detail plus an uncertainty map; slowest.",
        )
        self.preset = ComboBox(
            label="size", choices=PRESETS, value="small",
            tooltip="tiny: a quick test; small: a good start on a CPU or laptop GPU; "
            "default: the published network sizes (best quality, needs a GPU).",
        )
        # -------- data
        self.source = ComboBox(
            label="data", choices=SOURCES, value="paired",
            tooltip="paired: the same sample imaged twice (degraded raw + good target). "
            "target only: clean volumes; degraded inputs are simulated. isotropic: only the "
            "anisotropic volume; its lateral planes teach the network what z should look like.",
        )
        self.raw = ComboBox(label="raw", choices=self._layer_choices, nullable=True,
                            tooltip="the degraded acquisition: noisy, blurred or with thick "
                            "z-slices")
        self.target = ComboBox(label="target", choices=self._layer_choices, nullable=True,
                               tooltip="the good version the network should learn to produce")
        self.volume = ComboBox(label="volume", choices=self._layer_choices, nullable=True,
                               tooltip="the anisotropic volume to make isotropic")
        self.z_factor = SpinBox(
            label="z-factor", min=1, max=16, value=1,
            tooltip="z upsampling: 1 restores at the same size; f gives f times more z-slices. "
            "Paired: target depth / raw depth. Isotropic: z spacing / x spacing.",
        )
        self.dims = ComboBox(
            label="network", choices=[("3D (volumetric)", 3), ("2D (slice by slice)", 2)], value=3,
            tooltip="3D uses context across slices; 2D restores each slice alone (z-factor 1). "
            "The isotropic source always trains a 2D network on orthogonal planes.",
        )
        # -------- budget
        self.patch_z = SpinBox(min=4, max=512, value=16)
        self.patch_y = SpinBox(min=4, max=2048, value=64)
        self.patch_x = SpinBox(min=4, max=2048, value=64)
        self.patch = Container(
            layout="horizontal", labels=False, label="patch (z, y, x)",
            widgets=[self.patch_z, self.patch_y, self.patch_x],
            tooltip="training crops on the input grid; fitted to the layers unless you edit it",
        )
        self.patch.margins = (0, 0, 0, 0)
        self.batch_size = SpinBox(label="batch size", min=1, max=512, value=4,
                                  tooltip="patches per step; lower it if memory runs out")
        self.steps = SpinBox(label="steps", min=0, max=10_000_000, value=1000, step=100,
                             tooltip="total training steps (0: no step limit); "
                             "Resume continues up to this number")
        self.minutes = FloatSpinBox(label="minutes", min=0, max=100_000, value=0, step=5,
                                    tooltip="wall-clock limit (0: none); training stops at "
                                    "whichever budget comes first")
        # -------- advanced
        self.learning_rate = LineEdit(label="learning rate", value="",
                                      tooltip="blank or 0: the family's default")
        self.learning_rate.native.setPlaceholderText("family default")
        self.val_fraction = FloatSpinBox(label="validation share", min=0.01, max=0.89,
                                         step=0.05, value=0.1,
                                         tooltip="share of Y rows held out for validation")
        self.foreground = FloatSpinBox(label="foreground", min=0.0, max=1.0, step=0.05, value=0.0,
                                       tooltip="minimum share of bright voxels in a patch "
                                       "(0: keep all); skips empty background")
        self.validate_every = SpinBox(label="validate every", min=1, max=100_000, value=50,
                                      tooltip="steps between validation PSNR and preview updates")
        self.advanced = Container(widgets=[self.learning_rate, self.val_fraction,
                                           self.foreground, self.validate_every])
        # -------- degradation (synthetic / isotropic)
        self.blur_low = FloatSpinBox(min=0, max=64, step=0.25, value=0.0)
        self.blur_high = FloatSpinBox(min=0, max=64, step=0.25, value=1.0)
        self.blur = Container(layout="horizontal", labels=False, label="z blur sigma",
                              widgets=[self.blur_low, self.blur_high],
                              tooltip="Gaussian blur along z before slab averaging, in voxels "
                              "(from, to): each patch draws its own value")
        self.poisson = CheckBox(label="Poisson noise", value=False,
                                tooltip="simulate shot noise (low light)")
        self.peak_low = FloatSpinBox(min=0.1, max=1e6, step=10, value=20.0)
        self.peak_high = FloatSpinBox(min=0.1, max=1e6, step=10, value=200.0)
        self.peak = Container(layout="horizontal", labels=False, label="photons at max",
                              widgets=[self.peak_low, self.peak_high], enabled=False,
                              tooltip="photons at the bright end (from, to): lower is noisier")
        self.noise_low = FloatSpinBox(min=0, max=10, step=0.01, value=0.0)
        self.noise_high = FloatSpinBox(min=0, max=10, step=0.01, value=0.03)
        self.noise = Container(layout="horizontal", labels=False, label="Gaussian noise",
                               widgets=[self.noise_low, self.noise_high],
                               tooltip="standard deviation (from, to) in normalised units "
                               "(0..1 spans the 1st..99.8th percentile)")
        for box in (self.blur, self.peak, self.noise):
            box.margins = (0, 0, 0, 0)
        self.degradation = Container(widgets=[self.blur, self.poisson, self.peak, self.noise])
        # -------- save and run
        self.model_name = LineEdit(label="model name", value="",
                                   tooltip="name in the model library (Restore lists it)")
        self.overwrite = CheckBox(label="overwrite", value=False,
                                  tooltip="replace an existing model of this name")
        self.start_button = PushButton(text="Start")
        self.stop_button = PushButton(text="Stop", enabled=False,
                                      tooltip="stop after this step; the model is saved")
        self.resume_button = PushButton(text="Resume",
                                        tooltip="continue this model's last checkpoint")
        self.buttons = Container(layout="horizontal", labels=False, label="",
                                 widgets=[self.start_button, self.stop_button, self.resume_button])
        self.buttons.margins = (0, 0, 0, 0)
        self.progress_bar = ProgressBar(label="progress", value=0, min=0, max=1)
        self.progress_bar.native.setFormat("%v / %m steps")
        self.status = Label(label="status", value="choose data, then press Start")
        self.status.native.setWordWrap(True)
        self.extend([
            self.family, self.preset, self.source, self.raw, self.target, self.volume,
            self.z_factor, self.dims, self.patch, self.batch_size, self.steps, self.minutes,
            self.model_name, self.overwrite, self.buttons, self.progress_bar, self.status,
        ])

        # Qt widgets magicgui cannot hold: collapsible sections and the plot.
        layout = self.native.layout()
        self.degradation_box = QCollapsible("Degradation (simulated inputs)", collapsedIcon="▶")
        self.degradation_box.addWidget(self.degradation.native)
        self.advanced_box = QCollapsible("Advanced training settings", collapsedIcon="▶")
        self.advanced_box.addWidget(self.advanced.native)
        layout.insertWidget(layout.indexOf(self._row(self.model_name)), self.degradation_box)
        layout.insertWidget(layout.indexOf(self._row(self.model_name)), self.advanced_box)
        self.plot = LossPlot()
        layout.addWidget(self.plot)

        self._status_timer = QTimer(self.native)
        self._status_timer.setSingleShot(True)
        self._status_timer.setInterval(STATUS_MS)
        self._status_timer.timeout.connect(self._show_pending)

        self.family.changed.connect(self._on_model_kind_changed)
        self.preset.changed.connect(self._on_model_kind_changed)
        self.source.changed.connect(self._on_form_changed)
        for picker in (self.raw, self.target, self.volume):
            picker.changed.connect(self._on_form_changed)
        self.dims.changed.connect(self._on_form_changed)
        self.z_factor.changed.connect(self._on_z_edited)
        for box in (self.patch_z, self.patch_y, self.patch_x):
            box.changed.connect(self._on_patch_edited)
        self.poisson.changed.connect(lambda on: setattr(self.peak, "enabled", bool(on)))
        self.model_name.changed.connect(self._on_name_edited)
        self.start_button.changed.connect(self._on_start)
        self.stop_button.changed.connect(self._on_stop)
        self.resume_button.changed.connect(self._on_resume)
        viewer.layers.events.inserted.connect(self._refresh_layers)
        viewer.layers.events.removed.connect(self._refresh_layers)
        # Closing the panel or the viewer stops training; the engine then saves the model.
        self.native.destroyed.connect(self._control.close)
        self._refresh_layers()
        self._on_form_changed()

    # ------------------------------------------------------------ form state
    def _row(self, widget):
        """Return the Qt row holding ``widget`` in this labelled container."""
        native = widget.native
        while native.parent() is not None and native.parent() is not self.native:
            native = native.parent()
        return native

    @contextmanager
    def _quiet(self):
        """Programmatic form changes: do not mark fields as edited by the user."""
        before, self._updating = self._updating, True
        try:
            yield
        finally:
            self._updating = before

    def _layer_choices(self, _widget=None):
        from napari.layers import Image

        return [layer for layer in self.viewer.layers
                if isinstance(layer, Image) and PREVIEW_KEY not in layer.metadata]

    def _refresh_layers(self, _event=None):
        if self._closed:
            return
        with self._quiet():
            for picker in (self.raw, self.target, self.volume):
                picker.reset_choices()
            choices = self._layer_choices()
            if choices:
                selected = [lay for lay in self.viewer.layers.selection if lay in choices]
                if self.volume.value is None:
                    self.volume.value = (selected or choices)[-1]
                if self.target.value is None:
                    self.target.value = (selected or choices)[-1]
                if self.raw.value is None:
                    others = [lay for lay in choices if lay is not self.target.value]
                    self.raw.value = (others or choices)[0]
        self._on_form_changed()

    def _source_layer(self):
        """Return the layer that sets defaults: raw, target or volume, by source."""
        return {"paired": self.raw, "synthetic": self.target,
                "isotropic": self.volume}[self.source.value].value

    def _on_model_kind_changed(self, _=None):
        self._on_form_changed()

    def _on_form_changed(self, _=None):
        if self._closed:
            return
        source = self.source.value
        self.raw.visible = source == "paired"
        self.target.visible = source in ("paired", "synthetic")
        self.volume.visible = source == "isotropic"
        self.degradation_box.setVisible(source != "paired")
        with self._quiet():
            if "z" not in self._touched:
                self.z_factor.value = self._default_z()
            if source == "isotropic":
                self.dims.value = 2
            elif self.z_factor.value > 1:
                self.dims.value = 3
        self.dims.enabled = source != "isotropic" and self.z_factor.value == 1
        three_d = self.dims.value == 3
        self.patch_z.visible = three_d
        self.patch.label = "patch (z, y, x)" if three_d else "patch (y, x)"
        if "patch" not in self._touched:
            self._fit_patch()
        if "name" not in self._touched:
            self._suggest_name()

    def _default_z(self) -> int:
        from .._layers import default_z_factor
        from .._training import pair_z_factor

        source = self.source.value
        if source == "isotropic" and self.volume.value is not None:
            return default_z_factor(self.volume.value.scale)
        if source == "paired" and self.raw.value is not None and self.target.value is not None:
            return pair_z_factor(self.raw.value.data.shape, self.target.value.data.shape) or 1
        return 1

    def _fit_patch(self):
        """Default patch, shrunk to fit the chosen layer with room for validation rows."""
        f, source = self.z_factor.value, self.source.value
        layer = self._source_layer()
        shape = tuple(layer.data.shape) if layer is not None else ()
        fits = len(shape) == 3
        if self.dims.value == 3:
            want = [max(4, 32 // f), 64, 64]
            if fits:
                depth = shape[0] if source == "paired" else shape[0] // f
                want = [min(want[0], depth), min(64, shape[1] // 2), min(64, shape[2])]
            # Diffusion UNets halve z too: keep z a multiple of their divisor.
            z_step = 8 // math.gcd(8, f) if self.family.value == "diffusion" else 1
            sizes = [_round_down(want[0], z_step), _round_down(want[1], 8),
                     _round_down(want[2], 8)]
        else:
            want = [64, 64]
            if fits:
                rows = shape[1] // (2 * f) if source == "isotropic" else shape[1] // 2
                want = [min(64, rows), min(64, shape[2])]
            sizes = [self.patch_z.value, _round_down(want[0], 8), _round_down(want[1], 8)]
        with self._quiet():
            for box, value in zip((self.patch_z, self.patch_y, self.patch_x), sizes, strict=True):
                box.value = max(4, value)

    def _suggest_name(self):
        from .._training import suggest_model_name

        layer = self._source_layer() if self.source.value != "paired" else self.target.value
        with self._quiet():
            self.model_name.value = suggest_model_name(getattr(layer, "name", None),
                                                       self.family.value)

    def _on_z_edited(self, _value):
        if not self._updating:
            self._touched.add("z")
            self._on_form_changed()

    def _on_patch_edited(self, _value):
        if not self._updating:
            self._touched.add("patch")

    def _on_name_edited(self, name):
        if self._updating:
            return
        self._touched.add("name")
        if self.worker is None:
            self.status.value = self._name_hint(str(name).strip())

    def _name_hint(self, name: str) -> str:
        from ..engine.models import ModelError, library_dir, read_model_config

        if not name or not (library_dir() / name).exists():
            return "choose data, then press Start"
        try:
            config = read_model_config(library_dir() / name)
        except ModelError:
            return f"a folder named '{name}' exists in the library; choose another name"
        steps = config.training.get("steps", "?")
        return (f"'{name}' exists ({config.family}, x{config.z_factor}, {steps} steps): "
                "Resume continues it, or tick overwrite, or choose another name")

    # ------------------------------------------------------------ reading the form
    def _degradation(self):
        from ..engine.degrade import DegradationConfig

        poisson = (self.peak_low.value, self.peak_high.value) if self.poisson.value else None
        return DegradationConfig(
            blur_sigma=(self.blur_low.value, self.blur_high.value),
            poisson_peak=poisson,
            gaussian_sigma=(self.noise_low.value, self.noise_high.value),
        )

    def _learning_rate(self) -> float | None:
        text = self.learning_rate.value.strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"learning rate '{text}' is not a number: enter e.g. 1e-4, "
                             "or leave it blank for the family's default") from None
        return value or None

    def _prepare(self, resume: bool) -> _Run:
        """Read the layers and the form on the main thread; ValueError says what to fix."""
        from pydantic import ValidationError

        from .._layers import layer_input
        from .._training import check_model_name, check_pair, training_config
        from ..engine.config import ModelConfig, describe_validation_error
        from ..engine.models import library_dir
        from ..engine.train import CHECKPOINT_META, checkpoint_dir_for

        name = check_model_name(self.model_name.value)
        source = self.source.value
        roles = {"paired": [("raw", self.raw), ("target", self.target)],
                 "synthetic": [("target", self.target)],
                 "isotropic": [("volume", self.volume)]}[source]
        inputs = {}
        for role, picker in roles:
            if picker.value is None:
                raise ValueError(f"Choose the {role} layer (open a volume with File > Open).")
            inputs[role] = layer_input(picker.value)
        if source == "paired" and self.raw.value is self.target.value:
            raise ValueError("raw and target are the same layer: choose the degraded volume as "
                             "raw and the good one as target, or use 'target only'")

        folder = library_dir() / name
        history, start_step, model_cfg = [], 0, None
        if resume:
            meta_path = checkpoint_dir_for(folder) / CHECKPOINT_META
            if not meta_path.is_file():
                raise ValueError(f"'{name}' has no checkpoint to resume from: press Start to "
                                 "train a new model")
            meta = json.loads(meta_path.read_text())
            try:
                model_cfg = ModelConfig.model_validate(meta["model"])
            except ValidationError as exc:
                raise ValueError(f"the checkpoint of '{name}' is unreadable "
                                 f"({describe_validation_error(exc)}); start a new model") from None
            history, start_step = list(meta.get("history", [])), int(meta.get("step", 0))
            if (model_cfg.task == "isotropic") != (source == "isotropic"):
                trained_on = ("the isotropic source" if model_cfg.task == "isotropic"
                              else "paired or synthetic data")
                raise ValueError(f"'{name}' was trained with {trained_on}: choose that data "
                                 "source to resume it")
            if self.steps.value and start_step >= self.steps.value and not self.minutes.value:
                raise ValueError(f"'{name}' has trained {start_step} steps already: raise "
                                 f"'steps' above {start_step} to continue")
            self._show_model_settings(model_cfg)
        elif folder.exists() and not self.overwrite.value:
            raise ValueError(f"A model named '{name}' already exists: choose another name, "
                             "tick 'overwrite' to replace it, or press Resume to continue it.")

        z_factor = model_cfg.z_factor if model_cfg else self.z_factor.value
        dims = model_cfg.spatial_dims if model_cfg else self.dims.value
        if source == "paired":
            check_pair(inputs["raw"]["data"].shape, inputs["target"]["data"].shape, z_factor,
                       inputs["raw"]["name"], inputs["target"]["name"])
        if source == "isotropic" and z_factor < 2:
            raise ValueError(
                f"z-factor 1 leaves nothing to make isotropic: set it to the volume's z spacing "
                f"/ x spacing (layer scale {tuple(self.volume.value.scale)})"
            )
        patch = (self.patch_z.value, self.patch_y.value, self.patch_x.value)
        overrides = dict(
            patch_shape=patch if dims == 3 else patch[1:],
            batch_size=self.batch_size.value,
            steps=self.steps.value or None,
            minutes=self.minutes.value or None,
            learning_rate=self._learning_rate(),
            val_fraction=self.val_fraction.value,
            foreground=self.foreground.value,
            validate_every=self.validate_every.value,
        )
        if source != "paired":
            overrides["degradation"] = self._degradation()
            degradation = overrides["degradation"]
            if (z_factor == 1 and source == "synthetic" and max(degradation.blur_sigma) == 0
                    and degradation.poisson_peak is None and max(degradation.gaussian_sigma) == 0):
                raise ValueError("with z-factor 1 and no blur or noise the simulated input equals "
                                 "the target: set some blur or noise under 'Degradation'")
        if model_cfg is not None:
            config = training_config(source, model=model_cfg, **overrides)
        else:
            config = training_config(source, family=self.family.value, preset=self.preset.value,
                                     z_factor=z_factor, spatial_dims=dims, name=name, **overrides)

        arrays = {"paired": lambda: {"raws": [inputs["raw"]["data"]],
                                     "targets": [inputs["target"]["data"]]},
                  "synthetic": lambda: {"targets": [inputs["target"]["data"]]},
                  "isotropic": lambda: {"volumes": [inputs["volume"]["data"]]}}[source]()
        spacing_source = inputs.get("raw") or inputs.get("target") or inputs["volume"]
        run = _Run(config, arrays, spacing_source["spacing"], resume, self.overwrite.value,
                   history=history, start_step=start_step)
        self._prepare_preview(run, spacing_source, roles[0][1].value)
        return run

    def _show_model_settings(self, model_cfg):
        """On Resume the checkpoint decides the network: show its settings in the form."""
        from ..engine.registry import network_config

        with self._quiet():
            self.family.value = model_cfg.family
            for preset in PRESETS:
                if network_config(model_cfg.family, preset) == model_cfg.network:
                    self.preset.value = preset
            self.z_factor.value = model_cfg.z_factor
            self.dims.value = model_cfg.spatial_dims
        self._touched.add("z")

    def _prepare_preview(self, run: _Run, source: dict, layer):
        """Cut a small central crop of the source layer; say where its restoration goes."""
        from ..engine.data import percentile_normalization
        from ..engine.degrade import degrade
        from ..engine.predict import output_geometry

        config = run.config
        f = config.model.z_factor
        data = source["data"]
        shape = tuple(data.shape)
        # Synthetic: crop the clean target and degrade it like a training input, so the
        # preview lands on the target's voxels and can be compared with it directly.
        synthetic = config.source == "synthetic"
        depth = (min(shape[0] // f, PREVIEW_INPUT[0]) * f if synthetic
                 else min(shape[0], PREVIEW_INPUT[0]))
        size = (depth, min(shape[1], PREVIEW_INPUT[1]), min(shape[2], PREVIEW_INPUT[2]))
        if min(size) < 1:
            return
        start = tuple((n - s) // 2 for n, s in zip(shape, size, strict=True))
        crop = data[tuple(slice(a, a + s) for a, s in zip(start, size, strict=True))]
        crop = np.asarray(crop.compute() if hasattr(crop, "compute") else crop, dtype=np.float32)
        spacing = np.asarray(source["spacing"], dtype=float)
        origin = np.asarray(source["origin"], dtype=float) + np.asarray(start) * spacing
        if synthetic:
            norm = percentile_normalization(crop, config.model.percentiles)
            low_res = degrade(norm.forward(crop), f, config.degradation,
                              np.random.default_rng(config.seed))
            crop = norm.inverse(low_res).astype(np.float32)
            spacing = spacing * (f, 1, 1)
            origin[0] += (f - 1) / 2 * spacing[0] / f
            f_out = f
        else:
            f_out = f
        scale, translate = output_geometry(tuple(spacing), tuple(origin), f_out)
        run.preview_input = crop
        run.preview_kwargs = dict(
            name=f"{run.name} preview", scale=scale, translate=translate,
            colormap=layer.colormap,
            metadata={PREVIEW_KEY: {"model": run.name, "source": layer.name,
                                    "crop_start": list(start), "crop_shape": list(size)}},
        )

    # ------------------------------------------------------------ actions
    def _notify_error(self, message: str):
        from napari.utils.notifications import show_error

        self.status.value = message
        show_error(message)

    def _on_start(self, _=None):
        """Check the form on the main thread, then train in a worker."""
        self._launch(resume=False)

    def _on_resume(self, _=None):
        """Continue the named model from its last checkpoint."""
        self._launch(resume=True)

    def _launch(self, resume: bool):
        from ..engine.models import ModelError

        if self.worker is not None:
            self._notify_error(
                f"'{self.run_info.name}' is training: press Stop (the model is saved) and "
                "start again, or open a second Train panel for another run."
            )
            return
        try:
            run = self._prepare(resume)
        except (ValueError, ModelError) as exc:
            self._notify_error(str(exc))
            return
        self._start(run)

    def _start(self, run: _Run):
        self.run_info = run
        self._control.stop = stop = threading.Event()
        self._pending = None
        self._touched.add("name")  # the name now belongs to this model (Resume uses it)
        self.plot.set_history(run.history)
        self.plot.set_total(run.config.steps)
        self.progress_bar.max = run.config.steps or 1
        self.progress_bar.value = min(run.start_step, self.progress_bar.max)
        self.start_button.enabled = self.resume_button.enabled = False
        self.stop_button.enabled = True
        verb = (f"resuming '{run.name}' at step {run.start_step}" if run.resume
                else f"training '{run.name}'")
        self.status.value = f"{verb}: preparing patches and the network..."
        generator = _training_run(
            run.config, run.arrays, stop=stop, resume=run.resume,
            overwrite=run.overwrite, preview_input=run.preview_input, voxel_spacing=run.spacing,
        )
        if NO_THREADS:
            from ..engine.predict import drain

            self.worker = "main thread"
            try:
                self._on_returned(drain(tap(generator, self._on_yielded)))
            except Exception as exc:  # the same path as the worker's errored signal
                self._on_errored(exc)
            self._on_finished()
            return
        from napari.qt.threading import create_worker
        from qtpy.QtCore import Qt

        def train_model():  # napari lists running tasks by this function's name
            return (yield from generator)

        # _ignore_errors: errors become notifications in _on_errored, not re-raised.
        self.worker = create_worker(train_model, _start_thread=False, _ignore_errors=True)
        # worker.quit() (napari calls it when its window closes) leaves the generator
        # suspended; closing it right there, in the worker thread, lets iter_train save
        # a checkpoint and the model at once instead of whenever it is garbage-collected.
        self.worker.aborted.connect(partial(_close_generator, generator), Qt.DirectConnection)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.yielded.connect(self._on_yielded)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def _on_stop(self, _=None):
        if self.worker is None:
            self.status.value = "nothing is training"
            return
        # The engine finishes this step, checkpoints and saves the model, then returns
        # it. (worker.quit() would abandon the generator without closing it.)
        self._control.stop.set()
        self.stop_button.enabled = False
        self.status.value = "stopping after this step: saving a checkpoint and the model..."

    @property
    def _closed(self) -> bool:
        return self._control.closed

    # ------------------------------------------------------------ worker signals
    def _on_yielded(self, record):
        if self._closed:
            return
        main = record.losses.get("loss", record.losses.get("g_loss"))
        if main is not None:
            self.plot.add_loss(record.step, main)
        if record.validation and "psnr" in record.validation:
            self.plot.add_psnr(record.step, record.validation["psnr"])
        if record.preview is not None:
            self._show_preview(record.preview)
        final = record.message.startswith(("stopped", "finished"))
        if record.message and not record.losses and not final:
            from napari.utils.notifications import show_warning

            show_warning(record.message)
        self._pending = record
        if record.validation or record.message:
            self._show_pending()
        elif not self._status_timer.isActive():
            self._status_timer.start()

    def _show_pending(self):
        record, self._pending = self._pending, None
        if record is None or self._closed:
            return
        total = record.total
        if total:
            self.progress_bar.max = total
            self.progress_bar.value = min(record.step, total)
        parts = [f"step {record.step}" + (f"/{total}" if total else "")]
        main = record.losses.get("loss", record.losses.get("g_loss"))
        if main is not None:
            parts.append(f"loss {main:.4g}")
        if self.plot.psnr_values:
            parts.append(f"val PSNR {self.plot.psnr_values[-1]:.2f} dB")
        parts.append(f"{record.elapsed / 60:.1f} min")
        if record.data_wait > 0.5:
            parts.append(f"waiting for data {record.data_wait:.0%}")
        text = ", ".join(parts)
        if record.message:
            text += f" - {record.message}"
        self.status.value = text

    def _show_preview(self, array):
        run = self.run_info
        kwargs = dict(run.preview_kwargs)
        if not kwargs:
            return
        layer = self._preview_layer
        if layer is None or layer not in self.viewer.layers:
            # A preview of this model left by an earlier run (e.g. before Resume) is ours.
            layer = next((lay for lay in self.viewer.layers if lay.name == kwargs["name"]
                          and lay.metadata.get(PREVIEW_KEY, {}).get("model") == run.name), None)
        limits = _contrast(array)
        if layer is None:
            kwargs["contrast_limits"] = limits
            self._preview_layer = self.viewer.add_image(array, **kwargs)
            self._preview_limits = list(self._preview_layer.contrast_limits)
            return
        # Follow the network's output range until the user sets contrast by hand.
        follow = np.allclose(layer.contrast_limits, self._preview_limits or layer.contrast_limits)
        layer.data = array
        layer.scale, layer.translate = kwargs["scale"], kwargs["translate"]
        if follow:
            layer.contrast_limits_range = _widen(layer.contrast_limits_range, limits)
            layer.contrast_limits = limits
        self._preview_limits = list(layer.contrast_limits)
        self._preview_layer = layer

    def _on_returned(self, model):
        if self._closed:
            return
        if model is None:
            self.status.value = "stopped before training started: nothing was saved"
            return
        from napari.utils.notifications import show_info

        from .._training import refresh_restore_panels

        self.last_model = model
        card = model.config.training
        psnr = (card.get("final_validation") or {}).get("psnr")
        how = "stopped early" if card.get("stopped_early") else "finished"
        detail = f"{card.get('steps')} steps" + (f", val PSNR {psnr:.2f} dB" if psnr else "")
        refresh_restore_panels(self.viewer)
        with self._quiet():
            self.overwrite.value = False
        self.status.value = (f"model '{model.config.name}' saved ({how}, {detail}); "
                             "pick it in Restore")
        show_info(f"model '{model.config.name}' saved ({how}, {detail})")

    def _on_aborted(self):
        """Report the model saved when ``worker.quit()`` stopped training (napari's tasks)."""
        if self._closed or self.run_info is None:
            return
        from napari.utils.notifications import show_info

        from .._training import refresh_restore_panels
        from ..engine.models import ModelError, read_model_config

        name = self.run_info.name
        try:
            config = read_model_config(name)
        except ModelError:
            self.status.value = f"cancelled before '{name}' was saved"
            return
        refresh_restore_panels(self.viewer)
        steps = config.training.get("steps")
        self.status.value = (f"model '{name}' saved (stopped early, {steps} steps); "
                             "pick it in Restore")
        show_info(f"model '{name}' saved (stopped early, {steps} steps)")

    def _on_errored(self, exc):
        if self._closed:
            return
        from pydantic import ValidationError

        from ..engine.config import describe_validation_error

        if isinstance(exc, ValidationError):
            message = describe_validation_error(exc)
        else:
            message = str(exc) or type(exc).__name__
        name = self.run_info.name if self.run_info else "the model"
        self._notify_error(f"Training '{name}' failed: {message}")

    def _on_finished(self):
        self.worker = None
        if self._closed:
            return
        self._status_timer.stop()
        self.start_button.enabled = self.resume_button.enabled = True
        self.stop_button.enabled = False
        self.plot.update()


def _close_generator(generator):
    try:
        generator.close()
    except Exception as exc:  # an exception escaping a Qt slot would abort the app
        warnings.warn(f"saving the stopped training failed: {exc}", RuntimeWarning, stacklevel=1)


def _contrast(array) -> list[float]:
    """0.5 / 99.5 percentiles of a (small) preview: robust to a few wild voxels."""
    finite = np.asarray(array, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return [0.0, 1.0]
    low, high = np.percentile(finite, [0.5, 99.5])
    return [float(low), float(high) if high > low else float(low) + 1.0]


def _widen(current, limits) -> list[float]:
    return [min(current[0], limits[0]), max(current[1], limits[1])]


def _round_down(value: int, step: int) -> int:
    return value - value % step if value >= step else value
