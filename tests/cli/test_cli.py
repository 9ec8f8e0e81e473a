import functools
import json
import os
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tifffile

import helpers
from napari_volsr.engine import metrics
from napari_volsr.engine.io import read_volume
from napari_volsr.engine.models import load_model, read_model_config


run = helpers.run_cli
one_error_line = helpers.error_line
# Volumes in 50..1050: well inside uint16, never near zero.
smooth = functools.partial(helpers.smooth, offset=50.0)


def test_restore_tiff(capsys, tmp_path, anisotropic_tiff):
    src, data = anisotropic_tiff
    out = tmp_path / "iso.tif"
    code, stdout, _ = run(capsys, "restore", "-i", str(src), "-o", str(out), "-q")
    assert code == 0
    vol = read_volume(out)
    assert vol.data.shape == (32, 24, 20)  # auto z-factor: 0.8 / 0.2 = 4
    np.testing.assert_allclose(vol.spacing, (0.2, 0.2, 0.2))
    assert read_volume(src).data.tolist() == data.tolist()


def test_restore_nifti_with_explicit_options(capsys, tmp_path, rng):
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(rng.random((8, 7, 5)).astype(np.float32), np.diag([1, 1, 3.0, 1])),
             tmp_path / "in.nii.gz")
    out = tmp_path / "out.nii.gz"
    code, _, _ = run(capsys, "restore", "-i", str(tmp_path / "in.nii.gz"), "-o", str(out),
                     "--z-factor", "3", "--method", "linear", "--block-shape", "2,4,4", "-q")
    assert code == 0
    img = nib.load(out)
    assert img.shape == (8, 7, 15)
    np.testing.assert_allclose(img.header.get_zooms(), (1, 1, 1))


def test_info(capsys, anisotropic_tiff):
    code, stdout, _ = run(capsys, "info", str(anisotropic_tiff[0]))
    assert code == 0
    assert "(8, 24, 20)" in stdout and "uint16" in stdout and "0.8 x 0.2 x 0.2 µm" in stdout


@pytest.mark.parametrize("args,message", [
    (["restore", "-i", "MISSING.tif", "-o", "OUT.tif"], "no such file"),
    (["restore", "-i", "SRC", "-o", "OUT.tif", "-z", "0"], "--z-factor"),
    (["restore", "-i", "SRC", "-o", "OUT.tif", "-m", "magic"], "unknown model"),
    (["restore", "-i", "SRC", "-o", "SRC"], "equals the input"),
    (["restore", "-i", "SRC", "-o", "OUT.png"], "cannot write .png"),
    (["restore", "-i", "PLANE", "-o", "OUT.tif"], "2D image"),
    (["restore", "-i", "SRC", "-o", "OUT.tif", "--block-shape", "a,b"], "--block-shape"),
    (["info", "EMPTY.tif"], "empty"),
])
def test_bad_input_is_one_line_and_nonzero(capsys, tmp_path, anisotropic_tiff, args, message):
    import tifffile

    tifffile.imwrite(tmp_path / "plane.tif", np.zeros((5, 6), np.uint8))
    (tmp_path / "empty.tif").write_bytes(b"")
    names = {"SRC": str(anisotropic_tiff[0]), "MISSING.tif": str(tmp_path / "missing.tif"),
             "OUT.tif": str(tmp_path / "out.tif"), "OUT.png": str(tmp_path / "out.png"),
             "PLANE": str(tmp_path / "plane.tif"), "EMPTY.tif": str(tmp_path / "empty.tif")}
    code, stdout, stderr = run(capsys, *[names.get(a, a) for a in args])
    assert code != 0
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("volsr: error:"), stderr
    assert message in lines[0]
    assert "Traceback" not in stderr
    assert not (tmp_path / "out.tif").exists()


def test_existing_output_needs_overwrite(capsys, tmp_path, anisotropic_tiff):
    out = tmp_path / "o.tif"
    out.write_bytes(b"keep me")
    code, _, stderr = run(capsys, "restore", "-i", str(anisotropic_tiff[0]), "-o", str(out))
    assert code == 1 and "--overwrite" in stderr
    assert out.read_bytes() == b"keep me"


def test_headless_demo_writes_a_file(capsys, tmp_path):
    out = tmp_path / "demo.tif"
    code, _, _ = run(capsys, "demo", "--headless", "-o", str(out))
    assert code == 0
    vol = read_volume(out)
    assert vol.data.shape == (160, 152, 126)


