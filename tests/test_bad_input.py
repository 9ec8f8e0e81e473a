"""Bad input, faults and untrusted files: one row per situation, tried through every surface.

Each table row is one thing a scientist might feed the plugin. Array rows go through the
engine (``restore``), the ``volsr`` command (the array saved as a TIFF) and the Restore
panel; file rows through the engine reader, napari's reader and ``volsr restore``; model
rows through ``get_restorer``, ``volsr restore -m`` and the panel. Every row asserts a
specific message (or a correct result) and that the input is untouched.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage

from napari_volsr._reader import get_reader
from napari_volsr._writer import write_image
from napari_volsr.cli import main
from napari_volsr.engine import io as volsr_io
from napari_volsr.engine import predict
from napari_volsr.engine.config import ModelConfig, TrainingConfig
from napari_volsr.engine.io import Volume, VolumeIOError, read_volume, write_volume
from napari_volsr.engine.models import (
    ModelError,
    import_torch_weights,
    list_library,
    load_model,
    save_model,
)
from napari_volsr.engine.predict import restore
from napari_volsr.engine.registry import build_network, network_config
from napari_volsr.engine.restorers import get_restorer
from napari_volsr.engine.train import checkpoint_dir_for, make_training_data, train

NETWORK = "tiny-x2"  # a saved, untrained tiny GAN generator (z x2, halo 5) in the library
# The float64-beyond-float32 row: numpy warns about the overflow before restore refuses it.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")


# ---------------------------------------------------------------- helpers


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``volsr`` in this process: (exit status, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def error_line(stderr: str) -> str:
    """The one ``volsr: error:`` line a failure prints (never a traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("volsr: error:"), stderr
    return lines[0]


def digest(path: Path) -> str:
    """Content hash of a file or a folder tree (a zarr store)."""
    h = hashlib.sha256()
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def save_tiny(folder: Path, family="gan", z_factor=2, **fields) -> Path:
    torch.manual_seed(0)
    task = "restore" if z_factor == 1 else "upsample"
    config = ModelConfig(name=folder.name, task=task, z_factor=z_factor,
                         network=network_config(family, "tiny"), **fields)
    return save_model(folder, config, build_network(config))


def smooth(rng, shape=(8, 32, 32), scale=1000.0) -> np.ndarray:
    vol = ndimage.gaussian_filter(rng.random(shape), 1.5)
    return ((vol - vol.min()) / np.ptp(vol) * scale + 10).astype(np.float32)


@pytest.fixture
def library(tmp_path, monkeypatch):
    """A model library holding the tiny x2 network."""
    root = tmp_path / "library"
    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(root))
    save_tiny(root / NETWORK)
    return root


@pytest.fixture
def errors(monkeypatch):
    """Messages the panels show as error notifications."""
    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_error", messages.append)
    return messages


@pytest.fixture
def panel(make_napari_viewer, errors):
    from napari_volsr._qt.restore_widget import RestoreWidget

    viewer = make_napari_viewer()
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Restore")
    return viewer, widget


def wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)


# ---------------------------------------------------------------- arrays

# How a row's array is stored for the command line.
def _plain(path, data):
    tifffile.imwrite(path, data)


def _hyperstack(axes):
    def save(path, data):  # arrays are [T]CZYX; ImageJ stores TZCYX
        data = np.moveaxis(data, -4, -3)
        tifffile.imwrite(path, data, imagej=True, metadata={"axes": axes})
    return save


def _rgb(path, data):
    tifffile.imwrite(path, data, photometric="rgb")


def _full_range(dtype):
    def make(rng):
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, size=(8, 32, 32), dtype=dtype, endpoint=True)
        data[0, 0, :2] = info.max, info.min  # the extremes must survive the float32 trip
        return data
    return make


def _with(value, dtype=np.float32):
    def make(rng):
        data = smooth(rng).astype(dtype)
        data[3, 4, 5] = value
        return data
    return make


