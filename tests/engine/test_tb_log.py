"""The TensorBoard log: the history's rows as scalars, images, resume, refusals."""

import csv

import numpy as np
import pytest
from helpers import records_and_result
from scipy import ndimage

from napari_volsr.engine import tb_log
from napari_volsr.engine.config import ModelConfig, TrainingConfig
from napari_volsr.engine.registry import network_config
from napari_volsr.engine.train import iter_train, make_training_data, train
from napari_volsr.engine.training_request import (
    TrainingRequestError, VolumeInput, resolve_training,
)

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)


@pytest.fixture(autouse=True)
def library(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(tmp_path / "library"))
    return tmp_path / "library"


@pytest.fixture(scope="module")
def clean_volume():
    rng = np.random.default_rng(3)
    vol = ndimage.gaussian_filter(rng.random((16, 40, 40)), 2.0)
    return ((vol - vol.min()) / np.ptp(vol) * 200 + 20).astype(np.float32)


def tiny_config(steps=6, **kwargs):
    model = ModelConfig(name="m", task="upsample", z_factor=2, spatial_dims=3,
                        network=network_config("srunet", "tiny"))
    values = dict(source="synthetic", patch_shape=(4, 16, 16), batch_size=2, steps=steps,
                  validate_every=3, checkpoint_every=3, n_val=2, learning_rate=1e-3,
                  prefetch=0, tensorboard=True)
    values.update(kwargs)
    return TrainingConfig(model=model, **values)


