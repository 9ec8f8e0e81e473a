"""Supervised training: a network regresses the target from the degraded input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from napari_volsr.engine.methods.base import TrainingMethod, backward_step
from napari_volsr.engine.nets._common import to_output_grid

LOSSES = ("mae", "mse", "cubic_weighted")


def cubic_weights(inputs: torch.Tensor, target: torch.Tensor,
                  z_factor: int | Sequence[int]) -> torch.Tensor:
    """Return the weights ``E / (2 max E) + 0.5`` of the cubic-weighted MSE (3D SR U-Net).

    ``E`` is the squared error of the cubic-interpolated input against the target, so
    voxels that interpolation gets wrong weigh up to twice as much as the ones it gets
    right. The maximum is taken per sample, so a sample's weights do not depend on the
    rest of the batch; where ``E`` is zero everywhere all weights are 0.5.

    Parameters
    ----------
    inputs
        Degraded input (B, C, D, ...).
    target
        Target (B, C, *(s * f)): every spatial axis times its factor.
    z_factor
        Upsampling factor along the first spatial axis, or one factor per spatial axis
        (all 1: ``E`` compares the input itself).

    Returns
    -------
    torch.Tensor
        Weights shaped like ``target``, in [0.5, 1].
    """
    factors = _factors(z_factor, inputs.ndim - 2)
    reference = to_output_grid(inputs, factors, "catmull-rom")
    if reference.shape[2:] != target.shape[2:]:
        raise ValueError(
            f"input {tuple(inputs.shape)} upsampled by {factors} does not match target "
            f"{tuple(target.shape)}"
        )
    # NaN targets (blind spots) are left out of the loss: weight them 0.5, not NaN.
    error = torch.nan_to_num((reference - target) ** 2, nan=0.0)
    peak = error.flatten(1).amax(dim=1).view(-1, *[1] * (error.ndim - 1))
    # Guard the all-zero case: E / max(E) -> 0 there, i.e. weight 0.5.
    return error / (2 * peak.clamp_min(torch.finfo(error.dtype).tiny)) + 0.5


def _factors(factors, spatial_dims: int) -> tuple[int, ...]:
    """Per-axis factors from an int (the first axis's) or a sequence."""
    if isinstance(factors, Sequence):
        return tuple(int(f) for f in factors)
    return (int(factors),) + (1,) * (spatial_dims - 1)


class SupervisedMethod(TrainingMethod):
    """Wrap a network with a pixel loss, its optimizer and one training step.

    Parameters
    ----------
    net
        The network (any of the families); saved and used for inference.
    loss
        ``"mae"``, ``"mse"`` or ``"cubic_weighted"`` (MSE weighted by how badly cubic
        interpolation of the input does, see :func:`cubic_weights`).
    default_lr
        Adam's learning rate when the config sets none (the family's).
    """

    replicated = ("net",)

    def __init__(self, net: nn.Module, loss: str = "mae", default_lr: float = 1e-4):
        super().__init__()
        self.default_lr = default_lr
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.net = net
        self.loss = loss
        self.z_factor = int(getattr(net, "z_factor", 1))
        # Stand-in networks of tests may only say their z-factor.
        self.factors = tuple(getattr(net, "factors", ())) or None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Return the scalar loss of the net on ``batch`` ({"input", "target"}).

        Where the target holds NaN (blind-spot targets: only masked voxels are known)
        the loss is the mean over its finite voxels only.
        """
        inputs, target = batch["input"], batch["target"]
        pred = self.replica("net")(inputs)
        known = torch.isfinite(target)
        partial = not bool(known.all())
        weights = None
        if self.loss == "cubic_weighted":
            with torch.no_grad():
                weights = cubic_weights(inputs, target, self.factors or self.z_factor)
        if partial:
            # Zero, not NaN, where unknown: a NaN would reach the gradient through abs/pow.
            target = torch.where(known, target, 0.0)
        error = torch.abs(pred - target) if self.loss == "mae" else (pred - target) ** 2
        if weights is not None:
            error = weights * error
        return error[known].mean() if partial else error.mean()

    def configure_optimizers(self, lr: float | None = None) -> list[torch.optim.Optimizer]:
        """Create (and store on ``self.optimizers``) one Adam, ``default_lr`` unless given."""
        lr = self.default_lr if lr is None else lr
        self.optimizers = [torch.optim.Adam(self.net.parameters(), lr=lr)]
        return self.optimizers

    def training_step(self, batch: dict[str, torch.Tensor], step: int | None = None
                      ) -> dict[str, float]:
        """Run one optimisation step and return ``{"loss": value}``."""
        (optimizer,) = self.ensure_optimizers()
        self.train()
        optimizer.zero_grad(set_to_none=True)
        loss = self(batch)
        backward_step(loss, optimizer, self.scaler(0))
        return {"loss": loss.item()}
