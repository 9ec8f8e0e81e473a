"""Conditional denoising diffusion: training loss, EMA and DDIM/ancestral sampling."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from napari_volsr.engine.interp import INTERPOLATION_MODES
from napari_volsr.engine.methods.base import TrainingMethod, backward_step
from napari_volsr.engine.methods.schedules import ddim_step, linear_beta_schedule
from napari_volsr.engine.nets._common import to_output_grid
from napari_volsr.engine.nets.diffusion_unet import DiffusionUNet

SAMPLERS = ("ddim", "ancestral")
DEFAULT_CLIP = (-0.5, 1.5)


class SamplingCancelled(Exception):
    """Raised by :meth:`DiffusionMethod.sample` when ``should_stop()`` returns True."""


class DiffusionMethod(TrainingMethod):
    """Train and sample a conditional diffusion model around a noise-predicting UNet.

    The degraded input, interpolated onto the output grid when a factor is > 1 (cubic,
    slab grid, every axis by its factor), is concatenated to the noisy target; the
    network predicts the noise.
    Training follows SR3/WaveGrad: the network is conditioned on a continuous noise
    level ``gamma = sqrt(alpha_bar)`` drawn uniformly between two consecutive steps of
    the schedule, so any respaced schedule can be used at sampling time.

    Parameters
    ----------
    net
        A :class:`~napari_volsr.engine.nets.diffusion_unet.DiffusionUNet` (or any module
        with the same call signature and attributes ``spatial_dims``, ``in_channels``,
        ``out_channels``, ``z_factor`` and ``output_divisor``; ``factors``, one per
        spatial axis, when more than the first axis is upsampled).
    num_timesteps
        Schedule length T.
    beta_start, beta_end
        Linear beta schedule end points.
    ema_decay
        Decay of the exponential moving average of the weights.
    lr
        Default Adam learning rate for :meth:`configure_optimizers`.
    interpolation
        How the condition is brought onto the output grid when a factor is > 1.
    val_steps
        DDIM steps of the one sample scored at validation and shown in previews.
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    noise_levels: torch.Tensor
    noise_levels_prev: torch.Tensor

    replicated = ("net",)

    def __init__(
        self,
        net: DiffusionUNet,
        *,
        num_timesteps: int = 2000,
        beta_start: float = 1e-6,
        beta_end: float = 1e-2,
        ema_decay: float = 0.999,
        lr: float = 1e-4,
        interpolation: str = "catmull-rom",
        val_steps: int = 10,
    ):
        super().__init__()
        if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int):
            raise ValueError(f"num_timesteps must be an integer, got {num_timesteps!r}")
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(
                f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, "
                f"beta_end={beta_end}"
            )
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if interpolation not in INTERPOLATION_MODES:
            raise ValueError(
                f"interpolation must be one of {INTERPOLATION_MODES}, got {interpolation!r}"
            )
        self.net = net
        self.ema = copy.deepcopy(net).requires_grad_(False).eval()
        self.ema_decay = float(ema_decay)
        self.lr = float(lr)
        self.interpolation = interpolation
        self.num_timesteps = num_timesteps
        self.beta_start = beta_start
        self.beta_end = beta_end
        # Geometry copied from the net so that a stand-in module can replace it.
        self.spatial_dims = int(net.spatial_dims)
        self.in_channels = int(net.in_channels)
        self.out_channels = int(net.out_channels)
        self.z_factor = int(net.z_factor)
        self.factors = tuple(int(f) for f in getattr(
            net, "factors", (self.z_factor,) + (1,) * (self.spatial_dims - 1)))
        self.output_divisor = tuple(int(d) for d in net.output_divisor)
        self.val_steps = int(val_steps)

        betas = linear_beta_schedule(num_timesteps, beta_start, beta_end)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        # Derived from the constructor arguments, so not saved in the state dict.
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        # float64 copies for sampling coefficients; ab close to 1 needs the precision.
        self._alphas_cumprod64 = alphas_cumprod
        gammas = alphas_cumprod.sqrt()
        self.register_buffer("noise_levels", gammas.float(), persistent=False)
        self.register_buffer(
            "noise_levels_prev",
            torch.cat([torch.ones(1, dtype=torch.float64), gammas[:-1]]).float(),
            persistent=False,
        )

    # ------------------------------------------------------------------ geometry
    @property
    def halo(self) -> tuple[int, ...]:
        """Halo of the wrapped network, in input voxels."""
        return tuple(self.net.halo)

    @property
    def divisor(self) -> tuple[int, ...]:
        """Divisibility of the degraded input's spatial axes."""
        return tuple(self.net.divisor)

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        """Bring the degraded input onto the output grid (identity when every factor is 1)."""
        if any(f > 1 for f in self.factors):
            return to_output_grid(x, self.factors, self.interpolation)
        return x

    # ------------------------------------------------------------------ training
    def sample_noise_level(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a step ``t`` and a continuous noise level per item (SR3, WaveGrad).

        Parameters
        ----------
        batch_size
            Number of draws.
        generator
            Optional random generator (on the CPU or on the buffers' device).

        Returns
        -------
        t : torch.Tensor
            (B,) int64 steps in ``0 .. T-1``.
        gamma : torch.Tensor
            (B,) float, uniform between ``sqrt(alpha_bar[t-1])`` (1 for t = 0) and
            ``sqrt(alpha_bar[t])``.
        """
        device = self.noise_levels.device
        gen_device = generator.device if generator is not None else device
        t = torch.randint(
            0, self.num_timesteps, (batch_size,), generator=generator, device=gen_device
        ).to(device)
        u = torch.rand(batch_size, generator=generator, device=gen_device).to(device)
        hi, lo = self.noise_levels_prev[t], self.noise_levels[t]
        return t, lo + (hi - lo) * u

    def q_sample(
        self, target: torch.Tensor, noise_level: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """Noisy target ``gamma * target + sqrt(1 - gamma^2) * noise``."""
        g = noise_level.to(target.dtype).reshape(-1, *(1,) * (target.ndim - 1))
        return g * target + (1.0 - g * g).clamp_min(0.0).sqrt() * noise

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        *,
        noise: torch.Tensor | None = None,
        noise_level: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Noise-prediction MSE for one batch.

        Parameters
        ----------
        batch
            ``{"input": (B, in_channels, *S_in), "target": (B, out_channels, *S_out)}``
            with ``S_out`` = ``S_in`` with every axis times its factor.
        noise, noise_level
            Fixed noise (like the target) and noise levels (B,); drawn when omitted.
        generator
            Random generator for what is drawn.

        Returns
        -------
        torch.Tensor
            Scalar loss.
        """
        x, target = batch["input"], batch["target"]
        self._check_input(x, "batch['input']")
        expected = (target.shape[0], self.out_channels,
                    *(s * f for s, f in zip(x.shape[2:], self.factors, strict=True)))
        if tuple(target.shape) != expected:
            raise ValueError(
                f"batch['target'] has shape {tuple(target.shape)}; for input "
                f"{tuple(x.shape)} and factors {self.factors} expected {expected}"
            )
        cond = self.condition(x)
        if noise_level is None:
            _, noise_level = self.sample_noise_level(target.shape[0], generator)
        if noise is None:
            gen_device = generator.device if generator is not None else target.device
            noise = torch.randn(
                target.shape, generator=generator, device=gen_device, dtype=target.dtype
            ).to(target.device)
        noise_level = noise_level.to(device=target.device, dtype=target.dtype)
        x_t = self.q_sample(target, noise_level, noise)
        return F.mse_loss(self.replica("net")(x_t, cond, noise_level), noise)

    def configure_optimizers(self, lr: float | None = None) -> list[torch.optim.Optimizer]:
        """Create Adam over the network's (not the EMA's) parameters.

        Parameters
        ----------
        lr
            Learning rate; defaults to ``self.lr`` (1e-4).

        Returns
        -------
        list of torch.optim.Optimizer
            Also stored on ``self.optimizers``.
        """
        self.optimizers = [torch.optim.Adam(self.net.parameters(), lr=lr or self.lr)]
        return self.optimizers

    def training_step(self, batch: dict[str, torch.Tensor], step: int | None = None
                      ) -> dict[str, float]:
        """One optimisation step followed by an EMA update; returns ``{"loss": float}``."""
        (optimizer,) = self.ensure_optimizers()
        self.net.train()
        optimizer.zero_grad(set_to_none=True)
        loss = self(batch)
        backward_step(loss, optimizer, self.scaler(0))
        self.update_ema()
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def update_ema(self, decay: float | None = None) -> None:
        """``ema = decay * ema + (1 - decay) * net`` for every parameter; buffers copied."""
        decay = self.ema_decay if decay is None else decay
        for p_ema, p in zip(self.ema.parameters(), self.net.parameters(), strict=True):
            p_ema.lerp_(p.detach(), 1.0 - decay)
        for b_ema, b in zip(self.ema.buffers(), self.net.buffers(), strict=True):
            b_ema.copy_(b)

    # ------------------------------------------------------------------ sampling
    def sampling_timesteps(self, steps: int) -> list[int]:
        """Return ``steps`` evenly spaced schedule indices, from ``T-1`` down to ``T/steps - 1``.

        The grid ends exactly at the last (noisiest) step ("trailing" spacing, Lin et
        al. 2024), so even a single step starts from the pure-noise end.
        """
        T = self.num_timesteps
        return [(i + 1) * T // steps - 1 for i in reversed(range(steps))]

    # The DDIM update, a pure function (schedules.py); tests call it on the class.
    denoise_step = staticmethod(ddim_step)

    def sample(
        self,
        x: torch.Tensor,
        steps: int | None = None,
        n_samples: int = 1,
        sampler: str = "ddim",
        eta: float = 0.0,
        clip: Sequence[float] | None = DEFAULT_CLIP,
        use_ema: bool = True,
        generator: torch.Generator | None = None,
        *,
        max_batch: int | None = None,
        should_stop: Callable[[], bool] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Restore ``x`` by reverse diffusion; mean and spread of N samples.

        Parameters
        ----------
        x
            Degraded input (B, in_channels, *S_in) in normalised units.
        steps
            Number of denoising steps, evenly spaced over the schedule. Default: 50 for
            ``"ddim"``, the whole schedule (T) for ``"ancestral"``.
        n_samples
            Independent samples N per item.
        sampler
            ``"ddim"`` (deterministic for ``eta = 0``) or ``"ancestral"`` (DDPM; on a
            respaced grid when ``steps < T``, as in Nichol and Dhariwal 2021).
        eta
            DDIM stochasticity in [0, 1]; ignored by ``"ancestral"`` (which is eta = 1).
        clip
            ``(lo, hi)`` clamp of the predicted clean image at every step, or None.
            Default (-0.5, 1.5): data are percentile-normalised to about 0..1, unclipped.
        use_ema
            Sample with the EMA weights (else the raw network).
        generator
            Random generator for the initial and per-step noise.
        max_batch
            Largest batch the network sees; the N copies of each item are stacked
            along the batch axis up to this size (default: all at once).
        should_stop
            Polled before every network call; when it returns True,
            :class:`SamplingCancelled` is raised.
        progress
            Called as ``progress(done, total)`` after every network call.

        Returns
        -------
        mean : torch.Tensor
            (B, out_channels, *S_out) mean of the samples.
        std : torch.Tensor
            Per-voxel sample standard deviation (N - 1 in the denominator); zeros when
            ``n_samples`` is 1.
        """
        steps, eta, clip = self._check_sample_args(x, steps, n_samples, sampler, eta, clip,
                                                   max_batch)
        net = self.ema if use_ema else self.net
        was_training = net.training
        net.eval()
        try:
            with torch.inference_mode():
                samples = self._sample(net, x, steps, n_samples, eta, clip, generator,
                                       max_batch, should_stop, progress)
                mean = samples.mean(dim=0)
                std = (torch.zeros_like(mean) if n_samples == 1
                       else samples.std(dim=0, correction=1))
        finally:
            net.train(was_training)
        return mean, std

    def predict(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """Mean restoration of ``x`` with the default sampler (see :meth:`sample`)."""
        return self.sample(x, **kwargs)[0]

    def validation_predict(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """One DDIM sample of ``val_steps`` steps, its noise drawn from ``seed``."""
        generator = torch.Generator(device=x.device).manual_seed(seed)
        return self.sample(x, steps=self.val_steps, n_samples=1, generator=generator)[0]

    def preview_options(self) -> dict:
        """The preview restores like validation: one sample of ``val_steps`` steps."""
        return {"diffusion_steps": self.val_steps, "diffusion_samples": 1}

    @property
    def ema_network(self) -> nn.Module:
        """The EMA copy of the network: saved beside it, and what restores sample with."""
        return self.ema

    def _sample(self, net, x, steps, n_samples, eta, clip, generator, max_batch, should_stop,
                progress) -> torch.Tensor:
        b = x.shape[0]
        cond = self.condition(x if x.is_floating_point() else x.float())
        # Replicate-pad the output grid up to the network's divisor; cropped at the end.
        out_shape = cond.shape[2:]
        pads = [(-s) % d for s, d in zip(out_shape, self.output_divisor, strict=True)]
        if any(pads):
            flat = [p for pad in reversed(pads) for p in (0, pad)]
            cond = F.pad(cond, flat, mode="replicate")
        # N copies of every item stacked along the batch axis (copy-major), run in
        # chunks of at most max_batch rows.
        rows = n_samples * b
        chunk = rows if max_batch is None else max_batch
        item_of_row = torch.arange(rows, device=cond.device) % b
        counter = _Counter(steps * math.ceil(rows / chunk), progress)
        parts = [self._chain(net, cond[item_of_row[start : start + chunk]], steps, eta, clip,
                             generator, should_stop, counter)
                 for start in range(0, rows, chunk)]
        samples = torch.cat(parts).reshape(n_samples, b, *parts[0].shape[1:])
        crop = (slice(None),) * 3 + tuple(slice(0, s) for s in out_shape)
        return samples[crop]

    def _chain(self, net, cond, steps, eta, clip, generator, should_stop, counter):
        """Run one reverse chain for every row of ``cond``."""
        shape = (cond.shape[0], self.out_channels, *cond.shape[2:])
        device, dtype = cond.device, cond.dtype
        gen_device = generator.device if generator is not None else device

        def randn():
            return torch.randn(shape, generator=generator, device=gen_device).to(device, dtype)

        ab = self._alphas_cumprod64
        timesteps = self.sampling_timesteps(steps)
        x_t = randn()
        for i, t in enumerate(timesteps):
            if should_stop is not None and should_stop():
                raise SamplingCancelled("diffusion sampling was cancelled")
            ab_t = float(ab[t])
            ab_s = float(ab[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
            level = torch.full((shape[0],), math.sqrt(ab_t), device=device, dtype=dtype)
            eps = net(x_t, cond, level)
            noise = randn() if eta > 0 and ab_s < 1.0 else None
            x_t, _ = self.denoise_step(x_t, eps, ab_t, ab_s, eta, clip, noise)
            counter.tick()
        return x_t

    def _check_input(self, x: torch.Tensor, name: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name} must have shape (B, {self.in_channels}, "
                f"{', '.join('S' * self.spatial_dims)}) for spatial_dims="
                f"{self.spatial_dims}, got {tuple(x.shape)}"
            )

    def _check_sample_args(self, x, steps, n_samples, sampler, eta, clip, max_batch):
        self._check_input(x, "x")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if steps is None:
            steps = 50 if sampler == "ddim" else self.num_timesteps
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise ValueError(f"steps must be an integer, got {steps!r}")
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"steps must be in 1..{self.num_timesteps}, got {steps}")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        if sampler == "ancestral":
            eta = 1.0
        elif not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta!r}")
        if clip is not None:
            if len(clip) != 2 or not clip[0] < clip[1]:
                raise ValueError(f"clip must be (lo, hi) with lo < hi, or None, got {clip!r}")
            clip = (float(clip[0]), float(clip[1]))
        if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
            raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
        return steps, float(eta), clip


class _Counter:
    """Counts network calls and reports them to an optional progress callback."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None):
        self.total, self.done, self.callback = total, 0, callback

    def tick(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)
