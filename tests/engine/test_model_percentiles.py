"""Every door restores with the model's own normalisation percentiles unless told otherwise."""

import numpy as np
import pytest
import tifffile
import torch

import napari_volsr as vs
from napari_volsr.cli.app import main as volsr
from napari_volsr.engine.config import ModelConfig
from napari_volsr.engine.data import DEFAULT_PERCENTILES
from napari_volsr.engine.models import save_model
from napari_volsr.engine.predict import model_percentiles
from napari_volsr.engine.registry import build_network, network_config
from napari_volsr.engine.restorers import InterpolationRestorer

OWN = (5.0, 95.0)


@pytest.fixture
def model(library):
    """A tiny 2D U-Net trained (nowhere) with percentiles other than the default."""
    torch.manual_seed(0)
    config = ModelConfig(name="own-norm", spatial_dims=2, percentiles=OWN,
                         network=network_config("unet", "tiny", residual=False))
    net = build_network(config)
    for p in net.parameters():  # a non-linear net: its output depends on the scaling
        torch.nn.init.normal_(p, std=0.3)
    save_model(library / "own-norm", config, net)
    return "own-norm"


@pytest.fixture
def volume():
    rng = np.random.default_rng(1)
    return (rng.gamma(2.0, 50.0, (6, 24, 24))).astype(np.float32)


def test_the_model_percentiles_are_the_default(model, volume):
    own = vs.restore(volume, model=model)
    np.testing.assert_array_equal(own, vs.restore(volume, model=model, percentiles=OWN))
    other = vs.restore(volume, model=model, percentiles=DEFAULT_PERCENTILES)
    assert np.abs(own - other).max() > 1e-3  # the choice matters for this net
    assert model_percentiles(InterpolationRestorer("cubic", 2)) == tuple(DEFAULT_PERCENTILES)
    assert model_percentiles(InterpolationRestorer("cubic", 2), (2, 98)) == (2, 98)


def test_the_cli_restores_with_the_model_percentiles(model, volume, tmp_path):
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, volume)
    for name, extra in (("default.tif", []), ("given.tif", ["--percentiles", "5,95"])):
        volsr(["restore", "-i", str(source), "-o", str(tmp_path / name), "-m", model,
               "--output-dtype", "float32", *extra])
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "default.tif"),
                                  tifffile.imread(tmp_path / "given.tif"))
    np.testing.assert_allclose(tifffile.imread(tmp_path / "default.tif"),
                               vs.restore(volume, model=model), rtol=1e-5, atol=1e-4)
