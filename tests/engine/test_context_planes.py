"""2.5D same-shape models: neighbouring z planes as input channels, from sampling to restore."""

from pathlib import Path

import helpers
import numpy as np
import pytest
import torch

import napari_volsr as vs
from napari_volsr.engine.config import ModelConfig, TrainingConfig
from napari_volsr.engine.data import noise2noise_data, noise2void_data, paired_data
from napari_volsr.engine.data.patches import PatchFitError, fit_patch_shape
from napari_volsr.engine.data.sources import synthetic_data
from napari_volsr.engine.degrade import DegradationConfig
from napari_volsr.engine.evaluate import baseline_validation
from napari_volsr.engine.models import LoadedModel, load_model, save_model
from napari_volsr.engine.nets.unet import UNet
from napari_volsr.engine.predict import drain, restore
from napari_volsr.engine.preview import expand_region, iter_preview
from napari_volsr.engine.registry import build_network, network_config
from napari_volsr.engine.restorers import NetworkRestorer
from napari_volsr.engine.training_config import default_context_planes

V1_MODELS = Path(__file__).resolve().parents[1] / "data" / "v1_models"
C = 1  # context planes each side in most tests: 3 planes in


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is faster
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def volumes():
    """(noisy, clean): (6, 32, 32) float32, with distinct planes along z."""
    noisy, clean = helpers.noisy_pair(np.random.default_rng(7), (6, 32, 32), noise=15.0)
    return noisy, clean


def _key(volume, plane, atol=0.0):
    """Where ``plane`` sits in ``volume`` (z, y, x), or None; brute force, small volumes."""
    h, w = plane.shape
    for z, y, x in np.ndindex(volume.shape[0], volume.shape[1] - h + 1, volume.shape[2] - w + 1):
        if np.allclose(volume[z, y : y + h, x : x + w], plane, rtol=0, atol=atol):
            return z, y, x
    return None


@pytest.mark.parametrize("source", ["paired", "synthetic", "noise2void", "noise2noise"])
def test_every_same_shape_source_hands_out_stacks_and_centre_targets(volumes, source):
    noisy, clean = volumes
    common = dict(spatial_dims=2, context_planes=C, n_val=2, seed=1)
    if source == "paired":
        data = paired_data(noisy, clean, 1, (8, 8), **common)
    elif source == "synthetic":
        data = synthetic_data(clean, 1, (8, 8), DegradationConfig(gaussian_sigma=(0.1, 0.1)),
                              **common)
    elif source == "noise2void":
        data = noise2void_data(noisy, (8, 8), **common)
    else:
        data = noise2noise_data([noisy, noisy[::-1].copy()], (8, 8), **common)
    inputs, targets = data.batch(0, 3)
    assert inputs.shape == (3, 2 * C + 1, 8, 8) and targets.shape == (3, 1, 8, 8)
    assert [tuple(p.shape) for p in data.validation[0]] == [(2 * C + 1, 8, 8), (1, 8, 8)]
    assert data.patch_shape == (8, 8) and data.summary["context_planes"] == C


def _normalised(volume):
    from napari_volsr.engine.data.normalization import percentile_normalization

    return percentile_normalization(volume, (1.0, 99.8)).forward(volume)


def test_paired_inputs_are_the_raw_planes_around_the_target_plane(volumes):
    noisy, clean = volumes
    data = paired_data(noisy, clean, 1, (8, 8), spatial_dims=2, context_planes=C, n_val=3)
    raw, target = _normalised(noisy), _normalised(clean)
    for inp, tgt in data.validation:  # not augmented: positions are those of the volume
        z, y, x = _key(target, tgt[0])
        assert C <= z < len(clean) - C
        np.testing.assert_array_equal(inp, raw[z - C : z + C + 1, y : y + 8, x : x + 8])


def test_synthetic_target_is_the_clean_centre_and_every_plane_is_degraded(volumes):
    _, clean = volumes
    data = synthetic_data(clean, 1, (8, 8), DegradationConfig(gaussian_sigma=(0.1, 0.1)),
                          spatial_dims=2, context_planes=C, n_val=3)
    scale = data.summary["input_scale"][0]
    target = (_normalised(clean) - scale[0]) / (scale[1] - scale[0])
    for inp, tgt in data.validation:
        z, y, x = _key(target, tgt[0], atol=1e-4)
        clean_stack = target[z - C : z + C + 1, y : y + 8, x : x + 8]
        noise = inp - clean_stack
        assert all(np.std(noise[k]) > 0.01 for k in range(2 * C + 1))  # noise per voxel


