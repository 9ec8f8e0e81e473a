"""The one registry of model families: name -> network class, presets and config."""

from __future__ import annotations

from enum import StrEnum

from .config import (
    PRESET_NAMES, DiffusionConfig, GANConfig, ModelConfig, RCANConfig, SRUNetConfig,
)


class Family(StrEnum):
    """Model families (DESIGN 4)."""

    RCAN = "rcan"
    SRUNET = "srunet"
    GAN = "gan"
    DIFFUSION = "diffusion"


CONFIGS = {
    Family.RCAN: RCANConfig,
    Family.SRUNET: SRUNetConfig,
    Family.GAN: GANConfig,
    Family.DIFFUSION: DiffusionConfig,
}

DISPLAY_NAMES = {
    Family.RCAN: "RCAN",
    Family.SRUNET: "SRUNet",
    Family.GAN: "GAN",
    Family.DIFFUSION: "diffusion",
}

# Keys of a family config that are not network constructor arguments.
_NOT_NET_ARGS = {
    Family.GAN: {"family", "disc_channels", "disc_layers"},
    Family.DIFFUSION: {"family", "sample_steps", "n_samples"},
}


def family(name: str) -> Family:
    """The family called ``name`` (case-insensitive); unknown names list the valid ones."""
    try:
        return Family(str(name).lower())
    except ValueError:
        valid = ", ".join(f.value for f in Family)
        raise ValueError(f"unknown model family {name!r}; choose one of: {valid}") from None


def _net_module(fam: Family):
    # Imported on use: torch is heavy, and napari imports this package at start-up.
    if fam is Family.RCAN:
        from .nets import rcan as module
    elif fam is Family.SRUNET:
        from .nets import srunet as module
    elif fam is Family.GAN:
        from .nets import resnet_gan as module
    else:
        from .nets import diffusion_unet as module
    return module


def network_config(name: str, preset: str = "default", **overrides):
    """A family config from a preset (``tiny``, ``small``, ``default``) plus overrides."""
    fam = family(name)
    if preset not in PRESET_NAMES:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESET_NAMES)}")
    params = dict(_net_module(fam).PRESETS[preset])
    params.update(overrides)
    return CONFIGS[fam](**params)


def build_network(config: ModelConfig):
    """The (untrained) network for ``config``: generator for GANs, UNet for diffusion."""
    fam = family(config.network.family)
    module = _net_module(fam)
    cls = {
        Family.RCAN: "RCAN", Family.SRUNET: "SRUNet",
        Family.GAN: "ResNetGenerator", Family.DIFFUSION: "DiffusionUNet",
    }[fam]
    params = config.network.model_dump(exclude=_NOT_NET_ARGS.get(fam, {"family"}))
    return getattr(module, cls)(
        spatial_dims=config.spatial_dims,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        z_factor=config.z_factor,
        **params,
    )


def build_discriminator(config: ModelConfig, conditioned: bool):
    """The PatchGAN discriminator of a GAN config (sees input channels too if conditioned)."""
    from .nets.resnet_gan import PatchDiscriminator

    if not isinstance(config.network, GANConfig):
        raise ValueError(f"a discriminator needs a GAN config, got {config.network.family}")
    channels = config.out_channels + (config.in_channels if conditioned else 0)
    return PatchDiscriminator(
        spatial_dims=config.spatial_dims,
        in_channels=channels,
        channels=config.network.disc_channels,
        n_layers=config.network.disc_layers,
    )


def build_method(config):
    """The training method (network inside) for a :class:`TrainingConfig`.

    RCAN and SRUNet train supervised; GAN with its discriminator; diffusion as a
    noise-prediction model with EMA weights.
    """
    model = config.model
    fam = family(model.network.family)
    net = build_network(model)
    if fam is Family.GAN:
        from .methods.gan import GANMethod

        method = GANMethod(
            net,
            build_discriminator(model, conditioned=config.d_condition),
            adversarial=config.adversarial,
            content_weight=config.content_weight,
            gradient_weight=config.gradient_weight,
            d_condition=config.d_condition,
        )
    elif fam is Family.DIFFUSION:
        from .methods.diffusion import DiffusionMethod

        method = DiffusionMethod(net)
    else:
        from .methods.supervised import SupervisedMethod

        method = SupervisedMethod(net, loss=config.loss)
    return method


def method_network(method):
    """The network a method trains (the generator of a GAN)."""
    return getattr(method, "generator", None) or method.net
