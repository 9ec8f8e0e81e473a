"""The Restore panel's form sections: one small container each, assembled by the panel."""

from __future__ import annotations

import time

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

from ..engine.data import DEFAULT_PERCENTILES
from ..engine.devices import DEVICES, PRECISIONS
from ..engine.geometry import default_z_factor, describe_factors
from ..engine.predict import DEFAULT_OUTPUT_DTYPE, OUTPUT_DTYPES
from ..engine.tta import default_flips, describe_flips
from ._restore_logic import BASELINE_DESCRIPTIONS, model_card
from ._widgets import collapsible, compact, fit_lines

STAGES = ("load", "normalise", "blocks", "finalise")
WARN_STYLE = "color: #e6a23c;"
MUTED_STYLE = "color: #a0a4ab;"
LATERAL_TIP = ("y and x upsampling, both by this factor (lateral super-resolution): 2 gives "
               "twice the rows and columns at half the pixel size; 1 = none. Trained models "
               "fix it; the console and volsr restore --factors take y and x apart")


def cubic_z_factor(scale, lateral=(1, 1)) -> int:
    """The z-factor that makes the output voxels cubic, after y, x upsampling by ``lateral``."""
    scale = tuple(float(s) for s in scale)
    return default_z_factor((*scale[:-2], scale[-2] / lateral[0], scale[-1] / lateral[1]))


def _section(container: Container) -> None:
    """Stack sections without doubling the panel's vertical margins."""
    left, _, right, _ = container.margins
    container.margins = (left, 0, right, 0)


class LayerModelSection(Container):
    """What to restore and with what: the layer, the model (its card under it), the z-factor."""

    WIDGETS = ("image", "model", "load_model_button", "import_zoo_button", "z_factor",
               "lateral_factor", "z_warning", "output_note")

    def __init__(self, image_choices, model_choices, card: Container):
        super().__init__(labels=True)
        self.image = ComboBox(label="image", choices=image_choices, nullable=True,
                              tooltip="the 3D image layer to restore (never modified)")
        self.model = ComboBox(
            label="model", choices=model_choices, value="cubic",
            tooltip="an interpolation baseline or a trained model from your library",
        )
        self.load_model_button = PushButton(
            text="load model folder...",
            tooltip="use a saved model folder (config.json + weights) from anywhere",
        )
        self.import_zoo_button = PushButton(
            text="import Model Zoo package...",
            tooltip="add a BioImage Model Zoo package (.zip) of a napari-volsr network to "
                    "your model library",
        )
        # One row: the two ways to bring a model in from a file sit side by side.
        loaders = Container(layout="horizontal", labels=False, label="",
                            widgets=[self.load_model_button, self.import_zoo_button])
        loaders.margins = (0, 0, 0, 0)
        self.z_factor = SpinBox(label="z-factor", min=1, max=16, value=1,
                                tooltip="z upsampling factor (1 = same-shape restoration); "
                                        "trained models fix it")
        # One box for y and x: lateral pixels are square in nearly every acquisition.
        self.lateral_factor = SpinBox(label="y, x factor", min=1, max=16, value=1,
                                      tooltip=LATERAL_TIP)
        for combo in (self.image, self.model):
            compact(combo)
        self.z_warning = Label(label="", value="", visible=False)
        self.output_note = Label(label="", value="", visible=False)  # what the result will be
        self.extend([self.image, self.model, loaders, self.z_factor, self.lateral_factor,
                     self.z_warning, self.output_note])
        # The card describes the model row: right under it, in this section's columns.
        card.margins = (0, 0, 0, 0)
        self.native.layout().insertWidget(2, card.native)
        for label, style in ((self.z_warning, WARN_STYLE), (self.output_note, MUTED_STYLE)):
            fit_lines(label)
            label.native.setStyleSheet(style)
        self._fixed_lateral = None  # (fy, fx) the job's trained models fix
        self._chosen_lateral = None  # the user's own choice, restored for baselines
        self.lateral_factor.changed.connect(self._on_lateral_edited)
        _section(self)

    def _on_lateral_edited(self, value) -> None:
        self._chosen_lateral = int(value)

    def follow_lateral(self, fixed) -> None:
        """Fix the y, x factor to ``fixed`` (the trained models' (fy, fx)); None: the
        user's (1 until chosen), for jobs an interpolation baseline upsamples."""
        self._fixed_lateral = None if fixed is None else tuple(int(f) for f in fixed)
        value = self._fixed_lateral[0] if fixed is not None else self._chosen_lateral or 1
        value = min(value, 16)  # a chain's product may pass the box's range: the engine refuses it
        with self.lateral_factor.changed.blocked():
            self.lateral_factor.value = value
        self.lateral_factor.enabled = fixed is None
        fy, fx = self.lateral()
        self.lateral_factor.tooltip = (LATERAL_TIP if fixed is None else
                                       f"set by the model: it upsamples y x{fy} and x x{fx}")

    def lateral(self) -> tuple[int, int]:
        """The job's (fy, fx): the trained models', else the box's for both axes."""
        if self._fixed_lateral is not None:
            return self._fixed_lateral
        return int(self.lateral_factor.value), int(self.lateral_factor.value)

    def factors(self) -> tuple[int, int, int]:
        """The form's (fz, fy, fx)."""
        return (int(self.z_factor.value), *self.lateral())

    def show_output(self, shape=(), out_shape=(), scale=(), unit: str | None = None) -> None:
        """Say what the result will be: its voxels and their size (upsampled jobs only;
        no arguments: nothing to say)."""
        shape, out_shape = tuple(shape)[-3:], tuple(out_shape)[-3:]
        text = ""
        if out_shape != shape:
            size = " x ".join(f"{float(s) * n / m:.4g}"
                              for s, n, m in zip(tuple(scale)[-3:], shape, out_shape))
            text = (f"result {describe_factors(self.factors())}: "
                    f"{'x'.join(map(str, out_shape))} voxels of {size}{f' {unit}' if unit else ''}")
        self.output_note.value = text
        self.output_note.visible = bool(text)

    def follow_model(self, config) -> None:
        """Fix the z-factor to a trained model's (``config``); baselines (None) take any."""
        self.z_factor.enabled = config is None
        self.z_factor.tooltip = (
            "z upsampling factor (1 = same-shape restoration)" if config is None
            else f"set by the model: '{config.name}' was trained for x{config.z_factor}"
        )

    def show_z_warning(self, layer) -> None:
        """Warn when the z-factor does not make the layer's voxels cubic."""
        text = ""
        if layer is not None and len(layer.scale) >= 3:
            # The input's anisotropy, as the untouched z-factor's default: a y, x factor
            # on top is the user's choice, not a reason to warn about that default.
            f, expected = self.z_factor.value, cubic_z_factor(layer.scale)
            if f > 1 and f != expected:
                x = layer.scale[-1]
                text = (f"layer spacing suggests x{expected} (z {layer.scale[-3]:g} / "
                        f"x {x:g}); with x{f} the voxels will not be cubic")
        self.z_warning.value = text
        self.z_warning.visible = bool(text)


