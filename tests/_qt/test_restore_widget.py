import numpy as np
import pytest
from helpers import save_tiny

from napari_volsr._qt import _restore_logic as logic
from napari_volsr._qt.restore_widget import RestoreWidget


@pytest.fixture
def viewer_widget(restore_panel):
    return restore_panel


def _wait(qtbot, widget):
    # The panel forgets its worker in the 'finished' handler, on the main thread; a
    # waitSignal set up after start could miss a very quick worker's signal.
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)


def _run(qtbot, widget):
    widget._on_run()
    assert widget.worker is not None
    _wait(qtbot, widget)


def test_restore_adds_layer_with_slab_geometry(qtbot, viewer_widget, smooth_volume):
    viewer, widget = viewer_widget
    layer = viewer.add_image(smooth_volume, name="stack", scale=(0.8, 0.2, 0.2),
                             translate=(1.0, 2.0, 3.0))
    before = layer.data.copy()
    assert widget.image.value is layer
    assert widget.z_factor.value == 4  # round(0.8 / 0.2)
    _run(qtbot, widget)
    out = viewer.layers["stack [cubic x4]"]
    assert out.data.shape == (48, 20, 24)
    np.testing.assert_allclose(out.scale, (0.2, 0.2, 0.2))
    # translate_z_out = translate_z - (f - 1) / 2 * scale_z_out
    np.testing.assert_allclose(out.translate, (1.0 - 1.5 * 0.2, 2.0, 3.0))
    assert out.metadata["volsr"]["method"] == "cubic"
    assert out.metadata["volsr"]["z_factor"] == 4
    np.testing.assert_array_equal(layer.data, before)
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_2d_layer_is_refused_with_a_notification(qtbot, viewer_widget, monkeypatch):
    viewer, widget = viewer_widget
    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_error", messages.append)
    viewer.add_image(np.zeros((10, 10), np.float32), name="plane")
    widget.image.value = viewer.layers["plane"]
    n_layers = len(viewer.layers)
    widget._on_run()
    assert widget.worker is None
    assert len(viewer.layers) == n_layers
    assert messages and "3D volume" in messages[0]


def test_cancel_adds_nothing_and_panel_recovers(qtbot, viewer_widget, rng):
    viewer, widget = viewer_widget
    viewer.add_image(rng.random((16, 64, 64), dtype=np.float32), name="big", scale=(2, 1, 1))
    widget.model.value = "linear"
    widget._on_run()
    # Cancel right away: GeneratorWorker stops at the next yield (the first block), and a
    # result that was already finished (a fast restore) is dropped. Waiting on the panel,
    # not on worker.finished: a signal emitted before waitSignal connects would be missed.
    widget._on_cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert [layer.name for layer in viewer.layers] == ["big"]
    assert widget.worker is None and widget.run_button.enabled
    assert "cancel" in widget.status.value


def test_a_result_arriving_after_cancel_is_dropped(viewer_widget):
    viewer, widget = viewer_widget
    viewer.add_image(np.zeros((4, 8, 8), np.float32), name="vol")
    quits = []
    widget.worker = type("Worker", (), {"quit": lambda self: quits.append(1)})()
    widget._on_cancel()
    # The last block finished just before the click: its result must not become a layer.
    widget._on_returned(object())
    assert quits == [1]
    assert [layer.name for layer in viewer.layers] == ["vol"]
    assert widget.status.value == "cancelled: nothing was added"
    widget.worker = None


def test_saved_diffusion_model_adds_result_and_uncertainty(qtbot, make_napari_viewer, library,
                                                            smooth_volume):
    save_tiny(library / "emdiffuse", "diffusion", task="isotropic", spatial_dims=2, z_factor=2,
               network={"sample_steps": 2, "n_samples": 2})

    viewer = make_napari_viewer()
    widget = RestoreWidget(viewer)
    layer = viewer.add_image(smooth_volume[:6, :16, :16], name="stack", scale=(0.8, 0.2, 0.2))
    assert widget.z_factor.value == 4
    assert widget.diffusion_steps.native.isHidden()  # cubic: no sampler settings
    widget.model.value = "emdiffuse"
    assert widget.z_factor.value == 2 and not widget.z_factor.enabled
    assert not widget.diffusion_steps.native.isHidden()
    assert not widget.diffusion_samples.native.isHidden()
    assert (widget.diffusion_steps.value, widget.diffusion_samples.value) == (2, 2)
    assert "diffusion" in widget.model_card.value and "x2" in widget.model_card.value
    widget.diffusion_steps.value = 1
    widget.diffusion_samples.value = 3
    _run(qtbot, widget)
    restored = viewer.layers["stack [emdiffuse x2]"]
    uncertainty = viewer.layers["stack [emdiffuse x2] uncertainty"]
    assert restored.data.shape == uncertainty.data.shape == (12, 16, 16)
    np.testing.assert_allclose(uncertainty.scale, (0.4, 0.2, 0.2))
    assert restored.metadata["volsr"]["method"] == "diffusion"
    assert restored.metadata["volsr"]["model"] == "emdiffuse"
    assert len(restored.metadata["volsr"]["config_hash"]) == 12
    assert restored.metadata["volsr"]["diffusion_steps"] == 1
    assert restored.metadata["volsr"]["diffusion_samples"] == 3
    assert layer.data.shape == (6, 16, 16)
    widget.model.value = "cubic"
    assert widget.diffusion_steps.native.isHidden()


