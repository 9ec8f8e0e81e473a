"""The family registry: one entry per family, and everything built from it."""

import pytest
import torch
from pydantic import ValidationError

from napari_volsr.engine.config import PRESET_NAMES, ModelConfig, TrainingConfig
from napari_volsr.engine.methods.base import TrainingMethod
from napari_volsr.engine.registry import (
    DISPLAY_NAMES, FAMILIES, Family, build_discriminator, build_method, build_network,
    display_name, family, family_entry, family_names, method_network, network_config,
)

FAMILY_NAMES = [f.value for f in Family]


def tiny(fam: str) -> ModelConfig:
    sizes = {"disc_layers": 2} if fam == "gan" else {}
    return ModelConfig(task="upsample", z_factor=2, network=network_config(fam, "tiny", **sizes))


def test_one_entry_per_family():
    assert list(FAMILIES) == list(Family)
    assert family_names() == ("rcan", "srunet", "gan", "diffusion", "unet")
    for fam, entry in FAMILIES.items():
        assert entry.family is fam
        assert entry.config.model_fields["family"].default == fam.value
        assert entry.not_net_args <= set(entry.config.model_fields)


def test_display_names():
    assert [display_name(f) for f in family_names()] == [
        "RCAN", "SRUNet", "GAN", "diffusion", "U-Net (CARE)"]
    assert display_name("Gan") == "GAN"
    assert DISPLAY_NAMES == {f: family_entry(f).display_name for f in Family}


def test_unknown_family_lists_valid_choices():
    with pytest.raises(ValueError, match="unknown model family 'unet\\+\\+'; choose one of: "
                                         "rcan, srunet, gan, diffusion, unet"):
        family("unet++")
    with pytest.raises(ValueError, match="rcan, srunet, gan, diffusion, unet"):
        display_name("unet++")
    with pytest.raises(ValidationError, match="rcan"):
        ModelConfig.model_validate({"network": {"family": "unet++"}})
    assert family("RCAN") is Family.RCAN


@pytest.mark.parametrize("fam", FAMILY_NAMES)
def test_every_preset_is_a_valid_config(fam):
    entry = family_entry(fam)
    assert set(entry.presets) == set(PRESET_NAMES)
    for preset in PRESET_NAMES:
        assert isinstance(network_config(fam, preset), entry.config)
    with pytest.raises(ValueError, match="tiny, small, default"):
        network_config(fam, "huge")


@pytest.mark.parametrize("fam", FAMILY_NAMES)
def test_every_family_builds_from_the_table(fam):
    entry = family_entry(fam)
    config = TrainingConfig(model=tiny(fam), patch_shape=(4, 16, 16))
    torch.manual_seed(0)
    net = build_network(config.model)
    assert type(net).__name__ == entry.net_class and net.z_factor == 2
    method = build_method(config)
    assert isinstance(method, TrainingMethod)
    assert type(method.network) is type(net)
    assert method_network(method) is method.network
    torch.manual_seed(0)
    again = build_network(config.model)
    for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_method_settings_reach_the_method():
    config = TrainingConfig(model=tiny("gan"), patch_shape=(4, 16, 16), adversarial="wgangp",
                            content_weight=7.0, d_condition=False, warmup_steps=3)
    method = build_method(config)
    assert (method.adversarial, method.content_weight, method.warmup_steps) == ("wgangp", 7.0, 3)
    assert method.discriminator.in_channels == 1  # not conditioned
    assert build_method(TrainingConfig(model=tiny("rcan"), loss="mse")).loss == "mse"
    assert build_method(TrainingConfig(model=tiny("diffusion"),
                                       diffusion_val_steps=4)).val_steps == 4


def test_only_gans_have_a_discriminator():
    disc = build_discriminator(tiny("gan"), conditioned=True)
    assert disc.in_channels == 2
    with pytest.raises(ValueError, match="needs a GAN config, got rcan"):
        build_discriminator(tiny("rcan"), conditioned=False)


def test_default_presets_follow_the_design():
    for fam, expected in [("rcan", {"channels": 32, "n_groups": 5, "n_blocks": 3, "reduction": 8}),
                          ("srunet", {"widths": (32, 64, 128)})]:
        dumped = network_config(fam).model_dump()
        assert {k: dumped[k] for k in expected} == expected
    rcan = build_network(ModelConfig(network=network_config("rcan")))
    n = sum(p.numel() for p in rcan.parameters())
    assert 0.9e6 < n < 1.1e6  # "about 1.0 M parameters in 3D"


def test_the_registry_imports_no_network_module():
    # napari imports the plugin at start-up: family names must not pull torch's nets in.
    import subprocess
    import sys

    code = ("import sys; from napari_volsr.engine import registry; registry.family_names(); "
            "registry.display_name('gan'); registry.family('rcan'); "
            "print(any(m.startswith('napari_volsr.engine.nets') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
