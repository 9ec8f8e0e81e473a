"""The Restore panel's "then apply" row: a second model run after the first, as one job.

The chain's rules (which z-factor each model takes, what is refused) are the engine's
(``engine.chain``); this row only gathers the choice and shows what the engine says.
"""

from __future__ import annotations

from dataclasses import dataclass

from magicgui.widgets import ComboBox, Container, Label

from ..engine.chain import chain_label, chain_notes, stage_geometries, stage_name
from ..engine.geometry import describe_factors
from ..engine.models import ModelError, read_model_config
from ..engine.restorers import BASELINES
from ..engine.text import format_bytes
from ._restore_logic import BASELINE_DESCRIPTIONS, PlanSummary, _xyz, model_card
from ._widgets import compact, fit_lines

NOTHING = ""  # the chooser's value for "no second model"
MUTED_STYLE = "color: #a0a4ab;"
WARN_STYLE = "color: #e6a23c;"


@dataclass(frozen=True)
class ChainPlanSummary:
    """The tiling of each model of a chain (what the tiles line shows for a chain)."""

    names: tuple[str, ...]
    stages: tuple[PlanSummary, ...]

    @property
    def n_blocks(self) -> int:
        """Blocks of the whole job."""
        return sum(s.n_blocks for s in self.stages)

    @property
    def over_budget(self) -> bool:
        """Some stage's fixed block exceeds the memory budget."""
        return any(s.over_budget for s in self.stages)

    def describe(self) -> str:
        """One line per model, then memory and the output shape."""
        lines = []
        for name, stage in zip(self.names, self.stages, strict=True):
            plan, n = stage.plan, stage.n_blocks
            factors = describe_factors(getattr(plan, "factors", plan.z_factor))
            lines.append(f"{name} {factors}: {n} block{'' if n == 1 else 's'} of "
                         f"{_xyz(plan.block_shape)}, halo {_xyz(plan.halo)}")
        mode = "auto" if self.stages[0].auto else "fixed"
        biggest = max(s.block_bytes for s in self.stages)
        lines.append(f"{mode}: ~{format_bytes(biggest)} per block of "
                     f"{format_bytes(self.stages[0].budget_bytes)} budget; output "
                     f"{_xyz(self.stages[-1].plan.out_shape)}")
        if self.over_budget:
            lines.append("blocks exceed the memory budget: use 'auto' or smaller blocks")
        return "\n".join(lines)


def plan_summary(names, plans, geometries, budget: float, auto: bool):
    """A :class:`PlanSummary` for one model, a :class:`ChainPlanSummary` for a chain."""
    stages = tuple(PlanSummary.of(plan, g.bytes_per_voxel, budget, auto)
                   for plan, g in zip(plans, geometries, strict=True))
    return stages[0] if len(stages) == 1 else ChainPlanSummary(tuple(names), stages)


class ChainSection(Container):
    """"then apply": an optional second model, run on the first one's result."""

    WIDGETS = ("then_model", "then_card", "chain_note")

    def __init__(self, model_choices):
        super().__init__(labels=True)
        self._model_choices = model_choices
        self.then_model = ComboBox(
            label="then apply", choices=self._choices, value=NOTHING,
            tooltip="a second model run on the first one's result, in the same job: e.g. a "
                    "denoiser first, then an isotropic (z-upsampling) model",
        )
        compact(self.then_model)
        # What the second model is (as the model row's card), then advice on the order.
        self.then_card = Label(label="", value="", visible=False)
        self.chain_note = Label(label="", value="", visible=False)
        for label, style in ((self.then_card, MUTED_STYLE), (self.chain_note, WARN_STYLE)):
            fit_lines(label)
            label.native.setStyleSheet(style)
        self.extend([self.then_model, self.then_card, self.chain_note])
        self.margins = (0, 0, 0, 0)
        self.then_model.changed.connect(self._show_card)

    def _show_card(self, then=None) -> None:
        text = ""
        if then in BASELINE_DESCRIPTIONS:
            text = BASELINE_DESCRIPTIONS[then]
        elif then:
            try:
                text = model_card(read_model_config(then))
            except ModelError as exc:
                text = str(exc)
        self.then_card.value = text
        self.then_card.visible = bool(text)

    def _choices(self, _widget=None):
        return [("nothing (one model)", NOTHING), *self._model_choices()]

    def models(self, first):
        """What the job restores with: ``first`` alone, or ``[first, then]``."""
        then = self.then_model.value
        return [first, then] if then else first

    def plan(self, first, z_factor, spacing, samples=None, factors=None):
        """``(models, stage geometries)`` of the job; the notes line follows the chain.

        ``factors`` (fz, fy, fx), for jobs that upsample y and x (else the z-factor alone).
        Raises the engine's ValueError for a chain it refuses (and unknown models).
        """
        models = self.models(first)
        self.show_notes([])
        lateral = {} if factors is None else {"factors": tuple(factors)}
        geometries = stage_geometries(models, z_factor, spacing, samples, **lateral)
        if isinstance(models, list):
            self.show_notes(chain_notes([stage_name(m) for m in models], geometries))
        return models, geometries

    def fixed_lateral(self, first) -> tuple[int, int] | None:
        """The (fy, fx) the job's trained models give (their product); None when an
        interpolation baseline takes part (it upsamples as asked) or a model is unreadable
        (the tiles line says why)."""
        models = self.models(first)
        models = models if isinstance(models, list) else [models]
        if any(m is None or m in BASELINES for m in models):
            return None
        fy = fx = 1
        for model in models:
            try:
                y, x = read_model_config(model).lateral_factors
            except ModelError:
                return None
            fy, fx = fy * y, fx * x
        return fy, fx

    def names(self, first) -> list[str]:
        """The models' names, in the order they run."""
        models = self.models(first)
        return [stage_name(m) for m in (models if isinstance(models, list) else [models])]

    def show_notes(self, notes) -> None:
        """What the engine says about an allowed chain (order, a diffusion's mean)."""
        self.chain_note.value = "\n".join(notes)
        self.chain_note.visible = bool(notes)

    def follow(self, first, z_widget, default_z: int | None) -> None:
        """Set the z-factor row for a chain: the models' product, fixed, when they are all
        trained models; the whole job's (a baseline's share follows) otherwise."""
        then = self.then_model.value
        if not then:
            return
        models = [first, then]
        if any(m in BASELINES for m in models):
            value, enabled = default_z, True
            tip = "the whole chain's z upsampling: the interpolation does what the model leaves"
        else:
            try:
                value = 1
                for geometry in stage_geometries(models):
                    value *= geometry.z_factor
            except ValueError:  # the tiles line says why
                return
            enabled, tip = False, f"set by the models: {chain_label(models)} upsample z x{value}"
        z_widget.enabled, z_widget.tooltip = enabled, tip
        if value is not None:
            with z_widget.changed.blocked():
                z_widget.value = min(value, 16)
