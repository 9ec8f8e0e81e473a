import csv

import numpy as np
import pytest
import torch
from helpers import records_and_result
from scipy import ndimage

from napari_volsr.engine.config import ModelConfig, TrainingConfig
from napari_volsr.engine.models import ModelError, load_model
from napari_volsr.engine.registry import network_config
from napari_volsr.engine.train import (
    checkpoint_dir_for, iter_train, make_training_data, train,
)


@pytest.fixture(autouse=True)
def library(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(tmp_path / "library"))
    return tmp_path / "library"


@pytest.fixture(scope="module")
def clean_volume():
    rng = np.random.default_rng(3)
    vol = ndimage.gaussian_filter(rng.random((24, 48, 48)), 2.0)
    return ((vol - vol.min()) / np.ptp(vol) * 200 + 20).astype(np.float32)


def config_for(family, steps=6, name="m", **kwargs):
    extra = {"diffusion": {"sample_steps": 2, "n_samples": 1}, "gan": {"disc_layers": 2}}.get(family, {})
    spatial_dims = kwargs.pop("spatial_dims", 3)
    task = kwargs.pop("task", "upsample")
    model = ModelConfig(name=name, task=task, z_factor=2, spatial_dims=spatial_dims,
                        network=network_config(family, "tiny", **extra))
    patch = (4, 16, 16) if spatial_dims == 3 else (16, 16)
    defaults = dict(source="synthetic", patch_shape=patch, batch_size=2, steps=steps,
                    validate_every=3, checkpoint_every=3, n_val=2, learning_rate=1e-3,
                    diffusion_val_steps=2, prefetch=1)
    defaults.update(kwargs)
    return TrainingConfig(model=model, **defaults)


def weights(model):
    return {k: v.clone() for k, v in model.net.state_dict().items()}


