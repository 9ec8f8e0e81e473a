"""The training-method contract: everything the training loop may ask of a method."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


def backward_step(loss, optimizer, scaler=None) -> None:
    """``loss.backward(); optimizer.step()``, through ``scaler`` when one is given.

    The GradScaler keeps fp16 gradients from underflowing (mixed precision); bf16 and
    fp32 need none.
    """
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


class Replicated:
    """Mixin: training forward passes may go through wrappers (DDP) of the method's nets.

    The wrappers live outside the module tree, so ``state_dict`` and saving stay the
    plain networks'.
    """

    replicated: tuple[str, ...] = ()

    def distribute(self, wrap) -> None:
        """Wrap each network named in ``replicated`` with ``wrap`` (e.g. DDP)."""
        self.__dict__["_replicas"] = {name: wrap(getattr(self, name)) for name in self.replicated}

    def replica(self, name: str):
        """The wrapper of network ``name`` when distributed, else the network itself."""
        return self.__dict__.get("_replicas", {}).get(name) or getattr(self, name)


class TrainingMethod(Replicated, nn.Module):
    """A network wrapped with its losses, optimizers and one training step.

    The training loop uses only what is declared here: :meth:`configure_optimizers`,
    :attr:`optimizers`, :meth:`training_step` (whose loss ``main_loss`` is watched for
    divergence and plotted), :meth:`use_grad_scaling`, :meth:`training_state` /
    :meth:`load_training_state` (checkpoints, beside the module's ``state_dict``),
    :meth:`validation_predict`, :meth:`preview_options` and the networks to save.

    Subclasses set ``main_loss``, ``network_name`` (the attribute holding the network
    that is saved and restores) and ``replicated``.
    """

    main_loss: ClassVar[str] = "loss"
    network_name: ClassVar[str] = "net"

    def __init__(self):
        super().__init__()
        self.optimizers: list[torch.optim.Optimizer] = []
        # One GradScaler per optimizer when training in fp16 (see use_grad_scaling).
        self.scalers: list = []

    # -- networks -------------------------------------------------------------------------

    @property
    def network(self) -> nn.Module:
        """The trained network: saved as the model's weights."""
        return getattr(self, self.network_name)

    @property
    def ema_network(self) -> nn.Module | None:
        """An averaged copy of the network saved beside it (None: no such copy)."""
        return None

    @property
    def restoring_network(self) -> nn.Module:
        """The network a restore of the saved model runs (the EMA copy when there is one)."""
        ema = self.ema_network
        return self.network if ema is None else ema

    # -- optimisation ---------------------------------------------------------------------

    def configure_optimizers(self, lr: float | None = None) -> list[torch.optim.Optimizer]:
        """Create the optimizers (stored on ``self.optimizers``); ``lr`` None: the default."""
        raise NotImplementedError

    def training_step(self, batch: dict[str, torch.Tensor], step: int | None = None
                      ) -> dict[str, float]:
        """One optimisation step on ``batch`` ({"input", "target"}) at ``step`` (0-based).

        Returns the named losses, ``main_loss`` among them.
        """
        raise NotImplementedError

    def ensure_optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers, created with the defaults when none were configured."""
        if not self.optimizers:
            self.configure_optimizers()
        return self.optimizers

    def use_grad_scaling(self, device: torch.device) -> None:
        """Scale the losses of each optimizer (fp16 autocast: gradients would underflow)."""
        self.scalers = [torch.amp.GradScaler(device.type) for _ in self.optimizers]

    def scaler(self, index: int):
        """The GradScaler of optimizer ``index``, or None without gradient scaling."""
        return self.scalers[index] if self.scalers else None

    def training_state(self) -> dict:
        """Optimizer and scaler states, for a checkpoint (weights: ``state_dict``)."""
        return {"optimizers": [o.state_dict() for o in self.optimizers],
                "scalers": [s.state_dict() for s in self.scalers]}

    def load_training_state(self, state: dict) -> None:
        """Restore what :meth:`training_state` returned, into configured optimizers."""
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        # A checkpoint written with(out) fp16 scaling resumes without(with) it.
        for scaler, saved in zip(self.scalers, state["scalers"]):
            scaler.load_state_dict(saved)

    # -- inference ------------------------------------------------------------------------

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output in eval mode, under ``torch.inference_mode()``.

        The training mode found is restored afterwards.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return self.network(x)
        finally:
            self.train(was_training)

    def validation_predict(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """The prediction scored at validation (``seed``: for methods that draw noise)."""
        return self.predict(x)

    def preview_options(self) -> dict:
        """Options of the restorer that previews training (``NetworkRestorer`` keywords)."""
        return {}
