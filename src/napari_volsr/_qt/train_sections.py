"""The Train panel's form sections: model, budget, degradation, advanced, name, run."""

from __future__ import annotations

from collections.abc import Callable

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

from ._widgets import fit_lines

FAMILY_TIPS = (
    "RCAN: robust default for denoising/deblurring and z-upsampling. SRUNet: U-Net, fast. "
    "GAN: sharper textures, may invent detail. diffusion: samples plausible detail plus an "
    "uncertainty map; slowest. U-Net (CARE): the denoising network of CARE and Noise2Void."
)
IDLE_STATUS = "check the data and the budget, then press Start"


def _family_choices() -> list[tuple[str, str]]:
    """(shown name, value) for each family in the engine's registry."""
    from ..engine.registry import display_name, family_names

    return [(display_name(name), name) for name in family_names()]


def _row(widgets: list, label: str, **kwargs) -> Container:
    """Several boxes on one labelled line (a range, the patch's axes, the buttons)."""
    row = Container(layout="horizontal", labels=False, label=label, widgets=widgets, **kwargs)
    row.margins = (0, 0, 0, 0)
    return row


class Section(Container):
    """A labelled block of the form; ``FIELDS`` are the widgets the panel exposes."""

    FIELDS: tuple[str, ...] = ()

    def __init__(self, widgets: list):
        super().__init__(labels=True, widgets=widgets)
        self.margins = (0, 0, 0, 0)

    def labelled(self) -> list:
        """The widgets shown with a label (buttons and check boxes carry their own text)."""
        return [w for w in self if w._labeled_widget() is not None]


def align_labels(sections: list[Section], font_widget) -> Callable:
    """Give every section the widest label's width, so the form reads as one column.

    Measured in ``font_widget``'s styled font; re-run when a label changes (the patch
    label does). Returns the aligning function, for the panel to call when shown (napari's
    stylesheet may enlarge the font after the panel is built).
    """
    from ._widgets import align_label_column

    def align(*_):
        align_label_column(sections, font_widget)

    for section in sections:
        for widget in section:
            widget.label_changed.connect(align)
    align()
    return align


class ModelSection(Section):
    """Family and network size."""

    FIELDS = ("family", "preset")

    def __init__(self):
        from ..engine.config import PRESET_NAMES

        self.family = ComboBox(label="family", choices=_family_choices(), value="rcan",
                               tooltip=FAMILY_TIPS)
        self.preset = ComboBox(
            label="size", choices=list(PRESET_NAMES), value="small",
            tooltip="tiny: a quick test; small: a good start on a CPU or laptop GPU; "
            "default: the published network sizes (best quality, needs a GPU).",
        )
        super().__init__([self.family, self.preset])

    def show(self, model) -> None:
        """Show a saved model's family and the preset its network matches."""
        from ..engine.config import PRESET_NAMES
        from ..engine.registry import network_config

        self.family.value = model.family
        for preset in PRESET_NAMES:
            if network_config(model.family, preset) == model.network:
                self.preset.value = preset


class BudgetSection(Section):
    """Patch, batch and the step and time budgets."""

    FIELDS = ("patch_z", "patch_y", "patch_x", "patch", "batch_size", "steps", "minutes")

    def __init__(self):
        self.patch_z = SpinBox(min=4, max=512, value=16)
        self.patch_y = SpinBox(min=4, max=2048, value=64)
        self.patch_x = SpinBox(min=4, max=2048, value=64)
        self.patch = _row([self.patch_z, self.patch_y, self.patch_x], "patch (z, y, x)",
                          tooltip="training crops on the input grid; fitted to the layers "
                          "unless you edit it")
        self.batch_size = SpinBox(label="batch size", min=1, max=512, value=4,
                                  tooltip="patches per step; lower it if memory runs out")
        self.steps = SpinBox(label="steps", min=0, max=10_000_000, value=1000, step=100,
                             tooltip="total training steps (0: no step limit); "
                             "Resume continues up to this number")
        self.minutes = FloatSpinBox(label="minutes", min=0, max=100_000, value=0, step=5,
                                    tooltip="wall-clock limit (0: none); training stops at "
                                    "whichever budget comes first")
        super().__init__([self.patch, self.batch_size, self.steps, self.minutes])

    def show_dims(self, dims: int) -> None:
        """A 2D network's patch has no z."""
        self.patch_z.visible = dims == 3
        self.patch.label = "patch (z, y, x)" if dims == 3 else "patch (y, x)"

    def patch_shape(self, dims: int) -> tuple[int, ...]:
        """The patch as the engine takes it: (z, y, x), or (y, x) for a 2D network."""
        patch = (self.patch_z.value, self.patch_y.value, self.patch_x.value)
        return patch if dims == 3 else patch[1:]

    def show_patch(self, patch: tuple[int, ...]) -> None:
        """Show a patch (``(z, y, x)``, or ``(y, x)`` for 2D: z is left as it is)."""
        boxes = (self.patch_z, self.patch_y, self.patch_x)[-len(patch):]
        for box, value in zip(boxes, patch, strict=True):
            box.value = max(box.min, min(box.max, int(value)))

    def budget_text(self) -> str:
        """The budget the form sets, in its own units (the bar shows it before Start)."""
        return describe_budget(self.steps.value or None, self.minutes.value or None)


