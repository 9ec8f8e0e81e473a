"""Configs: field checks, the name rule, the degradation check and version-1 migration."""

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from napari_volsr.engine import models
from napari_volsr.engine.config import (
    CONFIG_VERSION, MODEL_NAME_PATTERN, DiffusionTraining, GANTraining, ModelConfig,
    SupervisedTraining, TrainingConfig, check_model_name, describe_validation_error,
)
from napari_volsr.engine.degrade import DegradationConfig
from napari_volsr.engine.registry import network_config

V1_MODELS = Path(__file__).parent.parent / "data" / "v1_models"


def model(family="rcan", **kwargs):
    sizes = {"disc_layers": 2} if family == "gan" else {}
    return ModelConfig(task="upsample", z_factor=2, network=network_config(family, "tiny", **sizes),
                       **kwargs)


def problems(**values) -> str:
    with pytest.raises(ValidationError) as info:
        TrainingConfig(**values)
    return describe_validation_error(info.value)


# ---------------------------------------------------------------- model config

def test_unknown_key_names_the_field():
    with pytest.raises(ValidationError, match="chanels"):
        ModelConfig.model_validate({"network": {"family": "rcan", "chanels": 8}})


def test_out_of_range_names_the_field():
    with pytest.raises(ValidationError, match="z_factor"):
        ModelConfig(z_factor=0)
    with pytest.raises(ValidationError, match="channels"):
        network_config("rcan", channels=0)


def test_union_tags_are_left_out_of_error_paths():
    with pytest.raises(ValidationError) as info:
        ModelConfig.model_validate({"network": {"family": "rcan", "channels": 0}})
    assert describe_validation_error(info.value).startswith("network.channels: ")


def test_newer_config_version_is_refused():
    with pytest.raises(ValidationError, match="newer"):
        ModelConfig(version=CONFIG_VERSION + 1)
    assert "newer" in problems(version=CONFIG_VERSION + 1)


def test_task_must_fit_z_factor():
    with pytest.raises(ValidationError, match="restore"):
        ModelConfig(task="restore", z_factor=4)


# ---------------------------------------------------------------- the name rule

@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden"])
def test_model_names_cannot_be_paths(name):
    with pytest.raises(ValidationError, match="name"):
        ModelConfig(name=name)


@pytest.mark.parametrize("name,valid", [
    ("my model", True), ("RCAN_x4-v1.2+ft", True), ("9lives", True), ("a" * 100, True),
    ("a" * 101, False), ("-dash", False), (".hidden", False), ("a/b", False), ("a\\b", False),
    ("ünïcode", False), ("tab\there", False),
])
def test_one_name_rule_everywhere(name, valid):
    # The config, the library's name lookup and the doors' check agree on every name.
    def accepted(check):
        try:
            check(name)
        except (ValueError, ValidationError):
            return False
        return True

    assert accepted(lambda n: ModelConfig(name=n)) == valid
    assert accepted(check_model_name) == valid
    assert bool(models._NAME.match(name)) == bool(re.match(MODEL_NAME_PATTERN, name))


def test_check_model_name_says_what_a_name_may_hold():
    assert check_model_name("  spaced out  ") == "spaced out"
    with pytest.raises(ValueError, match=r"^Enter a model name \(letters, digits"):
        check_model_name("   ")
    with pytest.raises(ValueError, match=r"^'a/b' is not a valid model name: use letters, "
                                         r"digits, .* \(at most 100\)\.$"):
        check_model_name("a/b")


# ---------------------------------------------------------------- training config

@pytest.mark.parametrize("family,method", [
    ("rcan", SupervisedTraining), ("srunet", SupervisedTraining), ("gan", GANTraining),
    ("diffusion", DiffusionTraining),
])
def test_method_follows_the_family(family, method):
    config = TrainingConfig(model=model(family), patch_shape=(4, 16, 16))
    assert config.method == method()
    assert TrainingConfig().method == SupervisedTraining()  # the default model is RCAN


def test_flat_method_fields_move_into_the_method():
    config = TrainingConfig(model=model("gan"), patch_shape=(4, 16, 16), warmup_steps=5,
                            adversarial="vanilla", d_condition=False)
    assert config.method == GANTraining(warmup_steps=5, adversarial="vanilla",
                                        d_condition=False)
    assert config.version == CONFIG_VERSION
    config = TrainingConfig(model=model("diffusion"), diffusion_val_steps=3)
    assert config.method == DiffusionTraining(val_steps=3)


def test_flat_fields_of_another_method_are_checked_then_dropped():
    # Version 1 validated them but never used them: scripts passed e.g. loss to a GAN.
    config = TrainingConfig(model=model("rcan"), loss="mse", warmup_steps=3,
                            diffusion_val_steps=2)
    assert config.method == SupervisedTraining(loss="mse")
    assert "adversarial" in problems(model=model("rcan"), adversarial="hinge")


