"""Bad arrays, files and models through the engine and napari's reader (rows: bad_input_cases)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from bad_input_cases import (
    FILE_PARAMS,
    NETWORK,
    Payload,
    array_params,
    make_file,
    restorer_args,
)
from helpers import digest, smooth

from napari_volsr._reader import get_reader
from napari_volsr.engine.config import ModelConfig, TrainingConfig
from napari_volsr.engine.io import VolumeIOError, read_volume
from napari_volsr.engine.models import ModelError, import_torch_weights, list_library
from napari_volsr.engine.predict import restore
from napari_volsr.engine.registry import network_config
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