class DegradationSection(Container):
    """How the synthetic and isotropic sources simulate degraded inputs."""

    FIELDS = ("blur_low", "blur_high", "blur", "poisson", "peak_low", "peak_high", "peak",
              "noise_low", "noise_high", "noise")

    def __init__(self):
        self.blur_low = FloatSpinBox(min=0, max=64, step=0.25, value=0.0)
        self.blur_high = FloatSpinBox(min=0, max=64, step=0.25, value=1.0)
        self.blur = _row([self.blur_low, self.blur_high], "z blur sigma",
                         tooltip="Gaussian blur along z before slab averaging, in voxels "
                         "(from, to): each patch draws its own value")
        self.poisson = CheckBox(label="Poisson noise", value=False,
                                tooltip="simulate shot noise (low light)")
        self.peak_low = FloatSpinBox(min=0.1, max=1e6, step=10, value=20.0)
        self.peak_high = FloatSpinBox(min=0.1, max=1e6, step=10, value=200.0)
        self.peak = _row([self.peak_low, self.peak_high], "photons at max", enabled=False,
                         tooltip="photons at the bright end (from, to): lower is noisier")
        self.noise_low = FloatSpinBox(min=0, max=10, step=0.01, value=0.0)
        self.noise_high = FloatSpinBox(min=0, max=10, step=0.01, value=0.03)
        self.noise = _row([self.noise_low, self.noise_high], "Gaussian noise",
                          tooltip="standard deviation (from, to) in normalised units "
                          "(0..1 spans the 1st..99.8th percentile)")
        # Its own label column (as before): it sits in a collapsible, indented.
        super().__init__(widgets=[self.blur, self.poisson, self.peak, self.noise])
        self.poisson.changed.connect(lambda on: setattr(self.peak, "enabled", bool(on)))

    def config(self):
        """The form's ranges as the engine's DegradationConfig."""
        from ..engine.degrade import DegradationConfig

        poisson = (self.peak_low.value, self.peak_high.value) if self.poisson.value else None
        return DegradationConfig(
            blur_sigma=(self.blur_low.value, self.blur_high.value),
            poisson_peak=poisson,
            gaussian_sigma=(self.noise_low.value, self.noise_high.value),
        )


class AdvancedSection(Container):
    """Optimisation and validation settings most runs leave alone."""

    FIELDS = ("learning_rate", "val_fraction", "foreground", "validate_every")

    def __init__(self):
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
        super().__init__(widgets=[self.learning_rate, self.val_fraction, self.foreground,
                                  self.validate_every])

    def learning_rate_value(self) -> float | None:
        """The typed learning rate; None for blank or 0 (the family's default)."""
        text = self.learning_rate.value.strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"learning rate '{text}' is not a number: enter e.g. 1e-4, "
                             "or leave it blank for the family's default") from None
        return value or None


class NameSection(Section):
    """The model's library name, overwrite, the live preview and TensorBoard switches."""

    FIELDS = ("model_name", "overwrite", "live_preview", "tensorboard")

    def __init__(self):
        self.model_name = LineEdit(label="model name", value="",
                                   tooltip="name in the model library (Restore lists it)")
        self.overwrite = CheckBox(label="overwrite", value=False,
                                  tooltip="replace an existing model of this name")
        self.live_preview = CheckBox(
            label="live preview layer", value=True,
            tooltip="at each validation, restore a small central crop with the current "
            "weights into its own layer (own colormap, outlined); untick to remove it")
        self.tensorboard = tensorboard_box()
        super().__init__([self.model_name, self.overwrite, self.live_preview, self.tensorboard])

    def name_hint(self) -> str:
        """What the typed name means: free, an existing model (resume it?) or taken."""
        from ..engine.geometry import describe_factors
        from ..engine.models import ModelError, library_dir, read_model_config

        name = str(self.model_name.value).strip()
        if not name or not (library_dir() / name).exists():
            return IDLE_STATUS
        try:
            config = read_model_config(library_dir() / name)
        except ModelError:
            return f"a folder named '{name}' exists in the library; choose another name"
        steps = config.training.get("steps", "?")
        return (f"'{name}' exists ({config.family} {dims_text(config)}, "
                f"{describe_factors(config.factors)}, "
                f"{steps} steps): Resume continues it, or tick overwrite, or choose another name")