@dataclass(frozen=True)
class ArrayRow:
    """One bad array. Per surface: a message fragment (refused), an output shape, or None (n/a)."""

    make: Callable[[np.random.Generator], np.ndarray]
    engine: str | tuple | None
    cli: str | tuple | None
    panel: str | tuple | None
    save: Callable = _plain
    model: str = "linear"  # or NETWORK; baselines run with z-factor 2
    check: Callable[[np.ndarray, np.ndarray], None] | None = None  # (input, engine output)


def _per_channel(data, out):
    for c in range(data.shape[0]):
        alone = restore(data[c], get_restorer("linear", 2), output_dtype="input").data
        np.testing.assert_array_equal(out[c], alone)


def _all_seven(data, out):
    np.testing.assert_allclose(out, 7.0)


OUT = (16, 32, 32)
DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
ARRAY_ROWS = {
    "2d-image": ArrayRow(lambda rng: smooth(rng, (32, 32)), "2D image", "2D image", "2D image"),
    "4d-channels-per-channel": ArrayRow(
        lambda rng: smooth(rng, (2, 8, 32, 32)), (2, *OUT), (2, *OUT), "split its channels",
        save=_hyperstack("ZCYX"), check=_per_channel),
    "5d-time-and-channels": ArrayRow(
        lambda rng: smooth(rng, (2, 2, 8, 32, 32)), "one time point", "axis 'T'",
        "split its channels or time points", save=_hyperstack("TZCYX")),
    "rgb-channels-last": ArrayRow(
        lambda rng: smooth(rng, (8, 32, 32, 3), 200).astype(np.uint8), "RGB(A) volume",
        (3, *OUT), "RGB image", save=_rgb),
    "bool": ArrayRow(lambda rng: rng.random((8, 32, 32)) > 0.5, OUT, OUT, OUT),
    **{dt: ArrayRow(_full_range(dt), OUT, OUT, OUT) for dt in DTYPES},
    **{dt: ArrayRow(lambda rng, dt=dt: smooth(rng).astype(dt), OUT, OUT, OUT)
       for dt in ("float16", "float32", "float64")},
    "nan-voxel": ArrayRow(_with(np.nan), "NaN or Inf", "NaN or Inf", "NaN or Inf"),
    "inf-voxel": ArrayRow(_with(-np.inf), "NaN or Inf", "NaN or Inf", "NaN or Inf"),
    "float64-beyond-float32": ArrayRow(_with(1e300, np.float64), "float32 range",
                                       "float32 range", "float32 range"),
    "all-nan": ArrayRow(lambda rng: np.full((8, 32, 32), np.nan, np.float32),
                        "no finite values", "no finite values", "no finite values"),
    "empty": ArrayRow(lambda rng: np.zeros((0, 32, 32), np.float32), "empty", None, None),
    "constant-cubic": ArrayRow(lambda rng: np.full((8, 32, 32), 7, np.uint16), OUT, OUT, OUT,
                               model="cubic", check=_all_seven),
    "constant-network": ArrayRow(lambda rng: np.full((8, 32, 32), 7, np.uint16), OUT, OUT, OUT,
                                 model=NETWORK),
    "smaller-than-halo-network": ArrayRow(lambda rng: smooth(rng, (2, 3, 5)), (4, 3, 5),
                                          (4, 3, 5), (4, 3, 5), model=NETWORK),
    "single-voxel": ArrayRow(lambda rng: np.ones((1, 1, 1), np.float32), (2, 1, 1), None,
                             (2, 1, 1)),
}


def _rows(surface):
    return [pytest.param(row, id=name) for name, row in ARRAY_ROWS.items()
            if getattr(row, surface) is not None]


def _restorer_args(row) -> dict:
    return {"model": row.model} if row.model == NETWORK else {"model": row.model, "z_factor": 2}


@pytest.mark.parametrize("row", _rows("engine"))
def test_array_engine(row, rng, library):
    data = row.make(rng)
    before = data.copy()
    restorer = get_restorer(**_restorer_args(row))
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


