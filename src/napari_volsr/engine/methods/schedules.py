"""Noise schedules and the DDIM update of conditional diffusion (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def linear_beta_schedule(
    num_timesteps: int = 2000, beta_start: float = 1e-6, beta_end: float = 1e-2
) -> torch.Tensor:
    """Linearly spaced noise variances beta_t (Ho et al. 2020; SR3, Saharia et al. 2021).

    Parameters
    ----------
    num_timesteps
        Length T of the schedule.
    beta_start, beta_end
        First and last beta.

    Returns
    -------
    torch.Tensor
        (T,) float64 betas.
    """
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def ddim_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    ab_t: float,
    ab_s: float,
    eta: float,
    clip: Sequence[float] | None,
    noise: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move from step t to an earlier step s (DDIM, Song et al. 2021, eq. 12).

    The clean image ``x0`` predicted from ``eps`` is clamped to ``clip`` and the
    noise re-derived from it, so the update stays consistent. With ``eta = 1``
    and consecutive steps this is exactly the DDPM posterior ``q(x_s | x_t, x0)``
    (ancestral sampling, Ho et al. 2020); with ``eta = 0`` it is deterministic.

    Parameters
    ----------
    x_t, eps
        Current state and predicted noise.
    ab_t, ab_s
        ``alpha_bar`` at t and s (``ab_s`` = 1 for the final, clean state).
    eta
        Stochasticity (0: DDIM, 1: ancestral).
    clip
        ``(lo, hi)`` for the predicted clean image, or None.
    noise
        Standard normal noise like ``x_t`` (needed when ``eta > 0``).

    Returns
    -------
    x_s : torch.Tensor
        The next state.
    x0 : torch.Tensor
        The (clamped) clean-image prediction.
    """
    sqrt_ab_t, sqrt_1m_ab_t = math.sqrt(ab_t), math.sqrt(1.0 - ab_t)
    x0 = (x_t - sqrt_1m_ab_t * eps) / sqrt_ab_t
    if clip is not None:
        x0 = x0.clamp(clip[0], clip[1])
        eps = (x_t - sqrt_ab_t * x0) / sqrt_1m_ab_t
    if ab_s >= 1.0:
        return x0, x0
    var = eta**2 * (1.0 - ab_s) / (1.0 - ab_t) * (1.0 - ab_t / ab_s)
    x_s = math.sqrt(ab_s) * x0 + math.sqrt(max(1.0 - ab_s - var, 0.0)) * eps
    if var > 0:
        if noise is None:
            raise ValueError("ddim_step needs noise when eta > 0")
        x_s = x_s + math.sqrt(var) * noise
    return x_s, x0
