"""Per-axis factors in the Restore and Train panels: the y, x factor box (issue 16)."""

import numpy as np
import pytest
from helpers import save_tiny, smooth

from napari_volsr._qt.train_widget import TrainWidget

ISOTROPIC = (0.2, 0.2, 0.2)
TRANSLATE = (1.0, 2.0, 3.0)


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)


def _zoom_onto(viewer, center_yx, width):
    """Show about ``width`` world units around ``center_yx`` in the 2D view."""
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    size = np.asarray(viewer.canvas.viewbox_size(viewer.layers), dtype=float)
    camera.center = (0.0, *center_yx)
    camera.zoom = float(size.min()) / width


# ------------------------------------------------------------------ Restore panel
def test_restore_with_a_lateral_factor_adds_a_layer_on_the_slab_grid(qtbot, restore_panel,
                                                                      smooth_volume):
    viewer, widget = restore_panel
    layer = viewer.add_image(smooth_volume, name="vol", scale=ISOTROPIC, translate=TRANSLATE)
    widget.model.value = "cubic"
    assert widget.z_factor.value == 1 and widget.lateral_factor.value == 1
    assert widget.lateral_factor.enabled and widget.output_note.native.isHidden()
    widget.lateral_factor.value = 2
    # The panel says what will happen before anything runs.
    assert "output 12x40x48" in widget.plan_label.value
    assert not widget.output_note.native.isHidden()
    assert widget.output_note.value == "result x(1,2,2): 12x40x48 voxels of 0.2 x 0.1 x 0.1"
    widget._on_run()
    assert widget.worker is not None
    _wait(qtbot, widget)
    out = viewer.layers["vol [cubic x(1,2,2)]"]
    assert out.data.shape == (12, 40, 48)
    np.testing.assert_allclose(out.scale, (0.2, 0.1, 0.1))
    # translate_out = translate - (f - 1) / 2 * scale_out on y and x; z untouched.
    np.testing.assert_allclose(out.translate, (1.0, 2.0 - 0.05, 3.0 - 0.05))
    assert out.metadata["volsr"]["factors"] == [1, 2, 2]
    np.testing.assert_array_equal(layer.data, smooth_volume)
    assert widget.status.value.startswith("done in") and "12x40x48" in widget.status.value


def test_preview_with_a_lateral_factor(qtbot, restore_panel, smooth_volume):
    viewer, widget = restore_panel
    viewer.add_image(smooth_volume, name="vol", scale=ISOTROPIC, translate=TRANSLATE)
    viewer.dims.set_point(0, 1.0 + 6 * 0.2)
    _zoom_onto(viewer, (2.0 + 8 * 0.2, 3.0 + 10 * 0.2), 1.6)
    widget.model.value = "linear"
    widget.lateral_factor.value = 2
    widget._on_preview()
    assert widget.worker is not None
    _wait(qtbot, widget)
    preview = viewer.layers["vol [linear x(1,2,2)] preview"]
    (z0, z1), (y0, y1), (x0, x1) = preview.metadata["volsr"]["preview_region"]
    assert preview.data.shape == (z1 - z0, 2 * (y1 - y0), 2 * (x1 - x0))
    np.testing.assert_allclose(preview.scale, (0.2, 0.1, 0.1))
    np.testing.assert_allclose(preview.translate, (1.0 + z0 * 0.2, 2.0 + y0 * 0.2 - 0.05,
                                                   3.0 + x0 * 0.2 - 0.05))


def test_a_trained_lateral_model_fixes_the_box_and_baselines_give_it_back(
        restore_panel, library, smooth_volume):
    viewer, widget = restore_panel
    save_tiny(library / "sr2", family="srunet", z_factor=1, lateral_factors=(2, 2),
              task="upsample")
    viewer.add_image(smooth_volume, name="vol", scale=ISOTROPIC)
    widget.refresh_models()
    widget.model.value = "cubic"
    widget.lateral_factor.value = 3  # the user's choice for baselines
    widget.model.value = "sr2"
    assert widget.lateral_factor.value == 2 and not widget.lateral_factor.enabled
    assert "x2" in widget.lateral_factor.tooltip
    assert "x(1,2,2)" in widget.model_card.value
    assert "output 12x40x48" in widget.plan_label.value
    widget.model.value = "linear"
    assert widget.lateral_factor.value == 3 and widget.lateral_factor.enabled
    assert "output 12x60x72" in widget.plan_label.value


