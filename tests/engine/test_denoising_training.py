"""The denoising sources through a training request: defaults, refusals, a short run."""

import helpers
import numpy as np
import pytest

import napari_volsr as vs
from napari_volsr.engine.data.blind_spot import BLIND_SPOT_LABEL, NOISE2NOISE_LABEL
from napari_volsr.engine.training_config import default_spatial_dims
from napari_volsr.engine.training_request import VolumeInput, resolve_training


@pytest.fixture(scope="module")
def noisy():
    return helpers.noisy_pair(np.random.default_rng(3), (8, 40, 40), noise=20.0)[0]


def request(**kwargs):
    return resolve_training(output_dir="/nonexistent", preset="tiny", name="n", **kwargs)


@pytest.mark.parametrize(("kwargs", "count", "sentence"), [
    (dict(source="noise2void", z_factor=2), 1,
     "the noise2void source denoises on the volume's own grid, so its z-factor is 1 (got 2): "
     "leave the z-factor unset, or upsample z with the isotropic source"),
    (dict(source="noise2noise", z_factor=3), 2,
     "the noise2noise source denoises on the volume's own grid, so its z-factor is 1 (got 3)"),
    (dict(source="noise2noise"), 1,
     "the noise2noise source needs two or more acquisitions of the same sample, got one volume: "
     "pass each acquisition as a volume"),
])
def test_requests_the_denoising_sources_cannot_train_are_refused(noisy, kwargs, count,
                                                                  sentence):
    with pytest.raises(ValueError) as refusal:
        request(volume=[VolumeInput(noisy, name="a")] * count, **kwargs)
    assert str(refusal.value).startswith(sentence)
    with pytest.raises(ValueError) as console:  # the console says the same
        vs.train(volume=[noisy] * count, preset="tiny", output_dir="/nonexistent", name="n",
                 **kwargs)
    assert str(console.value) == str(refusal.value)


def test_noise2noise_refuses_acquisitions_of_different_shapes(noisy):
    with pytest.raises(ValueError) as refusal:
        request(source="noise2noise",
                volume=[VolumeInput(noisy, name="a"), VolumeInput(noisy[:, :32], name="b")])
    assert str(refusal.value) == (
        "the noise2noise acquisitions must have the same shape: 'b' is (8, 32, 40) but 'a' "
        "is (8, 40, 40); register and crop them to the same field of view")


def test_noise2void_needs_its_noisy_volume_and_says_so():
    with pytest.raises(ValueError, match="the noise2void source needs a noisy volume"):
        request(source="noise2void")
    with pytest.raises(ValueError, match="does not use a raw .*: it reads a noisy volume"):
        request(source="noise2void", raw=np.zeros((4, 32, 32), np.float32))


@pytest.mark.parametrize("source", ["noise2void", "noise2noise"])
def test_defaults_restore_at_the_sources_dimensionality_and_fit_small_volumes(noisy, source):
    volumes = [VolumeInput(noisy, name="a"), VolumeInput(noisy + 1, name="b")]
    resolved = request(source=source, volume=volumes[: 1 if source == "noise2void" else 2])
    model = resolved.config.model
    assert (model.task, model.z_factor) == ("restore", 1)
    assert model.spatial_dims == default_spatial_dims(source, 1)
    assert resolved.config.patch_shape == (16, 40)  # 2D, fitted beside the validation band
    data = resolved.data
    assert data.patch_shape == resolved.config.patch_shape
    assert len(data.validation) == resolved.config.n_val
    flat = request(source=source, volume=volumes[: 1 if source == "noise2void" else 2],
                   spatial_dims=2)
    assert flat.config.model.spatial_dims == 2 and flat.config.patch_shape == (16, 40)


def test_large_volumes_get_the_same_shape_restore_patches():
    big = VolumeInput(np.zeros((40, 160, 160), np.float32), name="big")
    assert request(source="noise2void", volume=big).config.patch_shape == (64, 64)
    assert request(source="noise2void", volume=big,
                   spatial_dims=3).config.patch_shape == (32, 64, 64)


def test_noise2void_u_nets_take_the_n2v2_settings_unless_told_otherwise(noisy):
    volume = VolumeInput(noisy, name="a")
    network = request(source="noise2void", volume=volume, family="unet").config.model.network
    assert (network.blur_pool, network.top_skip, network.residual) == (True, False, False)
    given = request(source="noise2void", volume=volume, family="unet",
                    network={"top_skip": True}).config.model.network
    assert (given.blur_pool, given.top_skip) == (True, True)
    pairs = request(source="noise2noise", volume=[volume, volume],
                    family="unet").config.model.network
    assert (pairs.blur_pool, pairs.top_skip, pairs.residual) == (False, True, True)


def test_noise2void_trains_saves_and_restores(library, noisy):
    model = vs.train(source="noise2void", volume=noisy, preset="tiny", spatial_dims=3,
                     steps=30, batch_size=2, patch_shape=(4, 16, 16), validate_every=10,
                     name="n2v")
    assert model.config.family == "unet" and not model.config.network.residual
    card = model.config.training
    assert card["source"] == "noise2void" and card["steps"] == 30
    assert card["validation_label"] == BLIND_SPOT_LABEL and BLIND_SPOT_LABEL in card["summary"]
    assert np.isfinite(card["final_validation"]["psnr"])
    assert "ssim" not in card["final_validation"]  # no SSIM on partial targets
    restored = vs.restore(noisy, model="n2v")
    assert restored.shape == noisy.shape and np.isfinite(restored).all()


def test_progress_records_say_what_the_validation_compares(library, noisy):
    resolved = request(source="noise2noise", volume=[noisy, noisy[::-1].copy()], steps=2,
                       batch_size=1, patch_shape=(4, 16, 16), validate_every=1)
    resolved.folder = library / "n2n"
    records = list(resolved.iter_train())
    assert all(r.validation_label == NOISE2NOISE_LABEL for r in records)
    assert records[-1].validation and "ssim" in records[-1].validation


@pytest.mark.parametrize("family, network", [("rcan", None), ("unet", {"residual": True,
                                                                      "top_skip": True})])
def test_noise2void_refuses_networks_that_add_their_input_back(noisy, family, network):
    # At restore the residual adds each voxel's own noise back: the model would not denoise.
    with pytest.raises(ValueError, match="input residual cannot learn blind-spot denoising"):
        request(source="noise2void", volume=noisy, family=family, network=network)