def test_restore_with_a_saved_model_uses_its_z_factor(capsys, tmp_path, anisotropic_tiff, monkeypatch):
    from napari_volsr.engine.config import ModelConfig
    from napari_volsr.engine.models import save_model
    from napari_volsr.engine.registry import build_network, network_config

    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(tmp_path / "lib"))
    config = ModelConfig(name="up2", task="upsample", z_factor=2, network=network_config("gan", "tiny"))
    save_model(tmp_path / "lib" / "up2", config, build_network(config))
    out = tmp_path / "up.tif"
    code, _, stderr = run(capsys, "restore", "-m", "up2", "-i", str(anisotropic_tiff[0]),
                          "-o", str(out), "-q")
    assert code == 0, stderr
    vol = read_volume(out)
    assert vol.data.shape == (16, 24, 20)  # the model's x2, not the spacing's x4
    np.testing.assert_allclose(vol.spacing, (0.4, 0.2, 0.2))
    code, _, stderr = run(capsys, "restore", "-m", "up2", "-z", "4", "-i",
                          str(anisotropic_tiff[0]), "-o", str(tmp_path / "x.tif"))
    assert code == 1 and "trained for z-factor 2" in stderr


# ---------------------------------------------------------------- train, restore, evaluate, models


def write_tiff(path, data, z_spacing, xy=0.2):
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / xy, 1 / xy),
                     metadata={"spacing": z_spacing, "unit": "um", "axes": "ZYX"})
    return path



TINY = ["--preset", "tiny", "--steps", "3", "--patch", "4,16,16", "--batch-size", "2", "-q"]


def test_train_paired_tiff_then_restore_with_it(capsys, tmp_path, rng, library):
    target = smooth(rng, (12, 32, 32))
    raw = target.reshape(6, 2, 32, 32).mean(axis=1)
    write_tiff(tmp_path / "low.tif", raw, 0.4)
    write_tiff(tmp_path / "high.tif", target, 0.2)
    code, stdout, stderr = run(capsys, "train", "--raw", str(tmp_path / "low.tif"), "--target",
                               str(tmp_path / "high.tif"), "--family", "rcan", *TINY)
    assert code == 0, stderr
    model = load_model("low-rcan")  # default name: <first input>-<family>; z-factor 12 / 6
    assert model.config.task == "upsample" and model.config.z_factor == 2
    card = model.config.training
    assert card["source"] == "paired" and card["steps"] == 3
    np.testing.assert_allclose(card["voxel_spacing"], (0.4, 0.2, 0.2))
    assert str(library / "low-rcan") in stdout
    assert f"PSNR {card['final_validation']['psnr']:.4f}" in stdout

    out = tmp_path / "restored.tif"
    code, _, stderr = run(capsys, "restore", "-m", "low-rcan", "-i", str(tmp_path / "low.tif"),
                          "-o", str(out), "-q")
    assert code == 0, stderr
    vol = read_volume(out)
    assert vol.data.shape == (12, 32, 32)
    np.testing.assert_allclose(vol.spacing, (0.2, 0.2, 0.2))


def test_train_isotropic_nifti_then_restore_with_it(capsys, tmp_path, rng, library):
    nib = pytest.importorskip("nibabel")
    zyx = smooth(rng, (6, 32, 32))
    nib.save(nib.Nifti1Image(zyx.transpose(2, 1, 0).copy(), np.diag([1.0, 1.0, 4.0, 1.0])),
             tmp_path / "brain.nii.gz")
    code, stdout, stderr = run(capsys, "train", "--volume", str(tmp_path / "brain.nii.gz"),
                               "--name", "iso", "--preset", "tiny", "--steps", "2",
                               "--patch", "4,16", "--batch-size", "2", "-q")
    assert code == 0, stderr
    config = read_model_config("iso")
    # z-factor from the spacing: 4 / 1
    assert (config.task, config.spatial_dims, config.z_factor) == ("isotropic", 2, 4)
    out = tmp_path / "iso.nii.gz"
    code, _, stderr = run(capsys, "restore", "-m", "iso", "-i", str(tmp_path / "brain.nii.gz"),
                          "-o", str(out), "-q")
    assert code == 0, stderr
    img = nib.load(out)
    assert img.shape == (32, 32, 24)
    np.testing.assert_allclose(img.header.get_zooms(), (1, 1, 1))