def read_log(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def history_rows(folder):
    with open(folder / "history.csv") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def assert_scalars_equal_history(events, rows):
    columns = {k for row in rows for k in row} - {"step"}
    assert set(events.Tags()["scalars"]) == columns
    for column in columns:
        logged = [(e.step, e.value) for e in events.Scalars(column)]
        expected = [(int(row["step"]), row[column]) for row in rows if column in row]
        assert [s for s, _ in logged] == [s for s, _ in expected], column
        # Scalars are stored as float32.
        np.testing.assert_allclose([v for _, v in logged], [v for _, v in expected],
                                   rtol=1e-6, err_msg=column)


def test_log_holds_the_history_and_images(clean_volume):
    config = tiny_config()
    data = make_training_data(config, targets=[clean_volume])
    crop = clean_volume[4:8, 8:40, 8:40]
    records, model = records_and_result(iter_train(config, data, preview_input=crop))

    folder = model.folder / tb_log.TB_FOLDER
    assert folder.is_dir() and any(folder.iterdir())
    events = read_log(folder)
    rows = history_rows(model.folder)
    assert len(rows) == 6 and "val_psnr" in rows[-1] and "loss" in rows[0]
    assert_scalars_equal_history(events, rows)
    images = set(events.Tags()["images"])
    assert {"validation/input", "validation/output", "validation/target",
            "preview/input", "preview/output"} <= images
    shown = events.Images("validation/output")
    assert [e.step for e in shown] == [3, 6]
    # The output slice is on the validation patch's grid: z x2 of a (4, 16, 16) input.
    assert (shown[0].height, shown[0].width) == (16, 16)
    preview = events.Images("preview/output")[-1]
    assert (preview.height, preview.width) == (32, 32)
    assert model.config.training["tensorboard_log"] == tb_log.TB_FOLDER
    assert model.config.training["settings"]["tensorboard"] is True


def test_resume_appends_to_the_same_log(tmp_path, clean_volume):
    config = tiny_config(checkpoint_every=100)
    data = make_training_data(config, targets=[clean_volume])
    steps = []
    first = iter_train(config, data, output_dir=tmp_path / "m",
                       should_stop=lambda: len(steps) >= 4)
    for record in first:
        if record.losses:
            steps.append(record.step)
    log = tmp_path / "m" / tb_log.TB_FOLDER
    files_before = sorted(log.iterdir())
    model = train(config, data, output_dir=tmp_path / "m", resume=True)

    assert len(list(log.iterdir())) == len(files_before) + 1  # appended, not replaced
    rows = history_rows(model.folder)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert_scalars_equal_history(read_log(log), rows)


def test_resume_after_a_crash_logs_each_step_once(tmp_path, clean_volume, monkeypatch):
    from napari_volsr.engine import train as train_module

    real_step = train_module._train_step

    def crash_at_step_6(run):
        if run.step == 5:
            raise RuntimeError("power cut")
        return real_step(run)

    config = tiny_config(checkpoint_every=3)
    data = make_training_data(config, targets=[clean_volume])
    monkeypatch.setattr(train_module, "_train_step", crash_at_step_6)
    with pytest.raises(RuntimeError, match="power cut"):
        train(config, data, output_dir=tmp_path / "m")
    log = tmp_path / "m" / tb_log.TB_FOLDER
    assert [e.step for e in read_log(log).Scalars("loss")] == [1, 2, 3, 4, 5]
    monkeypatch.setattr(train_module, "_train_step", real_step)

    model = train(config, data, output_dir=tmp_path / "m", resume=True)
    rows = history_rows(model.folder)  # steps 4 and 5 again, from the checkpoint at 3
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert_scalars_equal_history(read_log(log), rows)


def test_resume_turning_the_log_on_writes_the_earlier_history(tmp_path, clean_volume):
    data = make_training_data(tiny_config(), targets=[clean_volume])
    train(tiny_config(steps=3, tensorboard=False), data, output_dir=tmp_path / "m")
    assert not (tmp_path / "m" / tb_log.TB_FOLDER).exists()

    model = train(tiny_config(steps=5), data, output_dir=tmp_path / "m", resume=True)
    rows = history_rows(model.folder)
    assert len(rows) == 5
    assert_scalars_equal_history(read_log(model.folder / tb_log.TB_FOLDER), rows)


def test_a_new_run_without_the_log_drops_the_old_one(tmp_path, clean_volume):
    data = make_training_data(tiny_config(), targets=[clean_volume])
    train(tiny_config(steps=3), data, output_dir=tmp_path / "m")
    assert (tmp_path / "m" / tb_log.TB_FOLDER).is_dir()
    model = train(tiny_config(steps=3, tensorboard=False), data, output_dir=tmp_path / "m",
                  overwrite=True)
    assert not (model.folder / tb_log.TB_FOLDER).exists()
    assert model.config.training["tensorboard_log"] is None


def test_a_new_run_that_fails_leaves_no_folder(tmp_path, clean_volume, monkeypatch):
    from napari_volsr.engine import train as train_module

    def broken(run):
        raise RuntimeError("boom")

    monkeypatch.setattr(train_module, "_train_step", broken)
    data = make_training_data(tiny_config(), targets=[clean_volume])
    with pytest.raises(RuntimeError, match="boom"):
        train(tiny_config(), data, output_dir=tmp_path / "m")
    assert not (tmp_path / "m").exists()  # the name stays free


def test_asking_without_the_package_is_refused_before_training(library, clean_volume,
                                                               monkeypatch):
    monkeypatch.setattr(tb_log, "tensorboard_available", lambda: False)
    with pytest.raises(TrainingRequestError, match="pip install tensorboard"):
        resolve_training(target=VolumeInput(clean_volume, name="clean"), steps=2,
                         tensorboard=True)
    assert not library.exists() or not any(library.iterdir())


def test_the_request_says_where_the_log_goes(library, clean_volume):
    request = resolve_training(target=VolumeInput(clean_volume, name="clean"), steps=2,
                               name="logged", tensorboard=True)
    assert request.config.tensorboard is True
    assert str(library / "logged" / "tensorboard") in request.note


def test_center_slice_matches_input_and_output_grids():
    volume = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    output = np.repeat(volume, 3, axis=0)  # z x3, slab grid
    np.testing.assert_array_equal(tb_log.center_slice(output, 3), tb_log.center_slice(volume))
    plane = np.ones((5, 6), np.float32)
    assert tb_log.center_slice(plane).shape == (5, 6)
    assert tb_log.display(np.array([np.nan, -1.0, 0.5, 2.0])).tolist() == [0, 0, 0.5, 1]


def test_console_train_takes_the_flag(library, clean_volume):
    import napari_volsr as vs

    model = vs.train(target=clean_volume, family="srunet", preset="tiny", spatial_dims=3,
                     patch_shape=(4, 16, 16), batch_size=2, steps=2, validate_every=2,
                     name="console", tensorboard=True)
    events = read_log(library / "console" / tb_log.TB_FOLDER)
    assert_scalars_equal_history(events, history_rows(model.folder))