@pytest.mark.parametrize("row", _rows("cli"))
def test_array_cli(row, rng, capsys, tmp_path, library):
    src, out_dir = tmp_path / "in.tif", tmp_path / "out"
    out_dir.mkdir()
    row.save(src, row.make(rng))
    before = digest(src)
    z = [] if row.model == NETWORK else ["-z", "2"]
    code, _, stderr = cli(capsys, "restore", "-i", src, "-o", out_dir / "r.tif",
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


@pytest.mark.parametrize("row", _rows("panel"))
def test_array_panel(row, rng, qtbot, panel, errors, library):
    viewer, widget = panel
    data = row.make(rng)
    layer = viewer.add_image(data, name="vol")
    widget.refresh_models()
    widget.image.value = layer
    widget.model.value = row.model
    if row.model != NETWORK:
        widget.z_factor.value = 2
    widget._on_run()
    wait_idle(qtbot, widget)
    if isinstance(row.panel, str):
        assert any(row.panel in message for message in errors), errors
        assert [x.name for x in viewer.layers] == ["vol"]
    else:
        assert errors == []
        assert viewer.layers[-1].data.shape == row.panel
    assert widget.run_button.enabled
    np.testing.assert_array_equal(layer.data, data)


def test_block_larger_than_memory_is_refused_everywhere(rng, capsys, tmp_path, qtbot, panel,
                                                        errors, monkeypatch):
    # Pretend 256 KiB are free: a whole-volume block of 8x64x64 needs more, auto blocks fit.
    monkeypatch.setattr(predict, "available_memory", lambda device: 2.0**18)
    monkeypatch.setattr(predict, "memory_budget", lambda device: 2.0**16)
    data = smooth(rng, (8, 64, 64))
    restorer = get_restorer("cubic", 2)
    with pytest.raises(ValueError, match="more than the 0.0 GiB free"):
        restore(data, restorer, block_shape=(8, 64, 64))
    assert restore(data, restorer).data.shape == (16, 64, 64)  # auto shrinks instead

    tifffile.imwrite(tmp_path / "in.tif", data)
    code, _, stderr = cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o",
                          tmp_path / "o.tif", "-m", "cubic", "-z", "2", "--block-shape", "8,64,64",
                          "-q")
    assert code == 1 and "use block shape 'auto' or smaller blocks" in error_line(stderr)
    assert not (tmp_path / "o.tif").exists()

    viewer, widget = panel
    viewer.add_image(data, name="vol")
    widget.z_factor.value = 2
    widget.block_shape.value = "8,64,64"
    widget._on_run()
    wait_idle(qtbot, widget)
    assert any("smaller blocks" in message for message in errors)
    assert [x.name for x in viewer.layers] == ["vol"]


# ---------------------------------------------------------------- files


def _tiff(path, rng):
    tifffile.imwrite(path, smooth(rng).astype(np.uint16), imagej=True, resolution=(5.0, 5.0),
                     metadata={"spacing": 0.8, "unit": "um", "axes": "ZYX"})


def _cut(write, keep=0.5):
    def make(path, rng):
        write(path, rng)
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * keep)])
    return make


def _nifti(path, rng):
    import nibabel as nib

    nib.save(nib.Nifti1Image(smooth(rng, (32, 32, 8)), np.diag([0.2, 0.2, 0.8, 1.0])), path)


def _bytes(content):
    return lambda path, rng: path.write_bytes(content)


def _deflated(path, rng):
    tifffile.imwrite(path, smooth(rng).astype(np.uint16), compression="zlib")


def _damaged_deflate(path, rng):
    _deflated(path, rng)
    with tifffile.TiffFile(path) as tif:
        start, length = tif.pages[3].dataoffsets[0], tif.pages[3].databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[start : start + length] = bytes(length)  # one plane's compressed data, IFDs intact
    path.write_bytes(bytes(raw))


def _pages_lost(path, rng):
    _deflated(path, rng)
    raw = bytearray(path.read_bytes())
    raw[300:2000] = bytes(1700)  # also the second page's IFD: the page chain ends early
    path.write_bytes(bytes(raw))