@pytest.fixture
def clean_tiff(tmp_path, rng):
    return write_tiff(tmp_path / "clean.tif", smooth(rng, (12, 32, 32)), 0.2)


GAN_FILE = {"source": "synthetic", "steps": 50, "patch_shape": [4, 16, 16], "batch_size": 2,
            "n_val": 2, "model": {"name": "from-file", "z_factor": 2, "network": {
                "family": "gan", "channels": 4, "n_blocks": 1, "disc_layers": 2}}}


def test_train_from_a_json_config_with_a_flag_override(capsys, tmp_path, clean_tiff, library):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(GAN_FILE))
    code, _, stderr = run(capsys, "train", "--config", str(path), "--target", str(clean_tiff),
                          "--steps", "2", "-q")
    assert code == 0, stderr
    config = read_model_config("from-file")
    assert config.training["steps"] == 2  # the flag, not the file's 50
    assert config.family == "gan" and config.z_factor == 2
    assert (config.network.channels, config.network.disc_layers) == (4, 2)
    assert config.training["settings"]["batch_size"] == 2


def test_yaml_config_and_flags_resolve_like_json(capsys, tmp_path, clean_tiff, library):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(GAN_FILE))
    code, stdout, stderr = run(capsys, "train", "-c", str(path), "--target", str(clean_tiff),
                               "--minutes", "5", "--lr", "0.001", "--dry-run")
    assert code == 0, stderr
    resolved = json.loads(stdout)
    assert (resolved["steps"], resolved["minutes"], resolved["learning_rate"]) == (50, 5, 0.001)
    assert resolved["model"]["network"]["disc_layers"] == 2
    assert resolved["model"]["name"] == "from-file"
    assert not (library / "from-file").exists()


@pytest.mark.parametrize("values,field", [
    ({"stepz": 3}, "stepz"),
    ({"model": {"network": {"family": "rcan", "chanels": 4}}}, "model.network.chanels"),
    ({"batch_size": 0}, "batch_size"),
    ({"degradation": {"blur_sigma": [2, 1]}}, "degradation.blur_sigma"),
])
def test_bad_config_file_is_one_line_naming_the_field(capsys, tmp_path, clean_tiff, library,
                                                      values, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"model": {"z_factor": 2}, **values}))
    code, _, stderr = run(capsys, "train", "-c", str(path), "--target", str(clean_tiff))
    assert code == 1
    assert field in one_error_line(stderr)
    assert not any(library.iterdir())  # nothing trained, nothing saved


def test_yaml_without_pyyaml_says_so(capsys, tmp_path, clean_tiff, monkeypatch):
    (tmp_path / "c.yaml").write_text("steps: 2\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    code, _, stderr = run(capsys, "train", "-c", str(tmp_path / "c.yaml"),
                          "--target", str(clean_tiff))
    assert code == 1 and "pyyaml" in one_error_line(stderr)


def test_restore_folder_batch_goes_on_past_a_bad_file(capsys, tmp_path, rng):
    nib = pytest.importorskip("nibabel")
    src = tmp_path / "in"
    src.mkdir()
    write_tiff(src / "a.tif", smooth(rng, (4, 16, 12)), 0.4)
    write_tiff(src / "b.tif", smooth(rng, (5, 10, 16)), 0.4)
    (src / "c.tif").write_bytes(b"")  # empty: unreadable
    (src / "notes.txt").write_text("not a volume")
    out = tmp_path / "out"
    code, stdout, stderr = run(capsys, "restore", "-i", str(src), "-o", str(out), "--format",
                               "nii.gz", "-m", "linear", "--block-shape", "2,8,8",
                               "--overlap", "0,2,2")
    assert code == 1
    assert "c.tif: failed" in stderr and "empty" in stderr
    assert stderr.strip().splitlines()[-1] == "volsr: error: 1 of 3 volumes failed: c.tif"
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b.nii.gz"]  # no temporaries
    assert nib.load(out / "a.nii.gz").shape == (12, 16, 8)  # auto z-factor 0.4 / 0.2 = 2
    assert nib.load(out / "b.nii.gz").shape == (16, 10, 10)
    code, _, stderr = run(capsys, "restore", "-i", str(src), "-o", str(out / "x.tif"))
    assert code == 1 and "must be a folder" in one_error_line(stderr)