def test_flat_fields_override_the_method_section():
    # A config file's method section, then command-line flags (flat) over it.
    config = TrainingConfig.model_validate({
        "model": model("gan").model_dump(), "patch_shape": [4, 16, 16],
        "method": {"adversarial": "wgangp", "content_weight": 10}, "adversarial": "vanilla",
    })
    assert config.method == GANTraining(adversarial="vanilla", content_weight=10)


def test_errors_name_the_method_fields():
    assert problems(model=model("gan"), adversarial="hinge").startswith("method.adversarial: ")
    assert problems(model=model("gan"), method={"warmup_steps": -1}).startswith(
        "method.warmup_steps: ")
    assert problems(model=model("diffusion"), diffusion_val_steps=0).startswith(
        "method.val_steps: ")


def test_the_method_must_be_the_familys():
    text = problems(model=model("rcan"), method=GANTraining())
    assert "a rcan model trains with the 'supervised' method, not 'gan'" in text
    assert "method" in problems(model=model("rcan"), method={"kind": "boosting"})


def test_version_2_round_trips():
    config = TrainingConfig(model=model("gan"), patch_shape=(4, 16, 16), warmup_steps=2)
    values = config.model_dump(mode="json")
    assert values["version"] == 2 and values["method"]["kind"] == "gan"
    assert "warmup_steps" not in values
    assert TrainingConfig.model_validate(values) == config
    assert TrainingConfig.model_validate(json.loads(config.model_dump_json())) == config


@pytest.mark.parametrize("name,method", [
    ("tiny-gan-v1", GANTraining(adversarial="vanilla", content_weight=50.0, gradient_weight=0.5,
                                d_condition=False, warmup_steps=1)),
    ("tiny-rcan-v1", SupervisedTraining(loss="mse")),
])
def test_version_1_settings_of_a_saved_model_migrate(name, method):
    # The settings a version-1 model card recorded, as today's main wrote them.
    card = json.loads((V1_MODELS / name / "config.json").read_text())
    settings = card["training"]["settings"]
    assert settings["version"] == 1 and "loss" in settings and "method" not in settings
    config = TrainingConfig.model_validate({**settings, "model": card})
    assert config.version == CONFIG_VERSION
    assert config.method == method
    assert config.model.version == 1  # a model config reads as it was written
    assert config.batch_size == settings["batch_size"]


def test_assignment_keeps_the_method():
    config = TrainingConfig(model=model("gan"), patch_shape=(4, 16, 16), warmup_steps=2)
    config.steps = 5
    assert config.method == GANTraining(warmup_steps=2)
    with pytest.raises(ValidationError, match="trains with the 'supervised' method"):
        config.model = model("rcan")


# ---------------------------------------------------------------- the other checks

IDENTITY = "with z-factor 1 and no blur or noise the simulated input equals the target"


@pytest.mark.parametrize("degradation,refused", [
    ({}, True),
    ({"lateral_blur_sigma": (1.0, 1.0)}, True),  # as the doors had it: axial blur or noise
    ({"blur_sigma": (0.0, 1.0)}, False),
    ({"poisson_peak": (50.0, 100.0)}, False),
    ({"gaussian_sigma": (0.0, 0.02)}, False),
])
def test_simulated_input_must_differ_from_the_target(degradation, refused):
    restore = ModelConfig(task="restore", z_factor=1, network=network_config("rcan", "tiny"))
    values = dict(model=restore, source="synthetic", degradation=DegradationConfig(**degradation))
    if refused:
        text = problems(**values)
        assert IDENTITY in text
        assert "set a degradation (blur_sigma, poisson_peak or gaussian_sigma)" in text
        assert text.endswith("or a z-factor above 1")
    else:
        TrainingConfig(**values)
    TrainingConfig(**{**values, "source": "paired"})  # real inputs: nothing simulated
    TrainingConfig(model=model("rcan"), source="synthetic")  # z-factor 2 degrades already


def test_gan_patch_must_fit_the_discriminator():
    assert "disc_layers" in problems(model=model("gan"), patch_shape=(4, 6, 6))


def test_a_budget_is_needed():
    assert "set at least one budget" in problems(steps=None)


def test_training_defaults_are_defined_once_per_source():
    from napari_volsr.engine.degrade import DEFAULT_DEGRADATION, default_degradation

    restore = ModelConfig(task="restore", z_factor=1, network=network_config("rcan", "tiny"))
    synthetic = TrainingConfig(model=restore, source="synthetic")  # not refused at the defaults
    assert synthetic.degradation == default_degradation("synthetic")
    assert max(synthetic.degradation.gaussian_sigma) > 0
    assert TrainingConfig(source="paired").degradation == DegradationConfig()
    assert set(DEFAULT_DEGRADATION) == {"paired", "synthetic", "isotropic"}
    given = TrainingConfig(model=restore, source="synthetic", degradation={"blur_sigma": (1, 2)})
    assert given.degradation.gaussian_sigma == (0.0, 0.0)  # a given degradation is whole
    assert TrainingConfig.model_fields["validate_every"].default == 50
    with pytest.raises(ValueError, match="source must be one of"):
        default_degradation("other")
