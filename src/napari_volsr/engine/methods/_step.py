"""One optimiser step with optional gradient scaling (fp16 autocast on CUDA)."""

from __future__ import annotations


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