def test_blind_spots_hide_the_centre_only(volumes):
    noisy, _ = volumes
    data = noise2void_data(noisy, (8, 8), spatial_dims=2, context_planes=C, n_val=4)
    volume = _normalised(noisy)
    for inp, tgt in data.validation:
        masked = np.isfinite(tgt[0])
        assert masked.any()
        z, y, x = _key(volume, inp[0])  # the first neighbour is the volume as it is
        stack = volume[z : z + 2 * C + 1, y : y + 8, x : x + 8]
        np.testing.assert_array_equal(inp[:C], stack[:C])
        np.testing.assert_array_equal(inp[C + 1 :], stack[C + 1 :])
        # The centre's masked voxels hold replacements, never their own noisy value.
        assert not np.any(inp[C][masked] == stack[C][masked])
        np.testing.assert_array_equal(tgt[0][masked], stack[C][masked])
        np.testing.assert_array_equal(inp[C][~masked], stack[C][~masked])


def test_noise2noise_target_is_the_other_acquisition_at_the_same_place(volumes):
    noisy, _ = volumes
    other = (noisy[::-1] * 1.5 + 3).copy()
    data = noise2noise_data([noisy, other], (8, 8), spatial_dims=2, context_planes=C, n_val=4)
    first, second = _normalised(noisy), _normalised(other)
    for inp, tgt in data.validation:
        centre = inp[C]
        key, source, target = ((_key(first, centre), first, second) if _key(first, centre)
                               else (_key(second, centre), second, first))
        z, y, x = key
        np.testing.assert_array_equal(inp, source[z - C : z + C + 1, y : y + 8, x : x + 8])
        np.testing.assert_array_equal(tgt[0], target[z, y : y + 8, x : x + 8])


def test_volumes_thinner_than_the_stack_are_refused_with_the_minimum(volumes):
    noisy, _ = volumes
    with pytest.raises(ValueError, match=r"context_planes 4 needs volumes of at least 9 z "
                                         r"planes .* volume 0 has 6"):
        noise2void_data(noisy, (8, 8), spatial_dims=2, context_planes=4, n_val=2)
    with pytest.raises(PatchFitError, match="at least 9 z planes"):
        fit_patch_shape("noise2void", 2, 1, [noisy.shape], context_planes=4, names=["n"])


@pytest.mark.parametrize(("fields", "sentence"), [
    (dict(spatial_dims=3), "needs a 2D same-shape model"),
    (dict(spatial_dims=2, z_factor=2, task="upsample"), "needs a 2D same-shape model"),
    (dict(spatial_dims=2, task="isotropic"), "needs a 2D same-shape model"),
    (dict(spatial_dims=2, network={"family": "rcan"}), "family unet or srunet, not rcan"),
])
def test_config_refuses_context_where_it_cannot_work(fields, sentence):
    fields = {"network": {"family": "unet"}, **fields}
    with pytest.raises(ValueError, match=sentence):
        ModelConfig(context_planes=1, **fields)


def test_cubic_weighted_loss_is_refused_and_defaults_stay_zero():
    model = ModelConfig(spatial_dims=2, network={"family": "unet"}, context_planes=1)
    with pytest.raises(ValueError, match="cubic_weighted"):
        TrainingConfig(model=model, method={"kind": "supervised", "loss": "cubic_weighted"})
    assert ModelConfig().context_planes == 0
    assert default_context_planes("isotropic", 2, 4) == 0
    assert default_context_planes("paired", 3, 1) == 0


def test_unet_residual_adds_the_centre_channel():
    net = UNet(spatial_dims=2, in_channels=3, out_channels=1, widths=(4, 8), residual_channel=1)
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(net(x), x[:, 1:2])  # the output conv starts at zero
    plain = UNet(spatial_dims=2, in_channels=3, out_channels=1, widths=(4, 8))
    assert set(net.state_dict()) == set(plain.state_dict())  # no new weights


def _context_model():
    torch.manual_seed(0)
    config = ModelConfig(name="ctx", spatial_dims=2, context_planes=2,
                         network=network_config("unet", "tiny", residual=False))
    net = build_network(config)
    for p in net.parameters():  # a random net whose output depends on every input plane
        torch.nn.init.normal_(p, std=0.3)
    return LoadedModel(config, net, None)