@pytest.mark.parametrize("family", ["rcan", "srunet", "gan", "diffusion", "unet"])
def test_every_family_trains_saves_and_reports(library, clean_volume, family):
    config = config_for(family)
    data = make_training_data(config, targets=[clean_volume])
    records, model = records_and_result(iter_train(config, data, voxel_spacing=(2.0, 1.0, 1.0)))
    steps = [r.step for r in records if r.losses]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert all(r.total == 6 for r in records)
    assert [r.step for r in records if r.validation and r.losses] == [3, 6]
    assert "model saved" in records[-1].message
    assert "psnr" in records[-1].validation
    assert model.folder == library / "m"
    card = model.config.training
    assert card["steps"] == 6 and card["voxel_spacing"] == [2.0, 1.0, 1.0]
    assert card["final_validation"]["psnr"] == records[-1].validation["psnr"]
    with open(model.folder / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and "val_psnr" in rows[-1]
    assert load_model("m").config.family == family


@pytest.mark.parametrize("family", ["rcan", "gan", "diffusion"])
def test_resume_is_exact(tmp_path, clean_volume, family):
    config = config_for(family, steps=6, checkpoint_every=100)
    data = make_training_data(config, targets=[clean_volume])
    straight = train(config, data, output_dir=tmp_path / "straight")

    calls = []
    half = iter_train(config, data, output_dir=tmp_path / "halves",
                      should_stop=lambda: len(calls) >= 3)
    for record in half:
        if record.losses:
            calls.append(record.step)
    stopped = load_model(tmp_path / "halves")
    assert stopped.config.training["steps"] == 3 and stopped.config.training["stopped_early"]
    resumed = train(config, data, output_dir=tmp_path / "halves", resume=True)
    assert resumed.config.training["steps"] == 6
    for key, value in weights(straight).items():
        torch.testing.assert_close(weights(resumed)[key], value, rtol=0, atol=0)


def test_closing_the_generator_leaves_a_loadable_checkpoint(tmp_path, clean_volume):
    config = config_for("srunet", steps=50)
    data = make_training_data(config, targets=[clean_volume])
    gen = iter_train(config, data, output_dir=tmp_path / "m")
    for record in gen:
        if record.step == 2:
            break
    gen.close()  # what napari's worker.quit() does
    model = load_model(tmp_path / "m")
    assert model.config.training["steps"] == 2
    assert (checkpoint_dir_for(tmp_path / "m") / "weights.safetensors").is_file()
    resumed = train(config.model_copy(update={"steps": 4}), data, output_dir=tmp_path / "m",
                    resume=True)
    assert resumed.config.training["steps"] == 4


def test_resume_finds_a_checkpoint_left_mid_swap(tmp_path, clean_volume):
    config = config_for("rcan", steps=2)
    data = make_training_data(config, targets=[clean_volume])
    train(config, data, output_dir=tmp_path / "m")
    checkpoints = checkpoint_dir_for(tmp_path / "m")
    # Killed between atomic_path's two renames: only the backup of the last one is left.
    checkpoints.rename(checkpoints.with_name(f".{checkpoints.name}.old"))
    resumed = train(config.model_copy(update={"steps": 3}), data, output_dir=tmp_path / "m",
                    resume=True)
    assert resumed.config.training["steps"] == 3
    assert (checkpoints / "checkpoint.json").is_file()


def test_minutes_budget_stops(tmp_path, clean_volume):
    config = config_for("gan", steps=None, minutes=0.002)
    data = make_training_data(config, targets=[clean_volume])
    model = train(config, data, output_dir=tmp_path / "m")
    assert 1 <= model.config.training["steps"] < 1000


def test_existing_name_is_not_overwritten(library, clean_volume):
    config = config_for("gan", steps=1)
    data = make_training_data(config, targets=[clean_volume])
    train(config, data)
    with pytest.raises(ModelError, match="exists"):
        train(config, data)
    train(config, data, overwrite=True)


def test_preview_is_restored_at_validation(tmp_path, clean_volume):
    config = config_for("rcan", steps=3)
    data = make_training_data(config, targets=[clean_volume])
    previews = [r.preview for r in iter_train(config, data, output_dir=tmp_path / "m",
                                              preview_input=clean_volume[:4, :16, :16])
                if r.preview is not None]
    assert len(previews) == 1 and previews[0].shape == (8, 16, 16)


def test_data_and_model_must_agree(tmp_path, clean_volume):
    config = config_for("rcan")
    other = config_for("rcan", spatial_dims=2, source="isotropic", task="isotropic",
                       patch_shape=(8, 8))
    data = make_training_data(other, volumes=[clean_volume])
    with pytest.raises(ValueError, match="2D"):
        train(config, data, output_dir=tmp_path / "m")


def test_gan_patch_must_fit_the_discriminator():
    with pytest.raises(ValueError, match="disc_layers"):
        config_for("gan", patch_shape=(4, 6, 6))


def test_diverging_training_stops_with_a_message(tmp_path, clean_volume, monkeypatch):
    from napari_volsr.engine.methods.supervised import SupervisedMethod

    monkeypatch.setattr(SupervisedMethod, "training_step",
                        lambda self, batch, step=None: {"loss": float("nan")})
    config = config_for("rcan")
    data = make_training_data(config, targets=[clean_volume])
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        train(config, data, output_dir=tmp_path / "m")


def test_learning_rate_halves_every_quarter(tmp_path, clean_volume):
    config = config_for("rcan", steps=8, learning_rate=1e-3)
    data = make_training_data(config, targets=[clean_volume])
    lrs = [r.lr for r in iter_train(config, data, output_dir=tmp_path / "m") if r.losses]
    # lr used at step k (1-based record) was set from fraction (k - 1) / 8
    assert lrs == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 1.25e-4, 1.25e-4])


