"""Networks: shapes, honest halos, presets and argument checks."""

import math

import pytest
import torch

from napari_volsr.engine.nets import rcan, resnet_gan, srunet
from napari_volsr.engine.nets.rcan import RCAN
from napari_volsr.engine.nets.resnet_gan import PatchDiscriminator, ResNetGenerator
from napari_volsr.engine.nets.srunet import SRUNet

FAMILIES = [(RCAN, rcan.PRESETS), (SRUNet, srunet.PRESETS), (ResNetGenerator, resnet_gan.PRESETS)]
IDS = ["rcan", "srunet", "resnet_gan"]


def _n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("cls", "presets"), FAMILIES, ids=IDS)
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("z_factor", [1, 2, 3, 4, 6])
def test_output_shape(cls, presets, spatial_dims, z_factor):
    torch.manual_seed(0)
    net = cls(spatial_dims, z_factor=z_factor, **presets["tiny"])
    lateral = (16,) * (spatial_dims - 1)
    x = torch.rand(2, 1, 6, *lateral)
    assert all(n % d == 0 for n, d in zip(x.shape[2:], net.divisor, strict=True))
    y = net(x)
    assert y.shape == (2, 1, 6 * z_factor, *lateral)
    assert torch.isfinite(y).all()
    assert len(net.halo) == len(net.divisor) == spatial_dims


@pytest.mark.parametrize("z_factor", range(1, 9))
def test_srunet_every_z_factor(z_factor):
    # The seed's split of f between two levels only worked for even f.
    net = SRUNet(3, z_factor=z_factor, **srunet.PRESETS["tiny"])
    assert net(torch.rand(1, 1, 3, 8, 8)).shape == (1, 1, 3 * z_factor, 8, 8)


@pytest.mark.parametrize(("cls", "presets"), FAMILIES, ids=IDS)
def test_channels_in_and_out(cls, presets):
    net = cls(3, in_channels=2, out_channels=3, z_factor=5, **presets["tiny"])
    assert net(torch.rand(1, 2, 3, 8, 8)).shape == (1, 3, 15, 8, 8)