# ---------------------------------------------------------------- pure helpers
def test_restore_logic_imports_no_gui():
    import subprocess
    import sys

    code = (
        "import sys, napari_volsr._qt._restore_logic\n"
        "gui = ('qtpy', 'PyQt5', 'napari', 'magicgui', 'superqt')\n"
        "gui = [m for m in gui if m in sys.modules]\n"
        "assert not gui, gui"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_model_card_reads_the_training_summary():
    from napari_volsr.engine.config import ModelConfig
    from napari_volsr.engine.registry import network_config

    config = ModelConfig(
        name="m", task="upsample", z_factor=4, network=network_config("rcan", "tiny"),
        training={"source": "synthetic", "data": {"shapes": [[64, 128, 128]]},
                  "voxel_spacing": [0.2, 0.2, 0.2], "steps": 1200, "minutes": 18.25,
                  "final_validation": {"psnr": 31.234, "ssim": 0.9}},
    )
    card = logic.model_card(config)
    for text in ("RCAN", "upsample", "x4", "3D", "synthetic data", "1 volume 64x128x128",
                 "spacing 0.2 x 0.2 x 0.2", "1200 steps", "PSNR 31.23 dB"):
        assert text in card
    bare = logic.model_card(config.model_copy(update={"training": {}}))
    assert "no training record" in bare


# ---------------------------------------------------------------- panel
def test_plan_label_follows_block_override_and_restore_honours_it(qtbot, viewer_widget,
                                                                  smooth_volume, errors):
    viewer, widget = viewer_widget
    viewer.add_image(smooth_volume, name="stack", scale=(0.8, 0.2, 0.2))
    assert widget.plan.auto and widget.plan.n_blocks == 1
    assert widget.plan_label.value.startswith("auto: 1 block of 12x20x24")
    # The cubic B-spline's recursive prefilter reaches 12 slices (engine.interp.SPLINE_HALO).
    assert "halo 12x0x0" in widget.plan_label.value and "per block" in widget.plan_label.value
    widget.block_shape.value = "4,10,12"
    assert widget.plan_label.value.startswith("fixed: 12 blocks of 4x10x12 (grid 3x2x2)")
    widget.z_factor.value = 2  # plan follows the z-factor too (halo of cubic stays 12)
    assert "output 24x20x24" in widget.plan_label.value
    widget.z_factor.value = 4
    _run(qtbot, widget)
    out = viewer.layers["stack [cubic x4]"]
    assert out.metadata["volsr"]["block_shape"] == [4, 10, 12]
    widget.block_shape.value = "4,ten,12"
    assert "Z,Y,X" in widget.plan_label.value and widget.plan is None
    widget._on_run()
    assert widget.worker is None and "Z,Y,X" in errors[-1]


def _zoom_onto(viewer, center_yx, width):
    """Show about ``width`` world units around ``center_yx`` in the 2D view."""
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    size = np.asarray(viewer.canvas.viewbox_size(viewer.layers), dtype=float)
    camera.center = (0.0, *center_yx)
    camera.zoom = float(size.min()) / width


def test_preview_restores_only_the_visible_region_in_place(qtbot, viewer_widget, smooth_volume):
    viewer, widget = viewer_widget
    layer = viewer.add_image(smooth_volume, name="stack", scale=(0.8, 0.2, 0.2),
                             translate=(1.0, 2.0, 3.0))
    viewer.dims.set_point(0, 1.0 + 6 * 0.8)  # slice 6
    _zoom_onto(viewer, (2.0 + 8 * 0.2, 3.0 + 15 * 0.2), 1.6)  # about 8 voxels wide
    widget.model.value = "linear"
    widget._on_preview()
    assert widget.worker is not None
    _wait(qtbot, widget)
    preview = viewer.layers["stack [linear x4] preview"]
    start = [a for a, _ in preview.metadata["volsr"]["preview_region"]]
    assert preview.data.shape[0] == 5 * 4  # slice 6 +- 2, upsampled
    assert 4 <= preview.data.shape[1] < 20 and 4 <= preview.data.shape[2] < 24
    assert start[0] == 4
    np.testing.assert_allclose(preview.scale, (0.2, 0.2, 0.2))
    # slab convention from the crop's corner: origin + start * spacing - 1.5 * scale_z_out
    np.testing.assert_allclose(
        preview.translate, (1.0 + 4 * 0.8 - 1.5 * 0.2, 2.0 + start[1] * 0.2, 3.0 + start[2] * 0.2))

    _run(qtbot, widget)  # a full restore still works after a preview
    full = viewer.layers["stack [linear x4]"]
    offset = np.round((preview.translate - full.translate) / full.scale).astype(int)
    np.testing.assert_allclose((preview.translate - full.translate) / full.scale, offset,
                               atol=1e-6)
    window = tuple(slice(o, o + n) for o, n in zip(offset, preview.data.shape, strict=True))
    np.testing.assert_allclose(preview.data, full.data[window], atol=1e-5)

    # panning and previewing again updates the same layer
    _zoom_onto(viewer, (2.0 + 14 * 0.2, 3.0 + 5 * 0.2), 1.6)
    n_layers = len(viewer.layers)
    widget._on_preview()
    assert widget.worker is not None
    _wait(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert viewer.layers["stack [linear x4] preview"].translate[2] < preview.translate[2] + 1e-9
    np.testing.assert_array_equal(layer.data, smooth_volume)


def test_preview_outside_the_layer_explains_itself(viewer_widget, smooth_volume, errors):
    viewer, widget = viewer_widget
    viewer.add_image(smooth_volume, name="stack")
    _zoom_onto(viewer, (500.0, 500.0), 10)
    widget._on_preview()
    assert widget.worker is None and "not in view" in errors[-1]


def test_load_model_folder(qtbot, viewer_widget, library, tmp_path, smooth_volume, errors):
    viewer, widget = viewer_widget
    viewer.add_image(smooth_volume, name="stack", scale=(0.4, 0.2, 0.2))
    before = list(widget.model.choices)
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    assert not widget.add_model_folder(bad)
    assert "config.json" in errors[-1]
    assert list(widget.model.choices) == before

    folder = save_tiny(tmp_path / "elsewhere" / "my-rcan", "rcan", task="upsample", z_factor=2)
    assert widget.add_model_folder(folder)
    assert widget.model.value == str(folder.resolve())
    assert len(widget.model.choices) == len(before) + 1
    assert widget.z_factor.value == 2 and "RCAN" in widget.model_card.value
    assert "no training record" in widget.model_card.value
    assert "auto: " in widget.plan_label.value
    _run(qtbot, widget)
    out = viewer.layers["stack [my-rcan x2]"]
    assert out.data.shape == (24, 20, 24)
    assert out.metadata["volsr"]["model_folder"] == str(folder.resolve())
    widget.refresh_models()  # e.g. after training: the folder stays selectable
    assert str(folder.resolve()) in widget.model.choices


def _start_long_restore(viewer, widget, rng):
    viewer.add_image(rng.random((16, 64, 64), dtype=np.float32), name="big", scale=(2, 1, 1))
    widget.model.value = "linear"
    widget.block_shape.value = "2,8,8"  # 512 blocks: still running when closed
    widget._on_run()
    assert widget.worker is not None
    return widget.worker


def test_closing_the_panel_stops_its_worker(qtbot, viewer_widget, rng):
    viewer, widget = viewer_widget
    worker = _start_long_restore(viewer, widget, rng)
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        viewer.window.remove_dock_widget(widget.native)  # the dock's close button
    assert worker.abort_requested
    assert [layer.name for layer in viewer.layers] == ["big"]
    assert widget.worker is None


def test_closing_the_viewer_stops_the_worker(qtbot, make_napari_viewer, rng):
    viewer = make_napari_viewer()
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Restore")
    worker = _start_long_restore(viewer, widget, rng)
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        viewer.close()
    assert worker.abort_requested
    assert widget.worker is None
    assert widget._closed  # the destroyed native told the panel


def test_an_error_in_the_worker_becomes_a_notification(qtbot, viewer_widget, smooth_volume,
                                                        errors, monkeypatch):
    from napari_volsr.engine.restorers import InterpolationRestorer

    def explode(self, x):
        raise RuntimeError("out of memory while restoring")

    monkeypatch.setattr(InterpolationRestorer, "__call__", explode)
    viewer, widget = viewer_widget
    viewer.add_image(smooth_volume, name="stack", scale=(0.8, 0.2, 0.2))
    _run(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["stack"]
    assert any("out of memory" in message for message in errors)
    assert widget.run_button.enabled and widget.worker is None
