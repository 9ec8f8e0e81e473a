"""The same invalid restore request through the console, the CLI and the Restore panel.

Every door hands its request to the engine (``get_restorer``, ``iter_restore``, the file
pipeline), so each refuses with the engine's sentence, word for word. A z-factor that
disagrees with a trained model is not a row: the panel cannot ask for one (the model sets
its z-factor there); ``test_z_factor_that_disagrees_with_the_model`` covers the others.
"""

import shutil
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import tifffile
from bad_input_cases import MODEL_ROWS, _with, damaged_model
from helpers import run_cli, smooth

import napari_volsr as vs
from napari_volsr.engine import predict
from napari_volsr.engine.predict import restore
from napari_volsr.engine.restorers import BASELINES, get_restorer

# The beyond-float32 row: numpy warns about the overflow before restore refuses it.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")


def _gone(tmp_path, library, save_tiny):
    save_tiny(library / "gone")
    return "gone"


def _damaged(name):
    return lambda tmp_path, library, save_tiny: str(damaged_model(tmp_path, MODEL_ROWS[name]))


def _little_memory(monkeypatch):
    # 256 KiB free: a whole-volume block of 8x64x64 needs more.
    monkeypatch.setattr(predict, "available_memory", lambda device: 2.0**18)


@dataclass
class Case:
    """One request: the volume, the model (a baseline or made by ``model``), options."""

    id: str
    make: Callable
    expect: str
    baseline: str = "linear"
    z_factor: int | None = 2
    model: Callable | None = None  # (tmp_path, library, save_tiny) -> model name or folder
    spoil: Callable | None = None  # after the panel chose the model: (library) -> None
    block_shape: tuple | None = None
    patch: Callable | None = None  # (monkeypatch) -> None


CASES = [
    Case("2d image", lambda rng: smooth(rng, (32, 32)), "got a 2D image of shape (32, 32)"),
    Case("nan voxel", _with(np.nan), "NaN or Inf values"),
    Case("inf voxel", _with(-np.inf), "NaN or Inf values"),
    Case("beyond float32", _with(1e300, np.float64), "beyond the float32 range"),
    Case("all nan", lambda rng: np.full((8, 32, 32), np.nan, np.float32), "no finite values"),
    Case("block larger than memory", lambda rng: smooth(rng, (8, 64, 64)), "smaller blocks",
         baseline="cubic", block_shape=(8, 64, 64), patch=_little_memory),
    Case("interpolation at z-factor 1", smooth, "cubic interpolation with z-factor 1 returns "
         "the volume unchanged: nothing to do; choose a z-factor from 2 to 16", baseline="cubic",
         z_factor=1),
    Case("unknown model", smooth, "unknown model 'gone'; choose one of: nearest, linear, cubic",
         z_factor=None, model=_gone, spoil=lambda library: shutil.rmtree(library / "gone")),
    Case("weights do not match the config", smooth, "do not match the config", z_factor=None,
         model=_damaged("weights-do-not-match-config")),
    Case("two-channel model", smooth, "one-channel model", z_factor=None,
         model=_damaged("two-channel-model")),
]


def engine_refusal(data, model, case: Case) -> str:
    with pytest.raises(ValueError) as refusal:
        options = {} if case.block_shape is None else {"block_shape": case.block_shape}
        restore(data, get_restorer(model, case.z_factor), **options)
    return str(refusal.value)


def console_refusal(data, model, case: Case) -> str:
    options = {} if case.block_shape is None else {"block_shape": case.block_shape}
    with pytest.raises(ValueError) as refusal:
        vs.restore(data, model=model, z_factor=case.z_factor, **options)
    return str(refusal.value)


def cli_refusal(data, model, case: Case, tmp_path, capsys) -> str:
    tifffile.imwrite(tmp_path / "in.tif", data)
    (tmp_path / "out").mkdir()
    argv = ["restore", "-i", tmp_path / "in.tif", "-o", tmp_path / "out" / "r.tif", "-m", model,
            "-q"]
    if case.z_factor is not None:
        argv += ["-z", case.z_factor]
    if case.block_shape is not None:
        argv += ["--block-shape", ",".join(map(str, case.block_shape))]
    code, _, stderr = run_cli(capsys, *argv)
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("volsr: error: "), stderr
    assert list((tmp_path / "out").iterdir()) == []
    return lines[0].removeprefix("volsr: error: ")