class ModelCardSection(Container):
    """A few muted lines on the chosen model, and its export to the BioImage Model Zoo."""

    WIDGETS = ("model_card", "export_zoo_button")
    EXPORT_TIP = ("write this model as a BioImage Model Zoo package (.zip) that bioimage.io "
                  "tools (deepImageJ, ilastik, bioimageio.core) run")

    def __init__(self):
        super().__init__(labels=True)
        self.model_card = Label(label="", value="")
        self.export_zoo_button = PushButton(text="export to BioImage Model Zoo...",
                                            tooltip=self.EXPORT_TIP)
        # Buttons get no label column of their own: a row puts this one under the card text.
        self.export_row = Container(layout="horizontal", labels=False, label="",
                                    widgets=[self.export_zoo_button], visible=False)
        self.export_row.margins = (0, 0, 0, 0)
        self.extend([self.model_card, self.export_row])
        fit_lines(self.model_card)
        self.model_card.native.setStyleSheet(MUTED_STYLE)

    def show(self, config, model: str | None, export_blocked: str | None = None) -> None:
        """Describe a saved model (``config``), or the baseline named ``model``.

        The export button shows for saved models only; ``export_blocked`` (why the model
        cannot be a Model Zoo package) disables it and becomes its tooltip.
        """
        if config is not None:
            self.model_card.value = model_card(config)
        else:
            self.model_card.value = BASELINE_DESCRIPTIONS.get(model, "")
        self.export_row.visible = config is not None
        self.export_zoo_button.enabled = config is not None and export_blocked is None
        self.export_zoo_button.tooltip = (f"cannot export: {export_blocked}" if export_blocked
                                          else self.EXPORT_TIP)