def test_rescale_fits_the_result_to_the_reference(capsys, tmp_path, rng):
    vol = smooth(rng, (6, 16, 12))
    write_tiff(tmp_path / "in.tif", vol, 0.2)
    write_tiff(tmp_path / "truth.tif", 3 * vol + 10, 0.2)
    out = tmp_path / "out.tif"
    code, stdout, stderr = run(capsys, "restore", "-i", str(tmp_path / "in.tif"), "-o", str(out),
                               "-m", "linear", "-z", "1", "--rescale", str(tmp_path / "truth.tif"))
    assert code == 0, stderr
    np.testing.assert_allclose(read_volume(out).data, 3 * vol + 10, rtol=1e-5)
    assert "fitted to truth.tif" in stdout
    write_tiff(tmp_path / "short.tif", vol[:3], 0.2)
    code, _, stderr = run(capsys, "restore", "-i", str(tmp_path / "in.tif"), "-o",
                          str(tmp_path / "o2.tif"), "-m", "linear", "-z", "1",
                          "--rescale", str(tmp_path / "short.tif"))
    assert code == 1 and "differ in shape" in one_error_line(stderr)
    assert not (tmp_path / "o2.tif").exists()


def test_evaluate_prints_the_engine_metrics(capsys, tmp_path, rng):
    truth = smooth(rng, (6, 16, 12))
    noisy = truth + rng.normal(0, 20, truth.shape).astype(np.float32)
    write_tiff(tmp_path / "truth.tif", truth, 0.2)
    write_tiff(tmp_path / "noisy.tif", noisy, 0.2)
    noisy_path, truth_path = str(tmp_path / "noisy.tif"), str(tmp_path / "truth.tif")
    code, stdout, stderr = run(capsys, "evaluate", noisy_path, truth_path, "--json")
    assert code == 0, stderr
    scores = json.loads(stdout)
    result, reference = read_volume(noisy_path).data, read_volume(truth_path).data
    assert scores["psnr"] == metrics.psnr(result, reference)
    assert scores["ssim"] == metrics.ssim(result, reference)
    assert scores["nrmse"] == metrics.nrmse(result, reference)
    code, stdout, _ = run(capsys, "evaluate", noisy_path, truth_path)
    assert f"PSNR:  {scores['psnr']:.4f} dB" in stdout
    write_tiff(tmp_path / "small.tif", truth[:, :8], 0.2)
    code, _, stderr = run(capsys, "evaluate", str(tmp_path / "small.tif"), truth_path)
    assert code == 1 and "differ in shape" in one_error_line(stderr)


def test_models_list_show_and_export(capsys, tmp_path, library):
    from napari_volsr.engine.config import ModelConfig
    from napari_volsr.engine.models import save_model
    from napari_volsr.engine.registry import build_network, network_config

    card = {"steps": 40, "final_validation": {"psnr": 31.25, "ssim": 0.9}}
    config = ModelConfig(name="up2", task="upsample", z_factor=2, training=card,
                         network=network_config("srunet", "tiny"))
    save_model(library / "up2", config, build_network(config))
    code, stdout, _ = run(capsys, "models", "list", "--json")
    assert code == 0
    (row,) = json.loads(stdout)
    assert row | {"folder": None} == {"name": "up2", "family": "srunet", "task": "upsample",
                                      "z_factor": 2, "spatial_dims": 3, "steps": 40,
                                      "val_psnr": 31.25, "val_ssim": 0.9, "folder": None}
    code, stdout, _ = run(capsys, "models", "list")
    assert stdout.split("\n")[1].split() == ["up2", "srunet", "upsample", "2", "40", "31.25", "dB"]
    code, stdout, _ = run(capsys, "models", "show", "up2")
    assert code == 0 and json.loads(stdout)["network"]["widths"] == [4, 4, 8]

    dest = tmp_path / "exports" / "up2.zip"
    dest.parent.mkdir()
    code, stdout, stderr = run(capsys, "models", "export", "up2", str(dest))
    assert code == 0, stderr
    with zipfile.ZipFile(dest) as archive:
        assert {"up2/config.json", "up2/weights.safetensors"} <= set(archive.namelist())
        archive.extractall(tmp_path / "unzipped")
    assert load_model(tmp_path / "unzipped" / "up2").config.z_factor == 2
    before = dest.read_bytes()
    code, _, stderr = run(capsys, "models", "export", "up2", str(dest))
    assert code == 1 and "--overwrite" in one_error_line(stderr) and dest.read_bytes() == before
    code, _, stderr = run(capsys, "models", "export", "up2", str(dest), "--overwrite")
    assert code == 0 and os.listdir(dest.parent) == ["up2.zip"]  # no temporaries
    code, _, stderr = run(capsys, "models", "show", "../up2")
    assert code == 1 and "path separators" in one_error_line(stderr)