def open_panel(data, model, case: Case, make_napari_viewer):
    from napari_volsr._qt.restore_widget import RestoreWidget

    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="vol")
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Restore")
    widget.image.value = layer
    if model in BASELINES:
        widget.model.value = model
    elif case.model is _gone:
        widget.refresh_models()
        widget.model.value = model
    else:
        assert widget.add_model_folder(model)  # its config is fine: the refusal comes later
    if case.z_factor is not None:
        widget.z_factor.value = case.z_factor
    if case.block_shape is not None:
        widget.block_shape.value = ",".join(map(str, case.block_shape))
    return viewer, widget


def panel_refusal(viewer, widget, qtbot, errors) -> str:
    widget._on_run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert [layer.name for layer in viewer.layers] == ["vol"]
    assert widget.run_button.enabled
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_every_door_refuses_with_the_engines_sentence(case, rng, tmp_path, library, save_tiny,
                                                      capsys, make_napari_viewer, qtbot, errors,
                                                      monkeypatch):
    data = case.make(rng)
    before = data.copy()
    model = case.baseline if case.model is None else case.model(tmp_path, library, save_tiny)
    if case.patch is not None:
        case.patch(monkeypatch)
    viewer, widget = open_panel(data, model, case, make_napari_viewer)
    if case.spoil is not None:
        case.spoil(library)
    sentence = engine_refusal(data, model, case)
    assert case.expect in sentence
    assert console_refusal(data, model, case) == sentence
    assert cli_refusal(data, model, case, tmp_path, capsys) == sentence
    assert panel_refusal(viewer, widget, qtbot, errors) == sentence
    np.testing.assert_array_equal(data, before)


def test_a_result_larger_than_memory_is_refused_before_any_work(tmp_path, capsys, monkeypatch,
                                                                 make_napari_viewer, qtbot, errors):
    import dask.array as da
    import zarr

    from napari_volsr.engine.io import VolsrWarning, read_volume

    def no_reading(*args, **kwargs):
        raise AssertionError("the volume was read before the refusal")

    monkeypatch.setattr(predict, "percentile_normalization", no_reading)
    monkeypatch.setattr(predict, "host_memory", lambda: 16.0 * 2**30)  # the same in every door
    huge = da.zeros((20_000, 2_000, 2_000), dtype=np.uint16)  # 149 GiB, planes of 8 MiB
    with pytest.raises(ValueError) as refusal:
        restore(huge, get_restorer("cubic", 2))
    sentence = str(refusal.value)
    assert "(40000, 2000, 2000) voxels" in sentence and "write it to a zarr store" in sentence
    with pytest.raises(ValueError) as console:
        vs.restore(huge, model="cubic", z_factor=2)
    assert str(console.value) == sentence

    from napari_volsr._qt.restore_widget import RestoreWidget

    viewer = make_napari_viewer()
    viewer.add_image(huge, name="vol", contrast_limits=(0, 1))
    widget = RestoreWidget(viewer)
    widget.model.value = "cubic"
    widget.z_factor.value = 2
    widget.output_dtype.value = "auto"  # the engine's default
    assert panel_refusal(viewer, widget, qtbot, errors) == sentence

    store = tmp_path / "huge.zarr"  # no chunk written: all read as zeros
    zarr.create_array(str(store), shape=huge.shape, dtype="uint16", chunks=(100, 1000, 1000),
                      zarr_format=2)
    with pytest.warns(VolsrWarning, match="800 of 800 chunks are missing and read as the "
                                          "fill value 0"):
        volume = read_volume(store, lazy=True)
    with pytest.raises(ValueError) as engine:
        restore(volume.data, get_restorer("cubic", 2))
    code, _, stderr = run_cli(capsys, "restore", "-i", store, "-o", tmp_path / "r.tif", "-z", 2)
    assert code == 1 and stderr.splitlines()[-1] == f"volsr: error: {engine.value}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.zarr"]