class DiffusionSection(Container):
    """Sampler steps and samples: shown only for diffusion models."""

    WIDGETS = ("diffusion_steps", "diffusion_samples")

    def __init__(self):
        super().__init__(labels=True)
        self.diffusion_steps = SpinBox(
            label="diffusion steps", min=1, max=2000, value=50,
            tooltip="sampler steps per sample: more is slower and usually cleaner",
        )
        self.diffusion_samples = SpinBox(
            label="samples", min=1, max=64, value=4,
            tooltip="samples averaged into the result; their spread is the uncertainty layer",
        )
        self.extend([self.diffusion_steps, self.diffusion_samples])
        self.active = False
        self.visible = False
        _section(self)

    def follow_model(self, config) -> None:
        """Show the sampler settings for a diffusion model, at its defaults."""
        self.active = config is not None and config.family == "diffusion"
        self.visible = self.diffusion_steps.visible = self.diffusion_samples.visible = self.active
        if self.active:
            for widget, value in ((self.diffusion_steps, config.network.sample_steps),
                                  (self.diffusion_samples, config.network.n_samples)):
                widget.changed.block()
                widget.value = value
                widget.changed.unblock()

    def options(self) -> dict:
        """Restorer options (``get_restorer``) the settings give; none unless diffusion."""
        if not self.active:
            return {}
        return {"diffusion_steps": int(self.diffusion_steps.value),
                "diffusion_samples": int(self.diffusion_samples.value)}


class FlipsSection(Container):
    """Test-time flips for trained networks (not diffusion): the model's default until touched."""

    WIDGETS = ("flips",)

    def __init__(self):
        super().__init__(labels=True)
        self.flips = CheckBox(text="test-time flips", label="", value=False)
        self.append(self.flips)
        self.active = False
        self.touched = False
        self.visible = False
        self.flips.changed.connect(self._on_touched)
        _section(self)

    def _on_touched(self, _value):
        self.touched = True

    def follow_model(self, config) -> None:
        """Show the box for a trained network, ticked as the model restores by default."""
        self.active = config is not None and config.family != "diffusion"
        self.visible = self.flips.visible = self.active
        if not self.active:
            return
        cost = describe_flips(config.spatial_dims)
        self.flips.tooltip = (f"average the restore over every flip of the network's axes "
                              f"({cost}); on by default for same-shape 2D models, where it "
                              "gained up to 1 dB")
        if not self.touched:
            self.flips.changed.block()
            self.flips.value = default_flips(config)
            self.flips.changed.unblock()

    def options(self) -> dict:
        """Restorer options: ``flips`` once the user chose, else each model's own default."""
        return {"flips": bool(self.flips.value)} if self.active and self.touched else {}


class TilesSection(Container):
    """The tiles line (the block plan), and the advanced settings folded away under it."""

    WIDGETS = ("plan_label", "advanced", "advanced_section", "block_shape", "device",
               "precision", "output_dtype", "percentile_low", "percentile_high")

    def __init__(self):
        super().__init__(labels=True)
        self.plan_label = Label(label="tiles", value="")
        self.append(self.plan_label)
        fit_lines(self.plan_label)
        self.block_shape = LineEdit(
            label="block shape", value="auto",
            tooltip="'auto' picks the largest block that fits in memory; or type the core "
                    "block size in input voxels as Z,Y,X, e.g. 16,128,128",
        )
        self.device = ComboBox(label="device", choices=DEVICES, value="auto",
                               tooltip="auto: CUDA GPU, then Apple MPS, then CPU")
        self.precision = ComboBox(label="precision", choices=PRECISIONS, value="auto",
                                  tooltip="auto: bf16/fp16 on GPUs, fp32 on CPUs")
        self.output_dtype = ComboBox(
            label="output type", choices=OUTPUT_DTYPES, value=DEFAULT_OUTPUT_DTYPE,
            tooltip="auto: the input's type where the values fit (clipped, never wrapped); "
                    "float32 keeps every value; 'input' and 8/16-bit are clipped to their range",
        )
        self.percentile_low, self.percentile_high = (FloatSpinBox(
            label=f"{end} percentile", min=0.0, max=100.0, step=0.1, value=value,
            tooltip=f"intensity percentile mapped to {to} before the network (default: the "
                    "model's)",
        ) for end, to, value in (("low", 0, DEFAULT_PERCENTILES[0]),
                                 ("high", 1, DEFAULT_PERCENTILES[1])))
        self.advanced = Container(labels=True, widgets=[
            self.block_shape, self.device, self.precision, self.output_dtype,
            self.percentile_low, self.percentile_high,
        ])
        self.advanced_section = collapsible("Advanced: tiles, device, precision, intensities",
                                            self.advanced.native)
        self.advanced.margins = (0, 0, 0, 0)
        self.native.layout().addWidget(self.advanced_section)
        _section(self)

    def show_plan(self, text: str, warn: bool = False) -> None:
        """Write the tiles line (in the warning colour for problems)."""
        self.plan_label.value = text
        self.plan_label.native.setStyleSheet(WARN_STYLE if warn else "")

    def set_percentiles(self, percentiles) -> None:
        """Show the normalisation percentiles a model was trained with."""
        self.percentile_low.value, self.percentile_high.value = percentiles