def start_cli(args, env_extra):
    """Run ``volsr`` in a subprocess; its output lines (stdout and stderr) as they come."""
    env = dict(os.environ, **env_extra)
    proc = subprocess.Popen([sys.executable, "-m", "napari_volsr.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, helpers.ProcessOutput(proc)


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])  # zarr: the streamed merge scratch too
def test_ctrl_c_during_restore_leaves_no_partial_output(tmp_path, rng, suffix):
    data = (rng.random((24, 192, 192)) * 1000).astype(np.uint16)
    write_tiff(tmp_path / "big.tif", data, 0.8)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # Many small blocks: seconds of work, with a progress line once blocks start.
    proc, output = start_cli(["restore", "-i", str(tmp_path / "big.tif"), "-o",
                              str(out_dir / f"big_x4{suffix}"), "--block-shape", "2,16,16"], {})
    output.wait_for(lambda line: "restoring" in line)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    output.join()
    assert "interrupted: no output was written" in output.text
    assert os.listdir(out_dir) == []  # neither the output nor a temporary


def test_ctrl_c_between_batch_files_keeps_the_finished_ones(tmp_path, rng):
    src, out_dir = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    write_tiff(src / "a.tif", (rng.random((4, 16, 16)) * 1000).astype(np.uint16), 0.8)
    write_tiff(src / "b.tif", (rng.random((24, 192, 192)) * 1000).astype(np.uint16), 0.8)
    proc, output = start_cli(["restore", "-i", str(src), "-o", str(out_dir),
                              "--block-shape", "2,16,16"], {})
    output.wait_for(lambda line: "[2/2] b.tif" in line)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    output.join()
    assert "1 of 2 volumes written" in output.text
    assert os.listdir(out_dir) == ["a.tif"]
    assert read_volume(out_dir / "a.tif").data.shape == (16, 16, 16)


def test_ctrl_c_during_training_saves_a_checkpoint_and_the_model(capsys, tmp_path, clean_tiff,
                                                                monkeypatch):
    from napari_volsr.engine.train import checkpoint_dir_for

    lib = tmp_path / "lib"
    args = ["train", "--target", str(clean_tiff), "-z", "2", "--name", "sig", "--family", "srunet",
            "--preset", "tiny", "--patch", "4,16,16", "--batch-size", "2", "--steps", "100000"]
    proc, output = start_cli(args, {"NAPARI_VOLSR_MODELS": str(lib)})
    output.wait_for(lambda line: "loss" in line)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    output.join()
    assert "stopped: model saved to" in output.text
    model = load_model(lib / "sig")
    steps = model.config.training["steps"]
    assert 1 <= steps < 100000 and model.config.training["stopped_early"]
    assert (checkpoint_dir_for(lib / "sig") / "weights.safetensors").is_file()

    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(lib))
    # Resume without model options: the checkpoint's settings are used.
    code, _, stderr = run(capsys, "train", "--target", str(clean_tiff), "--name", "sig",
                          "--resume", "--steps", str(steps + 2), "--patch", "4,16,16",
                          "--batch-size", "2", "-q")
    assert code == 0, stderr
    assert read_model_config(lib / "sig").training["steps"] == steps + 2


def test_two_concurrent_runs_of_one_name_lose_no_model(tmp_path, clean_tiff):
    lib = tmp_path / "lib"
    common = ["train", "--target", str(clean_tiff), "-z", "2", "--name", "twin", "--preset",
              "tiny", "--patch", "4,16,16", "--batch-size", "2"]
    env = {"NAPARI_VOLSR_MODELS": str(lib)}
    first, first_output = start_cli([*common, "--steps", "100000"], env)
    first_output.wait_for(lambda line: "loss" in line)  # training: it holds the name
    # Before, this second run trained, saved 'twin' and the first run's save replaced it.
    second, second_output = start_cli([*common, "--steps", "2", "-q"], env)
    assert second.wait(timeout=120) == 1
    second_output.join()
    assert "is already training a model named 'twin'" in second_output.text
    assert not (lib / "twin").exists()  # the second run saved nothing
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=60) == 130
    first_output.join()
    assert "stopped: model saved to" in first_output.text
    assert load_model(lib / "twin").config.training["steps"] >= 1
    assert sorted(p.name for p in lib.iterdir()) == [".checkpoints", "twin"]  # no marker left


