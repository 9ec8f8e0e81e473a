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
