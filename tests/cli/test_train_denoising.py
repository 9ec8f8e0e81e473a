"""`volsr train` with the denoising sources: noise2noise end to end, noise2void options."""

import json

import helpers
import numpy as np
import pytest
import tifffile

from napari_volsr.engine.data.blind_spot import NOISE2NOISE_LABEL
from napari_volsr.engine.models import read_model_config

run = helpers.run_cli


@pytest.fixture
def acquisitions(tmp_path):
    rng = np.random.default_rng(4)
    clean = helpers.smooth(rng, (8, 40, 40), scale=200.0, offset=20.0)
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.tif"
        tifffile.imwrite(path, (clean + rng.normal(0, 15, clean.shape)).astype(np.float32))
        paths.append(path)
    return paths


def test_cli_trains_noise2noise_and_names_what_the_psnr_compares(capsys, library,
                                                                  acquisitions):
    a, b = acquisitions
    code, stdout, stderr = run(capsys, "train", "--source", "noise2noise", "--volume", a,
                               "--volume", b, "--preset", "tiny", "--steps", "3",
                               "--batch-size", "1", "--patch", "4,16,16")
    assert code == 0, stderr
    assert stderr.count(f"volsr: validation PSNR {NOISE2NOISE_LABEL}\n") == 1
    assert f"validation {NOISE2NOISE_LABEL}: PSNR" in stdout
    card = read_model_config(library / "a-unet").training
    assert card["source"] == "noise2noise" and card["validation_label"] == NOISE2NOISE_LABEL
    assert card["data"]["n_volumes"] == 2


def test_cli_passes_the_noise2void_options(capsys, tmp_path, acquisitions):
    config = tmp_path / "masking.json"
    config.write_text(json.dumps({"blind_spot": {"masked_fraction": 0.05}}))
    code, stdout, stderr = run(capsys, "train", "--source", "noise2void", "--volume",
                               acquisitions[0], "--mask-axis", "x", "--spatial-dims", "2",
                               "-c", config, "--output-dir", tmp_path, "--dry-run")
    assert code == 0, stderr
    resolved = json.loads(stdout)
    assert resolved["blind_spot"] == {"masked_fraction": 0.05, "replacement": "median",
                                      "mask_axis": "x", "mask_span": 5}
    assert resolved["model"]["spatial_dims"] == 2 and resolved["model"]["task"] == "restore"


def test_cli_refuses_a_z_factor_for_the_denoising_sources(capsys, tmp_path, acquisitions):
    code, _, stderr = run(capsys, "train", "--source", "noise2void", "--volume",
                          acquisitions[0], "-z", "2", "--output-dir", tmp_path)
    assert code == 1
    assert helpers.error_line(stderr) == (
        "volsr: error: the noise2void source denoises on the volume's own grid, so its "
        "z-factor is 1 (got 2): leave the z-factor unset, or upsample z with the isotropic "
        "source")
