"""Bad arrays, files, models, outputs and faults through ``volsr`` (rows: bad_input_cases)."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from bad_input_cases import (
    FILE_PARAMS,
    LIBRARY_PARAMS,
    MODEL_PARAMS,
    NETWORK,
    SCHEDULER_ROWS,
    SPACING_ROWS,
    SUFFIX_NAMES,
    WARN_PARAMS,
    use_library,
    Payload,
    array_params,
    damaged_model,
    full_range,
    make_file,
)
from helpers import ProcessOutput, digest, error_line, run_cli, save_tiny, smooth

from napari_volsr._reader import get_reader
from napari_volsr._writer import write_image
from napari_volsr.engine import io as volsr_io
from napari_volsr.engine.config import ModelConfig, TrainingConfig
from napari_volsr.engine.geometry import default_z_factor
from napari_volsr.engine.io import Volume, VolumeIOError, read_volume, write_volume
from napari_volsr.engine.models import list_library, load_model
from napari_volsr.engine.pipeline import iter_restore_file
from napari_volsr.engine.predict import drain
from napari_volsr.engine.registry import build_network, network_config
from napari_volsr.engine.restorers import get_restorer
from napari_volsr.engine.train import checkpoint_dir_for, make_training_data

# Where the restore command looks up the reader (the Ctrl-C-while-reading test replaces it).
CLI_READ_VOLUME = "napari_volsr.engine.pipeline.read_volume"
# The float64-beyond-float32 row: numpy warns about the overflow before restore refuses it.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")


@pytest.mark.parametrize("row", array_params("cli"))
def test_array_cli(row, rng, capsys, tmp_path, tiny_library):
    src, out_dir = tmp_path / "in.tif", tmp_path / "out"
    out_dir.mkdir()
    row.save(src, row.make(rng))
    before = digest(src)
    z = [] if row.model == NETWORK else ["-z", "2"]
    code, _, stderr = run_cli(capsys, "restore", "-i", src, "-o", out_dir / "r.tif",
                              "-m", row.model, *z, "-q")
    if isinstance(row.cli, str):
        assert code == 1 and row.cli in error_line(stderr)
        assert os.listdir(out_dir) == []
    else:
        assert code == 0, stderr
        result = read_volume(out_dir / "r.tif").data
        assert result.shape == row.cli and np.isfinite(result).all()
        assert os.listdir(out_dir) == ["r.tif"]
    assert digest(src) == before


@pytest.mark.parametrize("row", FILE_PARAMS)
def test_file_cli(row, tmp_path, rng, capsys):
    path, before = make_file(row, tmp_path, rng)
    out = tmp_path / "out"
    out.mkdir()
    code, _, stderr = run_cli(capsys, "restore", "-i", path, "-o", out / "r.tif", "-m", "linear",
                              "-z", "2", "-q")
    assert code == 1 and row.lazy in error_line(stderr)
    assert os.listdir(out) == []
    assert (digest(path) if path.exists() else None) == before


@pytest.mark.parametrize("row", WARN_PARAMS)
def test_file_read_with_a_warning_cli(row, tmp_path, rng, capsys):
    path, before = make_file(row, tmp_path, rng)
    out = tmp_path / "out"
    out.mkdir()
    code, _, stderr = run_cli(capsys, "restore", "-i", path, "-o", out / "r.tif", "-m", "linear",
                              "-q")
    warning, *rest = stderr.splitlines()
    assert code == 0 and warning.startswith("volsr: warning: ") and row.warning in warning
    z = default_z_factor(row.spacing)  # the spacing said, not the header's fallback
    assert len(rest) == 1 and f"(linear x{z};" in rest[0]  # the line saying what was written
    assert read_volume(out / "r.tif").data.shape == (row.shape[0] * z, *row.shape[1:])
    code, stdout, stderr = run_cli(capsys, "info", path)
    assert code == 0 and row.warning in stderr
    assert f"spacing: {' x '.join(f'{s:g}' for s in row.spacing)}" in stdout
    assert digest(path) == before


@pytest.mark.parametrize("spacing", [-2.0, 0.0, float("nan")], ids=["negative", "zero", "nan"])
def test_nonsense_z_spacing_counts_as_missing(spacing, tmp_path, rng, capsys):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, smooth(rng).astype(np.uint16), imagej=True, resolution=(5.0, 5.0),
                     metadata={"spacing": spacing, "unit": "um", "axes": "ZYX"})
    assert read_volume(path).spacing == (1.0, 0.2, 0.2)  # as without the metadata
    [(_, kwargs, _)] = get_reader(str(path))(str(path))
    assert tuple(kwargs["scale"]) == (1.0, 0.2, 0.2)
    code, stdout, _ = run_cli(capsys, "info", path)
    assert code == 0 and "spacing: 1 x 0.2 x 0.2 µm" in stdout


def test_oblique_nifti_keeps_its_directions(tmp_path, rng, capsys):
    nib = pytest.importorskip("nibabel")
    turn = 0.3
    rotation = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0],
                         [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.5, 0.5, 2.0])
    affine[:3, 3] = [10.0, 20.0, 30.0]
    nib.save(nib.Nifti1Image(smooth(rng, (16, 16, 6)), affine), tmp_path / "obl.nii.gz")
    before = digest(tmp_path / "obl.nii.gz")
    assert read_volume(tmp_path / "obl.nii.gz").spacing == (2.0, 0.5, 0.5)
    code, _, stderr = run_cli(capsys, "restore", "-i", tmp_path / "obl.nii.gz", "-o",
                              tmp_path / "iso.nii.gz", "-m", "linear", "-q")
    assert code == 0, stderr
    out = nib.load(tmp_path / "iso.nii.gz")
    assert out.shape == (16, 16, 24)  # auto z-factor 2.0 / 0.5
    # Same directions, z column a quarter as long, first slice a slab centre lower.
    np.testing.assert_allclose(out.affine[:3, :2], affine[:3, :2], atol=1e-6)
    np.testing.assert_allclose(out.affine[:3, 2], affine[:3, 2] / 4, atol=1e-6)
    np.testing.assert_allclose(out.affine[:3, 3], affine[:3, 3] + affine[:3, 2] * (0.125 - 0.5),
                               atol=1e-5)
    assert digest(tmp_path / "obl.nii.gz") == before


def test_unwritable_output_folder(tmp_path, capsys, monkeypatch, smooth_volume):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root ignores modes: say what a user would see
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw:
                            False if Path(p) == locked and mode & os.W_OK else real(p, mode, **kw))
    tifffile.imwrite(tmp_path / "in.tif", smooth_volume)
    try:
        code, _, stderr = run_cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o",
                                  locked / "r.tif", "-m", "linear")
        assert code == 1 and "output folder is not writable" in error_line(stderr)
        with pytest.raises(VolumeIOError, match="not writable"):
            write_image(str(locked / "r.tif"), smooth_volume, {})
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o755)


def _disk_full_midway(monkeypatch, suffix):
    """The writer of ``suffix`` writes everything, then the disk is full."""
    real = volsr_io.WRITERS[suffix]

    def full(path, volume):
        real(path, volume)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setitem(volsr_io.WRITERS, suffix, full)


@pytest.mark.parametrize("suffix", [".tif", ".nii.gz", ".zarr"])
def test_full_disk_leaves_no_partial_output(suffix, tmp_path, capsys, monkeypatch, rng):
    src, out_dir = tmp_path / "in.tif", tmp_path / "out"
    out_dir.mkdir()
    tifffile.imwrite(src, smooth(rng))
    _disk_full_midway(monkeypatch, suffix)
    code, _, stderr = run_cli(capsys, "restore", "-i", src, "-o", out_dir / f"r{suffix}",
                              "-m", "linear", "-z", "2", "-q")
    assert code == 1 and "No space left on device" in error_line(stderr)
    assert os.listdir(out_dir) == []  # neither the output nor a temporary
    with pytest.raises(VolumeIOError, match="No space left"):
        write_image(str(out_dir / f"w{suffix}"), smooth(rng), {})
    assert os.listdir(out_dir) == []


def test_full_disk_keeps_the_previous_output(tmp_path, capsys, monkeypatch, rng):
    src, out = tmp_path / "in.tif", tmp_path / "r.tif"
    tifffile.imwrite(src, smooth(rng))
    assert run_cli(capsys, "restore", "-i", src, "-o", out, "-m", "linear", "-z", "2",
                   "-q")[0] == 0
    before = digest(out)
    _disk_full_midway(monkeypatch, ".tif")
    code, _, stderr = run_cli(capsys, "restore", "-i", src, "-o", out, "-m", "cubic", "-z", "2",
                              "--overwrite", "-q")
    assert code == 1 and "No space left" in error_line(stderr)
    assert digest(out) == before
    assert sorted(os.listdir(tmp_path)) == ["in.tif", "r.tif"]


def test_full_disk_during_training_leaves_no_partial_checkpoint(tmp_path, capsys, monkeypatch,
                                                                rng):
    import safetensors.torch

    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(tmp_path / "lib"))
    tifffile.imwrite(tmp_path / "clean.tif", smooth(rng, (12, 32, 32)), imagej=True,
                     metadata={"axes": "ZYX"})

    def full(state, path, *args, **kwargs):
        Path(path).write_bytes(b"half a tensor")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    (tmp_path / "c.json").write_text(json.dumps({"checkpoint_every": 2}))
    code, _, stderr = run_cli(capsys, "train", "--target", tmp_path / "clean.tif", "-z", "2",
                              "--name", "m", "--family", "srunet", "--preset", "tiny", "--patch",
                              "4,16,16", "--batch-size", "2", "--steps", "4", "-c",
                              tmp_path / "c.json", "-q")
    assert code == 1 and "No space left on device" in error_line(stderr)
    leftovers = [p for p in (tmp_path / "lib").rglob("*") if p.is_file()]
    assert leftovers == [] and list_library() == []


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink"])
def test_output_equal_to_input_is_refused(spelling, tmp_path, capsys, anisotropic_tiff):
    src, _ = anisotropic_tiff
    before = digest(src)
    out = {"same": src, "dotted": src.parent / "sub" / ".." / src.name,
           "symlink": tmp_path / "link.tif"}[spelling]
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.tif").symlink_to(src)
    code, _, stderr = run_cli(capsys, "restore", "-i", src, "-o", out, "--overwrite")
    assert code == 1 and "equals the input path" in error_line(stderr)
    assert digest(src) == before


def test_output_folder_equal_to_input_folder_is_refused(tmp_path, capsys, anisotropic_tiff):
    folder = anisotropic_tiff[0].parent
    before = digest(folder)
    code, _, stderr = run_cli(capsys, "restore", "-i", folder, "-o", folder)
    assert code == 1 and "equals the input folder" in error_line(stderr)
    assert digest(folder) == before


def test_64_bit_integers_cannot_go_to_tiff(tmp_path, capsys, rng):
    tifffile.imwrite(tmp_path / "in.tif", full_range("int64")(rng))
    code, _, stderr = run_cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o",
                              tmp_path / "r.tif", "-m", "linear", "-z", "2", "--output-dtype",
                              "input", "-q")
    assert code == 1 and "TIFF cannot store int64" in error_line(stderr)
    assert sorted(os.listdir(tmp_path)) == ["in.tif"]
    code, _, stderr = run_cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o",
                              tmp_path / "r.nii.gz", "-m", "linear", "-z", "2", "--output-dtype",
                              "input", "-q")
    assert code == 0, stderr
    assert read_volume(tmp_path / "r.nii.gz").data.dtype == np.int64


@pytest.mark.parametrize("row", MODEL_PARAMS)
def test_model_engine_and_cli(row, tmp_path, capsys, smooth_volume, tiny_library):
    folder = damaged_model(tmp_path, row)
    before = digest(folder)
    with pytest.raises(ValueError, match=re.escape(row.message)):
        get_restorer(str(folder))
    tifffile.imwrite(tmp_path / "in.tif", smooth_volume)
    code, _, stderr = run_cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o",
                              tmp_path / "r.tif", "-m", folder)
    assert code == 1 and row.message in error_line(stderr)
    assert not (tmp_path / "r.tif").exists()
    assert digest(folder) == before
    assert not (folder.parent / "pwned").exists()


def test_checkpoint_with_a_payload_is_refused_on_resume(tmp_path, capsys, rng, tiny_library):
    tifffile.imwrite(tmp_path / "clean.tif", smooth(rng, (12, 32, 32)), imagej=True,
                     metadata={"axes": "ZYX"})
    args = ["train", "--target", tmp_path / "clean.tif", "--name", "ck", "--patch", "4,16,16",
            "--batch-size", "2", "-q"]
    code, _, stderr = run_cli(capsys, *args, "-z", "2", "--family", "srunet", "--preset", "tiny",
                              "--steps", "2")
    assert code == 0, stderr
    state = checkpoint_dir_for(tiny_library / "ck") / "state.pt"
    torch.save({"optimizers": Payload(tmp_path / "pwned")}, state)
    code, _, stderr = run_cli(capsys, *args, "--resume", "--steps", "4")
    assert code == 1 and "refused, nothing in it was run" in error_line(stderr)
    assert not (tmp_path / "pwned").exists()
    assert load_model("ck").config.training["steps"] == 2  # the saved model is untouched


@pytest.mark.parametrize("name", ["../escape", "a/b", "sub\\dir", "/etc/passwd"])
def test_model_names_with_path_separators(name, tmp_path, capsys, smooth_volume, tiny_library):
    with pytest.raises(ValueError, match="path separators|unknown model"):
        get_restorer(name)
    tifffile.imwrite(tmp_path / "in.tif", smooth_volume)
    code, _, stderr = run_cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o",
                              tmp_path / "r.tif", "-m", name)
    assert code == 1 and re.search("path separators|unknown model", error_line(stderr))
    code, _, stderr = run_cli(capsys, "train", "--target", tmp_path / "in.tif", "--name", name,
                              "--dry-run")
    assert code == 1 and "not a valid model name" in error_line(stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "library"]
    assert list_library() == [NETWORK]


def test_ctrl_c_while_reading_writes_nothing(tmp_path, capsys, monkeypatch, anisotropic_tiff):
    src, _ = anisotropic_tiff
    before = digest(src)

    def interrupted(path, lazy=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(CLI_READ_VOLUME, interrupted)
    out = tmp_path / "out"
    out.mkdir()
    code, _, stderr = run_cli(capsys, "restore", "-i", src, "-o", out / "r.tif")
    assert code == 130 and "no output was written" in stderr
    assert os.listdir(out) == [] and digest(src) == before


def test_ctrl_c_while_writing_keeps_the_previous_output(tmp_path, capsys, monkeypatch,
                                                        anisotropic_tiff):
    src, _ = anisotropic_tiff
    out = tmp_path / "r.tif"
    out.write_bytes(b"yesterday's result")

    def interrupted(path, volume):
        path.write_bytes(b"half a TIFF")
        raise KeyboardInterrupt

    monkeypatch.setitem(volsr_io.WRITERS, ".tif", interrupted)
    code, _, stderr = run_cli(capsys, "restore", "-i", src, "-o", out, "--overwrite", "-q")
    assert code == 130 and "interrupted" in stderr
    assert out.read_bytes() == b"yesterday's result"
    assert sorted(os.listdir(tmp_path)) == ["r.tif", "stack.tif"]


def test_sigkill_during_training_loses_at_most_one_checkpoint_interval(tmp_path, capsys, rng,
                                                                       monkeypatch):
    interval = 3
    lib = tmp_path / "lib"
    tifffile.imwrite(tmp_path / "clean.tif", smooth(rng, (12, 32, 32)), imagej=True,
                     metadata={"axes": "ZYX"})
    # Validating every step makes the log show every step; checkpoints every 3.
    (tmp_path / "c.json").write_text(json.dumps(
        {"checkpoint_every": interval, "validate_every": 1, "n_val": 1}))
    data_args = ["--target", str(tmp_path / "clean.tif"), "--name", "k", "--patch", "4,16,16",
                 "--batch-size", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_volsr.cli", "train", *data_args, "-z", "2", "--family",
         "srunet", "--preset", "tiny", "--steps", "100000", "-c", str(tmp_path / "c.json")],
        env=dict(os.environ, NAPARI_VOLSR_MODELS=str(lib)), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    output = ProcessOutput(proc)

    def logged(pattern):
        return [int(m.group(1)) for line in output.lines if (m := re.search(pattern, line))]

    def second_checkpoint(line):
        m = re.search(r"checkpoint saved at step (\d+)", line)
        return m is not None and int(m.group(1)) >= 2 * interval

    try:
        output.wait_for(second_checkpoint)
    finally:
        proc.send_signal(signal.SIGKILL)  # no handler runs: nothing is saved on the way out
        proc.wait(timeout=30)
        output.join()
    seen = max(logged(r"step (\d+)/"))
    checkpoint = checkpoint_dir_for(lib / "k")
    step = json.loads((checkpoint / "checkpoint.json").read_text())["step"]
    assert step % interval == 0 and step >= 2 * interval
    assert seen - step < interval, (seen, step)

    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(lib))
    code, _, stderr = run_cli(capsys, "train", *data_args, "--resume", "--steps", step + 2, "-q")
    assert code == 0, stderr
    training = load_model("k").config.training
    assert training["steps"] == step + 2 and not training["stopped_early"]


def test_volume_smaller_than_the_training_patch(tmp_path, capsys, rng, tiny_library):
    small = smooth(rng, (4, 16, 16))
    tifffile.imwrite(tmp_path / "small.tif", small, imagej=True, metadata={"axes": "ZYX"})
    model = ModelConfig(name="p", task="upsample", z_factor=2,
                        network=network_config("srunet", "tiny"))
    config = TrainingConfig(model=model, source="synthetic", patch_shape=(8, 64, 64))
    with pytest.raises(ValueError, match="use a smaller patch"):
        make_training_data(config, targets=[small])
    code, _, stderr = run_cli(capsys, "train", "--target", tmp_path / "small.tif", "-z", "2",
                              "--name", "p", "--family", "srunet", "--preset", "tiny", "--patch",
                              "8,64,64", "--steps", "2", "-q")
    assert code == 1 and "use a smaller patch" in error_line(stderr)
    assert list_library() == [NETWORK]


@pytest.mark.parametrize("case", ["output-in-the-store", "output-in-its-array", "input-in-output",
                                  "output-in-the-store-by-symlink"])
def test_output_inside_the_input_or_holding_it_is_refused(case, tmp_path, capsys, rng):
    store = write_volume(tmp_path / "in.zarr", Volume(smooth(rng), (0.8, 0.2, 0.2)))
    inner = write_volume(store / "inner.zarr", Volume(smooth(rng), (0.8, 0.2, 0.2)))
    (tmp_path / "link").symlink_to(store)
    source, target, message = {
        "output-in-the-store": (store, store / "res.zarr", "lies inside the input"),
        "output-in-its-array": (store, store / "0", "lies inside the input"),
        "input-in-output": (inner, store, "replacing the output would delete the input"),
        "output-in-the-store-by-symlink": (store, tmp_path / "link" / "r.tif",
                                           "lies inside the input"),
    }[case]
    before = digest(store)
    code, _, stderr = run_cli(capsys, "restore", "-i", source, "-o", target, "-z", "2",
                              "--overwrite", "-q")
    assert code == 1 and message in error_line(stderr)
    with pytest.raises(ValueError, match=message):  # the engine's rule, every door's
        drain(iter_restore_file(source, target, "linear", 2, overwrite=True))
    assert digest(store) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "link"]


def test_sigterm_during_restore_is_an_interrupt(tmp_path, rng):
    src = write_volume(tmp_path / "in.zarr", Volume(smooth(rng, (16, 64, 64)), (0.8, 0.2, 0.2)))
    out = tmp_path / "out.zarr"
    # Thousands of tiny blocks merged into the scratch store beside the output: still
    # running when the signal comes, right after the first block.
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_volsr.cli", "restore", "-i", str(src), "-o", str(out),
         "-m", "linear", "--block-shape", "1,4,4"], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    output = ProcessOutput(proc)
    try:
        output.wait_for(lambda line: line.startswith("restoring"))
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        output.join()
    assert code == 143, output.text
    assert output.lines[-1].strip() == ("volsr: interrupted: terminated (SIGTERM); no output "
                                        "was written"), output.text
    assert "Traceback" not in output.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr"]  # no hidden scratch


@pytest.mark.parametrize("address", SCHEDULER_ROWS.values(), ids=SCHEDULER_ROWS.keys())
def test_scheduler_address_cli(address, tmp_path, capsys, anisotropic_tiff):
    pytest.importorskip("distributed")
    code, _, stderr = run_cli(capsys, "restore", "-i", anisotropic_tiff[0], "-o",
                              tmp_path / "r.zarr", "--scheduler", address)
    line = error_line(stderr)
    assert code == 1 and line.startswith(f"volsr: error: --scheduler: {address!r} is not a dask "
                                         "scheduler address")
    assert not (tmp_path / "r.zarr").exists()


@pytest.mark.parametrize(("spacing", "message"), SPACING_ROWS.values(), ids=SPACING_ROWS.keys())
def test_absurd_voxel_size_cli(spacing, message, tmp_path, capsys, rng):
    src = write_volume(tmp_path / "odd.zarr", Volume(smooth(rng), spacing))
    with pytest.raises(ValueError) as engine:
        get_restorer("linear", spacing=read_volume(src).spacing)
    code, _, stderr = run_cli(capsys, "restore", "-i", src, "-o", tmp_path / "r.tif", "-m",
                              "linear")
    assert code == 1 and error_line(stderr) == f"volsr: error: {engine.value}"
    assert message in stderr
    code, _, stderr = run_cli(capsys, "restore", "-i", src, "-o", tmp_path / "r.zarr", "-m",
                              "linear", "-z", "2", "-q")
    assert code == 0, stderr  # a z-factor given is used


@pytest.mark.parametrize("name", SUFFIX_NAMES)
def test_suffixes_in_any_case_cli(name, tmp_path, capsys, rng):
    data = smooth(rng).astype(np.uint16)
    src = write_volume(tmp_path / name, Volume(data, (0.4, 0.2, 0.2)))
    out = tmp_path / "out"
    out.mkdir()
    code, _, stderr = run_cli(capsys, "restore", "-i", src, "-o", out / name.swapcase(), "-q")
    assert code == 0, stderr
    assert [p.name for p in out.iterdir()] == [name.swapcase()]
    assert read_volume(out / name.swapcase()).data.shape == (16, 32, 32)
    code, _, stderr = run_cli(capsys, "restore", "-i", tmp_path, "-o", tmp_path / "batch", "-q")
    assert code == 0 and [p.name for p in (tmp_path / "batch").iterdir()] == [name], stderr


@pytest.mark.parametrize("row", LIBRARY_PARAMS)
def test_library_variable_cli(row, tmp_path, capsys, monkeypatch, smooth_volume):
    expected = use_library(row, tmp_path, monkeypatch)
    tifffile.imwrite(tmp_path / "in.tif", smooth_volume)
    code, stdout, stderr = run_cli(capsys, "models", "list")
    if expected is None:
        assert code == 1 and row.problem in error_line(stderr)
        code, _, stderr = run_cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o",
                                  tmp_path / "r.tif", "-m", "m")
        assert code == 1 and row.problem in error_line(stderr)
        return
    assert code == 0 and f"no models in {expected} yet" in stderr
    save_tiny(expected / "m")
    code, stdout, stderr = run_cli(capsys, "models", "list")
    assert code == 0 and stdout.splitlines()[1].startswith("m "), stderr
    code, _, stderr = run_cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o",
                              tmp_path / "r.tif", "-m", "m", "-q")
    assert code == 0, stderr


def test_a_model_saved_again_while_the_cli_loads_it(tmp_path, capsys, monkeypatch, smooth_volume,
                                                   tiny_library):
    from napari_volsr.engine import model_cache, models
    from napari_volsr.engine.models import save_model

    real, calls = models._load_weights, []

    def racing(net, path):
        if not calls:  # `volsr train --name tiny-x2 --overwrite` finishing right now
            model = ModelConfig(name=NETWORK, task="upsample", z_factor=2,
                                network=network_config("rcan", "tiny"))
            save_model(tiny_library / NETWORK, model, build_network(model), overwrite=True)
        calls.append(path)
        real(net, path)

    monkeypatch.setattr(models, "_load_weights", racing)
    model_cache._LOADED.clear()
    tifffile.imwrite(tmp_path / "in.tif", smooth_volume)
    code, _, stderr = run_cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o",
                              tmp_path / "r.tif", "-m", NETWORK, "-q")
    assert code == 0 and "(RCAN x2;" in stderr.splitlines()[-1], stderr
