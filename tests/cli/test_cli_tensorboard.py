"""``volsr train --tensorboard``: the log beside history.csv, or one line when it cannot be."""

import csv

import numpy as np
import pytest
import tifffile
from helpers import error_line, run_cli, smooth

from napari_volsr.engine import tb_log


@pytest.fixture
def clean_tif(tmp_path):
    path = tmp_path / "clean.tif"
    tifffile.imwrite(path, smooth(np.random.default_rng(0), (12, 40, 40)).astype(np.float32))
    return path


TRAIN = ("train", "--family", "srunet", "--preset", "tiny", "--spatial-dims", "3",
         "--patch", "4,16,16", "--batch-size", "2", "--steps", "4", "-q")


def test_train_writes_the_log_beside_the_history(capsys, library, clean_tif):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, stdout, stderr = run_cli(capsys, *TRAIN, "--target", str(clean_tif), "-n", "tb",
                                   "-c", str(_file(clean_tif.parent, validate_every=2)),
                                   "--tensorboard")
    assert code == 0, stderr
    log = library / "tb" / "tensorboard"
    assert f"TensorBoard log in {log}" in stderr  # said before training, to open it live
    assert f"TensorBoard log: {log}" in stdout
    events = EventAccumulator(str(log), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    with open(library / "tb" / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [e.step for e in events.Scalars("loss")] == [int(r["step"]) for r in rows]
    np.testing.assert_allclose([e.value for e in events.Scalars("loss")],
                               [float(r["loss"]) for r in rows], rtol=1e-6)
    assert [e.step for e in events.Scalars("val_psnr")] == [2, 4]
    assert "validation/output" in events.Tags()["images"]


def test_without_the_flag_no_log(capsys, library, clean_tif):
    code, _, stderr = run_cli(capsys, *TRAIN, "--target", str(clean_tif), "-n", "plain")
    assert code == 0, stderr
    assert (library / "plain" / "history.csv").is_file()
    assert not (library / "plain" / "tensorboard").exists()
    assert "TensorBoard" not in stderr


def test_missing_package_is_one_line_before_training(capsys, library, clean_tif, monkeypatch):
    monkeypatch.setattr(tb_log, "tensorboard_available", lambda: False)
    code, stdout, stderr = run_cli(capsys, *TRAIN, "--target", str(clean_tif), "-n", "tb",
                                   "--tensorboard")
    assert code != 0
    line = error_line(stderr)
    assert "pip install tensorboard" in line
    assert len(stderr.strip().splitlines()) == 1
    assert not (library / "tb").exists()


def _file(folder, **values):
    import json

    path = folder / "train.json"
    path.write_text(json.dumps(values))
    return path