def test_bad_factors_are_refused_and_nothing_is_added(qtbot, restore_panel, library, errors,
                                                      smooth_volume):
    viewer, widget = restore_panel
    save_tiny(library / "sr2", family="srunet", z_factor=1, lateral_factors=(2, 2),
              task="upsample")
    viewer.add_image(smooth_volume, name="vol", scale=ISOTROPIC)
    widget.refresh_models()
    # The box takes 1..16 only, as the engine does.
    widget.lateral_factor.native.setValue(17)
    assert widget.lateral_factor.value == 16
    widget.lateral_factor.native.setValue(0)
    assert widget.lateral_factor.value == 1
    # cubic then sr2 at y, x x3: the model gives x2, so cubic would have to give x1.5.
    widget.model.value = "cubic"
    widget.then_model.value = "sr2"
    widget.lateral_factor.value = 3
    assert "multiple" in widget.plan_label.value  # the tiles line says why, in advance
    widget._on_run()
    assert widget.worker is None
    assert len(errors) == 1 and "multiple" in errors[0]
    assert [layer.name for layer in viewer.layers] == ["vol"]
    np.testing.assert_array_equal(viewer.layers["vol"].data, smooth_volume)


# ------------------------------------------------------------------ Train panel
@pytest.fixture
def train_panel(make_napari_viewer, library):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    return viewer, widget


def test_train_panel_takes_a_lateral_factor(train_panel):
    viewer, widget = train_panel
    viewer.add_image(smooth(np.random.default_rng(0), (16, 64, 64)), name="clean",
                     scale=ISOTROPIC)
    assert widget.source.value == "synthetic"
    assert widget.lateral_factor.value == 1 and widget.lateral_factor.enabled
    assert widget.family.value == "unet"  # same-shape default
    patch = (widget.patch_y.value, widget.patch_x.value)
    widget.lateral_factor.value = 2
    # Upsampling y and x alone: RCAN on YX planes (training_config.default_spatial_dims).
    assert widget.family.value == "rcan" and widget.dims.value == 2
    assert (widget.patch_y.value, widget.patch_x.value) != patch  # the engine's fit for x2
    widget.preset.value = "tiny"
    run = widget._prepare(resume=False)
    model = run.request.config.model
    assert model.factors == (1, 2, 2) and model.task == "upsample"
    # The live preview degrades a crop of the target as training does (y, x halved), and
    # its restoration lands back on the target's voxels.
    assert run.preview_input.shape == (8, 32, 32)
    assert run.preview_kwargs["scale"] == pytest.approx(ISOTROPIC)
    assert run.preview_kwargs["translate"] == pytest.approx((4 * 0.2, 0.0, 0.0))
    widget.source.value = "isotropic"  # z only: the box shows 1 and is locked
    assert widget.lateral_factor.value == 1 and not widget.lateral_factor.enabled
    widget.source.value = "synthetic"  # as the z-factor does: the source's default again
    assert widget.lateral_factor.value == 1 and widget.lateral_factor.enabled


def test_train_panel_reads_the_lateral_factor_of_a_pair(train_panel, errors):
    viewer, widget = train_panel
    rng = np.random.default_rng(0)
    target = smooth(rng, (8, 64, 64))
    raw = target.reshape(8, 32, 2, 32, 2).mean(axis=(2, 4))
    viewer.add_image(raw, name="raw", scale=(0.2, 0.4, 0.4))
    viewer.add_image(target, name="target", scale=ISOTROPIC)
    assert widget.source.value == "paired"
    assert widget.raw.value.name == "raw" and widget.target.value.name == "target"
    assert widget.z_factor.value == 1 and widget.lateral_factor.value == 2
    widget.preset.value = "tiny"
    assert widget._prepare(resume=False).request.config.model.factors == (1, 2, 2)
    widget.lateral_factor.value = 3  # the pair says 2: Start refuses in the engine's words
    widget._on_start()
    assert widget.worker is None
    assert len(errors) == 1 and "(8, 96, 96)" in errors[0], errors
    assert [layer.name for layer in viewer.layers] == ["raw", "target"]