def test_cosine_learning_rate_anneals_to_zero_over_the_budget(tmp_path, clean_volume):
    import math

    config = config_for("rcan", steps=8, learning_rate=1e-3, lr_decay="cosine")
    data = make_training_data(config, targets=[clean_volume])
    lrs = [r.lr for r in iter_train(config, data, output_dir=tmp_path / "m") if r.losses]
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)]
    assert lrs == pytest.approx(expected)
    assert lrs[-1] < 0.05 * lrs[0] and lrs == sorted(lrs, reverse=True)


def test_bf16_autocast_on_cpu_trains(tmp_path, clean_volume):
    config = config_for("srunet", steps=2, precision="bf16")
    data = make_training_data(config, targets=[clean_volume])
    records = [r for r in iter_train(config, data, output_dir=tmp_path / "m") if r.losses]
    assert len(records) == 2 and all(np.isfinite(r.losses["loss"]) for r in records)


@pytest.mark.parametrize("family,main", [("rcan", "loss"), ("gan", "g_loss")])
def test_progress_names_the_main_loss(tmp_path, clean_volume, family, main):
    config = config_for(family, steps=2)
    data = make_training_data(config, targets=[clean_volume])
    records = list(iter_train(config, data, output_dir=tmp_path / "m"))
    stepped = [r for r in records if r.losses]
    assert len(stepped) == 2 and all(r.loss == r.losses[main] for r in stepped)
    assert records[-1].loss is None  # the closing record carries no losses


def test_gan_warm_up_comes_from_the_method_config(tmp_path, clean_volume):
    config = config_for("gan", steps=3, warmup_steps=2)
    assert config.method.warmup_steps == 2
    data = make_training_data(config, targets=[clean_volume])
    d_losses = [r.losses["d_loss"] for r in iter_train(config, data, output_dir=tmp_path / "m")
                if r.losses]
    assert np.isnan(d_losses[:2]).all() and np.isfinite(d_losses[2])
    settings = load_model(tmp_path / "m").config.training["settings"]
    assert settings["method"]["warmup_steps"] == 2 and "warmup_steps" not in settings


def test_a_checkpoint_of_version_1_resumes(tmp_path, clean_volume):
    import json

    config = config_for("rcan", steps=4, checkpoint_every=100)
    data = make_training_data(config, targets=[clean_volume])
    straight = train(config, data, output_dir=tmp_path / "straight")
    steps = []
    for record in iter_train(config, data, output_dir=tmp_path / "m",
                             should_stop=lambda: len(steps) >= 2):
        if record.losses:
            steps.append(record.step)
    meta_path = checkpoint_dir_for(tmp_path / "m") / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["version"] = 1  # what napari-volsr wrote before config version 2
    meta_path.write_text(json.dumps(meta))
    resumed = train(config, data, output_dir=tmp_path / "m", resume=True)
    assert resumed.config.training["steps"] == 4 and resumed.config.version == 2
    for key, value in weights(straight).items():
        torch.testing.assert_close(weights(resumed)[key], value, rtol=0, atol=0)


def test_the_interpolation_baseline_is_scored_on_the_validation_patches(tmp_path,
                                                                        clean_volume):
    from scipy.ndimage import zoom

    from napari_volsr.engine.metrics import psnr

    config = config_for("rcan", steps=3)  # synthetic x2, 3D
    data = make_training_data(config, targets=[clean_volume])
    records = list(iter_train(config, data, output_dir=tmp_path / "m"))
    baseline = records[-1].baseline_validation
    # cubic at the model's z-factor: scipy's prefiltered spline on the slab grid
    expected = np.mean([psnr(zoom(x[0].astype(np.float64), (2, 1, 1), order=3, mode="reflect",
                                  grid_mode=True), t[0], data_range=1.0)
                        for x, t in data.validation])
    assert baseline["psnr"] == pytest.approx(expected, abs=1e-4) and "ssim" in baseline
    assert all((r.baseline_validation is not None) == bool(r.validation) for r in records)
    assert load_model(tmp_path / "m").config.training["baseline_validation"] == baseline


