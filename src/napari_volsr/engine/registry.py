"""The one registry of model families: one entry per family, read by every builder."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from .config import (
    PRESET_NAMES, DiffusionConfig, DiffusionTraining, GANConfig, GANTraining, ModelConfig,
    RCANConfig, SRUNetConfig, StrictModel, SupervisedTraining, UNetConfig,
)


class Family(StrEnum):
    """Model families (DESIGN 4)."""

    RCAN = "rcan"
    SRUNET = "srunet"
    GAN = "gan"
    DIFFUSION = "diffusion"
    UNET = "unet"


def _supervised(net, model: ModelConfig, method: SupervisedTraining):
    from .methods.supervised import SupervisedMethod

    return SupervisedMethod(net, loss=method.loss)


# CARE's and N2V's rate: the U-Net has no normalisation and a zero-started residual,
# and at 1e-4 it used a third of a short CPU budget to leave the identity.
UNET_LEARNING_RATE = 4e-4


def _unet_supervised(net, model: ModelConfig, method: SupervisedTraining):
    from .methods.supervised import SupervisedMethod

    return SupervisedMethod(net, loss=method.loss, default_lr=UNET_LEARNING_RATE)


def _gan(net, model: ModelConfig, method: GANTraining):
    from .methods.gan import GANMethod

    return GANMethod(
        net,
        build_discriminator(model, conditioned=method.d_condition),
        adversarial=method.adversarial,
        content_weight=method.content_weight,
        gradient_weight=method.gradient_weight,
        d_condition=method.d_condition,
        warmup_steps=method.warmup_steps,
    )


def _diffusion(net, model: ModelConfig, method: DiffusionTraining):
    from .methods.diffusion import DiffusionMethod

    return DiffusionMethod(net, val_steps=method.val_steps)


@dataclass(frozen=True)
class FamilyEntry:
    """Everything the package knows about one model family.

    Attributes
    ----------
    family
        The family's name.
    display_name
        How people see it (panel choices, model cards, messages).
    config
        Its network config class (sizes, with a ``family`` tag).
    method_config
        Its training method's sub-config class (``TrainingConfig.method``).
    net_module, net_class
        The network class in ``engine.nets``, imported on use: torch is heavy, and
        napari imports this package at start-up.
    build_method
        ``build_method(net, model_config, method_config)``: the training method.
    not_net_args
        Keys of the network config that are not network constructor arguments.
    discriminator
        The discriminator class in ``engine.nets`` (GANs only).
    """

    family: Family
    display_name: str
    config: type[StrictModel]
    method_config: type[StrictModel]
    net_module: str
    net_class: str
    build_method: Callable
    not_net_args: frozenset[str] = frozenset({"family"})
    discriminator: str | None = None

    def module(self):
        """The family's ``engine.nets`` module (imports torch)."""
        return importlib.import_module(f".nets.{self.net_module}", __package__)

    @property
    def presets(self) -> dict[str, dict]:
        """Preset sizes by name (``tiny``, ``small``, ``default``)."""
        return self.module().PRESETS


FAMILIES: dict[Family, FamilyEntry] = {
    Family.RCAN: FamilyEntry(
        Family.RCAN, "RCAN", RCANConfig, SupervisedTraining, "rcan", "RCAN", _supervised,
    ),
    Family.SRUNET: FamilyEntry(
        Family.SRUNET, "SRUNet", SRUNetConfig, SupervisedTraining, "srunet", "SRUNet",
        _supervised,
    ),
    Family.GAN: FamilyEntry(
        Family.GAN, "GAN", GANConfig, GANTraining, "resnet_gan", "ResNetGenerator", _gan,
        frozenset({"family", "disc_channels", "disc_layers"}), "PatchDiscriminator",
    ),
    Family.DIFFUSION: FamilyEntry(
        Family.DIFFUSION, "diffusion", DiffusionConfig, DiffusionTraining, "diffusion_unet",
        "DiffusionUNet", _diffusion, frozenset({"family", "sample_steps", "n_samples"}),
    ),
    Family.UNET: FamilyEntry(
        Family.UNET, "U-Net (CARE)", UNetConfig, SupervisedTraining, "unet", "UNet",
        _unet_supervised,
    ),
}

# Views of the table, for callers that want one column.
CONFIGS = {fam: entry.config for fam, entry in FAMILIES.items()}
DISPLAY_NAMES = {fam: entry.display_name for fam, entry in FAMILIES.items()}


def family(name: str) -> Family:
    """The family called ``name`` (case-insensitive); unknown names list the valid ones."""
    try:
        return Family(str(name).lower())
    except ValueError:
        valid = ", ".join(family_names())
        raise ValueError(f"unknown model family {name!r}; choose one of: {valid}") from None


def family_entry(name: str) -> FamilyEntry:
    """The registry entry of family ``name`` (see :func:`family`)."""
    return FAMILIES[family(name)]


def family_names() -> tuple[str, ...]:
    """The family names, in the order doors offer them: ``rcan``, ``srunet``, ..."""
    return tuple(fam.value for fam in FAMILIES)


def display_name(name: str) -> str:
    """How people see family ``name``: ``RCAN``, ``SRUNet``, ``U-Net (CARE)``..."""
    return family_entry(name).display_name


def network_config(name: str, preset: str = "default", **overrides):
    """A family config from a preset (``tiny``, ``small``, ``default``) plus overrides."""
    entry = family_entry(name)
    if preset not in PRESET_NAMES:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESET_NAMES)}")
    params = dict(entry.presets[preset])
    params.update(overrides)
    return entry.config(**params)


def build_network(config: ModelConfig):
    """The (untrained) network for ``config``: generator for GANs, UNet for diffusion.

    Its factors are ``config.net_factors``: the volume's (z, y, x) for a 3D network, a 2D
    network's own two axes otherwise.

    A 2.5D model (``context_planes`` c > 0) gets ``in_channels * (2c + 1)`` input
    channels: the plane it restores and its c neighbours on each side.
    """
    entry = family_entry(config.network.family)
    params = config.network.model_dump(exclude=set(entry.not_net_args))
    if config.context_planes and entry.family == Family.UNET:
        # The U-Net's residual adds the plane it restores: the centre of the 2c+1 planes.
        params["residual_channel"] = config.context_planes
    return getattr(entry.module(), entry.net_class)(
        spatial_dims=config.spatial_dims,
        in_channels=config.in_channels * (2 * config.context_planes + 1),
        out_channels=config.out_channels,
        factors=config.net_factors,
        **params,
    )


def build_discriminator(config: ModelConfig, conditioned: bool):
    """The discriminator of a GAN config (sees input channels too if conditioned)."""
    entry = family_entry(config.network.family)
    if entry.discriminator is None:
        raise ValueError(f"a discriminator needs a GAN config, got {config.network.family}")
    channels = config.out_channels + (config.in_channels if conditioned else 0)
    return getattr(entry.module(), entry.discriminator)(
        spatial_dims=config.spatial_dims,
        in_channels=channels,
        channels=config.network.disc_channels,
        n_layers=config.network.disc_layers,
    )


def build_method(config):
    """The training method (network inside) for a :class:`TrainingConfig`.

    RCAN, SRUNet and U-Net train supervised; GAN with its discriminator; diffusion as a
    noise-prediction model with EMA weights.
    """
    entry = family_entry(config.model.network.family)
    return entry.build_method(build_network(config.model), config.model, config.method)


def method_network(method):
    """The network a method trains and saves (the generator of a GAN)."""
    return method.network
