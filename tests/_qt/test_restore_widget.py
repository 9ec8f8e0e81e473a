import numpy as np
import pytest

from napari_volsr._qt.restore_widget import RestoreWidget


@pytest.fixture
def viewer_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Restore")
    return viewer, widget


def _run(qtbot, widget):
    widget._on_run()
    assert widget.worker is not None
    with qtbot.waitSignal(widget.worker.finished, timeout=60_000):
        pass


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
    worker = widget.worker
    # Cancel right away: GeneratorWorker stops at the next yield (the first block).
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        widget._on_cancel()
    assert [l.name for l in viewer.layers] == ["big"]
    assert widget.worker is None and widget.run_button.enabled
    assert "cancel" in widget.status.value


def test_saved_diffusion_model_adds_result_and_uncertainty(qtbot, make_napari_viewer, tmp_path,
                                                            monkeypatch, smooth_volume):
    import torch

    from napari_volsr.engine.config import ModelConfig
    from napari_volsr.engine.models import save_model
    from napari_volsr.engine.registry import build_network, network_config

    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(tmp_path))
    torch.manual_seed(0)
    config = ModelConfig(name="emdiffuse", task="isotropic", spatial_dims=2, z_factor=2,
                         network=network_config("diffusion", "tiny", sample_steps=2, n_samples=2))
    net = build_network(config)
    save_model(tmp_path / "emdiffuse", config, net, ema_net=net)

    viewer = make_napari_viewer()
    widget = RestoreWidget(viewer)
    layer = viewer.add_image(smooth_volume[:6, :16, :16], name="stack", scale=(0.8, 0.2, 0.2))
    assert widget.z_factor.value == 4
    widget.model.value = "emdiffuse"
    assert widget.z_factor.value == 2 and not widget.z_factor.enabled
    _run(qtbot, widget)
    restored = viewer.layers["stack [diffusion x2]"]
    uncertainty = viewer.layers["stack [diffusion x2] uncertainty"]
    assert restored.data.shape == uncertainty.data.shape == (12, 16, 16)
    np.testing.assert_allclose(uncertainty.scale, (0.4, 0.2, 0.2))
    assert restored.metadata["volsr"]["method"] == "diffusion"
    assert restored.metadata["volsr"]["model"] == "emdiffuse"
    assert len(restored.metadata["volsr"]["config_hash"]) == 12
    assert layer.data.shape == (6, 16, 16)