def test_the_baseline_of_a_restoration_is_its_input(tmp_path, clean_volume):
    from napari_volsr.engine.metrics import psnr

    model = ModelConfig(name="m", task="restore", z_factor=1, spatial_dims=2,
                        network=network_config("srunet", "tiny"))
    config = TrainingConfig(model=model, source="synthetic", patch_shape=(16, 16), steps=1,
                            batch_size=2, n_val=2, degradation={"gaussian_sigma": (0.05, 0.1)})
    data = make_training_data(config, targets=[clean_volume])
    record = [r for r in iter_train(config, data, output_dir=tmp_path / "m") if r.validation][0]
    expected = np.mean([psnr(x[0], t[0], data_range=1.0) for x, t in data.validation])
    assert record.baseline_validation["psnr"] == pytest.approx(expected, abs=1e-4)


def test_isotropic_baseline_interpolates_the_planes_first_axis(tmp_path, clean_volume):
    from napari_volsr.engine.interp import upsample_z
    from napari_volsr.engine.metrics import psnr
    from napari_volsr.engine.train import baseline_validation

    config = config_for("rcan", spatial_dims=2, source="isotropic", task="isotropic",
                        patch_shape=(8, 16))
    data = make_training_data(config, volumes=[clean_volume])
    planes = [upsample_z(torch.from_numpy(x[None]), 2, "cubic")[0, 0].numpy()
              for x, _ in data.validation]
    assert planes[0].shape == data.validation[0][1][0].shape == (16, 16)
    expected = np.mean([psnr(p, t[0], data_range=1.0) for p, (_, t) in
                        zip(planes, data.validation)])
    assert baseline_validation(data)["psnr"] == pytest.approx(expected, abs=1e-4)
    without = make_training_data(config.model_copy(update={"n_val": 0}), volumes=[clean_volume])
    assert baseline_validation(without) is None


def test_a_second_run_of_one_name_is_refused_while_the_first_trains(library, clean_volume):
    from napari_volsr.engine.checkpoints import reservation_path

    config = config_for("rcan", steps=3)
    data = make_training_data(config, targets=[clean_volume])
    first = iter_train(config, data)
    next(first)  # training: the name is held
    marker = reservation_path(library / "m")
    assert marker.is_file()
    with pytest.raises(ModelError, match="already training a model named 'm'"):
        next(iter_train(config, data, overwrite=True))
    model = drain_generator(first)
    assert model.config.training["steps"] == 3 and not marker.exists()
    with pytest.raises(ModelError, match="exists"):  # saved meanwhile: not overwritten
        next(iter_train(config, data))


def test_a_marker_left_by_a_dead_run_does_not_hold_the_name(library, clean_volume):
    import json
    import socket
    import subprocess
    import sys

    from napari_volsr.engine.checkpoints import reservation_path

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    marker = reservation_path(library / "m")
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    config = config_for("rcan", steps=1)
    model = train(config, make_training_data(config, targets=[clean_volume]))
    assert model.config.training["steps"] == 1 and not marker.exists()


def test_default_names_skip_a_name_a_running_training_holds(tmp_path):
    from napari_volsr.engine.checkpoints import reservation_path
    from napari_volsr.engine.training_request import free_model_name

    reservation_path(tmp_path / "v-rcan").write_text("{}")
    assert free_model_name(tmp_path, "v", "rcan") == "v-rcan-2"


def drain_generator(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def test_checkpoint_weights_are_as_readable_as_the_rest(library, clean_volume):
    import os
    import stat

    old = os.umask(0o022)
    try:
        config = config_for("rcan", steps=3)
        train(config, make_training_data(config, targets=[clean_volume]))
    finally:
        os.umask(old)
    folder = checkpoint_dir_for(library / "m")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes["weights.safetensors"] == modes["checkpoint.json"] == 0o644