def test_tiled_restore_equals_the_whole_volume():
    model = _context_model()
    volume = np.random.default_rng(0).random((9, 20, 24)).astype(np.float32)
    whole = restore(volume, NetworkRestorer(model), block_shape=(9, 20, 24)).data
    for depth in (1, 2, 4):
        tiled = restore(volume, NetworkRestorer(model), block_shape=(depth, 8, 16)).data
        np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=1e-5)
    # The neighbours matter: restoring planes alone gives another result.
    alone = np.stack([restore(volume[z : z + 1], NetworkRestorer(model)).data[0]
                      for z in range(len(volume))])
    assert np.abs(alone[2:-2] - whole[2:-2]).max() > 1e-3


def test_preview_equals_the_full_restore_over_its_region(library):
    model = _context_model()
    save_model(library / "ctx", model.config, model.net)
    volume = np.random.default_rng(1).random((10, 16, 16)).astype(np.float32) * 100
    keep = (slice(4, 6), slice(0, 16), slice(0, 16))
    restorer = NetworkRestorer(load_model(library / "ctx"))
    assert restorer.halo[0] == 2  # the context planes
    read = expand_region(keep, restorer.halo, volume.shape)
    preview = drain(iter_preview(volume, "ctx", None, keep=keep, read=read, device="cpu"))
    full = restore(volume, restorer, device="cpu")
    np.testing.assert_allclose(preview.data, full.data[keep], rtol=1e-4, atol=1e-3)


def test_baseline_validation_compares_the_centre_plane(volumes):
    noisy, clean = volumes
    flat = paired_data(noisy, clean, 1, (8, 8), spatial_dims=2, n_val=3)
    stacked = paired_data(noisy, clean, 1, (8, 8), spatial_dims=2, context_planes=C, n_val=3)
    assert baseline_validation(stacked)["psnr"] > 0
    # Same validation band, different crops: both compare the noisy plane with its target.
    assert abs(baseline_validation(stacked)["psnr"] - baseline_validation(flat)["psnr"]) < 3


@pytest.mark.parametrize("source", ["synthetic", "noise2void"])
def test_a_context_unet_trains_saves_loads_and_restores(library, volumes, source):
    noisy, clean = volumes
    inputs = dict(target=clean) if source == "synthetic" else dict(volume=noisy)
    model = vs.train(source=source, preset="tiny", spatial_dims=2, context_planes=C,
                     steps=3, batch_size=2, patch_shape=(8, 8), validate_every=2,
                     name=f"ctx-{source}", **inputs)
    assert model.config.context_planes == C and model.net.in_channels == 2 * C + 1
    loaded = load_model(library / f"ctx-{source}")
    assert loaded.config.context_planes == C
    assert loaded.config.training["data"]["context_planes"] == C
    restored = vs.restore(noisy, model=f"ctx-{source}")
    assert restored.shape == noisy.shape and np.isfinite(restored).all()


def test_models_saved_without_the_field_load_as_single_plane():
    for folder in sorted(V1_MODELS.iterdir()):
        if folder.is_dir():
            assert load_model(folder).config.context_planes == 0


def test_the_default_context_never_refuses(monkeypatch, library):
    from napari_volsr.engine import training_config
    from napari_volsr.engine.training_request import resolve_training

    monkeypatch.setattr(training_config, "DEFAULT_CONTEXT_PLANES", 2)
    assert default_context_planes("noise2void", 2, 1) == 2
    assert default_context_planes("noise2void", 2, 1, "rcan") == 0  # not a context family
    assert default_context_planes("noise2void", 2, 1, "unet", depth=3) == 1
    assert default_context_planes("noise2void", 2, 1, "unet", depth=1) == 0
    rng = np.random.default_rng(0)
    thin = rng.random((3, 48, 48)).astype(np.float32)
    request = resolve_training(source="noise2void", volume=[vs.api.volume_input(thin)])
    assert request.config.model.context_planes == 1  # what 3 planes allow
    request = resolve_training(source="synthetic", target=[vs.api.volume_input(thin)],
                               loss="cubic_weighted")
    assert request.config.model.context_planes == 0  # that loss takes one plane
    request = resolve_training(source="synthetic", target=[vs.api.volume_input(thin)],
                               family="rcan", spatial_dims=2)
    assert request.config.model.context_planes == 0