@pytest.mark.parametrize(
    ("spatial_dims", "sizes"),
    [(2, [(16, 16), (40, 24)]), (3, [(16, 16, 16), (24, 32, 48)])],
)
def test_discriminator_logit_map(spatial_dims, sizes):
    torch.manual_seed(0)
    disc = PatchDiscriminator(spatial_dims, in_channels=2, channels=4, n_layers=3)
    for size in sizes:
        logits = disc(torch.rand(2, 2, *size))
        assert logits.shape == (2, 1, *[n // 8 for n in size])
    assert not any(isinstance(m, torch.nn.Linear) for m in disc.modules())


def test_discriminator_rejects_too_small_input():
    disc = PatchDiscriminator(2, channels=4, n_layers=3)
    assert disc.min_size == 16
    with pytest.raises(ValueError, match="16"):
        disc(torch.rand(1, 1, 16, 8))


def test_resnet_generator_and_discriminator_train_together():
    gen = ResNetGenerator(2, z_factor=2, **resnet_gan.PRESETS["tiny"])
    disc = PatchDiscriminator(2, channels=4, n_layers=2)
    disc(gen(torch.rand(2, 1, 8, 16))).mean().backward()
    assert all(p.grad is not None for p in gen.parameters())


# -- halo ---------------------------------------------------------------------------------

LOCAL_NETS = [
    # Channel attention pools over the whole block, so RCAN is only local without it.
    (RCAN, {**rcan.PRESETS["tiny"], "channel_attention": False, "upsampling": "input"}),
    (RCAN, {**rcan.PRESETS["tiny"], "channel_attention": False, "upsampling": "features"}),
    (SRUNet, srunet.PRESETS["tiny"]),
    (ResNetGenerator, resnet_gan.PRESETS["tiny"]),
]


def _reach(net, z_factor, x, centres):
    """Largest distance (input voxels, per axis) of an output changed by one input voxel."""
    reach = torch.zeros(x.ndim - 2, dtype=torch.long)
    with torch.no_grad():
        base = net(x)
        for centre in centres:
            bumped = x.clone()
            bumped[(0, 0, *centre)] += 5.0
            changed = (net(bumped) != base)[0, 0].nonzero()
            assert len(changed) > 0
            changed[:, 0] //= z_factor  # input slice that owns each output slice
            reach = torch.maximum(reach, (changed - torch.tensor(centre)).abs().amax(dim=0))
    return reach


@pytest.mark.parametrize(("cls", "params"), LOCAL_NETS,
                         ids=["rcan", "rcan_features", "srunet", "resnet_gan"])
@pytest.mark.parametrize("z_factor", [1, 3])
def test_halo_is_honest_and_tight(cls, params, z_factor):
    torch.manual_seed(0)
    net = cls(3, z_factor=z_factor, **params).double().eval()
    halo = torch.tensor(net.halo)
    divisor = torch.tensor(net.divisor)
    # Room for the receptive field around every centre, plus one voxel to catch overreach.
    shape = ((2 * halo + 6 + divisor - 1) // divisor * divisor).tolist()
    x = torch.rand(1, 1, *shape, dtype=torch.float64)
    # Pooling makes the reach depend on the position's phase: try all four.
    centres = [[n // 2 - 2 + phase for n in shape] for phase in range(4)]
    reach = _reach(net, z_factor, x, centres)
    assert (reach <= halo).all(), f"reach {reach.tolist()} exceeds halo {net.halo}"
    assert (reach == halo).all(), f"halo {net.halo} larger than reach {reach.tolist()}"


@pytest.mark.parametrize("z_factor", [2, 3, 4])
def test_rcan_feature_upsampling_shapes_and_slab_order(z_factor):
    torch.manual_seed(0)
    net = RCAN(2, z_factor=z_factor, **{**rcan.PRESETS["tiny"], "upsampling": "features"})
    x = torch.rand(2, 1, 5, 12)
    assert net(x).shape == (2, 1, 5 * z_factor, 12)
    # The shuffle puts channel c * f + k of input slice d at output slice d * f + k.
    values = torch.arange(2 * 3 * z_factor * 4, dtype=torch.float32).reshape(2, 3 * z_factor, 4)
    shuffled = rcan._shuffle_z(values[:, :, :, None], z_factor)[..., 0]
    for d in range(4):
        for k in range(z_factor):
            torch.testing.assert_close(shuffled[:, 2, d * z_factor + k], values[:, 2 * z_factor + k, d])


def test_rcan_channel_attention_is_global():
    torch.manual_seed(0)
    net = RCAN(2, **rcan.PRESETS["tiny"]).double()
    x = torch.rand(1, 1, 40, 40, dtype=torch.float64)
    bumped = x.clone()
    bumped[0, 0, 0, 0] += 5.0
    with torch.no_grad():
        far = (net(bumped) - net(x))[0, 0, -1, -1]
    assert far != 0  # why tiles must be blended, and why the halo test turns it off


def test_halo_values():
    assert RCAN(3).halo == (38, 38, 38)
    assert SRUNet(3).halo == (15, 33, 33)
    assert SRUNet(2, z_factor=4).halo == (11, 33)
    assert SRUNet(3).divisor == (1, 4, 4)
    assert ResNetGenerator(3, z_factor=4).halo == (11, 11, 11)


# -- presets ------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "presets"), FAMILIES, ids=IDS)
def test_presets(cls, presets):
    assert set(presets) == {"tiny", "small", "default"}
    sizes = {name: _n_params(cls(3, **kwargs)) for name, kwargs in presets.items()}
    assert sizes["tiny"] < 20_000
    assert sizes["tiny"] < sizes["small"] < sizes["default"]
    # Half the width: roughly a quarter of the parameters (and of the conv cost).
    assert 0.15 < sizes["small"] / sizes["default"] < 0.35
    assert _n_params(cls(3)) == sizes["default"]  # defaults are the DESIGN sizes


def test_default_sizes_match_design():
    assert math.isclose(_n_params(RCAN(3)), 1.0e6, rel_tol=0.05)
    assert math.isclose(_n_params(SRUNet(3, z_factor=4)), 2.4e6, rel_tol=0.05)


# -- argument checks ----------------------------------------------------------------------

BAD_ARGS = [
    (RCAN, {"spatial_dims": 4}, "spatial_dims"),
    (RCAN, {"z_factor": 0}, "z_factor"),
    (RCAN, {"z_factor": 17}, "z_factor"),
    (RCAN, {"z_factor": 2.5}, "z_factor"),
    (RCAN, {"in_channels": 0}, "in_channels"),
    (RCAN, {"reduction": 64}, "reduction"),
    (RCAN, {"n_groups": 0}, "n_groups"),
    (SRUNet, {"spatial_dims": 1}, "spatial_dims"),
    (SRUNet, {"z_factor": True}, "z_factor"),
    (SRUNet, {"out_channels": -1}, "out_channels"),
    (SRUNet, {"widths": (8, 16)}, "widths"),
    (SRUNet, {"widths": (8, 0, 16)}, "widths"),
    (SRUNet, {"widths": 8}, "widths"),
    (ResNetGenerator, {"z_factor": "2"}, "z_factor"),
    (ResNetGenerator, {"channels": 0}, "channels"),
    (ResNetGenerator, {"n_blocks": -1}, "n_blocks"),
    (ResNetGenerator, {"norm": "group"}, "norm"),
    (PatchDiscriminator, {"spatial_dims": 1}, "spatial_dims"),
    (PatchDiscriminator, {"n_layers": 0}, "n_layers"),
    (PatchDiscriminator, {"channels": 0}, "channels"),
]


@pytest.mark.parametrize(("cls", "kwargs", "name"), BAD_ARGS)
def test_bad_arguments_raise(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(**kwargs)


@pytest.mark.parametrize(("cls", "presets"), FAMILIES, ids=IDS)
def test_wrong_input_raises(cls, presets):
    net = cls(3, **presets["tiny"])
    with pytest.raises(ValueError, match="input"):
        net(torch.rand(1, 2, 4, 8, 8))  # two channels for a one-channel net
    with pytest.raises(ValueError, match="input"):
        net(torch.rand(1, 1, 8, 8))  # 2D input for a 3D net


def test_srunet_rejects_lateral_size_not_multiple_of_4():
    with pytest.raises(ValueError, match="multiples of 4"):
        SRUNet(3, **srunet.PRESETS["tiny"])(torch.rand(1, 1, 4, 8, 10))
