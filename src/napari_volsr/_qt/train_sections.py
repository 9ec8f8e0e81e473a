"""The Train panel's form, one small container per section: model, data, budget, run."""

from __future__ import annotations

import math
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

FAMILY_TIPS = (
    "RCAN: robust default for denoising/deblurring and z-upsampling. SRUNet: U-Net, fast. "
    "GAN: sharper textures, may invent detail. diffusion: samples plausible detail plus an "
    "uncertainty map; slowest."
)
SOURCE_LABELS = {
    "paired": "paired layers (raw + target)",
    "synthetic": "target only (synthetic degradation)",
    "isotropic": "self-supervised isotropic (one anisotropic layer)",
}
IDLE_STATUS = "choose data, then press Start"


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


def align_labels(sections: list[Section]) -> None:
    """Give every section the widest label's width, so the form reads as one column.

    A section re-aligns its own labels when one changes (the patch label does); this
    runs after it.
    """
    from magicgui.application import use_app

    measure = use_app().get_obj("get_text_width")

    def align(*_):
        widgets = [w for section in sections for w in section.labelled()]
        widest = max(measure(w.label) for w in widgets)
        for widget in widgets:
            widget._labeled_widget().label_width = widest

    for section in sections:
        for widget in section:
            widget.label_changed.connect(align)
    align()


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


