"""The CARE U-Net family (nets/unet.py): shapes, identity start, honest halo, tiling, training."""

import numpy as np
import pytest
import torch
from helpers import output_reach, zoo_test
from pydantic import ValidationError
from scipy import ndimage

from napari_volsr.engine.config import ModelConfig, UNetConfig
from napari_volsr.engine.models import LoadedModel, load_model, save_model
from napari_volsr.engine.nets.unet import PRESETS, UNet, receptive_span
from napari_volsr.engine.predict import restore
from napari_volsr.engine.registry import (
    build_method, build_network, display_name, family_entry, network_config,
)
from napari_volsr.engine.restorers import NetworkRestorer

# N2V2 drops the top skip, so the residual would keep the noise (the config refuses it).
N2V2 = {"blur_pool": True, "top_skip": False, "residual": False}
VARIANTS = [{}, {"blur_pool": True}, {"top_skip": False, "residual": False}, N2V2]
VARIANT_IDS = ["care", "blur", "no_top_skip", "n2v2"]


def _randomise_output(net):
    """Give the (zero-initialised) output conv weights, so the net is not the identity."""
    torch.manual_seed(1)
    torch.nn.init.normal_(net.out.weight, std=2.0)
    torch.nn.init.normal_(net.out.bias, std=0.1)
    return net


# -- shapes -------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("z_factor", [1, 2, 3])
def test_any_size_gives_the_upsampled_shape(variant, spatial_dims, z_factor):
    torch.manual_seed(0)
    net = UNet(spatial_dims, z_factor=z_factor, widths=(4, 8, 8), **variant)
    for size in [(5, 13, 7), (1, 1, 1), (8, 12, 16)]:
        x = torch.rand(2, 1, *size[3 - spatial_dims:])
        y = net(x)
        assert y.shape == (2, 1, x.shape[2] * z_factor, *x.shape[3:])
        assert torch.isfinite(y).all()
    assert len(net.halo) == len(net.divisor) == spatial_dims


