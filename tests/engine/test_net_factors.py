"""Per-axis factors in every network family: shapes, honest halos, z-only compatibility."""

import math

import pytest
import torch
from helpers import output_reach
from torch import nn

from napari_volsr.engine import registry
from napari_volsr.engine.config import ModelConfig
from napari_volsr.engine.methods.diffusion import DiffusionMethod
from napari_volsr.engine.methods.gan import GANMethod
from napari_volsr.engine.methods.supervised import SupervisedMethod, cubic_weights
from napari_volsr.engine.nets import diffusion_unet, rcan, resnet_gan, srunet, unet
from napari_volsr.engine.nets.diffusion_unet import DiffusionUNet
from napari_volsr.engine.nets.rcan import RCAN
from napari_volsr.engine.nets.resnet_gan import ResNetGenerator
from napari_volsr.engine.nets.srunet import SRUNet
from napari_volsr.engine.nets.unet import UNet
from napari_volsr.engine.restorer_parts import block_bytes_per_voxel

NETS = {
    "rcan": (RCAN, rcan.PRESETS["tiny"]),  # sub-pixel shuffle ("features")
    "rcan_input": (RCAN, {**rcan.PRESETS["tiny"], "upsampling": "input"}),
    "unet": (UNet, unet.PRESETS["tiny"]),
    "srunet": (SRUNet, srunet.PRESETS["tiny"]),
    "gan": (ResNetGenerator, resnet_gan.PRESETS["tiny"]),
}
# Channel attention pools over the whole block: RCAN is only local without it. The
# U-Net's residual starts its output conv at zero (the net is then the interpolation).
# The diffusion UNet's group norms see the whole block: it has a practical halo only.
LOCAL = {
    **NETS,
    "rcan": (RCAN, {**rcan.PRESETS["tiny"], "channel_attention": False}),
    "rcan_input": (RCAN, {**NETS["rcan_input"][1], "channel_attention": False}),
    "unet": (UNet, {**unet.PRESETS["tiny"], "residual": False}),
}
FACTORS = [(1, 2, 2), (1, 4, 4), (4, 2, 2), (2, 1, 1), (2, 2), (4, 4), (2, 1)]


def _upsampled(shape, factors):
    return tuple(s * f for s, f in zip(shape, factors, strict=True))


# -- shapes -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("factors", FACTORS, ids=str)
def test_output_shape(name, factors):
    cls, params = NETS[name]
    sd = len(factors)
    torch.manual_seed(0)
    net = cls(sd, in_channels=1, out_channels=2, factors=factors, **params)
    assert net.factors == factors and net.z_factor == factors[0]
    assert len(net.halo) == len(net.divisor) == sd
    size = (4,) + (8,) * (sd - 1)
    with torch.no_grad():
        y = net(torch.rand(2, 1, *size))
    assert y.shape == (2, 2, *_upsampled(size, factors))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("factors", FACTORS, ids=str)
