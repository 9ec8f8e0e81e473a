"""The Train panel's data section (source and layers) and its blind-spot settings."""

from __future__ import annotations

from collections.abc import Callable

from magicgui.widgets import ComboBox, Container, Select, SpinBox

from ._widgets import compact
from .train_sections import Section

SOURCE_LABELS = {
    "paired": "paired layers (raw + target)",
    "synthetic": "target only (synthetic degradation)",
    "isotropic": "self-supervised isotropic (one anisotropic layer)",
    "noise2void": "noisy volume alone (Noise2Void)",
    "noise2noise": "several noisy acquisitions (Noise2Noise)",
}
SOURCE_TIPS = (
    "paired: the same sample imaged twice (degraded raw + good target). target only: clean "
    "volumes; degraded inputs are simulated. isotropic: only the anisotropic volume; its "
    "lateral planes teach the network what z should look like. Noise2Void: only the noisy "
    "volume; each voxel is predicted from its neighbours (noise must be independent per "
    "voxel). Noise2Noise: two or more noisy acquisitions of the same sample; each teaches "
    "the network to predict the others."
)
# Denoising sources: no clean data, no degradation, same size out (z-factor 1).
DENOISE_SOURCES = ("noise2void", "noise2noise")
# The sources that simulate their inputs (the degradation box is theirs).
SIMULATING_SOURCES = ("synthetic", "isotropic")
# The sources that can learn y, x upsampling (lateral super-resolution): they have targets.
LATERAL_SOURCES = ("paired", "synthetic")
# The volume picker's label and tip for each source that reads it.
VOLUME_WORDS = {
    "isotropic": ("volume", "the anisotropic volume to make isotropic"),
    "noise2void": ("noisy volume", "the noisy volume to denoise: the network learns from it "
                   "alone"),
}
# Masked shares offered: one voxel in this many (Noise2Void 1/64, CAREamics about 1/512).
MASKED_ONE_IN = (16, 32, 64, 128, 256, 512)
# The acquisitions list shows at most this many rows (it scrolls beyond).
ACQUISITION_ROWS = 4
CONTEXT_TIP = ("2.5D: the network also sees this many z planes on each side of the plane it "
               "restores; 0 = plain 2D")


