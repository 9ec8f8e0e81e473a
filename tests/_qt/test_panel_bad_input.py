"""Bad arrays, models and concurrent runs through the Restore panel (rows: bad_input_cases)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from bad_input_cases import (
    LIBRARY_PARAMS,
    MODEL_PARAMS,
    NETWORK,
    array_params,
    damaged_model,
    use_library,
)
from helpers import digest, error_line, run_cli, save_tiny, smooth

from napari_volsr.engine import predict
from napari_volsr.engine.io import Volume, write_volume
from napari_volsr.engine.predict import restore
from napari_volsr.engine.restorers import get_restorer

# The float64-beyond-float32 row: numpy warns about the overflow before restore refuses it.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")


@pytest.fixture
def panel(restore_panel, errors):
    return restore_panel


def wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)


def test_array_panel(qtbot, panel, errors, tiny_library):
    # Every row through one panel: a viewer per row cost more than all the restores (about
    # 24 x 2 s of set-up and tear-down), and a panel that has just refused one array must
    # take the next as a fresh one does, so the loop asserts that too.
    viewer, widget = panel
    for param in array_params("panel"):
        (row,), name = param.values, param.id
        viewer.layers.clear()
        errors.clear()
        data = row.make(np.random.default_rng(0))
        layer = viewer.add_image(data, name="vol")
        widget.refresh_models()
        widget.image.value = layer
        widget.model.value = row.model
        if row.model != NETWORK:
            widget.z_factor.value = 2
        widget._on_run()
        wait_idle(qtbot, widget)
        if isinstance(row.panel, str):
            assert any(row.panel in message for message in errors), (name, errors)
            assert [x.name for x in viewer.layers] == ["vol"], name
        else:
            assert errors == [], name
            assert viewer.layers[-1].data.shape == row.panel, name
        assert widget.run_button.enabled, name
        np.testing.assert_array_equal(layer.data, data, err_msg=name)


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
    code, _, stderr = run_cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o",
                              tmp_path / "o.tif", "-m", "cubic", "-z", "2", "--block-shape",
                              "8,64,64", "-q")
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


@pytest.mark.parametrize("row", MODEL_PARAMS)
def test_model_panel(row, tmp_path, qtbot, panel, errors, smooth_volume, tiny_library):
    viewer, widget = panel
    folder = damaged_model(tmp_path, row)
    viewer.add_image(smooth_volume, name="vol")
    if widget.add_model_folder(folder):  # the config is fine: the weights fail at Restore
        widget._on_run()
        wait_idle(qtbot, widget)
    assert any(row.message in message for message in errors), errors
    assert [x.name for x in viewer.layers] == ["vol"]
    assert not (folder.parent / "pwned").exists()


def test_z_factor_that_disagrees_with_the_model(tmp_path, capsys, qtbot, panel, smooth_volume,
                                                tiny_library):
    with pytest.raises(ValueError, match="trained for z-factor 2, not 4"):
        get_restorer(NETWORK, 4)
    tifffile.imwrite(tmp_path / "in.tif", smooth_volume)
    code, _, stderr = run_cli(capsys, "restore", "-i", tmp_path / "in.tif", "-o",
                              tmp_path / "r.tif", "-m", NETWORK, "-z", "4")
    assert code == 1 and "trained for z-factor 2" in error_line(stderr)
    viewer, widget = panel
    viewer.add_image(smooth_volume, name="vol", scale=(0.8, 0.2, 0.2))  # suggests x4
    widget.refresh_models()
    widget.model.value = NETWORK
    assert widget.z_factor.value == 2 and not widget.z_factor.enabled  # the model decides


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
                                                            smooth_volume, tiny_library):
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
    results = [x for x in viewer.layers if x.name.startswith(f"vol [{NETWORK} x2]")]
    assert len(results) == 2
    for result in results:
        np.testing.assert_allclose(result.data, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(layer.data, smooth_volume)


@pytest.mark.parametrize("row", LIBRARY_PARAMS)
def test_library_variable_panel(row, tmp_path, monkeypatch, make_napari_viewer, errors):
    from napari_volsr._qt.restore_widget import RestoreWidget
    from napari_volsr.engine.restorers import BASELINES

    expected = use_library(row, tmp_path, monkeypatch)
    if expected is not None:
        save_tiny(expected / "m")
    viewer = make_napari_viewer()
    widget = RestoreWidget(viewer)  # opens whatever the variable holds, without an error
    models = [c for c in widget.model.choices if c not in BASELINES]
    assert models == ([] if expected is None else ["m"]) and errors == []


def test_a_model_saved_again_while_the_panel_loads_it(tmp_path, qtbot, panel, errors,
                                                      smooth_volume, tiny_library, monkeypatch):
    from napari_volsr.engine import model_cache, models
    from napari_volsr.engine.config import ModelConfig
    from napari_volsr.engine.registry import build_network, network_config

    real, calls = models._load_weights, []

    def racing(net, path):
        if not calls:  # a training run saving the model under the same name right now
            model = ModelConfig(name=NETWORK, task="upsample", z_factor=2,
                                network=network_config("rcan", "tiny"))
            models.save_model(tiny_library / NETWORK, model, build_network(model),
                              overwrite=True)
        calls.append(path)
        real(net, path)

    viewer, widget = panel
    viewer.add_image(smooth_volume, name="vol")
    widget.refresh_models()
    widget.model.value = NETWORK
    monkeypatch.setattr(models, "_load_weights", racing)
    model_cache._LOADED.clear()
    widget._on_run()
    wait_idle(qtbot, widget)
    assert errors == [] and len(calls) == 2
    assert viewer.layers[-1].metadata["volsr"]["family"] == "rcan"