def _more_planes_claimed(path, rng):
    _tiff(path, rng)
    raw = path.read_bytes()  # same length: the metadata now promises 9 planes of 8
    path.write_bytes(raw.replace(b"images=8\n", b"images=9\n", 1)
                     .replace(b"slices=8\n", b"slices=9\n", 1))


def _time_series(path, rng):
    tifffile.imwrite(path, smooth(rng, (3, 8, 16, 16)).astype(np.uint16), imagej=True,
                     metadata={"axes": "TZYX"})


def _nifti_5d(path, rng):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 2, 2), np.float32), np.eye(4)), path)


def _zarr_zero_spacing(path, rng):
    write_volume(path, Volume(smooth(rng), (1.0, 1.0, 1.0)))
    attrs = json.loads((path / ".zattrs").read_text())
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [0, 1, 1]
    (path / ".zattrs").write_text(json.dumps(attrs))


@dataclass(frozen=True)
class FileRow:
    """A bad input file: its name, how to make it, what reading it eagerly and lazily says."""

    name: str
    make: Callable[[Path, np.random.Generator], None] | None
    eager: str  # engine reader and napari's reader
    lazy: str  # volsr restore reads lazily, block by block


FILE_ROWS = {
    "missing-file": FileRow("gone.tif", None, "no such file", "no such file"),
    "empty-file": FileRow("empty.tif", _bytes(b""), "the file is empty", "the file is empty"),
    "truncated-tiff": FileRow("cut.tif", _cut(_tiff), "truncated", "truncated"),
    "corrupted-tiff-header": FileRow("junk.tif", _bytes(b"II*\x00" + bytes(range(256)) * 4),
                                     "not a readable TIFF", "not a readable TIFF"),
    "corrupted-tiff-data": FileRow("zbad.tif", _damaged_deflate, "not a readable TIFF",
                                   "damaged image data"),
    "tiff-pages-lost": FileRow("lost.tif", _pages_lost, "metadata describes (8, 32, 32)",
                               "metadata describes (8, 32, 32)"),
    "tiff-promising-more-planes": FileRow("ij9.tif", _more_planes_claimed,
                                          "truncated", "truncated"),
    "tiff-time-series": FileRow("t.tif", _time_series, "axis 'T' of size 3",
                                "axis 'T' of size 3"),
    "truncated-nifti-gz": FileRow("cut.nii.gz", _cut(_nifti), "not a readable NIfTI",
                                  "not a readable NIfTI"),
    "truncated-nifti": FileRow("cut.nii", _cut(_nifti, 0.6), "not a readable NIfTI",
                               "not a readable NIfTI"),
    "corrupted-nifti": FileRow("junk.nii.gz", _bytes(b"\x1f\x8b\x08junk" * 20),
                               "not a readable NIfTI", "not a readable NIfTI"),
    "nifti-5d": FileRow("t.nii.gz", _nifti_5d, "5-D NIfTI", "5-D NIfTI"),
    "zarr-zero-voxel-size": FileRow("z.zarr", _zarr_zero_spacing, "positive and finite",
                                    "positive and finite"),
    "unsupported-suffix": FileRow("photo.png", _bytes(b"\x89PNG"), "unsupported format",
                                  "unsupported format"),
}
FILE_PARAMS = [pytest.param(row, id=name) for name, row in FILE_ROWS.items()]


def _make_file(row, tmp_path, rng) -> tuple[Path, str | None]:
    path = tmp_path / row.name
    if row.make is not None:
        row.make(path, rng)
    return path, digest(path) if path.exists() else None


@pytest.mark.parametrize("row", FILE_PARAMS)
def test_file_engine_and_napari_reader(row, tmp_path, rng):
    path, before = _make_file(row, tmp_path, rng)
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