class DataSection(Section):
    """Data source, its layers, factors, network dimensionality and 2.5D context."""

    FIELDS = ("source", "raw", "target", "volume", "acquisitions", "z_factor",
              "lateral_factor", "dims", "context_planes")

    def __init__(self, layer_choices: Callable):
        from ..engine.training_config import MAX_CONTEXT_PLANES
        from ..engine.training_request import SOURCES

        self.source = ComboBox(label="data", value="paired", tooltip=SOURCE_TIPS,
                               choices=[(SOURCE_LABELS.get(s, s), s) for s in SOURCES])
        self.raw = ComboBox(label="raw", choices=layer_choices, nullable=True,
                            tooltip="the degraded acquisition: noisy, blurred or with thick "
                            "z-slices")
        self.target = ComboBox(label="target", choices=layer_choices, nullable=True,
                               tooltip="the good version the network should learn to produce")
        self.volume = ComboBox(label="volume", choices=layer_choices, nullable=True,
                               tooltip=VOLUME_WORDS["isotropic"][1])
        self.acquisitions = Select(
            label="acquisitions", choices=layer_choices,
            tooltip="two or more acquisitions of the same sample, all of the same shape: "
            "click a layer to add or remove it",
        )
        self.z_factor = SpinBox(
            label="z-factor", min=1, max=16, value=1,
            tooltip="z upsampling: 1 restores at the same size; f gives f times more z-slices. "
            "Paired: target depth / raw depth. Isotropic: z spacing / x spacing. "
            "Noise2Void and Noise2Noise denoise at the same size (1).",
        )
        # One box for y and x, as in the Restore panel: lateral pixels are square.
        self.lateral_factor = SpinBox(
            label="y, x factor", min=1, max=16, value=1,
            tooltip="y and x upsampling, both by this factor (lateral super-resolution): the "
            "target has this many times the raw's rows and columns. Paired: target width / "
            "raw width; target only: inputs are area-averaged in y and x. 1 = none; the "
            "isotropic and denoising sources keep y and x.",
        )
        self.dims = ComboBox(
            label="network", choices=[("3D (volumetric)", 3), ("2D (slice by slice)", 2)], value=3,
            tooltip="3D uses context across slices; 2D restores each slice alone (z-factor 1). "
            "The isotropic source always trains a 2D network on orthogonal planes.",
        )
        self.context_planes = SpinBox(label="neighbour planes", min=0, max=MAX_CONTEXT_PLANES,
                                      value=0, tooltip=CONTEXT_TIP)
        super().__init__([self.source, self.raw, self.target, self.volume, self.acquisitions,
                          self.z_factor, self.lateral_factor, self.dims, self.context_planes])
        for picker in (self.raw, self.target, self.volume):
            compact(picker)
        _toggle_list(self.acquisitions)
        self._choices = layer_choices

    def refresh(self, selection, choose: bool) -> None:
        """Re-list the layers; with ``choose``, pick the source and layers they suggest.

        Otherwise (the user chose) fill only empty pickers, the selected layers first,
        and never with the layer the other picker of a pair holds.
        """
        from .train_defaults import acquisition_group, choose_data

        for picker in (self.raw, self.target, self.volume, self.acquisitions):
            picker.reset_choices()
        _show_checks(self.acquisitions)
        choices = self._choices()
        if not choices:
            return
        choice = choose_data(choices, selection) if choose else None
        if choice is not None:
            self.source.value = choice.source
            for role in ("raw", "target", "volume"):
                value = getattr(choice, role)
                if value is not None:
                    getattr(self, role).value = value
        if choose or not self.acquisitions.value:
            self.acquisitions.value = acquisition_group(choices, selection)
        selected = [layer for layer in selection if layer in choices]
        if self.volume.value is None:
            self.volume.value = (selected or choices)[-1]
        if self.target.value is None:
            pool = [layer for layer in selected or choices if layer is not self.raw.value]
            pool = pool or [layer for layer in choices if layer is not self.raw.value]
            self.target.value = pool[-1] if pool else None
        if self.raw.value is None:
            others = [layer for layer in choices if layer is not self.target.value]
            self.raw.value = others[0] if others else None

    @property
    def pickers(self) -> dict:
        """The layer picker of each role, in the order the engine names them."""
        from ..engine.training_request import SOURCE_ROLES

        source = self.source.value
        every = {"raw": self.raw, "target": self.target,
                 "volume": self.acquisitions if source == "noise2noise" else self.volume}
        return {role: every[role] for role in SOURCE_ROLES[source]}

    def layers(self, role: str) -> list:
        """The layers chosen for ``role``, in the viewer's order (empty when none)."""
        value = self.pickers[role].value
        if isinstance(value, (list, tuple)):
            return [layer for layer in self._choices() if layer in value]
        return [] if value is None else [value]

    def inputs(self) -> dict:
        """The chosen layers as engine inputs (None for an empty picker: the engine asks)."""
        from ..api import volume_input

        return {role: [volume_input(layer, role) for layer in self.layers(role)] or None
                for role in self.pickers}

    @property
    def source_layer(self):
        """The layer that sets defaults: raw, target, volume or first acquisition."""
        first = self.layers(next(iter(self.pickers)))
        return first[0] if first else None

    def _pair_factors(self) -> tuple[int, int, int] | None:
        """The chosen pair's per-axis shape ratios (None: no whole ratios, or no pair)."""
        from ..engine.training_request import pair_factors

        raw, target = self.raw.value, self.target.value
        if self.source.value != "paired" or raw is None or target is None:
            return None
        return pair_factors(raw.data.shape, target.data.shape)

    def default_z(self) -> int:
        """The z-factor the layers imply: the pair's depth ratio, the volume's anisotropy."""
        from ..engine.geometry import default_z_factor

        if self.source.value == "isotropic" and self.volume.value is not None:
            return default_z_factor(self.volume.value.scale)
        return (self._pair_factors() or (1,))[0]

    def fixed_factors(self) -> set[str]:
        """The factor boxes the source fixes: ``z`` (denoising keeps the size: z-factor 1),
        ``lateral`` (only sources with targets learn y, x upsampling)."""
        source = self.source.value
        return ({"z"} if source in DENOISE_SOURCES else set()) | (
            {"lateral"} if source not in LATERAL_SOURCES else set())

    def follow_lateral(self, follow_default: bool) -> None:
        """The y, x factor for the source: the pair's (unless edited), 1 where it is fixed."""
        takes = self.source.value in LATERAL_SOURCES
        if not takes or follow_default:
            self.lateral_factor.value = (self._pair_factors() or (1, 1))[1] if takes else 1
        self.lateral_factor.enabled = takes

    def show_model(self, model) -> None:
        """Show a saved model's factors, dimensionality and neighbour planes."""
        self.z_factor.value = model.z_factor
        self.lateral_factor.value = model.lateral_factors[0]
        self.dims.value = model.spatial_dims
        self.context_planes.value = model.context_planes  # after dims: they reset it

    def upsampling(self):
        """The z-factor, or the factors (z, y, x) when y and x are upsampled too: what the
        engine's defaults (family, dimensionality, patch) take."""
        z, lateral = int(self.z_factor.value), int(self.lateral_factor.value)
        return z if lateral == 1 else (z, lateral, lateral)

    def factor_keywords(self, resume: bool) -> dict:
        """``resolve_training``'s factor keywords: none on Resume (the checkpoint's own)."""
        if resume:
            return {"z_factor": None}
        factors = self.upsampling()
        if isinstance(factors, int):
            return {"z_factor": factors}
        return {"z_factor": factors[0], "factors": factors}

    def takes_context(self, family: str) -> bool:
        """Whether the form's model (with ``family``) can see neighbouring planes."""
        from .train_defaults import takes_context

        return takes_context(self.source.value, self.dims.value, self.upsampling(), family)

    def show_context(self, family: str, follow_default: bool) -> None:
        """Show the neighbour planes where the engine takes them.

        With ``follow_default`` (not edited) the box shows the engine's default for the
        task, read at each change so that a new default reaches the panel.
        """
        from ..engine.training_config import default_context_planes

        self.context_planes.visible = self.takes_context(family)
        if follow_default:
            self.context_planes.value = default_context_planes(
                self.source.value, self.dims.value, self.upsampling(), family)

    def context_value(self, family: str) -> int | None:
        """The neighbour planes to send: None where they do not apply (the engine decides)."""
        return self.context_planes.value if self.takes_context(family) else None

    def show_source(self) -> None:
        """Show the pickers the chosen source reads, the volume picker named for it."""
        source = self.source.value
        self.raw.visible = source == "paired"
        self.target.visible = source in ("paired", "synthetic")
        self.volume.visible = source in VOLUME_WORDS
        self.acquisitions.visible = source == "noise2noise"
        if source in VOLUME_WORDS:
            label, tip = VOLUME_WORDS[source]
            if self.volume.label != label:
                self.volume.label = label
            self.volume.tooltip = tip