# ---------------------------------------------------------------- defaults a new user meets


def test_an_isotropic_volume_with_the_defaults_is_refused_not_copied(capsys, tmp_path, rng):
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(smooth(rng, (16, 16, 8)), np.eye(4)), tmp_path / "iso.nii.gz")
    code, _, stderr = run(capsys, "restore", "-i", str(tmp_path / "iso.nii.gz"), "-o",
                          str(tmp_path / "out.nii.gz"))
    assert code == 1 and one_error_line(stderr) == (
        "volsr: error: cubic interpolation with z-factor 1 returns the volume unchanged (the "
        "voxel spacing 1 x 1 x 1 needs no z-upsampling): nothing to do; choose a z-factor from "
        "2 to 16, or a trained model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iso.nii.gz"]
    code, _, stderr = run(capsys, "restore", "-i", str(tmp_path / "iso.nii.gz"), "-o",
                          str(tmp_path / "out.nii.gz"), "-z", "2", "-q")
    assert code == 0, stderr


def test_the_output_keeps_the_input_type_clipped_and_float32_on_request(capsys, tmp_path, rng):
    data = smooth(rng, (6, 16, 12), scale=65_000.0).astype(np.uint16)
    data[2, :, :6] = 65_535  # next to 0 below: cubic overshoots past both ends
    data[3, :, :6] = 0
    write_tiff(tmp_path / "in.tif", data, 0.4)
    out = tmp_path / "out.tif"
    code, stdout, stderr = run(capsys, "restore", "-i", str(tmp_path / "in.tif"), "-o", str(out))
    assert code == 0, stderr
    restored = read_volume(out).data
    assert restored.dtype == np.uint16 and "uint16" in stdout
    code, _, stderr = run(capsys, "restore", "-i", str(tmp_path / "in.tif"), "-o",
                          str(tmp_path / "f.tif"), "--output-dtype", "float32", "-q")
    assert code == 0, stderr
    floats = read_volume(tmp_path / "f.tif").data
    assert floats.dtype == np.float32
    assert floats.max() > 65_535 and floats.min() < 0  # cubic overshoot, kept in float32
    assert out.stat().st_size < 0.7 * (tmp_path / "f.tif").stat().st_size  # half the bytes
    # ... and clipped, never wrapped, in uint16: the brightest stay brightest.
    np.testing.assert_array_equal(restored, np.clip(np.rint(floats), 0, 65_535))


def test_info_takes_several_files_and_folders(capsys, tmp_path, anisotropic_tiff, rng):
    nib = pytest.importorskip("nibabel")
    folder = tmp_path / "more"
    folder.mkdir()
    nib.save(nib.Nifti1Image(smooth(rng, (8, 8, 4)), np.eye(4)), folder / "a.nii.gz")
    write_tiff(folder / "b.tif", smooth(rng, (4, 8, 8)), 0.4)
    (folder / "notes.txt").write_text("not a volume")
    code, stdout, stderr = run(capsys, "info", str(anisotropic_tiff[0]), str(folder))
    assert code == 0, stderr
    files = [line.split()[1] for line in stdout.splitlines() if line.startswith("file:")]
    assert files == [str(anisotropic_tiff[0]), str(folder / "a.nii.gz"), str(folder / "b.tif")]
    assert "(4, 8, 8)" in stdout and "0.4 x 0.2 x 0.2 µm" in stdout
    (folder / "c.tif").write_bytes(b"")
    code, stdout, stderr = run(capsys, "info", str(folder))
    assert code == 1 and stdout.count("file:") == 2
    assert stderr.splitlines() == [
        f"volsr: c.tif: failed: {folder / 'c.tif'}: the file is empty",
        "volsr: error: 1 of 3 files could not be read: c.tif"]


def test_the_demo_writes_where_git_ignores_it():
    from napari_volsr.cli.inspect import demo

    default = next(p for p in demo.params if p.name == "output_path").default
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, ".gitignore")) as fh:
        ignored = {line.strip() for line in fh}
    assert default.parts[0] == "volsr-demo" and "/volsr-demo/" in ignored
    with open(os.path.join(root, "scripts", "demo.sh")) as fh:
        assert 'cd "$(dirname "$0")/.."' in fh.read()  # run from the repository root