@pytest.mark.parametrize("row", FILE_PARAMS)
def test_file_cli(row, tmp_path, rng, capsys):
    path, before = _make_file(row, tmp_path, rng)
    out = tmp_path / "out"
    out.mkdir()
    code, _, stderr = cli(capsys, "restore", "-i", path, "-o", out / "r.tif", "-m", "linear",
                          "-z", "2", "-q")
    assert code == 1 and row.lazy in error_line(stderr)
    assert os.listdir(out) == []
    assert (digest(path) if path.exists() else None) == before


@pytest.mark.parametrize("spacing", [-2.0, 0.0, float("nan")], ids=["negative", "zero", "nan"])
def test_nonsense_z_spacing_counts_as_missing(spacing, tmp_path, rng, capsys):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, smooth(rng).astype(np.uint16), imagej=True, resolution=(5.0, 5.0),
                     metadata={"spacing": spacing, "unit": "um", "axes": "ZYX"})
    assert read_volume(path).spacing == (1.0, 0.2, 0.2)  # as without the metadata
    [(_, kwargs, _)] = get_reader(str(path))(str(path))
    assert tuple(kwargs["scale"]) == (1.0, 0.2, 0.2)
    code, stdout, _ = cli(capsys, "info", path)
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
    code, _, stderr = cli(capsys, "restore", "-i", tmp_path / "obl.nii.gz", "-o",
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


# ---------------------------------------------------------------- outputs


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
        code, _, stderr = cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o",
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
    code, _, stderr = cli(capsys, "restore", "-i", src, "-o", out_dir / f"r{suffix}",
                          "-m", "linear", "-z", "2", "-q")
    assert code == 1 and "No space left on device" in error_line(stderr)
    assert os.listdir(out_dir) == []  # neither the output nor a temporary
    with pytest.raises(VolumeIOError, match="No space left"):
        write_image(str(out_dir / f"w{suffix}"), smooth(rng), {})
    assert os.listdir(out_dir) == []


def test_full_disk_keeps_the_previous_output(tmp_path, capsys, monkeypatch, rng):
    src, out = tmp_path / "in.tif", tmp_path / "r.tif"
    tifffile.imwrite(src, smooth(rng))
    assert cli(capsys, "restore", "-i", src, "-o", out, "-m", "linear", "-q")[0] == 0
    before = digest(out)
    _disk_full_midway(monkeypatch, ".tif")
    code, _, stderr = cli(capsys, "restore", "-i", src, "-o", out, "-m", "cubic", "--overwrite",
                          "-q")
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
    code, _, stderr = cli(capsys, "train", "--target", tmp_path / "clean.tif", "-z", "2",
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
    code, _, stderr = cli(capsys, "restore", "-i", src, "-o", out, "--overwrite")
    assert code == 1 and "equals the input path" in error_line(stderr)
    assert digest(src) == before


def test_output_folder_equal_to_input_folder_is_refused(tmp_path, capsys, anisotropic_tiff):
    folder = anisotropic_tiff[0].parent
    before = digest(folder)
    code, _, stderr = cli(capsys, "restore", "-i", folder, "-o", folder)
    assert code == 1 and "equals the input folder" in error_line(stderr)
    assert digest(folder) == before


def test_64_bit_integers_cannot_go_to_tiff(tmp_path, capsys, rng):
    tifffile.imwrite(tmp_path / "in.tif", _full_range("int64")(rng))
    code, _, stderr = cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o",
                          tmp_path / "r.tif", "-m", "linear", "--output-dtype", "input", "-q")
    assert code == 1 and "TIFF cannot store int64" in error_line(stderr)
    assert sorted(os.listdir(tmp_path)) == ["in.tif"]
    code, _, stderr = cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o",
                          tmp_path / "r.nii.gz", "-m", "linear", "--output-dtype", "input", "-q")
    assert code == 0, stderr
    assert read_volume(tmp_path / "r.nii.gz").data.dtype == np.int64


# ---------------------------------------------------------------- models


