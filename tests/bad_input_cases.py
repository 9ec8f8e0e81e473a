"""Bad input, faults and untrusted files: the one case table every surface is tried with.

Each row is one thing a scientist might feed the plugin. Array rows go through the engine
(``restore``), the ``volsr`` command (the array saved as a TIFF) and the Restore panel; file
rows through the engine reader, napari's reader and ``volsr restore``; model rows through
``get_restorer``, ``volsr restore -m`` and the panel. Each surface's tests live with that
surface (tests/engine, tests/cli, tests/_qt); every row asserts a specific message (or a
correct result) and that the input is untouched.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from helpers import TINY_NETWORK, digest, save_tiny, smooth

from napari_volsr.engine.io import Volume, write_volume
from napari_volsr.engine.predict import restore
from napari_volsr.engine.restorers import get_restorer

NETWORK = TINY_NETWORK  # a saved, untrained tiny GAN generator (z x2, halo 5) in the library


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


def full_range(dtype):
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
    **{dt: ArrayRow(full_range(dt), OUT, OUT, OUT) for dt in DTYPES},
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


def array_params(surface):
    return [pytest.param(row, id=name) for name, row in ARRAY_ROWS.items()
            if getattr(row, surface) is not None]


def restorer_args(row) -> dict:
    return {"model": row.model} if row.model == NETWORK else {"model": row.model, "z_factor": 2}


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


def _ome_zarr(edit):
    """An OME-Zarr volume whose multiscales entry ``edit`` damages."""
    def make(path, rng):
        write_volume(path, Volume(smooth(rng), (1.0, 1.0, 1.0)))
        attrs = json.loads((path / ".zattrs").read_text())
        edit(attrs["multiscales"], attrs["multiscales"][0])
        (path / ".zattrs").write_text(json.dumps(attrs))
    return make


def _imagej_edited(old: bytes, new: bytes):
    """An ImageJ stack whose description has ``old`` replaced (same length: offsets hold)."""
    def make(path, rng):
        _tiff(path, rng)
        raw = path.read_bytes()
        assert len(old) == len(new) and old in raw
        path.write_bytes(raw.replace(old, new, 1))
    return make


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
    "imagej-counts-contradict": FileRow("ij3.tif", _imagej_edited(b"slices=8\n", b"slices=3\n"),
                                        "contradicts itself: images=8 but",
                                        "contradicts itself: images=8 but"),
    "imagej-count-not-a-number": FileRow("ijx.tif", _imagej_edited(b"images=8", b"images=x"),
                                         "malformed ImageJ metadata (images='x'",
                                         "malformed ImageJ metadata (images='x'"),
    **{f"ome-zarr-{name}": FileRow(f"{name}.zarr", _ome_zarr(edit), "malformed OME-Zarr metadata",
                                   "malformed OME-Zarr metadata")
       for name, edit in {
           "no-entries": lambda ms, entry: ms.clear(),
           "no-datasets": lambda ms, entry: entry.pop("datasets"),
           "missing-array": lambda ms, entry: entry["datasets"][0].update(path="gone"),
           "axes-not-names": lambda ms, entry: entry.update(axes=[1, 2, 3]),
           "short-scale": lambda ms, entry: entry["datasets"][0]["coordinateTransformations"][0]
           .update(scale=[1.0, 1.0]),
           "text-in-scale": lambda ms, entry: entry["datasets"][0]["coordinateTransformations"][0]
           .update(scale=["a", 1.0, 1.0]),
       }.items()},
}
FILE_PARAMS = [pytest.param(row, id=name) for name, row in FILE_ROWS.items()]

ANISOTROPIC = (0.8, 0.2, 0.2)  # what the files below hold: auto z-factor 4


def _zarr_chunk_lost(path, rng):
    write_volume(path, Volume(smooth(rng, (8, 100, 100)), ANISOTROPIC))  # 2 x 2 chunks
    (path / "0" / "0" / "1" / "1").unlink()  # NGFF nests chunk keys: "/" separates


def _nifti_pixdim(pixdim):
    def make(path, rng):
        import nibabel as nib

        img = nib.Nifti1Image(smooth(rng, (32, 32, 8)), np.diag([0.2, 0.2, 0.8, 1.0]))
        img.header["pixdim"][1:4] = pixdim  # the sform keeps the affine's voxel size
        nib.save(img, path)
    return make


def _two_series(path, rng):
    with tifffile.TiffWriter(path) as tif:
        tif.write(smooth(rng).astype(np.uint16), photometric="minisblack",
                  resolution=(5.0, 5.0), metadata={"axes": "ZYX"})
        tif.write(smooth(rng, (4, 16, 16)).astype(np.uint16), photometric="minisblack")


@dataclass(frozen=True)
class WarnRow:
    """A file that is read, with a warning saying what was assumed; then restored."""

    name: str
    make: Callable[[Path, np.random.Generator], None]
    warning: str
    spacing: tuple  # as read
    shape: tuple  # as read


WARN_ROWS = {
    "zarr-chunk-missing": WarnRow("lost.zarr", _zarr_chunk_lost, "1 of 4 chunks are missing",
                                  ANISOTROPIC, (8, 100, 100)),
    "nifti-pixdim-zero": WarnRow("p0.nii.gz", _nifti_pixdim([0.2, 0.2, 0.0]),
                                 "(pixdim 0.2 x 0.2 x 0) is 0 or invalid", ANISOTROPIC,
                                 (8, 32, 32)),
    "nifti-pixdim-disagrees-with-sform": WarnRow(
        "p1.nii.gz", _nifti_pixdim([1.0, 1.0, 1.0]), "(pixdim 1 x 1 x 1) disagrees with its "
        "affine; the spacing 0.2 x 0.2 x 0.8 (x, y, z) comes from the affine", ANISOTROPIC,
        (8, 32, 32)),
    "tiff-two-series": WarnRow("two.tif", _two_series, "holds 2 image series; reading the first",
                               (1.0, 0.2, 0.2), (8, 32, 32)),
}
WARN_PARAMS = [pytest.param(row, id=name) for name, row in WARN_ROWS.items()]


def make_file(row, tmp_path, rng) -> tuple[Path, str | None]:
    path = tmp_path / row.name
    if row.make is not None:
        row.make(path, rng)
    return path, digest(path) if path.exists() else None


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


def damaged_model(tmp_path: Path, row: ModelRow) -> Path:
    """Save a tiny same-shape RCAN elsewhere than the library, then damage it."""
    folder = tmp_path / "shared" / "from-a-colleague"
    save_tiny(folder, "rcan", 1)
    row.damage(folder)
    return folder


# ---------------------------------------------------------------- places and settings

# Scheduler addresses that cannot name a dask scheduler: refused before any work.
SCHEDULER_ROWS = {
    "no-port": "tcp://node7",
    "http-scheme": "http://node7:8786",
    "port-too-large": "tcp://node7:99999",
    "port-not-a-number": "tcp://node7:dask",
    "no-host": "tcp://:8786",
    "blank": "  ",
    "ipv6-without-brackets": "tcp://::1:8786",
    "space-in-host": "tcp://node 7:8786",
}

# Voxel sizes that ask for no z-upsampling or for an absurd amount (auto z-factor).
SPACING_ROWS = {
    "z-a-million-times-x": ((1e5, 0.1, 0.1), "asks for a z-factor of 1e+06"),
    "z-finer-than-x": ((1e-6, 1.0, 1.0), "needs no z-upsampling"),
    "ratio-beyond-float": ((1e300, 1e-300, 1e-300), "asks for a z-factor of inf"),
}

# Volume file names in other cases than the suffixes are usually written.
SUFFIX_NAMES = ["STACK.TIF", "Stack.Ome.Tiff", "T1.NII.GZ", "t1.Nii", "VOL.ZARR", "vol.Ome.Zarr"]


@dataclass(frozen=True)
class LibraryRow:
    """A value of NAPARI_VOLSR_MODELS: where it puts the library, or why it cannot hold models."""

    value: Callable[[Path], str]  # from the test's folder (also HOME and the current folder)
    library: Callable[[Path], Path] | None  # None: unusable
    problem: str | None = None


def _a_file(tmp_path: Path, sub: str = "") -> str:
    (tmp_path / "models.txt").write_text("not a folder")
    return str(tmp_path / "models.txt" / sub) if sub else str(tmp_path / "models.txt")


LIBRARY_ROWS = {
    "home-tilde": LibraryRow(lambda t: "~/volsr-models", lambda t: t / "volsr-models"),
    "pasted-with-newline": LibraryRow(lambda t: f"  {t / 'lib'}\n", lambda t: t / "lib"),
    "relative-to-the-current-folder": LibraryRow(lambda t: "lib", lambda t: t / "lib"),
    "a-file": LibraryRow(_a_file, None, "is a file, not a folder"),
    "inside-a-file": LibraryRow(lambda t: _a_file(t, "sub"), None,
                                "models.txt, which is a file, not a folder"),
}
LIBRARY_PARAMS = [pytest.param(row, id=name) for name, row in LIBRARY_ROWS.items()]


def use_library(row: LibraryRow, tmp_path: Path, monkeypatch) -> Path | None:
    """Set NAPARI_VOLSR_MODELS to the row's value (HOME and the current folder: tmp_path)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NAPARI_VOLSR_MODELS", row.value(tmp_path))
    return None if row.library is None else row.library(tmp_path)