class RunSection(Container):
    """Preview / Restore / Cancel, a progress bar, the status line and the activity-dock bars."""

    WIDGETS = ("preview_button", "run_button", "cancel_button", "progress_bar", "status")

    def __init__(self):
        super().__init__(labels=False)
        self.preview_button = PushButton(
            text="Preview", tooltip="restore only what the 2D view shows (current slice ± a "
                                    "few), as a quick check before the whole volume")
        self.run_button = PushButton(text="Restore", tooltip="restore the whole volume")
        self.cancel_button = PushButton(text="Cancel", enabled=False,
                                        tooltip="stop after the current block; nothing is added")
        buttons = Container(layout="horizontal", labels=False,
                            widgets=[self.preview_button, self.run_button, self.cancel_button])
        buttons.margins = (0, 0, 0, 0)
        self.progress_bar = ProgressBar(label="progress", value=0, max=1, visible=False)
        self.status = Label(label="status", value="ready")
        fit_lines(self.status)
        self.footer = Container(labels=True, widgets=[self.progress_bar, self.status])
        self.footer.margins = (0, 0, 0, 0)
        self.extend([buttons, self.footer])
        _section(self)
        self._bars = ()  # napari progress bars in the activity dock: stages, then blocks
        self._updating = 0  # depth of bar updates (they process events)
        self._bars_done = False  # the run ended: close the bars when not updating
        self._block_clock = None

    def start(self, job: str, name: str) -> None:
        """Disable Preview/Restore, enable Cancel, open the activity-dock bars."""
        from napari.utils import progress

        self.run_button.enabled = self.preview_button.enabled = False
        self.cancel_button.enabled = True
        self.progress_bar.visible = True
        self.progress_bar.value = 0
        self.status.value = f"{job}: starting..."
        # Two bars, both made here: napari's bars process events while they update, so
        # one made from a signal handler could meet the worker's 'finished' half-built.
        # Not nested: napari 0.9's nest_under groups crash Qt when closed (deleteLater).
        self._bars = (progress(total=len(STAGES), desc=f"volsr {job} '{name}'"),
                      progress(total=0, desc=f"volsr {job} '{name}': blocks"))
        self._block_clock = None

    def update_bars(self, record) -> None:
        """Move the activity-dock bars; a run that ended meanwhile closes them after."""
        self._updating += 1
        try:
            if self._bars and record.stage in STAGES:
                outer = self._bars[0]
                n = STAGES.index(record.stage) + (record.done >= record.total)
                if outer.n != n:
                    outer.n = n
                    outer.refresh()
            if self._bars and record.stage == "blocks" and not self._bars_done:
                inner = self._bars[1]
                if inner.total != record.total:
                    inner.total = record.total
                inner.n = record.done
                inner.refresh()
        finally:
            self._updating -= 1
            self._close_bars()

    def show(self, record, job: str) -> None:
        """Show a progress record in the panel's bar and status line."""
        self.progress_bar.max = max(record.total, 1)
        self.progress_bar.value = record.done
        self.status.value = self._status_text(record, job)

    def _status_text(self, record, job: str) -> str:
        if record.stage != "blocks":
            return f"{job}: {record.stage} {record.message}".rstrip()
        now = time.monotonic()
        if self._block_clock is None or record.done == 0:
            self._block_clock = (now, record.done)
        start, first = self._block_clock
        text = f"{job}: block {record.done}/{record.total}"
        done = record.done - first
        if done > 0:
            left = (now - start) / done * (record.total - record.done)
            text += f", {now - start:.0f} s elapsed, ~{left:.0f} s left"
        return text

    def finish(self) -> None:
        """Close the bars (now, or after the update in progress)."""
        self._bars_done = True
        self._close_bars()

    def ready(self) -> None:
        """Enable Preview/Restore again and hide the panel's progress bar."""
        self.run_button.enabled = self.preview_button.enabled = True
        self.cancel_button.enabled = False
        self.progress_bar.visible = False

    def _close_bars(self) -> None:
        if not self._bars_done or self._updating:
            return
        for bar in reversed(self._bars):
            bar.close()
        self._bars = ()
        self._bars_done = False