class Payload:
    """Unpickles to a call that creates ``marker``: a model file carrying code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _edit_config(**changes):
    def damage(folder):
        raw = json.loads((folder / "config.json").read_text())
        for key, value in changes.items():
            target = raw
            *parents, last = key.split(".")
            for part in parents:
                target = target[part]
            target[last] = value
        (folder / "config.json").write_text(json.dumps(raw))
    return damage


def _unlink(name):
    return lambda folder: (folder / name).unlink()


def _pickle_instead_of_safetensors(folder):
    (folder / "weights.safetensors").unlink()
    torch.save({"weight": torch.zeros(2), "evil": Payload(folder.parent / "pwned")},
               folder / "weights.pth")


def _two_channels(folder):
    shutil.rmtree(folder)
    save_tiny(folder, "rcan", 1, in_channels=2, out_channels=2)


@dataclass(frozen=True)
class ModelRow:
    """A damaged or untrusted model folder and the message every surface must give."""

    damage: Callable[[Path], None]
    message: str


MODEL_ROWS = {
    "missing-config": ModelRow(_unlink("config.json"), "config.json is missing"),
    "missing-weights": ModelRow(_unlink("weights.safetensors"), "weights.safetensors is missing"),
    "unreadable-config": ModelRow(lambda f: (f / "config.json").write_text("{oops"),
                                  "unreadable JSON"),
    "config-from-newer-version": ModelRow(_edit_config(version=99), "newer than this napari-volsr"),
    "weights-do-not-match-config": ModelRow(_edit_config(**{"network.channels": 8}),
                                            "do not match the config"),
    "garbage-weights": ModelRow(lambda f: (f / "weights.safetensors").write_bytes(bytes(64)),
                                "unreadable safetensors"),
    "pickle-with-payload-instead-of-weights": ModelRow(_pickle_instead_of_safetensors,
                                                       "weights.safetensors is missing"),
    "two-channel-model": ModelRow(_two_channels, "one-channel model"),
}
MODEL_PARAMS = [pytest.param(row, id=name) for name, row in MODEL_ROWS.items()]


@pytest.fixture
def damaged(tmp_path):
    """Save a tiny same-shape RCAN elsewhere than the library, then damage it."""
    def make(row) -> Path:
        folder = tmp_path / "shared" / "from-a-colleague"
        save_tiny(folder, "rcan", 1)
        row.damage(folder)
        return folder
    return make


@pytest.mark.parametrize("row", MODEL_PARAMS)
def test_model_engine_and_cli(row, damaged, tmp_path, capsys, smooth_volume, library):
    folder = damaged(row)
    before = digest(folder)
    with pytest.raises(ValueError, match=re.escape(row.message)):
        get_restorer(str(folder))
    tifffile.imwrite(tmp_path / "in.tif", smooth_volume)
    code, _, stderr = cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o", tmp_path / "r.tif",
                          "-m", folder)
    assert code == 1 and row.message in error_line(stderr)
    assert not (tmp_path / "r.tif").exists()
    assert digest(folder) == before
    assert not (folder.parent / "pwned").exists()


@pytest.mark.parametrize("row", MODEL_PARAMS)
def test_model_panel(row, damaged, qtbot, panel, errors, smooth_volume, library):
    viewer, widget = panel
    folder = damaged(row)
    viewer.add_image(smooth_volume, name="vol")
    if widget.add_model_folder(folder):  # the config is fine: the weights fail at Restore
        widget._on_run()
        wait_idle(qtbot, widget)
    assert any(row.message in message for message in errors), errors
    assert [x.name for x in viewer.layers] == ["vol"]
    assert not (folder.parent / "pwned").exists()


def test_pickled_weights_are_never_unpickled(tmp_path):
    torch.save({"weight": torch.zeros(2), "evil": Payload(tmp_path / "pwned")},
               tmp_path / "model.pt")
    with pytest.raises(ModelError, match="refused"):
        import_torch_weights(tmp_path / "model.pt")
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_with_a_payload_is_refused_on_resume(tmp_path, capsys, rng, library):
    tifffile.imwrite(tmp_path / "clean.tif", smooth(rng, (12, 32, 32)), imagej=True,
                     metadata={"axes": "ZYX"})
    args = ["train", "--target", tmp_path / "clean.tif", "--name", "ck", "--patch", "4,16,16",
            "--batch-size", "2", "-q"]
    code, _, stderr = cli(capsys, *args, "-z", "2", "--family", "srunet", "--preset", "tiny",
                          "--steps", "2")
    assert code == 0, stderr
    state = checkpoint_dir_for(library / "ck") / "state.pt"
    torch.save({"optimizers": Payload(tmp_path / "pwned")}, state)
    code, _, stderr = cli(capsys, *args, "--resume", "--steps", "4")
    assert code == 1 and "refused, nothing in it was run" in error_line(stderr)
    assert not (tmp_path / "pwned").exists()
    assert load_model("ck").config.training["steps"] == 2  # the saved model is untouched


@pytest.mark.parametrize("name", ["../escape", "a/b", "sub\\dir", "/etc/passwd"])
def test_model_names_with_path_separators(name, tmp_path, capsys, smooth_volume, library):
    with pytest.raises(ValueError, match="path separators|unknown model"):
        get_restorer(name)
    tifffile.imwrite(tmp_path / "in.tif", smooth_volume)
    code, _, stderr = cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o", tmp_path / "r.tif",
                          "-m", name)
    assert code == 1 and re.search("path separators|unknown model", error_line(stderr))
    code, _, stderr = cli(capsys, "train", "--target", tmp_path / "in.tif", "--name", name,
                          "--dry-run")
    assert code == 1 and "not a valid model name" in error_line(stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "library"]
    assert list_library() == [NETWORK]


def test_z_factor_that_disagrees_with_the_model(tmp_path, capsys, qtbot, panel, smooth_volume,
                                                library):
    with pytest.raises(ValueError, match="trained for z-factor 2, not 4"):
        get_restorer(NETWORK, 4)
    tifffile.imwrite(tmp_path / "in.tif", smooth_volume)
    code, _, stderr = cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o", tmp_path / "r.tif",
                          "-m", NETWORK, "-z", "4")
    assert code == 1 and "trained for z-factor 2" in error_line(stderr)
    viewer, widget = panel
    viewer.add_image(smooth_volume, name="vol", scale=(0.8, 0.2, 0.2))  # suggests x4
    widget.refresh_models()
    widget.model.value = NETWORK
    assert widget.z_factor.value == 2 and not widget.z_factor.enabled  # the model decides


# ---------------------------------------------------------------- faults


def test_ctrl_c_while_reading_writes_nothing(tmp_path, capsys, monkeypatch, anisotropic_tiff):
    src, _ = anisotropic_tiff
    before = digest(src)

    def interrupted(path, lazy=False):
        raise KeyboardInterrupt

    monkeypatch.setattr("napari_volsr.cli.read_volume", interrupted)
    out = tmp_path / "out"
    out.mkdir()
    code, _, stderr = cli(capsys, "restore", "-i", src, "-o", out / "r.tif")
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
    code, _, stderr = cli(capsys, "restore", "-i", src, "-o", out, "--overwrite", "-q")
    assert code == 130 and "interrupted" in stderr
    assert out.read_bytes() == b"yesterday's result"
    assert sorted(os.listdir(tmp_path)) == ["r.tif", "stack.tif"]


def test_cancel_while_the_panel_reads_a_lazy_file(tmp_path, qtbot, panel, rng):
    from napari_volsr._reader import read_layers

    viewer, widget = panel
    path = write_volume(tmp_path / "big.zarr", Volume(smooth(rng, (16, 64, 64)), (2.0, 1.0, 1.0)))
    before = digest(path)
    [(data, kwargs, _)] = read_layers(str(path))
    assert type(data).__module__.startswith("dask")  # blocks are read while restoring
    viewer.add_image(data, **kwargs)
    widget.model.value = "linear"
    widget.block_shape.value = "2,8,8"  # hundreds of blocks: still reading when cancelled
    widget._on_run()
    worker = widget.worker
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        widget._on_cancel()
    assert [x.name for x in viewer.layers] == ["big"]
    assert "cancelled" in widget.status.value
    assert digest(path) == before


def test_two_restores_started_at_once_from_one_panel(qtbot, panel, errors, smooth_volume):
    viewer, widget = panel
    viewer.add_image(smooth_volume, name="vol", scale=(0.8, 0.2, 0.2))
    widget._on_run()
    first = widget.worker
    widget._on_run()  # a double click
    widget._on_preview()
    assert widget.worker is first
    assert len(errors) == 2 and all("already running" in message for message in errors)
    wait_idle(qtbot, widget)
    assert [x.name for x in viewer.layers] == ["vol", "vol [cubic x4]"]


def test_two_panels_restore_at_once_with_one_cached_network(qtbot, make_napari_viewer, errors,
                                                            smooth_volume, library):
    from napari_volsr._qt.restore_widget import RestoreWidget

    viewer = make_napari_viewer()
    layer = viewer.add_image(smooth_volume, name="vol")
    widgets = [RestoreWidget(viewer) for _ in range(2)]
    for widget in widgets:
        widget.image.value = layer
        widget.model.value = NETWORK
        widget.block_shape.value = "4,10,12"
    for widget in widgets:
        widget._on_run()
    for widget in widgets:
        wait_idle(qtbot, widget)
    assert errors == []
    expected = restore(smooth_volume, get_restorer(NETWORK), block_shape=(4, 10, 12)).data
    results = [x for x in viewer.layers if x.name.startswith("vol [GAN x2]")]
    assert len(results) == 2
    for result in results:
        np.testing.assert_allclose(result.data, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(layer.data, smooth_volume)


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
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()

    def logged(pattern):
        return [int(m.group(1)) for line in list(lines) if (m := re.search(pattern, line))]

    try:
        deadline = time.monotonic() + 90
        while not [s for s in logged(r"checkpoint saved at step (\d+)") if s >= 2 * interval]:
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)  # no handler runs: nothing is saved on the way out
        proc.wait(timeout=30)
        reader.join(timeout=10)
    seen = max(logged(r"step (\d+)/"))
    checkpoint = checkpoint_dir_for(lib / "k")
    step = json.loads((checkpoint / "checkpoint.json").read_text())["step"]
    assert step % interval == 0 and step >= 2 * interval
    assert seen - step < interval, (seen, step)

    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(lib))
    code, _, stderr = cli(capsys, "train", *data_args, "--resume", "--steps", step + 2, "-q")
    assert code == 0, stderr
    training = load_model("k").config.training
    assert training["steps"] == step + 2 and not training["stopped_early"]


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


def test_a_save_killed_midway_leaves_no_phantom_model(library):
    # What a kill during save_model leaves: the hidden temporary, config.json and all.
    phantom = library / f".{NETWORK}.x1y2z3.part"
    phantom.mkdir()
    (phantom / "config.json").write_text((library / NETWORK / "config.json").read_text())
    assert list_library() == [NETWORK]
    assert get_restorer(NETWORK).z_factor == 2



def test_volume_smaller_than_the_training_patch(tmp_path, capsys, rng, library):
    small = smooth(rng, (4, 16, 16))
    tifffile.imwrite(tmp_path / "small.tif", small, imagej=True, metadata={"axes": "ZYX"})
    model = ModelConfig(name="p", task="upsample", z_factor=2,
                        network=network_config("srunet", "tiny"))
    config = TrainingConfig(model=model, source="synthetic", patch_shape=(8, 64, 64))
    with pytest.raises(ValueError, match="use a smaller patch"):
        make_training_data(config, targets=[small])
    code, _, stderr = cli(capsys, "train", "--target", tmp_path / "small.tif", "-z", "2",
                          "--name", "p", "--family", "srunet", "--preset", "tiny", "--patch",
                          "8,64,64", "--steps", "2", "-q")
    assert code == 1 and "use a smaller patch" in error_line(stderr)
    assert list_library() == [NETWORK]
