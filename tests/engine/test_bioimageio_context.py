"""2.5D (context_planes) models as Model Zoo packages: the PlaneStack export and its import."""

import zipfile

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("bioimageio.core")

import helpers  # noqa: E402
from napari_volsr.engine import bioimageio_context as ctx  # noqa: E402
from napari_volsr.engine.bioimageio import (  # noqa: E402
    architecture, export_bioimageio, import_bioimageio,
)
from napari_volsr.engine.config import ModelConfig  # noqa: E402
from napari_volsr.engine.data.normalization import percentile_normalization  # noqa: E402
from napari_volsr.engine.models import LoadedModel, load_model, save_model  # noqa: E402
from napari_volsr.engine.nets.plane_stack import PlaneStack  # noqa: E402
from napari_volsr.engine.predict import restore  # noqa: E402
from napari_volsr.engine.registry import build_network, network_config  # noqa: E402
from napari_volsr.engine.restorers import NetworkRestorer, get_restorer  # noqa: E402


def _context_model(context=1) -> LoadedModel:
    """A tiny 2D U-Net seeing ``context`` planes each side, with weights that use them all.

    Untrained, its zero-started output conv would give the centre plane alone, and no
    test could tell whether the neighbours arrive where they should.
    """
    torch.manual_seed(0)
    config = ModelConfig(name="ctx", spatial_dims=2, context_planes=context,
                         percentiles=(2.0, 99.5), network=network_config("unet", "tiny"))
    net = build_network(config)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return LoadedModel(config, net.eval(), None)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model folder, package) of a 2.5D U-Net exported once for the module."""
    tmp = tmp_path_factory.mktemp("ctx")
    model = _context_model()
    folder = save_model(tmp / "ctx", model.config, model.net)
    path, notes = export_bioimageio(folder, tmp / "ctx.zip")
    assert notes == []  # TorchScript written too
    return folder, path


def _read(package, name):
    with zipfile.ZipFile(package) as archive:
        return archive.read(name)


def test_context_package_is_a_volumetric_plane_stack_that_passes_the_zoo_test(exported):
    _, path = exported
    rdf = yaml.safe_load(_read(path, "rdf.yaml"))
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert (arch["import_from"], arch["callable"]) == ctx.PLANE_STACK
    assert arch["kwargs"]["context_planes"] == 1 and arch["kwargs"]["family"] == "unet"
    assert arch["kwargs"]["in_channels"] == 1  # the image's channels, not the stack's
    assert [a.get("id", a["type"]) for a in rdf["inputs"][0]["axes"]] == [
        "batch", "channel", "z", "y", "x"]
    z_out = next(a for a in rdf["outputs"][0]["axes"] if a.get("id") == "z")
    assert z_out["halo"] == 1
    assert "2.5d" in rdf["tags"] and "weights_torchscript.pt" in zipfile.ZipFile(path).namelist()
    helpers.zoo_test(path)


def test_the_test_output_is_the_plane_stack_on_the_normalised_test_input(exported, tmp_path):
    folder, path = exported
    for name in ("test_input.npy", "test_output.npy"):
        (tmp_path / name).write_bytes(_read(path, name))
    raw = np.load(tmp_path / "test_input.npy")
    loaded = load_model(folder)
    stack = ctx.export_network(loaded, architecture(loaded.config)[2])
    x = percentile_normalization(raw[0, 0], (2.0, 99.5)).forward(raw)
    with torch.no_grad():
        out = stack(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(out, np.load(tmp_path / "test_output.npy"))


@pytest.mark.parametrize("context", [1, 2])
def test_plane_stack_handles_z_borders_as_our_restore_does(tmp_path, context):
    # The tiler pads a volume's borders by the halo; along z the stack mirrors planes
    # itself the same way (given no z padding here), laterally a Model Zoo tool pads.
    model = _context_model(context)
    folder = save_model(tmp_path / "ctx", model.config, model.net)
    stack = ctx.export_network(model, architecture(model.config)[2])
    raw = helpers.smooth(np.random.default_rng(context), (7, 24, 28))
    norm = percentile_normalization(raw, (2.0, 99.5))
    _, hy, hx = stack.halo
    padded = np.pad(norm.forward(raw), [(0, 0), (hy, hy), (hx, hx)], mode="symmetric")
    with torch.no_grad():
        out = stack(torch.from_numpy(padded)[None, None]).numpy()[0, 0, :, hy:-hy, hx:-hx]
    # One network pass, as a Model Zoo tool runs it (our restore flips 2D models by default).
    ours = restore(raw, get_restorer(str(folder), flips=False), percentiles=(2.0, 99.5),
                   device="cpu")
    np.testing.assert_allclose(norm.forward(ours.data), out, rtol=1e-5, atol=1e-4)


def test_import_of_a_context_export_restores_identically(exported, library, smooth_volume):
    folder, path = exported
    import_bioimageio(path, name="back")
    config = load_model(library / "back").config
    assert (config.spatial_dims, config.context_planes, config.family) == (2, 1, "unet")
    original = restore(smooth_volume, get_restorer(str(folder)), device="cpu").data
    again = restore(smooth_volume, get_restorer("back"), device="cpu").data
    np.testing.assert_array_equal(again, original)


@pytest.mark.parametrize("context, depth", [(1, 7), (2, 3), (2, 1)])
def test_plane_stack_equals_the_network_restorer(context, depth):
    model = _context_model(context)
    stack = ctx.export_network(model, architecture(model.config)[2])
    assert set(stack.state_dict()) == {f"net.{k}" for k in model.net.state_dict()}
    assert stack.halo == (context, *model.net.halo) and stack.divisor == (1, *model.net.divisor)
    x = torch.rand(2, 1, depth, 20, 24, generator=torch.Generator().manual_seed(depth))
    with torch.no_grad():
        expected = NetworkRestorer(model, flips=False)(x)
        np.testing.assert_allclose(stack(x).numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)


def test_plane_stack_refuses_what_the_model_config_refuses():
    with pytest.raises(ValueError, match="context_planes 1 needs a network"):
        PlaneStack(1, "rcan")
    with pytest.raises(ValueError, match="one image channel"):
        PlaneStack(1, "unet", in_channels=2, widths=(8, 16))
    with pytest.raises(ValueError, match="context_planes >= 1"):
        PlaneStack(0, "unet", widths=(8, 16))


def test_input_z_tiles_hold_every_stack():
    for context, low in ((1, 4), (2, 5), (4, 9)):
        model = _context_model(context)
        stack = ctx.export_network(model, architecture(model.config)[2])
        z = ctx.axes(model.config, stack, "raw", output=False)[2]
        assert z.size.min == low