@pytest.mark.parametrize("levels", [2, 3, 4])
def test_divisor_is_the_pooling_grid(levels):
    widths = (4, 8, 8, 8)[:levels]
    m = 2 ** (levels - 1)
    assert UNet(3, widths=widths).divisor == (m, m, m)
    assert UNet(2, widths=widths).divisor == (m, m)
    # z: the upsampling supplies factors of 2 already.
    assert UNet(3, z_factor=2, widths=widths).divisor == (m // 2, m, m)
    assert UNet(3, z_factor=3, widths=widths).divisor == (m, m, m)
    assert UNet(3, z_factor=8, widths=widths).divisor == (1, m, m)


def test_channels_in_and_out():
    net = UNet(3, in_channels=2, out_channels=3, z_factor=2, **PRESETS["tiny"])
    assert not net.residual  # no input to add to three output channels
    assert net(torch.rand(1, 2, 3, 9, 8)).shape == (1, 3, 6, 9, 8)


# -- identity at the start ----------------------------------------------------------------


@pytest.mark.parametrize("variant", [{}, {"blur_pool": True}], ids=["care", "blur"])
def test_residual_net_starts_at_the_identity(variant):
    torch.manual_seed(0)
    x = torch.rand(2, 1, 6, 11, 9)
    net = UNet(3, **PRESETS["tiny"], **variant)
    assert torch.equal(net(x), x)
    plain = UNet(3, **PRESETS["tiny"], residual=False, **variant)
    assert not torch.allclose(plain(x), x)


def test_isotropic_planes_start_at_the_interpolated_input():
    from napari_volsr.engine.interp import upsample_z

    torch.manual_seed(0)
    x = torch.rand(3, 1, 7, 10)  # (planes, channel, z, lateral), as isotropic restore gives
    net = UNet(2, z_factor=3, **PRESETS["tiny"])
    torch.testing.assert_close(net(x), upsample_z(x, 3, "catmull-rom"))
    assert net(x).shape == (3, 1, 21, 10)


# -- halo ---------------------------------------------------------------------------------


# 2D covers every variant cheaply; 3D checks the same arithmetic on a few (seconds each).
HALO_CASES = [
    *[(2, 1, (4, 4, 4, 4), v) for v in VARIANTS],
    *[(2, 2, (4, 4, 4), v) for v in VARIANTS],
    (3, 3, (4, 4), {}), (3, 3, (4, 4), N2V2), (3, 1, (4, 4), {}),
]


@pytest.mark.parametrize(("spatial_dims", "z_factor", "widths", "variant"), HALO_CASES)
def test_halo_is_honest_and_tight(spatial_dims, z_factor, widths, variant):
    torch.manual_seed(0)
    # Widths of 4: with 2 channels whole paths die in the ReLUs and the reach looks short.
    net = UNet(spatial_dims, z_factor=z_factor, widths=widths, **{**variant, "residual": False})
    net = net.double().eval()
    halo, divisor = torch.tensor(net.halo), torch.tensor(net.divisor)
    shape = ((2 * halo + 6 + divisor - 1) // divisor * divisor).tolist()
    x = torch.rand(1, 1, *shape, dtype=torch.float64)
    # Pooling makes the reach depend on the phase: try a whole pooling period.
    period = max(2 ** (len(widths) - 1), 4)
    centres = [[n // 2 - period // 2 + phase for n in shape] for phase in range(period)]
    reach = output_reach(net, x, centres)
    assert (reach <= halo).all(), f"reach {reach.tolist()} exceeds halo {net.halo}"
    assert (reach == halo).all(), f"halo {net.halo} larger than reach {reach.tolist()}"


def test_halo_values():
    # Two poolings: the reach depends on the position on the 4-voxel grid.
    spans = [receptive_span(q, 3, blur_pool=False, top_skip=True) for q in range(5)]
    assert spans == [(-22, 21), (-22, 21), (-18, 25), (-18, 25), (-18, 25)]
    assert UNet(3).halo == (23, 23, 23)
    assert UNet(3, **N2V2).halo == (26, 26, 26)
    assert UNet(3, z_factor=2).halo == (13, 23, 23)
    assert UNet(2, z_factor=2, **N2V2).halo == (14, 26)


@pytest.mark.parametrize(("variant", "spatial_dims", "z_factor", "task", "widths"), [
    ({}, 3, 1, "restore", (3, 4, 4)),
    (N2V2, 3, 3, "upsample", (3, 4)),
    ({}, 2, 2, "isotropic", (3, 4)),
    (N2V2, 2, 1, "restore", (3, 4, 4)),
], ids=["3d", "3d_n2v2_z3", "isotropic", "2d_n2v2"])
def test_tiled_restore_equals_whole(variant, spatial_dims, z_factor, task, widths):
    rng = np.random.default_rng(2)
    vol = ndimage.gaussian_filter(rng.random((13, 30, 27)), 1.5).astype(np.float32)
    torch.manual_seed(0)
    config = ModelConfig(task=task, z_factor=z_factor, spatial_dims=spatial_dims,
                         network=network_config("unet", "tiny", widths=widths, **variant))
    net = _randomise_output(build_network(config).eval())
    restorer = NetworkRestorer(LoadedModel(config, net))
    kwargs = {"percentiles": (0, 100), "device": "cpu"}
    whole = restore(vol, restorer, block_shape=vol.shape, **kwargs).data
    tiled = restore(vol, restorer, block_shape=(5, 8, 12), **kwargs).data
    assert np.ptp(whole) > 1e-3  # not a constant
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)


# -- configs, registry, saving -------------------------------------------------------------


def test_presets_are_valid_configs_and_grow():
    assert set(PRESETS) == {"tiny", "small", "default"}
    sizes = {}
    for preset, fields in PRESETS.items():
        config = network_config("unet", preset)
        assert isinstance(config, UNetConfig) and config.widths == fields["widths"]
        assert (config.residual, config.blur_pool, config.top_skip) == (True, False, True)
        assert UNetConfig(widths=fields["widths"], **N2V2)  # the N2V2 variant of each
        net = build_network(ModelConfig(network=config))
        sizes[preset] = sum(p.numel() for p in net.parameters())
    assert sizes["tiny"] < 20_000 < sizes["small"] < sizes["default"]
    assert 0.15 < sizes["small"] / sizes["default"] < 0.35
    assert display_name("unet") == "U-Net (CARE)"
    assert family_entry("unet").method_config().kind == "supervised"


@pytest.mark.parametrize(("fields", "words"), [
    ({"widths": (8,)}, "2..4 entries"),
    ({"widths": (8, 16, 32, 64, 64)}, "2..4 entries"),
    ({"widths": (8, 0)}, "1..1024"),
    ({"blur": True}, "blur"),
    ({"top_skip": False}, "needs residual false"),
])
def test_bad_configs_name_the_field(fields, words):
    with pytest.raises(ValidationError, match=words):
        ModelConfig.model_validate({"network": {"family": "unet", **fields}})
    if "widths" in fields:
        with pytest.raises(ValueError, match="widths"):
            UNet(3, widths=fields["widths"])


def test_config_json_round_trip_save_and_load(tmp_path):
    config = ModelConfig(name="n2v2", task="restore", spatial_dims=2,
                         network=network_config("unet", "tiny", **N2V2))
    assert ModelConfig.model_validate_json(config.model_dump_json()) == config
    torch.manual_seed(0)
    net = _randomise_output(build_network(config))
    folder = save_model(tmp_path / "n2v2", config, net)
    loaded = load_model(folder)
    assert loaded.config.network == config.network
    assert "pools.0.kernel" not in loaded.net.state_dict()  # the fixed blur is rebuilt
    x = torch.rand(2, 1, 12, 20)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(x), net.eval()(x), rtol=0, atol=0)


# -- training ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [{}, N2V2], ids=["care", "n2v2"])
def test_a_few_steps_lower_the_denoising_loss(variant):
    from napari_volsr.engine.config import TrainingConfig

    rng = np.random.default_rng(0)
    clean = ndimage.gaussian_filter(rng.random((8, 1, 32, 32)), (0, 0, 2, 2)) * 4
    noisy = clean + rng.normal(0, 0.1, clean.shape)
    batch = {"input": torch.tensor(noisy, dtype=torch.float32),
             "target": torch.tensor(clean, dtype=torch.float32)}
    torch.manual_seed(0)
    model = ModelConfig(task="restore", spatial_dims=2,
                        network=network_config("unet", "tiny", **variant))
    method = build_method(TrainingConfig(model=model, method={"loss": "mse"}))
    method.configure_optimizers(3e-3)
    losses = [method.training_step(batch, step)["loss"] for step in range(60)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_model_zoo_package_passes_and_imports_back(tmp_path, library, smooth_volume):
    pytest.importorskip("bioimageio.core")
    from napari_volsr.engine.bioimageio import export_bioimageio, import_bioimageio
    from napari_volsr.engine.restorers import get_restorer

    config = ModelConfig(name="n2v2", network=network_config("unet", "tiny", **N2V2))
    torch.manual_seed(0)
    folder = save_model(tmp_path / "n2v2", config, build_network(config))
    path, notes = export_bioimageio(folder, tmp_path / "n2v2.zip")
    assert notes == []  # TorchScript written too
    zoo_test(path)
    import_bioimageio(path, name="back")
    original = restore(smooth_volume, get_restorer(str(folder)), device="cpu").data
    again = restore(smooth_volume, get_restorer("back"), device="cpu").data
    np.testing.assert_array_equal(again, original)
