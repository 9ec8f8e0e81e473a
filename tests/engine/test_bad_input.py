"""Bad arrays, files and models through the engine and napari's reader (rows: bad_input_cases)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from bad_input_cases import (
    FILE_PARAMS,
    LIBRARY_PARAMS,
    NETWORK,
    SCHEDULER_ROWS,
    SPACING_ROWS,
    SUFFIX_NAMES,
    WARN_PARAMS,
    Payload,
    array_params,
    make_file,
    restorer_args,
    use_library,
)
from helpers import digest, save_tiny, smooth

import napari_volsr as vs

from napari_volsr._reader import get_reader
from napari_volsr.engine.config import ModelConfig, TrainingConfig
from napari_volsr.engine import model_cache, models
from napari_volsr.engine.dask_restore import check_scheduler_address
from napari_volsr.engine.io import Volume, VolsrWarning, VolumeIOError, read_volume, write_volume
from napari_volsr.engine.models import (
    ModelError,
    import_torch_weights,
    library_dir,
    list_library,
    load_model,
    save_model,
)
from napari_volsr.engine.predict import restore
from napari_volsr.engine.registry import build_network, network_config
from napari_volsr.engine.restorers import get_restorer
from napari_volsr.engine.train import checkpoint_dir_for, make_training_data, train

# The float64-beyond-float32 row: numpy warns about the overflow before restore refuses it.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")


@pytest.mark.parametrize("row", array_params("engine"))
def test_array_engine(row, rng, tiny_library):
    data = row.make(rng)
    before = data.copy()
    restorer = get_restorer(**restorer_args(row))
    if isinstance(row.engine, str):
        with pytest.raises(ValueError, match=re.escape(row.engine)):
            restore(data, restorer, output_dtype="input")
    else:
        out = restore(data, restorer, output_dtype="input").data
        assert out.shape == row.engine and out.dtype == data.dtype
        if out.dtype.kind == "f":
            assert np.isfinite(out).all()
        if row.model == "linear":  # interpolation never leaves the input's range
            assert out.min() >= data.min() and out.max() <= data.max()
        if row.check is not None:
            row.check(data, out)
    np.testing.assert_array_equal(data, before)


@pytest.mark.parametrize("row", FILE_PARAMS)
def test_file_engine_and_napari_reader(row, tmp_path, rng):
    path, before = make_file(row, tmp_path, rng)
    with pytest.raises(VolumeIOError, match=re.escape(row.eager)) as info:
        read_volume(path)
    assert row.name in str(info.value) or "unsupported" in row.eager
    reader = get_reader(str(path))
    if reader is None:  # napari asks the next plugin
        assert row.name.endswith(".png")
    else:
        with pytest.raises(VolumeIOError, match=re.escape(row.eager)):
            reader(str(path))
    assert (digest(path) if path.exists() else None) == before


@pytest.mark.parametrize("row", WARN_PARAMS)
def test_file_read_with_a_warning_engine_and_napari_reader(row, tmp_path, rng):
    path, before = make_file(row, tmp_path, rng)
    with pytest.warns(VolsrWarning, match=re.escape(row.warning)) as said:
        volume = read_volume(path, lazy=True)
    assert len(said) == 1 and str(path) in str(said[0].message)
    assert volume.spacing == pytest.approx(row.spacing) and volume.data.shape == row.shape
    with pytest.warns(VolsrWarning, match=re.escape(row.warning)):
        [(_, kwargs, _)] = get_reader(str(path))(str(path))
    assert tuple(kwargs["scale"]) == pytest.approx(row.spacing)
    assert digest(path) == before


def test_pickled_weights_are_never_unpickled(tmp_path):
    torch.save({"weight": torch.zeros(2), "evil": Payload(tmp_path / "pwned")},
               tmp_path / "model.pt")
    with pytest.raises(ModelError, match="refused"):
        import_torch_weights(tmp_path / "model.pt")
    assert not (tmp_path / "pwned").exists()


def test_a_kill_in_the_middle_of_a_folder_swap_blocks_no_later_save(tmp_path, rng):
    # atomic_path swaps folders by renaming the old one aside, then deleting it; a kill
    # during the delete leaves the backup, which must not make every later save fail.
    model = ModelConfig(name="m", task="upsample", z_factor=2,
                        network=network_config("srunet", "tiny"))
    config = TrainingConfig(model=model, source="synthetic", patch_shape=(4, 16, 16),
                            batch_size=2, steps=2, checkpoint_every=1, n_val=1, prefetch=0)
    data = make_training_data(config, targets=[smooth(rng, (12, 32, 32))])
    folder = tmp_path / "m"
    train(config, data, output_dir=folder)
    for stale in (checkpoint_dir_for(folder).with_name(".m.old"), tmp_path / ".m.old"):
        stale.mkdir()
        (stale / "weights.safetensors").write_bytes(b"half deleted")
    model = train(config.model_copy(update={"steps": 4}), data, output_dir=folder, resume=True)
    assert model.config.training["steps"] == 4
    assert not (tmp_path / ".m.old").exists()


def test_a_save_killed_midway_leaves_no_phantom_model(tiny_library):
    # What a kill during save_model leaves: the hidden temporary, config.json and all.
    phantom = tiny_library / f".{NETWORK}.x1y2z3.part"
    phantom.mkdir()
    (phantom / "config.json").write_text((tiny_library / NETWORK / "config.json").read_text())
    assert list_library() == [NETWORK]
    assert get_restorer(NETWORK).z_factor == 2


@pytest.mark.parametrize("address", SCHEDULER_ROWS.values(), ids=SCHEDULER_ROWS.keys())
def test_scheduler_address_engine(address):
    with pytest.raises(ValueError, match="is not a dask scheduler address .*give one like "
                                         "tcp://host:8786"):
        check_scheduler_address(address)


@pytest.mark.parametrize(("spacing", "message"), SPACING_ROWS.values(), ids=SPACING_ROWS.keys())
def test_absurd_voxel_size_engine_and_console(spacing, message, smooth_volume):
    with pytest.raises(ValueError, match=re.escape(message)) as engine:
        get_restorer("linear", spacing=spacing)
    with pytest.raises(ValueError) as console:
        vs.restore(smooth_volume, model="linear", spacing=spacing)
    assert str(console.value) == str(engine.value)
    assert get_restorer("linear", 2, spacing=spacing).z_factor == 2  # a z-factor given: used


@pytest.mark.parametrize("name", SUFFIX_NAMES)
def test_suffixes_in_any_case_engine_and_napari_reader(name, tmp_path, rng):
    data = smooth(rng).astype(np.uint16)
    write_volume(tmp_path / name, Volume(data, (0.8, 0.2, 0.2), unit="µm"))
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left, name kept
    volume = read_volume(tmp_path / name)
    np.testing.assert_array_equal(volume.data, data)
    assert volume.spacing == pytest.approx((0.8, 0.2, 0.2))
    [(layer_data, kwargs, _)] = get_reader(str(tmp_path / name))(str(tmp_path / name))
    np.testing.assert_array_equal(np.asarray(layer_data), data)


@pytest.mark.parametrize("row", LIBRARY_PARAMS)
def test_library_variable_engine(row, tmp_path, monkeypatch):
    expected = use_library(row, tmp_path, monkeypatch)
    if expected is None:
        assert list_library() == []
        with pytest.raises(ModelError, match=re.escape(row.problem)) as refused:
            save_tiny(library_dir() / "m")
        assert "NAPARI_VOLSR_MODELS=" in str(refused.value)
        with pytest.raises(ValueError, match=f"unknown model 'm'.*{re.escape(row.problem)}"):
            get_restorer("m")
        return
    assert library_dir() == expected
    save_tiny(library_dir() / "m")
    assert list_library() == ["m"] and (expected / "m" / "config.json").is_file()
    assert get_restorer("m").z_factor == 2


def test_a_model_saved_again_while_it_loads_is_loaded_whole(tiny_library, monkeypatch):
    # A training run replaces the model between this restore reading its config and its
    # weights: the files of two saves must not be mixed (nor "do not match" be said).
    folder = tiny_library / NETWORK
    real = models._load_weights
    calls = []

    def racing(net, path):
        if not calls:  # another family under the same name, as `volsr train --overwrite` does
            config = ModelConfig(name=NETWORK, task="upsample", z_factor=2,
                                 network=network_config("rcan", "tiny"))
            save_model(folder, config, build_network(config), overwrite=True)
        calls.append(path)
        real(net, path)

    monkeypatch.setattr(models, "_load_weights", racing)
    model_cache._LOADED.clear()
    restorer = get_restorer(NETWORK, cache=True)
    assert restorer.family.value == "rcan" and len(calls) == 2
    assert load_model(NETWORK).config.network.family == "rcan"


def test_a_model_removed_while_it_loads_is_said_to_be_unknown(tiny_library, monkeypatch):
    import shutil

    folder = tiny_library / NETWORK

    def vanishing(net, path):
        shutil.rmtree(folder)
        raise ModelError(f"{path.parent}: {path.name} is missing")

    monkeypatch.setattr(models, "_load_weights", vanishing)
    model_cache._LOADED.clear()
    with pytest.raises(ValueError, match=f"unknown model '{NETWORK}'"):
        get_restorer(NETWORK, cache=True)
