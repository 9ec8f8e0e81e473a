"""What the Restore panel says, without Qt: the tiles line and the model card."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.text import format_bytes
from ..engine.tiling import BlockPlan

BASELINE_DESCRIPTIONS = {
    "nearest": "nearest-voxel copy along each upsampled axis (baseline: no training, any "
               "factors)",
    "linear": "linear interpolation along each upsampled axis (baseline: no training, any "
              "factors)",
    "cubic": "cubic B-spline interpolation along each upsampled axis, the strongest standard "
             "baseline (no training, any factors)",
    "catmull-rom": "Catmull-Rom cubic interpolation along each upsampled axis (baseline: no "
                   "training, any factors)",
}


def _xyz(values) -> str:
    return "x".join(str(int(v)) for v in values)


@dataclass(frozen=True)
class PlanSummary:
    """The tiling a restore of a layer will use (from ``engine.tiling.plan_restore``)."""

    plan: BlockPlan
    block_bytes: float
    budget_bytes: float
    auto: bool

    @classmethod
    def of(cls, plan: BlockPlan, bytes_per_voxel: float, budget_bytes: float,
           auto: bool) -> PlanSummary:
        """Summarise ``plan`` for a restorer using ``bytes_per_voxel`` within a budget."""
        return cls(plan, plan.block_bytes(bytes_per_voxel), float(budget_bytes), auto)

    @property
    def n_blocks(self) -> int:
        """Number of blocks."""
        return len(self.plan)

    @property
    def over_budget(self) -> bool:
        """A fixed block whose estimate exceeds the memory budget."""
        return self.block_bytes > self.budget_bytes

    def describe(self) -> str:
        """Two short lines: blocks and memory."""
        plan = self.plan
        mode = "auto" if self.auto else "fixed"
        blocks = f"{self.n_blocks} block" + ("" if self.n_blocks == 1 else "s")
        text = (
            f"{mode}: {blocks} of {_xyz(plan.block_shape)} (grid {_xyz(plan.grid_shape)}), "
            f"halo {_xyz(plan.halo)}\n~{format_bytes(self.block_bytes)} per block of "
            f"{format_bytes(self.budget_bytes)} budget; output {_xyz(plan.out_shape)}"
        )
        if self.over_budget:
            text += "\nblocks exceed the memory budget: use 'auto' or smaller blocks"
        return text


def region_text(region, shape) -> str:
    """``z 17-21, y 0-151 (all 152), x 0-125 (all 126)``: voxels a preview covers, first
    and last included, so a whole axis reads as whole."""
    parts = []
    for axis, (start, stop), n in zip("zyx", region, shape, strict=True):
        whole = f" (all {n})" if (start, stop) == (0, n) else f" of {n}"
        parts.append(f"{axis} {start}-{stop - 1}{whole}")
    return ", ".join(parts)


# ---------------------------------------------------------------------- model card
def _spacing_text(spacing, unit) -> str:
    """``0.8 x 0.2 x 0.2 µm (z, y, x)``; an unknown unit is said, never guessed."""
    values = " x ".join(f"{float(s):.4g}" for s in spacing)
    return f"{values} {unit} (z, y, x)" if unit else f"{values} (z, y, x; unit not recorded)"


def model_card(config) -> str:
    """Describe in a few lines what a saved model is and what it was trained on."""
    from ..engine.geometry import describe_factors
    from ..engine.registry import DISPLAY_NAMES, family

    try:
        fam = DISPLAY_NAMES[family(config.family)]
    except ValueError:
        fam = str(config.family)
    lines = [f"{fam} · {config.task} · {describe_factors(config.factors)} · "
             f"{config.spatial_dims}D network"]
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
            unit = training.get("voxel_unit") or data.get("unit")
            trained.append(f"spacing {_spacing_text(spacing, unit)}")
        lines.append("trained on " + ", ".join(trained))
        run = []
        if training.get("steps") is not None:
            run.append(f"{training['steps']} steps")
        if training.get("minutes") is not None:
            run[-1:] = [f"{run[-1]} ({float(training['minutes']):.3g} min)"] if run else []
        validation = training.get("final_validation") or {}
        baseline = (training.get("baseline_validation") or {}).get("psnr")
        if validation.get("psnr") is not None:
            run.append(f"val PSNR {float(validation['psnr']):.2f} dB")
            if baseline is not None:  # the interpolation baseline on the same patches
                run[-1] += f" (baseline {float(baseline):.2f} dB)"
        if validation.get("ssim") is not None:
            run.append(f"SSIM {float(validation['ssim']):.3f}")
        if not validation:
            run.append("no validation recorded")
        lines.append(", ".join(run))
    if config.family == "diffusion":
        lines.append(f"sampler default: {config.network.sample_steps} steps x "
                     f"{config.network.n_samples} samples")
    return "\n".join(lines)