def test_diffusion_shapes_and_divisor(factors):
    sd = len(factors)
    torch.manual_seed(0)
    net = DiffusionUNet(sd, factors=factors, **diffusion_unet.PRESETS["tiny"])
    nn.init.normal_(net.out_conv.weight, std=0.05)
    assert net.factors == factors and net.z_factor == factors[0]
    # Every input size on the divisor grid lands on the output divisor grid.
    for f, d, out in zip(factors, net.divisor, net.output_divisor, strict=True):
        assert (d * f) % out == 0 and d == out // math.gcd(out, f)
    assert net.halo == tuple(-(-h // f) for h, f in zip(net.output_halo, factors, strict=True))
    method = DiffusionMethod(net)
    x = torch.rand(1, 1, *(2 * d for d in net.divisor))
    mean, _ = method.sample(x, steps=1)
    assert mean.shape == (1, 1, *_upsampled(x.shape[2:], factors))
    target = torch.rand(1, 1, *_upsampled(x.shape[2:], factors))
    assert torch.isfinite(method({"input": x, "target": target}))
    with pytest.raises(ValueError, match="factors"):
        method({"input": x, "target": target[..., :-1]})


def test_rcan_shuffle_places_every_axis_in_slab_order():
    factors = (2, 3)
    c, sizes = 2, (2, 3)
    values = torch.arange(c * 6 * 6, dtype=torch.float32).reshape(1, c * 6, *sizes)
    out = rcan._shuffle(values, factors)
    assert out.shape == (1, c, 4, 9)
    for ch in range(c):
        for i in range(2):
            for j in range(3):
                for ki in range(2):
                    for kj in range(3):
                        k = ki * 3 + kj
                        assert out[0, ch, i * 2 + ki, j * 3 + kj] == values[0, ch * 6 + k, i, j]


def test_bad_factors_raise():
    with pytest.raises(ValueError, match="factors"):
        RCAN(3, factors=(1, 2))
    with pytest.raises(ValueError, match="factors"):
        UNet(2, factors=(1, 17))
    with pytest.raises(ValueError, match="disagrees"):
        SRUNet(3, z_factor=2, factors=(4, 1, 1))
    assert SRUNet(3, z_factor=4, factors=(4, 2, 2), **srunet.PRESETS["tiny"]).factors == (4, 2, 2)


# -- halo and divisor honesty ---------------------------------------------------------------


def _aligned(n, d):
    return -(-n // d) * d


@pytest.mark.parametrize("name", list(LOCAL))
@pytest.mark.parametrize("factors", [(3, 2), (2, 4), (1, 2, 2)], ids=str)
def test_crop_with_halo_gives_the_whole_result(name, factors):
    cls, params = LOCAL[name]
    sd = len(factors)
    if sd == 3 and name == "srunet":
        params = {**params, "widths": (2, 2, 2)}  # its 3D halo makes a large block
    torch.manual_seed(0)
    net = cls(sd, factors=factors, **params).double().eval()
    # Per axis: a margin outside the crop, the halo (on the divisor grid), a core.
    pads = [_aligned(h, d) for h, d in zip(net.halo, net.divisor, strict=True)]
    margins = [_aligned(3, d) for d in net.divisor]
    cores = [_aligned(3, d) for d in net.divisor]
    whole = [2 * (m + p) + c for m, p, c in zip(margins, pads, cores, strict=True)]
    x = torch.rand(1, 1, *whole, dtype=torch.float64)
    crop = tuple(slice(m, m + 2 * p + c) for m, p, c in zip(margins, pads, cores, strict=True))
    with torch.no_grad():
        full = net(x)
        tile = net(x[(0, 0, *crop)][None, None])
    core_full = tuple(slice((m + p) * f, (m + p + c) * f)
                      for m, p, c, f in zip(margins, pads, cores, factors, strict=True))
    core_tile = tuple(slice(p * f, (p + c) * f)
                      for p, c, f in zip(pads, cores, factors, strict=True))
    torch.testing.assert_close(tile[(..., *core_tile)], full[(..., *core_full)],
                               atol=1e-5, rtol=0)
    # The margin matters: without the halo the same core differs (the crop test is not idle).
    short = tuple(slice(m + p, m + p + c) for m, p, c in zip(margins, pads, cores, strict=True))
    with torch.no_grad():
        bare = net(x[(0, 0, *short)][None, None])
    assert not torch.allclose(bare, full[(..., *core_full)], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(LOCAL))
@pytest.mark.parametrize("factors", [(3, 2), (1, 4)], ids=str)
def test_halo_is_tight_per_axis(name, factors):
    cls, params = LOCAL[name]
    torch.manual_seed(0)
    net = cls(2, factors=factors, **params).double().eval()
    halo, divisor = torch.tensor(net.halo), torch.tensor(net.divisor)
    shape = ((2 * halo + 6 + divisor - 1) // divisor * divisor).tolist()
    x = torch.rand(1, 1, *shape, dtype=torch.float64)
    # Pooling makes the reach depend on the position's phase: try four.
    centres = [[n // 2 - 2 + phase for n in shape] for phase in range(4)]
    reach = output_reach(net, x, centres, must_change=True)
    assert reach.tolist() == list(net.halo)


# -- z-only factors are the z_factor of before ------------------------------------------------


@pytest.mark.parametrize("name", [*NETS, "diffusion"])
@pytest.mark.parametrize("sd", [2, 3])
def test_z_only_factors_equal_z_factor(name, sd):
    cls, params = ((DiffusionUNet, diffusion_unet.PRESETS["tiny"]) if name == "diffusion"
                   else NETS[name])
    torch.manual_seed(0)
    old = cls(sd, z_factor=3, **params).eval()
    torch.manual_seed(0)
    new = cls(sd, factors=(3,) + (1,) * (sd - 1), **params).eval()
    assert new.factors == old.factors == (3,) + (1,) * (sd - 1)
    assert (new.halo, new.divisor) == (old.halo, old.divisor)
    a, b = old.state_dict(), new.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(1, 1, 4, *(8,) * (sd - 1))
    with torch.no_grad():
        if name == "diffusion":
            y = torch.rand(1, 1, 12, *(8,) * (sd - 1))
            level = torch.tensor([0.5])
            assert torch.equal(old(y, y, level), new(y, y, level))
        else:
            assert torch.equal(old(x), new(x))


def test_z_only_weights_keep_their_names_and_shapes():
    # Saved models of before per-axis factors load: the z-upsampling layers are unchanged.
    sr = SRUNet(3, z_factor=3, widths=(4, 4, 8)).state_dict()
    assert sr["skip1_z.weight"].shape == (4, 4, 3, 1, 1)
    assert sr["up1.weight"].shape == (8, 8, 3, 2, 2)
    assert sr["up0.weight"].shape == (4, 4, 1, 2, 2)
    gan = ResNetGenerator(3, z_factor=3, channels=4, n_blocks=1).state_dict()
    assert gan["upsample.0.weight"].shape == (4, 4, 3, 1, 1)
    net = RCAN(3, z_factor=3, **rcan.PRESETS["tiny"]).state_dict()
    assert net["tail.weight"].shape[0] == 3
    lateral = SRUNet(3, factors=(1, 2, 3), widths=(4, 4, 8)).state_dict()
    assert lateral["skip1_z.weight"].shape == (4, 4, 1, 2, 3)
    assert lateral["up1.weight"].shape == (8, 8, 1, 4, 6)


# -- models, methods and memory ----------------------------------------------------------------


def _config(family, spatial_dims, lateral=(2, 2), z_factor=1):
    return ModelConfig(task="upsample", spatial_dims=spatial_dims, z_factor=z_factor,
                       lateral_factors=lateral, network=registry.network_config(family, "tiny"))


@pytest.mark.parametrize("family", registry.family_names())
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_model_config_with_lateral_factors_builds(family, spatial_dims):
    config = _config(family, spatial_dims)
    torch.manual_seed(0)
    net = registry.build_network(config)
    assert net.factors == config.net_factors
    assert net.factors == ((2, 2) if spatial_dims == 2 else (1, 2, 2))
    if family == "diffusion":
        return  # its shapes through the method: test_diffusion_shapes_and_divisor
    size = (4,) * spatial_dims
    with torch.no_grad():
        assert net(torch.rand(1, 1, *size)).shape == (1, 1, *_upsampled(size, net.factors))


def test_gan_discriminator_judges_the_upsampled_shape():
    config = _config("gan", 3, lateral=(2, 2), z_factor=2)
    torch.manual_seed(0)
    generator = registry.build_network(config)
    discriminator = registry.build_discriminator(config, conditioned=True)
    method = GANMethod(generator, discriminator, d_condition=True)
    x = torch.rand(2, 1, 8, 8, 8)
    target = torch.rand(2, 1, 16, 16, 16)
    losses = method({"input": x, "target": target})
    assert all(torch.isfinite(v) for v in losses.values())
    logits = method._judge(generator(x), x)
    n = config.network.disc_layers
    assert logits.shape == (2, 1, *(16 // 2**n,) * 3)


def test_cubic_weighted_loss_uses_every_factor():
    torch.manual_seed(0)
    net = SRUNet(3, factors=(1, 2, 2), **srunet.PRESETS["tiny"])
    method = SupervisedMethod(net, loss="cubic_weighted")
    x = torch.rand(2, 1, 4, 8, 8)
    target = torch.rand(2, 1, 4, 16, 16)
    assert torch.isfinite(method({"input": x, "target": target}))
    weights = cubic_weights(x, target, (1, 2, 2))
    assert weights.shape == target.shape and 0.5 <= weights.min() <= weights.max() <= 1.0
    with pytest.raises(ValueError, match="does not match"):
        cubic_weights(x, target, 2)


@pytest.mark.parametrize("family", ["gan", "rcan"])
def test_block_bytes_follow_the_output_voxels_per_input_voxel(family):
    lateral = _config(family, 3, lateral=(2, 2))
    z4 = ModelConfig(task="upsample", spatial_dims=3, z_factor=4, network=lateral.network)
    nets = [registry.build_network(c) for c in (lateral, z4)]
    assert block_bytes_per_voxel(lateral, nets[0]) == block_bytes_per_voxel(z4, nets[1])
    same = ModelConfig(network=lateral.network)
    assert (block_bytes_per_voxel(same, registry.build_network(same))
            > block_bytes_per_voxel(lateral, nets[0]))
