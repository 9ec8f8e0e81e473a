"""Adversarial training: generator + PatchGAN discriminator (SRGAN / pix2pix style)."""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from napari_volsr.engine.methods.base import TrainingMethod, backward_step
from napari_volsr.engine.nets._common import to_output_grid

ADVERSARIAL_LOSSES = ("vanilla", "lsgan", "wgangp")


@contextmanager
def _frozen(module: nn.Module):
    """Stop gradients accumulating in ``module``'s parameters; they still flow through it."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def image_gradient_l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Return the mean L1 distance between finite differences of ``output`` and ``target``.

    Parameters
    ----------
    output, target
        Tensors (B, C, *spatial) of the same shape.

    Returns
    -------
    torch.Tensor
        Scalar, averaged over the spatial axes.
    """
    terms = [
        torch.mean(torch.abs(torch.diff(output, dim=d) - torch.diff(target, dim=d)))
        for d in range(2, output.ndim)
    ]
    return torch.stack(terms).mean()


class GANMethod(TrainingMethod):
    """Train a generator against a discriminator, with an L1 content loss.

    Generator loss: ``content_weight * L1 + adversarial_weight * adversarial
    + gradient_weight * image_gradient_l1``. Discriminator loss by ``adversarial``:
    ``"vanilla"`` (binary cross-entropy on logits; the generator uses the non-saturating
    form), ``"lsgan"`` (least squares, Mao et al. 2017) or ``"wgangp"`` (Wasserstein
    critic with gradient penalty on real/fake interpolates, Gulrajani et al. 2017).

    Parameters
    ----------
    generator
        The network that gets saved and used for inference.
    discriminator
        A discriminator whose ``in_channels`` equals the generator's ``out_channels``
        (plus its ``in_channels`` when ``d_condition``).
    adversarial
        ``"vanilla"``, ``"lsgan"`` or ``"wgangp"``.
    content_weight
        Weight of the L1 content loss (lambda 100, as pix2pix).
    adversarial_weight
        Weight of the adversarial term in the generator loss.
    gradient_weight
        Weight of the image-gradient L1 penalty (0: off).
    gp_weight
        Weight of the WGAN gradient penalty.
    d_condition
        Show the discriminator the degraded input, interpolated onto the output grid
        (cubic, every axis by the generator's factor), as extra channels.
    warmup
        Default for the ``warmup`` argument of the steps: content loss only, no
        discriminator update (DESIGN recommends a warm-up phase).
    warmup_steps
        Training steps 0 .. warmup_steps - 1 warm up (see :meth:`training_step`).
    """

    main_loss = "g_loss"
    network_name = "generator"

    # The discriminator's replica is used only where it learns (its own step); the
    # generator's step judges with the frozen plain module, whose weights are the same.
    replicated = ("generator", "discriminator")

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        adversarial: str = "vanilla",
        content_weight: float = 100.0,
        adversarial_weight: float = 1.0,
        gradient_weight: float = 0.0,
        gp_weight: float = 10.0,
        d_condition: bool = False,
        warmup: bool = False,
        warmup_steps: int = 0,
    ):
        super().__init__()
        if adversarial not in ADVERSARIAL_LOSSES:
            raise ValueError(
                f"adversarial must be one of {ADVERSARIAL_LOSSES}, got {adversarial!r}"
            )
        for name, value in [
            ("content_weight", content_weight),
            ("adversarial_weight", adversarial_weight),
            ("gradient_weight", gradient_weight),
            ("gp_weight", gp_weight),
        ]:
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        g_out = getattr(generator, "out_channels", None)
        g_in = getattr(generator, "in_channels", None)
        d_in = getattr(discriminator, "in_channels", None)
        if None not in (g_out, g_in, d_in):
            expected = g_out + g_in if d_condition else g_out
            if d_in != expected:
                raise ValueError(
                    f"discriminator in_channels must be {expected} "
                    f"(d_condition={d_condition}), got {d_in}"
                )
        self.generator = generator
        self.discriminator = discriminator
        self.adversarial = adversarial
        self.content_weight = content_weight
        self.adversarial_weight = adversarial_weight
        self.gradient_weight = gradient_weight
        self.gp_weight = gp_weight
        self.d_condition = d_condition
        self.warmup = warmup
        self.warmup_steps = int(warmup_steps)
        self.z_factor = int(getattr(generator, "z_factor", 1))
        # Stand-in generators of tests may only say their z-factor.
        self.factors = tuple(getattr(generator, "factors", ())) or None

    # -- losses -------------------------------------------------------------------------

    def _judge(self, images: torch.Tensor, inputs: torch.Tensor, learning: bool = False):
        """Return discriminator logits for ``images``, conditioned on ``inputs`` if asked.

        ``learning``: the discriminator's own step (through its replica when distributed).
        """
        if self.d_condition:
            factors = self.factors or (self.z_factor,) + (1,) * (inputs.ndim - 3)
            condition = to_output_grid(inputs, factors, "catmull-rom")
            images = torch.cat([images, condition], dim=1)
        return (self.replica("discriminator") if learning else self.discriminator)(images)

    def _gradient_penalty(self, real, fake, inputs) -> torch.Tensor:
        """Return the WGAN-GP penalty: mean (||grad D(x)|| - 1)^2 on real/fake interpolates."""
        if torch.is_inference_mode_enabled():
            return real.new_zeros(())  # autograd is unavailable: report no penalty
        alpha = torch.rand(real.shape[0], *[1] * (real.ndim - 1), device=real.device)
        mixed = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
        with torch.enable_grad():
            logits = self._judge(mixed, inputs)
            (grad,) = torch.autograd.grad(logits.sum(), mixed, create_graph=True)
        return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

    def discriminator_losses(self, batch, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the discriminator loss and its parts on ``fake`` (detached here).

        Returns
        -------
        dict of torch.Tensor
            ``d_loss``, ``d_real`` and ``d_fake`` (mean logits), ``gp``.
        """
        inputs, real = batch["input"], batch["target"]
        fake = fake.detach()
        real_logits = self._judge(real, inputs, learning=True)
        fake_logits = self._judge(fake, inputs, learning=True)
        gp = real.new_zeros(())
        if self.adversarial == "vanilla":
            loss = 0.5 * (
                F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
            )
        elif self.adversarial == "lsgan":
            loss = 0.5 * (((real_logits - 1) ** 2).mean() + (fake_logits**2).mean())
        else:
            gp = self._gradient_penalty(real, fake, inputs)
            loss = fake_logits.mean() - real_logits.mean() + self.gp_weight * gp
        return {
            "d_loss": loss,
            "d_real": real_logits.mean(),
            "d_fake": fake_logits.mean(),
            "gp": gp,
        }

    def generator_losses(self, batch, fake: torch.Tensor, warmup: bool | None = None):
        """Compute the generator loss and its parts; the adversarial term goes through D.

        Returns
        -------
        dict of torch.Tensor
            ``g_loss``, ``content`` (L1), ``gradient`` and, unless warming up,
            ``adversarial``.
        """
        warmup = self.warmup if warmup is None else warmup
        target = batch["target"]
        content = torch.mean(torch.abs(fake - target))
        gradient = (
            image_gradient_l1(fake, target) if self.gradient_weight > 0 else fake.new_zeros(())
        )
        loss = self.content_weight * content + self.gradient_weight * gradient
        parts = {"content": content, "gradient": gradient}
        if not warmup:
            logits = self._judge(fake, batch["input"])
            if self.adversarial == "vanilla":
                adversarial = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            elif self.adversarial == "lsgan":
                adversarial = ((logits - 1) ** 2).mean()
            else:
                adversarial = -logits.mean()
            loss = loss + self.adversarial_weight * adversarial
            parts["adversarial"] = adversarial
        return {"g_loss": loss, **parts}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Return all losses on ``batch`` ({"input", "target"}) without optimising.

        Returns
        -------
        dict of torch.Tensor
            ``g_loss``, ``d_loss``, ``content``, ``adversarial``, ``gradient``, ``gp``,
            ``d_real``, ``d_fake``.
        """
        fake = self.generator(batch["input"])
        return {
            **self.discriminator_losses(batch, fake),
            **self.generator_losses(batch, fake, warmup=False),
        }

    # -- optimisation -------------------------------------------------------------------

    def configure_optimizers(self, lr: float | None = None) -> list[torch.optim.Optimizer]:
        """Create (and store on ``self.optimizers``) [generator Adam, discriminator Adam].

        Both use lr 2e-4 by default and betas (0.5, 0.999) (DCGAN / pix2pix).
        """
        lr = 2e-4 if lr is None else lr
        self.optimizers = [
            torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999)),
            torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999)),
        ]
        return self.optimizers

    def discriminator_step(self, batch, fake: torch.Tensor | None = None) -> dict[str, float]:
        """Update the discriminator once on ``fake`` (generated here if not given)."""
        _, d_opt = self.ensure_optimizers()
        self.train()
        if fake is None:
            with torch.no_grad():
                fake = self.generator(batch["input"])
        d_opt.zero_grad(set_to_none=True)
        losses = self.discriminator_losses(batch, fake)
        backward_step(losses["d_loss"], d_opt, self.scaler(1))
        return {k: v.item() for k, v in losses.items()}

    def generator_step(
        self, batch, fake: torch.Tensor | None = None, warmup: bool | None = None
    ) -> dict[str, float]:
        """Update the generator once; the discriminator's parameters get no gradient."""
        g_opt, _ = self.ensure_optimizers()
        self.train()
        if fake is None:
            fake = self.replica("generator")(batch["input"])
        g_opt.zero_grad(set_to_none=True)
        with _frozen(self.discriminator):
            losses = self.generator_losses(batch, fake, warmup)
            backward_step(losses["g_loss"], g_opt, self.scaler(0))
        return {k: v.item() for k, v in losses.items()}

    def training_step(self, batch, step: int | None = None, warmup: bool | None = None
                      ) -> dict[str, float]:
        """One discriminator step on the detached fake, then one generator step.

        During warm-up (``warmup`` when given, else the constructor's ``warmup`` or
        ``step < warmup_steps``) only the generator is updated, on the content loss;
        the discriminator's entries (``d_loss``, ``adversarial``, ...) are then NaN.
        """
        if warmup is None:
            warmup = self.warmup or (step is not None and step < self.warmup_steps)
        self.ensure_optimizers()
        self.train()
        fake = self.replica("generator")(batch["input"])
        logs = dict.fromkeys(("d_loss", "d_real", "d_fake", "gp", "adversarial"), math.nan)
        if not warmup:
            logs.update(self.discriminator_step(batch, fake.detach()))
        logs.update(self.generator_step(batch, fake, warmup))
        return logs
