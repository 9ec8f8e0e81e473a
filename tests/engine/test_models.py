import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_volsr.engine.config import CONFIG_VERSION, ModelConfig, TrainingConfig
from napari_volsr.engine.models import (
    ModelError, import_torch_weights, list_library, load_model, save_model,
)
from napari_volsr.engine.predict import restore
from napari_volsr.engine.registry import Family, build_network, network_config
from napari_volsr.engine.restorers import NetworkRestorer, get_restorer, list_restorers

FAMILIES = [f.value for f in Family]
V1_MODELS = Path(__file__).parent.parent / "data" / "v1_models"


@pytest.fixture(autouse=True)
def library(tmp_path, monkeypatch):
    root = tmp_path / "library"
    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(root))
    return root


@pytest.fixture
def volume():
    rng = np.random.default_rng(1)
    vol = ndimage.gaussian_filter(rng.random((8, 24, 24)), 1.5)
    return (vol * 1000).astype(np.float32)


def tiny_config(fam, z_factor=1, spatial_dims=3, name="m", task=None):
    task = task or ("restore" if z_factor == 1 else "upsample")
    return ModelConfig(name=name, task=task, z_factor=z_factor, spatial_dims=spatial_dims,
                       network=network_config(fam, "tiny"))


def saved(library, fam, **kwargs):
    torch.manual_seed(0)
    config = tiny_config(fam, **kwargs)
    net = build_network(config)
    ema = build_network(config) if fam == "diffusion" else None
    folder = save_model(library / config.name, config, net, ema_net=ema,
                        history=[{"step": 1, "loss": 0.5}])
    return folder, config, net


# ---------------------------------------------------------------- saved models

@pytest.mark.parametrize("fam", FAMILIES)
def test_save_load_restore_is_bit_identical(library, volume, fam):
    if fam == "diffusion":
        volume = volume[:4, :16, :16]
    folder, config, net = saved(library, fam, z_factor=2)
    for name in ("config.json", "weights.safetensors", "history.csv"):
        assert (folder / name).is_file()
    assert (folder / "weights_ema.safetensors").is_file() == (fam == "diffusion")
    loaded = load_model("m")
    assert loaded.config == config.model_copy(update={"package_version": loaded.config.package_version})
    from napari_volsr.engine.models import LoadedModel

    net.eval()
    if fam == "diffusion":
        net.load_state_dict(loaded.net.state_dict())  # the restorer uses the EMA weights
    options = {"diffusion_steps": 2, "diffusion_samples": 2}
    before = restore(volume, NetworkRestorer(LoadedModel(config, net), **options)).outputs
    after = restore(volume, get_restorer("m", **options)).outputs
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


@pytest.mark.parametrize("fam", FAMILIES)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_restore_with_every_family(library, volume, fam, spatial_dims):
    task = "isotropic" if spatial_dims == 2 else "upsample"
    saved(library, fam, z_factor=2, spatial_dims=spatial_dims, task=task)
    if fam == "diffusion":
        volume = volume[:, :16, :16]
    result = restore(volume, get_restorer("m", diffusion_steps=2, diffusion_samples=2),
                     spacing=(2.0, 1.0, 1.0))
    shape = (16, *volume.shape[1:])
    assert result.data.shape == shape
    assert result.spacing == (1.0, 1.0, 1.0)
    assert np.isfinite(result.data).all()
    if fam == "diffusion":
        assert result.outputs["uncertainty"].shape == shape
        assert (result.outputs["uncertainty"] >= 0).all()
        assert result.outputs["uncertainty"].max() > 0
    else:
        assert set(result.outputs) == {"restored"}


def test_2d_restoration_model_runs_slice_by_slice(library, volume):
    saved(library, "rcan", z_factor=1, spatial_dims=2)
    restorer = get_restorer("m")
    assert restorer.halo[0] == 0  # XY slices never see their neighbours
    changed = volume.copy()
    changed[5] = changed[5][::-1]
    kwargs = {"percentiles": (0, 100)}
    a, b = restore(volume, restorer, **kwargs).data, restore(changed, restorer, **kwargs).data
    np.testing.assert_array_equal(a[:5], b[:5])
    assert not np.allclose(a[5], b[5])


