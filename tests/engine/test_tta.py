"""Test-time flips: one default rule (engine.tta) that the console, the CLI and dask share."""

import numpy as np
import pytest
import tifffile
import torch

from helpers import run_cli
from napari_volsr.engine.dask_restore import model_spec
from napari_volsr.engine.models import load_model, save_model
from napari_volsr.engine.predict import restore
from napari_volsr.engine.restorers import NetworkRestorer, get_restorer
from napari_volsr.engine.tta import average_over_flips, default_flips, flip_passes


def _model(save_tiny, folder, source, family="unet", z_factor=1, dims=2):
    """A tiny saved model with random weights (untrained ones start as the identity)."""
    save_tiny(folder, family, z_factor, spatial_dims=dims, training={"source": source})
    model = load_model(folder)
    if family != "diffusion":
        torch.manual_seed(1)
        with torch.no_grad():
            for param in model.net.parameters():
                param.normal_(0, 0.2)
        save_model(folder, model.config, model.net, overwrite=True)
    return load_model(folder)


@pytest.mark.parametrize(("source", "family", "z_factor", "dims", "expected"), [
    ("noise2void", "unet", 1, 2, True),
    ("synthetic", "unet", 1, 2, True),
    ("paired", "rcan", 1, 2, True),
    ("paired", "unet", 1, 3, False),
    ("isotropic", "unet", 2, 2, False),
    ("noise2void", "diffusion", 1, 2, False),
    ("noise2void", "unet", 1, 3, False),  # 8 passes of a 3D network: asked for, not default
])
def test_default_follows_the_source(tmp_path, save_tiny, source, family, z_factor, dims,
                                    expected):
    model = _model(save_tiny, tmp_path / "m", source, family, z_factor, dims)
    assert default_flips(model.config) is expected
    restorer = NetworkRestorer(model)
    assert restorer.flips is expected
    assert restorer.metadata["flips"] is expected
    assert ("test-time flips: 4 passes" in restorer.description) is expected
    assert NetworkRestorer(model, flips=True).flips is (family != "diffusion")


def test_explicit_choice_wins_but_never_for_diffusion(tmp_path, save_tiny):
    n2v = _model(save_tiny, tmp_path / "n2v", "noise2void")
    assert NetworkRestorer(n2v, flips=False).flips is False
    synthetic = _model(save_tiny, tmp_path / "syn", "synthetic", dims=3)
    assert NetworkRestorer(synthetic, flips=True).flips is True
    diffusion = _model(save_tiny, tmp_path / "diff", "synthetic", "diffusion")
    assert NetworkRestorer(diffusion, flips=True).flips is False


def test_flip_average_is_flip_invariant():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 1, 3, padding=1)  # random weights: not flip-equivariant
    x = torch.randn(1, 1, 6, 8, 10)
    with torch.no_grad():
        out = average_over_flips(net, x)
        assert not torch.allclose(out, net(x), atol=1e-4)
        for dims in ([2], [3, 4], [2, 3, 4]):
            flipped = average_over_flips(net, x.flip(dims)).flip(dims)
            torch.testing.assert_close(flipped, out, atol=1e-6, rtol=1e-5)
    assert flip_passes(2) == 4 and flip_passes(3) == 8


def test_restore_with_and_without_flips_differs(tmp_path, save_tiny, rng):
    model = _model(save_tiny, tmp_path / "n2v", "noise2void")
    volume = rng.random((6, 24, 24)).astype(np.float32)
    default = restore(volume, NetworkRestorer(model)).data
    on = restore(volume, NetworkRestorer(model, flips=True)).data
    off = restore(volume, NetworkRestorer(model, flips=False)).data
    np.testing.assert_array_equal(default, on)
    assert np.abs(on - off).max() > 1e-4


def test_cli_flag_reaches_the_restorer(tmp_path, save_tiny, rng, capsys):
    folder = tmp_path / "n2v"
    model = _model(save_tiny, folder, "noise2void")
    volume = rng.random((6, 24, 24)).astype(np.float32)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, volume)
    outputs = {}
    for flag in ("--tta", "--no-tta", None):
        out = tmp_path / f"out{flag}.tif"
        args = ["restore", "-i", src, "-o", out, "-m", folder, "--output-dtype", "float32"]
        code, _, err = run_cli(capsys, *args, *([flag] if flag else []))
        assert code == 0, err
        outputs[flag] = tifffile.imread(out)
    np.testing.assert_array_equal(outputs[None], outputs["--tta"])  # the model's default: on
    assert np.abs(outputs["--tta"] - outputs["--no-tta"]).max() > 1e-4
    expected = restore(volume, NetworkRestorer(model, flips=False)).data
    np.testing.assert_allclose(outputs["--no-tta"], expected, atol=1e-5)


def test_dask_spec_carries_flips_to_workers(tmp_path, save_tiny):
    folder = tmp_path / "n2v"
    _model(save_tiny, folder, "noise2void")
    spec = model_spec(str(folder), 1, options={"flips": False})
    assert spec.options == (("flips", False),)
    assert spec.build().flips is False
    assert model_spec("cubic", 2, options={"flips": True}).options == ()
    assert get_restorer(str(folder)).flips is True