def tensorboard_box() -> CheckBox:
    """The TensorBoard switch: off and disabled, saying why, without the package."""
    from ..engine.tb_log import INSTALL_HINT, TB_FOLDER, tensorboard_available

    where = (f"also write a TensorBoard log (losses, validation, preview images) into the "
             f"model folder's {TB_FOLDER}/ subfolder, beside history.csv; needs "
             f"`{INSTALL_HINT}`")
    if tensorboard_available():
        return CheckBox(label="TensorBoard log", value=False, tooltip=where)
    return CheckBox(label="TensorBoard log", value=False, enabled=False,
                    tooltip=f"tensorboard is not installed: {INSTALL_HINT}, then reopen "
                    f"this panel ({where})")


class RunSection(Section):
    """The run buttons, progress and the status line: always in view, under the form."""

    FIELDS = ("start_button", "stop_button", "resume_button", "buttons", "progress_bar",
              "status")

    def __init__(self):
        self.start_button = PushButton(text="Start")
        self.stop_button = PushButton(text="Stop", enabled=False,
                                      tooltip="stop after this step; the model is saved")
        self.resume_button = PushButton(text="Resume",
                                        tooltip="continue this model's last checkpoint")
        self.buttons = _row([self.start_button, self.stop_button, self.resume_button], "")
        self.progress_bar = ProgressBar(label="progress", value=0, min=0, max=1)
        self.status = Label(label="status", value=IDLE_STATUS)
        fit_lines(self.status)
        super().__init__([self.buttons, self.progress_bar, self.status])

    def set_running(self, running: bool) -> None:
        """Start and Resume while idle; Stop while training."""
        self.start_button.enabled = self.resume_button.enabled = not running
        self.stop_button.enabled = running

    def show_budget(self, text: str) -> None:
        """Before a run: an empty bar that names the budget (never '0 / 1 steps')."""
        self.progress_bar.max, self.progress_bar.value = 1, 0
        self.progress_bar.native.setFormat(text)

    def show_progress(self, step: int, total: int | None, elapsed: float,
                      minutes: float | None) -> None:
        """Move the bar in the unit of the budget that ends the run first."""
        bar = self.progress_bar
        time_share = elapsed / (minutes * 60) if minutes else None
        if time_share is not None and (not total or time_share >= step / total):
            bar.max, bar.value = 1000, min(1000, round(1000 * time_share))
            bar.native.setFormat(time_text(elapsed, minutes))
        elif total:
            bar.max, bar.value = total, min(step, total)
            bar.native.setFormat("%v / %m steps")

    def show_done(self, step: int, elapsed: float) -> None:
        """The run ended: a full bar saying what ran."""
        self.progress_bar.max = self.progress_bar.value = 1
        self.progress_bar.native.setFormat(f"{step} steps in {elapsed / 60:.1f} min")


def dims_text(model) -> str:
    """``3D``, ``2D`` or ``2.5D (2 planes each side)``: how a saved model sees the volume."""
    c = model.context_planes
    return f"2.5D ({c} plane{'s' if c > 1 else ''} each side)" if c else f"{model.spatial_dims}D"


def describe_budget(steps: int | None, minutes: float | None) -> str:
    """``1000 steps``, ``5 min``, ``1000 steps or 5 min`` (whichever comes first)."""
    parts = ([f"{steps} steps"] if steps else []) + ([f"{minutes:g} min"] if minutes else [])
    return "budget: " + " or ".join(parts) if parts else "no budget set"


def time_text(elapsed: float, minutes: float) -> str:
    """``1.2 / 5 min, 3:48 left``: a time budget's progress."""
    left = max(0.0, minutes * 60 - elapsed)
    return f"{elapsed / 60:.1f} / {minutes:g} min, {int(left // 60)}:{int(left % 60):02d} left"