def _toggle_list(select: Select) -> None:
    """A list where a click adds or removes one layer, each marked by a check box.

    The selection stays the value (magicgui's); the boxes only show it, so they are not
    clickable themselves (a click on one would toggle both and undo itself).
    """
    from qtpy.QtWidgets import QAbstractItemView

    native = select.native
    native.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
    # The check boxes say what is chosen; a highlight too would read as a second state.
    native.setStyleSheet("QListView::item:selected { background: transparent; }")
    native.itemSelectionChanged.connect(lambda: _show_checks(select))
    select.changed.connect(lambda _value: _show_checks(select))
    _show_checks(select)


def _show_checks(select: Select) -> None:
    """Tick the chosen layers; fit the list to them (two to ``ACQUISITION_ROWS`` rows)."""
    from qtpy.QtCore import QSignalBlocker, Qt

    native = select.native
    blocker = QSignalBlocker(native)
    for i in range(native.count()):
        item = native.item(i)
        item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked if item.isSelected()
                           else Qt.CheckState.Unchecked)
    blocker.unblock()
    rows = max(2, min(ACQUISITION_ROWS, native.count()))
    row = native.sizeHintForRow(0) if native.count() else -1
    row = row if row > 0 else native.fontMetrics().height() + 2
    height = rows * row + 2 * native.frameWidth() + 4
    native.setMinimumHeight(height)
    native.setMaximumHeight(height)


class BlindSpotSection(Container):
    """How Noise2Void hides voxels from the network (TrainingConfig.blind_spot)."""

    FIELDS = ("masked_one_in", "replacement", "mask_axis", "mask_span")

    def __init__(self):
        from ..engine.config import BlindSpotConfig

        default = BlindSpotConfig()
        # "1 in 64" reads better than 1.5625 % and keeps the engine's default exact.
        one_in = round(1 / default.masked_fraction)
        self.masked_one_in = ComboBox(
            label="masked voxels", value=one_in,
            choices=[(f"1 in {n} ({100 / n:.2g} %)", n)
                     for n in sorted({*MASKED_ONE_IN, one_in})],
            tooltip="one voxel in this many is hidden from the network and predicted from "
            "its neighbours; only those carry the loss (more hidden: more signal per step; "
            "CAREamics hides 1 in 512)")
        self.replacement = ComboBox(
            label="replacement", value=default.replacement,
            choices=[("median of neighbours (N2V2)", "median"),
                     ("random neighbour (N2V)", "neighbour")],
            tooltip="what a hidden voxel shows the network: the median of its neighbours "
            "avoids checkerboard artefacts; a random neighbour is the original Noise2Void")
        self.mask_axis = ComboBox(
            label="noise streaks", value=default.mask_axis,
            choices=[("none", None), ("along z", "z"), ("along y", "y"), ("along x", "x")],
            tooltip="structured noise (e.g. camera stripes) correlated along one axis: hide "
            "a line of voxels along it, not one voxel (structN2V)")
        self.mask_span = SpinBox(
            label="streak span", min=3, max=15, step=2, value=default.mask_span,
            tooltip="length of the hidden line along the streak axis (odd, the hidden voxel "
            "at its centre): about how far the noise is correlated")
        # Its own label column (as the degradation box): it sits in a collapsible, indented.
        super().__init__(widgets=[self.masked_one_in, self.replacement, self.mask_axis,
                                  self.mask_span])
        self.mask_axis.changed.connect(self._show_span)
        self._show_span()

    def _show_span(self, _=None) -> None:
        self.mask_span.enabled = self.mask_axis.value is not None

    def values(self) -> dict:
        """The form's settings as BlindSpotConfig fields (the engine checks them)."""
        return dict(masked_fraction=1 / self.masked_one_in.value,
                    replacement=self.replacement.value, mask_axis=self.mask_axis.value,
                    mask_span=self.mask_span.value)
