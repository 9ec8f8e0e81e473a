"""`volsr train --context-planes`: 2.5D models from the command line."""

import json

import helpers
import numpy as np
import pytest
import tifffile
import torch

from napari_volsr.engine.models import read_model_config

run = helpers.run_cli


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is faster
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def noisy_tif(tmp_path):
    rng = np.random.default_rng(5)
    clean = helpers.smooth(rng, (6, 32, 32), scale=200.0, offset=20.0)
    path = tmp_path / "noisy.tif"
    tifffile.imwrite(path, (clean + rng.normal(0, 15, clean.shape)).astype(np.float32))
    return path


def test_cli_trains_a_context_model_and_its_card_says_so(capsys, library, noisy_tif):
    code, stdout, stderr = run(capsys, "train", "--source", "noise2void", "--volume", noisy_tif,
                               "--preset", "tiny", "--spatial-dims", "2", "--context-planes",
                               "1", "--steps", "2", "--batch-size", "1", "--patch", "8,8")
    assert code == 0, stderr
    assert "(2.5D, 1 plane each side)" in stdout
    assert read_model_config(library / "noisy-unet").context_planes == 1


def test_cli_dry_run_shows_the_field_and_refuses_it_for_3d(capsys, tmp_path, noisy_tif):
    code, stdout, stderr = run(capsys, "train", "--source", "noise2void", "--volume", noisy_tif,
                               "--spatial-dims", "2", "--context-planes", "2",
                               "--output-dir", tmp_path, "--dry-run")
    assert code == 0, stderr
    assert json.loads(stdout)["model"]["context_planes"] == 2
    code, _, stderr = run(capsys, "train", "--source", "noise2void", "--volume", noisy_tif,
                          "--spatial-dims", "3", "--context-planes", "1",
                          "--output-dir", tmp_path)
    assert code == 1
    assert "context_planes 1 needs a 2D same-shape model" in helpers.error_line(stderr)
