"""The Train panel's TensorBoard switch: a log after a run, or why it cannot be had."""

import csv

import numpy as np
import pytest

from napari_volsr._qt.train_widget import TrainWidget
from napari_volsr.engine import tb_log


@pytest.fixture(autouse=True)
def library(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(tmp_path / "library"))
    return tmp_path / "library"


@pytest.fixture
def panel(make_napari_viewer, pair):
    viewer = make_napari_viewer()
    noisy, clean = pair
    viewer.add_image(noisy, name="noisy", scale=(2.0, 0.5, 0.5))
    viewer.add_image(clean, name="clean", scale=(2.0, 0.5, 0.5))
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.source.value = "paired"
    widget.raw.value = viewer.layers["noisy"]
    widget.target.value = viewer.layers["clean"]
    widget.family.value = "srunet"
    widget.dims.value = 3
    widget.preset.value = "tiny"
    widget.steps.value = 4
    widget.validate_every.value = 2
    widget.batch_size.value = 2
    widget.patch_z.value, widget.patch_y.value, widget.patch_x.value = 4, 16, 16
    widget.model_name.value = "logged"
    return viewer, widget


def test_check_box_on_writes_the_log_with_previews(qtbot, panel, library):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    viewer, widget = panel
    assert widget.tensorboard.enabled and widget.tensorboard.value is False
    assert "tensorboard/" in widget.tensorboard.tooltip
    assert "pip install tensorboard" in widget.tensorboard.tooltip
    widget.tensorboard.value = True

    widget._on_start()
    assert widget.worker is not None
    log = library / "logged" / "tensorboard"
    assert str(log) in widget.status.value  # where to point TensorBoard, while it trains
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)

    assert "saved" in widget.status.value
    events = EventAccumulator(str(log), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    with open(library / "logged" / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]
    np.testing.assert_allclose([e.value for e in events.Scalars("val_psnr")],
                               [float(r["val_psnr"]) for r in rows if r["val_psnr"]],
                               rtol=1e-6)
    # The panel's live preview goes to the log too, at each validation.
    assert [e.step for e in events.Images("preview/output")] == [2, 4]
    assert viewer.layers["logged preview"].data.shape[0] == 8


def test_check_box_off_writes_no_log(qtbot, panel, library):
    _, widget = panel
    widget._on_start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert (library / "logged" / "history.csv").is_file()
    assert not (library / "logged" / "tensorboard").exists()


def test_without_the_package_the_box_is_disabled_and_says_why(make_napari_viewer, monkeypatch):
    monkeypatch.setattr(tb_log, "tensorboard_available", lambda: False)
    widget = TrainWidget(make_napari_viewer())
    assert not widget.tensorboard.enabled and widget.tensorboard.value is False
    assert "not installed" in widget.tensorboard.tooltip
    assert "pip install tensorboard" in widget.tensorboard.tooltip


def test_asking_without_the_package_is_a_notification(qtbot, panel, errors, monkeypatch,
                                                      library):
    _, widget = panel
    widget.tensorboard.value = True  # e.g. uninstalled after the panel opened
    monkeypatch.setattr(tb_log, "tensorboard_available", lambda: False)
    widget._on_start()
    assert widget.worker is None
    assert len(errors) == 1 and "pip install tensorboard" in errors[0]
    assert not (library / "logged").exists()