@pytest.mark.parametrize("fam,tolerance", [
    ("srunet", 1e-5), ("gan", 1e-5),
    # Channel attention pools over the whole block, so tiles cannot be exact; with
    # blended overlaps the difference stays far below the output's range.
    ("rcan", 1e-3),
])
def test_tiling_invariance(library, fam, tolerance):
    rng = np.random.default_rng(2)
    vol = ndimage.gaussian_filter(rng.random((12, 40, 40)), 2).astype(np.float32)
    torch.manual_seed(0)
    # A wider RCAN than "tiny", so the attention has some say in the output.
    sizes = {"channels": 8, "n_groups": 2, "reduction": 2} if fam == "rcan" else {}
    config = ModelConfig(task="upsample", z_factor=2, network=network_config(fam, "tiny", **sizes))
    from napari_volsr.engine.models import LoadedModel

    restorer = NetworkRestorer(LoadedModel(config, build_network(config).eval()))
    whole = restore(vol, restorer, block_shape=vol.shape, percentiles=(0, 100)).data
    tiled = restore(vol, restorer, block_shape=(6, 20, 20), percentiles=(0, 100)).data
    assert np.abs(whole - tiled).max() < tolerance * max(np.ptp(whole), 1e-6) + 1e-6


@pytest.mark.parametrize("shape,block_shape", [
    ((12, 42, 42), (6, 20, 20)), ((12, 40, 40), (6, 18, 18)), ((9, 37, 30), (5, 13, 22)),
])
def test_tiling_invariance_off_the_pooling_grid(shape, block_shape):
    # SRUNet pools y and x twice: blocks must start on its 4-voxel grid, whatever the
    # volume and block sizes, or each block sees different features.
    rng = np.random.default_rng(3)
    vol = ndimage.gaussian_filter(rng.random(shape), 2).astype(np.float32)
    torch.manual_seed(0)
    config = ModelConfig(task="upsample", z_factor=2, network=network_config("srunet", "tiny"))
    from napari_volsr.engine.models import LoadedModel

    restorer = NetworkRestorer(LoadedModel(config, build_network(config).eval()))
    whole = restore(vol, restorer, block_shape=vol.shape, percentiles=(0, 100)).data
    tiled = restore(vol, restorer, block_shape=block_shape, percentiles=(0, 100))
    assert "1 block" not in tiled.plan
    assert np.abs(whole - tiled.data).max() < 1e-4 * np.ptp(whole)


def test_library_lists_saved_models(library):
    saved(library, "gan", z_factor=2, name="my-gan")
    assert list_library() == ["my-gan"]
    assert "my-gan" in list_restorers()
    assert get_restorer("my-gan").name == "GAN"


def test_z_factor_conflict_is_explained(library):
    saved(library, "srunet", z_factor=4)
    with pytest.raises(ValueError, match="trained for z-factor 4"):
        get_restorer("m", z_factor=2)


def test_saving_over_an_existing_model_needs_overwrite(library):
    saved(library, "gan")
    with pytest.raises(ModelError, match="exists"):
        saved(library, "gan")