class DataSection(Section):
    """Data source, its layers, z-factor and network dimensionality."""

    FIELDS = ("source", "raw", "target", "volume", "z_factor", "dims")

    def __init__(self, layer_choices: Callable):
        from ..engine.training_request import SOURCES

        self.source = ComboBox(
            label="data", choices=[(SOURCE_LABELS[s], s) for s in SOURCES], value="paired",
            tooltip="paired: the same sample imaged twice (degraded raw + good target). "
            "target only: clean volumes; degraded inputs are simulated. isotropic: only the "
            "anisotropic volume; its lateral planes teach the network what z should look like.",
        )
        self.raw = ComboBox(label="raw", choices=layer_choices, nullable=True,
                            tooltip="the degraded acquisition: noisy, blurred or with thick "
                            "z-slices")
        self.target = ComboBox(label="target", choices=layer_choices, nullable=True,
                               tooltip="the good version the network should learn to produce")
        self.volume = ComboBox(label="volume", choices=layer_choices, nullable=True,
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
        super().__init__([self.source, self.raw, self.target, self.volume, self.z_factor,
                          self.dims])
        self._choices = layer_choices

    def refresh(self, selection) -> None:
        """Re-list the layers; fill empty pickers, with the selected layers first."""
        for picker in (self.raw, self.target, self.volume):
            picker.reset_choices()
        choices = self._choices()
        if not choices:
            return
        selected = [layer for layer in selection if layer in choices]
        if self.volume.value is None:
            self.volume.value = (selected or choices)[-1]
        if self.target.value is None:
            self.target.value = (selected or choices)[-1]
        if self.raw.value is None:
            others = [layer for layer in choices if layer is not self.target.value]
            self.raw.value = (others or choices)[0]

    @property
    def pickers(self) -> dict[str, ComboBox]:
        """The layer picker of each role, in the order the engine names them."""
        from ..engine.training_request import SOURCE_ROLES

        every = {"raw": self.raw, "target": self.target, "volume": self.volume}
        return {role: every[role] for role in SOURCE_ROLES[self.source.value]}

    @property
    def source_layer(self):
        """The layer that sets defaults: raw, target or volume, by source."""
        return next(iter(self.pickers.values())).value

    def default_z(self) -> int:
        """The z-factor the layers imply: the pair's depth ratio, the volume's anisotropy."""
        from ..engine.geometry import default_z_factor
        from ..engine.training_request import pair_z_factor

        source, raw, target = self.source.value, self.raw.value, self.target.value
        if source == "isotropic" and self.volume.value is not None:
            return default_z_factor(self.volume.value.scale)
        if source == "paired" and raw is not None and target is not None:
            return pair_z_factor(raw.data.shape, target.data.shape) or 1
        return 1

    def show_source(self) -> None:
        """Show the pickers the chosen source reads."""
        source = self.source.value
        self.raw.visible = source == "paired"
        self.target.visible = source in ("paired", "synthetic")
        self.volume.visible = source == "isotropic"


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

    def fit_patch(self, shape: tuple, z_factor: int, source: str, dims: int,
                  family: str) -> None:
        """Default patch, shrunk to fit a layer of ``shape`` with room for validation rows."""
        fits, f = len(shape) == 3, z_factor
        if dims == 3:
            want = [max(4, 32 // f), 64, 64]
            if fits:
                depth = shape[0] if source == "paired" else shape[0] // f
                want = [min(want[0], depth), min(64, shape[1] // 2), min(64, shape[2])]
            # Diffusion UNets halve z too: keep z a multiple of their divisor.
            z_step = 8 // math.gcd(8, f) if family == "diffusion" else 1
            sizes = [_round_down(want[0], z_step), _round_down(want[1], 8),
                     _round_down(want[2], 8)]
        else:
            want = [64, 64]
            if fits:
                rows = shape[1] // (2 * f) if source == "isotropic" else shape[1] // 2
                want = [min(64, rows), min(64, shape[2])]
            sizes = [self.patch_z.value, _round_down(want[0], 8), _round_down(want[1], 8)]
        for box, value in zip((self.patch_z, self.patch_y, self.patch_x), sizes, strict=True):
            box.value = max(4, value)


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


class RunSection(Section):
    """Model name, the run buttons, progress and the status line."""

    FIELDS = ("model_name", "overwrite", "start_button", "stop_button", "resume_button",
              "buttons", "progress_bar", "status")

    def __init__(self):
        self.model_name = LineEdit(label="model name", value="",
                                   tooltip="name in the model library (Restore lists it)")
        self.overwrite = CheckBox(label="overwrite", value=False,
                                  tooltip="replace an existing model of this name")
        self.start_button = PushButton(text="Start")
        self.stop_button = PushButton(text="Stop", enabled=False,
                                      tooltip="stop after this step; the model is saved")
        self.resume_button = PushButton(text="Resume",
                                        tooltip="continue this model's last checkpoint")
        self.buttons = _row([self.start_button, self.stop_button, self.resume_button], "")
        self.progress_bar = ProgressBar(label="progress", value=0, min=0, max=1)
        self.progress_bar.native.setFormat("%v / %m steps")
        self.status = Label(label="status", value=IDLE_STATUS)
        self.status.native.setWordWrap(True)
        super().__init__([self.model_name, self.overwrite, self.buttons, self.progress_bar,
                          self.status])

    def name_hint(self) -> str:
        """What the typed name means: free, an existing model (resume it?) or taken."""
        from ..engine.models import ModelError, library_dir, read_model_config

        name = str(self.model_name.value).strip()
        if not name or not (library_dir() / name).exists():
            return IDLE_STATUS
        try:
            config = read_model_config(library_dir() / name)
        except ModelError:
            return f"a folder named '{name}' exists in the library; choose another name"
        steps = config.training.get("steps", "?")
        return (f"'{name}' exists ({config.family}, x{config.z_factor}, {steps} steps): "
                "Resume continues it, or tick overwrite, or choose another name")

    def set_running(self, running: bool) -> None:
        """Start and Resume while idle; Stop while training."""
        self.start_button.enabled = self.resume_button.enabled = not running
        self.stop_button.enabled = running

    def show_progress(self, step: int, total: int | None) -> None:
        """Move the bar (a time-only budget has no total: the bar stays)."""
        if total:
            self.progress_bar.max = total
            self.progress_bar.value = min(step, total)


def collapsible(title: str, section: Container):
    """A collapsed-by-default box holding ``section`` (magicgui has none)."""
    from superqt import QCollapsible

    box = QCollapsible(title, collapsedIcon="▶")
    box.addWidget(section.native)
    return box


def _round_down(value: int, step: int) -> int:
    return value - value % step if value >= step else value