@pytest.mark.parametrize("damage,match", [
    ("no_config", "config.json is missing"),
    ("no_weights", "weights.safetensors is missing"),
    ("bad_json", "unreadable JSON"),
    ("bad_field", "network.channels"),
    ("other_weights", "do not match the config"),
    ("garbage_weights", "unreadable safetensors"),
])
def test_broken_model_folders_give_clear_errors(library, damage, match):
    folder, config, _ = saved(library, "rcan")
    if damage == "no_config":
        (folder / "config.json").unlink()
    elif damage == "no_weights":
        (folder / "weights.safetensors").unlink()
    elif damage == "bad_json":
        (folder / "config.json").write_text("{not json")
    elif damage == "bad_field":
        raw = json.loads((folder / "config.json").read_text())
        raw["network"]["channels"] = -3
        (folder / "config.json").write_text(json.dumps(raw))
    elif damage == "other_weights":
        raw = json.loads((folder / "config.json").read_text())
        raw["network"]["channels"] = 8
        (folder / "config.json").write_text(json.dumps(raw))
    elif damage == "garbage_weights":
        (folder / "weights.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match=match):
        load_model(folder)
    with pytest.raises(ValueError, match=match):
        get_restorer(str(folder))


def test_unknown_model_name_lists_choices(library):
    saved(library, "gan", name="known")
    with pytest.raises(ValueError, match="known"):
        get_restorer("unknown")
    with pytest.raises(ModelError, match="path separators"):
        load_model("../../etc/passwd")


class _Payload:
    """Pickles to a call that would create a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_malicious_pickle_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth"
    torch.save({"weight": torch.zeros(2), "evil": _Payload(str(marker))}, path)
    with pytest.raises(ModelError, match="refused"):
        import_torch_weights(path)
    assert not marker.exists()


def test_plain_state_dict_imports(tmp_path):
    net = build_network(tiny_config("gan"))
    torch.save({"state_dict": net.state_dict()}, tmp_path / "ok.pt")
    state = import_torch_weights(tmp_path / "ok.pt")
    assert state.keys() == net.state_dict().keys()


def test_flips_make_the_restorer_flip_equivariant():
    from napari_volsr.engine.models import LoadedModel

    torch.manual_seed(0)
    config = ModelConfig(task="upsample", z_factor=2, network=network_config("rcan", "tiny"))
    net = build_network(config).eval()
    x = torch.rand(1, 1, 4, 8, 8)

    def flipped(restorer):
        with torch.inference_mode():
            return restorer(x), restorer(x.flip([2, 4])).flip([2, 4])

    a, b = flipped(NetworkRestorer(LoadedModel(config, net), flips=True))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    a, b = flipped(NetworkRestorer(LoadedModel(config, net), flips=False))
    assert (a - b).abs().max() > 1e-4  # a random net alone is not equivariant


# ---------------------------------------------------------------- older versions

@pytest.mark.parametrize("name,family", [("tiny-gan-v1", "gan"), ("tiny-rcan-v1", "rcan")])
def test_version_1_model_folders_load_and_restore(name, family):
    # Written by napari-volsr before TrainingConfig version 2 (one step of train()).
    loaded = load_model(V1_MODELS / name)
    assert loaded.config.version == 1 < CONFIG_VERSION
    assert loaded.config.family == family and loaded.config.z_factor == 2
    x = torch.from_numpy(np.load(V1_MODELS / "input.npy"))
    with torch.inference_mode():
        out = loaded.net(x).numpy()
    np.testing.assert_allclose(out, np.load(V1_MODELS / name / "expected_output.npy"),
                               rtol=1e-5, atol=1e-6)
    volume = np.load(V1_MODELS / "input.npy")[0, 0] * 100
    result = restore(volume, get_restorer(str(V1_MODELS / name)))
    assert result.data.shape == (8, 16, 16) and np.isfinite(result.data).all()
    settings = loaded.config.training["settings"]
    config = TrainingConfig.model_validate({**settings, "model": loaded.config})
    assert config.method.kind == ("gan" if family == "gan" else "supervised")


def test_saved_models_carry_the_current_version(library):
    folder, config, _ = saved(library, "rcan")
    assert json.loads((folder / "config.json").read_text())["version"] == CONFIG_VERSION == 2


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_weights_are_as_readable_as_the_config(umask, library):
    import os
    import stat

    previous = os.umask(umask)
    try:
        config = tiny_config("diffusion")
        net = build_network(config)
        folder = save_model(library / "shared", config, net, ema_net=net)
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert set(modes) == {"config.json", "weights.safetensors", "weights_ema.safetensors",
                          "history.csv"}
    assert set(modes.values()) == {0o666 & ~umask}  # a colleague reads what the umask allows
