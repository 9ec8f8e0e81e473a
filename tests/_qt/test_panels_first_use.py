"""What a new user meets first in the two panels (issue 17): layout, defaults, progress, names."""

from types import SimpleNamespace

import numpy as np
import pytest
from helpers import save_tiny, smooth
from qtpy.QtCore import QPoint

from napari_volsr._qt.restore_widget import RestoreWidget
from napari_volsr._qt.train_widget import TrainWidget
from napari_volsr.engine.models import load_model

ANISOTROPIC = (0.8, 0.2, 0.2)
pytestmark = pytest.mark.usefixtures("library")  # panels that train save models there


def volume(shape, seed=0):
    return smooth(np.random.default_rng(seed), shape)


def docked(make_napari_viewer, *layers, show=False):
    """A viewer with ``layers`` ((data, kwargs) pairs) and both panels docked on the right."""
    viewer = make_napari_viewer(show=show)
    for data, kwargs in layers:
        viewer.add_image(data, **kwargs)
    train, restore = TrainWidget(viewer), RestoreWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train", area="right")
    viewer.window.add_dock_widget(restore, name="Restore", area="right")
    return viewer, train, restore


def statuses(widget) -> list[str]:
    """Every text the panel's status line shows from now on."""
    seen = []
    native = widget.status.native
    set_text = native.setText
    native.setText = lambda text: (seen.append(text), set_text(text))
    return seen


def _in_window(widget, window) -> bool:
    top = widget.mapTo(window, QPoint(0, 0)).y()
    inside = widget.isVisible() and top >= 0 and top + widget.height() <= window.height()
    return inside or (widget.isVisible(), top, widget.height(), window.height())


# ------------------------------------------------------------------ item 5: layout
def test_docked_panels_fit_a_laptop_screen_with_their_buttons_in_view(make_napari_viewer, qtbot):
    viewer, train, restore = docked(
        make_napari_viewer, (volume((40, 152, 126)), {"name": "stack", "scale": ANISOTROPIC}),
        show=True)
    window = viewer.window._qt_window
    window.resize(1366, 768)
    qtbot.waitUntil(lambda: window.height() <= 768, timeout=5_000)
    # The docks lay themselves out: a few event-loop rounds, more on a loaded machine.
    qtbot.waitUntil(lambda: _in_window(train.start_button.native, window) is True
                    and restore.scroll.height() > restore.scroll.minimumSizeHint().height(),
                    timeout=5_000)
    assert window.minimumSizeHint().height() <= 768
    always = {train: [train.start_button, train.stop_button, train.resume_button,
                      train.progress_bar, train.status, train.plot],
              restore: [restore.preview_button, restore.run_button, restore.status]}
    for panel, widgets in always.items():
        for widget in widgets:
            native = getattr(widget, "native", widget)
            assert not panel.scroll.isAncestorOf(native)  # never scrolled away
            assert _in_window(native, window) is True, (widget, _in_window(native, window))
        assert panel.scroll.isAncestorOf(panel.native.findChild(type(train.family.native)))
    assert train.plot.height() >= train.plot.minimumHeight()
    # The Restore panel docked under Train gets more than its bare minimum.
    assert restore.scroll.height() > restore.scroll.minimumSizeHint().height()


def test_labels_are_not_clipped_and_boxes_share_their_arrows(make_napari_viewer, qtbot):
    viewer, train, restore = docked(
        make_napari_viewer, (volume((16, 48, 48)), {"name": "stack"}), show=True)
    qtbot.wait(10)
    train.source.value = "synthetic"
    train.dims.value = 3  # a 3D network: the patch label is 'patch (z, y, x)'
    assert train.budget_section.patch.label == "patch (z, y, x)"
    for panel in (train, restore):
        for row in panel.native.findChildren(type(train.status.native)):
            if row.isVisible() and row.text() and not row.wordWrap():
                assert row.width() >= row.fontMetrics().horizontalAdvance(row.text()), row.text()
    boxes = [train.degradation_box, train.advanced_box, restore.advanced_section]
    for icon in ("collapsedIcon", "expandedIcon"):
        images = [getattr(box, icon)().pixmap(12).toImage() for box in boxes]
        assert all(image == images[0] for image in images)
    for box in boxes:  # closed: the title's height, no gap under it
        assert box.height() <= box.toggleButton().sizeHint().height() + 2


# ------------------------------------------------------------------ item 2: data defaults
@pytest.mark.parametrize(("layers", "source", "roles"), [
    ([("stack", (8, 48, 48), ANISOTROPIC)], "isotropic", {"volume": "stack"}),
    ([("clean", (16, 48, 48), (1, 1, 1))], "synthetic", {"target": "clean"}),
    ([("clean", (16, 48, 48), (1, 1, 1)), ("noisy", (16, 48, 48), (1, 1, 1))], "paired",
     {"raw": "noisy", "target": "clean"}),
    ([("fine", (16, 48, 48), (1, 1, 1)), ("thick", (8, 48, 48), (2, 1, 1))], "paired",
     {"raw": "thick", "target": "fine"}),
])
def test_the_form_opens_on_the_data_that_is_open(make_napari_viewer, layers, source, roles):
    viewer = make_napari_viewer()
    for name, shape, scale in layers:
        viewer.add_image(volume(shape), name=name, scale=scale)
    widget = TrainWidget(viewer)
    assert widget.source.value == source
    for role, name in roles.items():
        assert getattr(widget, role).value is viewer.layers[name]
    assert widget.raw.value is not widget.target.value
    if source == "paired" and layers[1][0] == "thick":
        assert widget.z_factor.value == 2


def test_layers_opened_later_are_proposed_until_the_user_chooses(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)  # opened first, as from the Plugins menu
    viewer.add_image(volume((16, 48, 48)), name="clean")
    assert widget.source.value == "synthetic" and widget.target.value is viewer.layers["clean"]
    viewer.add_image(volume((16, 48, 48), 1), name="noisy")
    assert widget.source.value == "paired" and widget.raw.value is viewer.layers["noisy"]
    widget.source.value = "synthetic"  # the user's choice stays
    viewer.add_image(volume((16, 48, 48), 2), name="other")
    assert widget.source.value == "synthetic"


def test_resume_with_nothing_trained_says_there_is_no_checkpoint(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    viewer.add_image(volume((16, 48, 48)), name="only")
    widget = TrainWidget(viewer)
    widget.source.value = "paired"
    widget.raw.value = widget.target.value = viewer.layers["only"]
    widget.model_name.value = "never-trained"
    widget._on_resume()
    assert widget.worker is None and "no checkpoint" in errors[-1]
    widget._on_start()  # a fresh start with one layer as both is still refused
    assert "same layer" in errors[-1]


# ------------------------------------------------------------------ item 1: the engine's patch
def test_patch_boxes_show_the_engines_fit_and_training_uses_it(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(volume((12, 20, 24)), name="small", scale=ANISOTROPIC)
    widget = TrainWidget(viewer)
    assert widget.source.value == "isotropic" and widget.z_factor.value == 4
    # The engine's fit: 5 x 24 input rows, too small to keep validation rows apart.
    assert (widget.patch_y.value, widget.patch_x.value) == (5, 24)
    said = statuses(widget)
    widget.preset.value = "tiny"
    widget.steps.value, widget.batch_size.value = 2, 2
    widget.model_name.value = "fitted"
    widget._on_start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert any("training without validation" in s for s in said), said
    card = load_model("fitted").config.training
    assert card["settings"]["patch_shape"] == [5, 24] and card["settings"]["n_val"] == 0


# ------------------------------------------------------------------ item 6: time budgets
def test_bar_names_the_budget_before_start_and_counts_time_with_minutes(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    text = widget.progress_bar.native.text
    assert "0 / 1" not in text() and text() == "budget: 1000 steps"
    widget.minutes.value = 2
    assert text() == "budget: 1000 steps or 2 min"
    run = widget.run_section
    run.show_progress(10, 1000, elapsed=30.0, minutes=2.0)  # time ends the run first
    assert text() == "0.5 / 2 min, 1:30 left" and widget.progress_bar.value == 250
    run.show_progress(900, 1000, elapsed=30.0, minutes=2.0)  # steps end it first
    assert text() == "900 / 1000 steps"
    run.show_progress(10, None, elapsed=90.0, minutes=2.0)
    assert text().endswith("0:30 left")


def test_a_minutes_budget_scales_the_plot_to_the_steps_that_ran(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(volume((16, 48, 48)), name="clean")
    widget = TrainWidget(viewer)
    widget.preset.value = "tiny"
    widget.steps.value, widget.minutes.value = 0, 0.01  # time only: about 0.6 s
    widget.batch_size.value, widget.validate_every.value = 2, 10_000
    widget.model_name.value = "timed"
    said = statuses(widget)
    widget._on_start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    last = widget.plot.loss_steps[-1]
    assert widget.plot.x_max() == last == load_model("timed").config.training["steps"]
    assert any("/ 0.01 min" in s and "left" in s for s in said), said
    assert widget.progress_bar.native.text().startswith(f"{last} steps in ")


# ------------------------------------------------------------------ item 7: the baseline
def test_the_baseline_is_a_reference_line_and_on_the_model_card(make_napari_viewer, library):
    from napari_volsr._qt._restore_logic import model_card

    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    record = SimpleNamespace(step=10, total=100, loss=0.1, losses={"loss": 0.1}, preview=None,
                             validation={"psnr": 24.0, "ssim": 0.8}, message="",
                             baseline_validation={"psnr": 21.5, "ssim": 0.7}, elapsed=3.0,
                             data_wait=0.0)
    widget._on_yielded(record)
    assert widget.plot.baseline == 21.5 and "baseline 21.50 dB" in widget.plot.baseline_label()
    widget.plot.grab()  # draws the line without error
    folder = save_tiny(library / "scored", "rcan", z_factor=1, training={
        "steps": 10, "final_validation": {"psnr": 24.0},
        "baseline_validation": {"psnr": 21.5}, "voxel_spacing": [0.8, 0.2, 0.2],
        "voxel_unit": "µm"})
    card = model_card(load_model(folder).config)
    assert "val PSNR 24.00 dB (baseline 21.50 dB)" in card
    assert "spacing 0.8 x 0.2 x 0.2 µm (z, y, x)" in card


# ------------------------------------------------------------------ item 8: preview, names
def test_training_preview_is_distinct_and_removable(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(volume((16, 48, 48)), name="clean")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.preset.value = "tiny"
    widget.steps.value, widget.validate_every.value, widget.batch_size.value = 2, 2, 2
    widget.model_name.value = "seen"
    widget._on_start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    preview = viewer.layers["seen preview"]
    assert preview.colormap.name != viewer.layers["clean"].colormap.name
    assert preview.bounding_box.visible
    widget.live_preview.value = False
    assert "seen preview" not in [layer.name for layer in viewer.layers]
    widget.live_preview.value = True
    widget._show_preview(np.zeros((8, 48, 48), np.float32))
    assert "seen preview" in [layer.name for layer in viewer.layers]
    viewer.window.remove_dock_widget(widget.native)  # closing the panel takes it away
    assert [layer.name for layer in viewer.layers] == ["clean"]


def test_results_are_named_by_the_model_and_two_rcan_models_differ(make_napari_viewer, qtbot,
                                                                    library):
    for name in ("rcan-a", "rcan-b"):
        save_tiny(library / name, "rcan", z_factor=2)
    viewer = make_napari_viewer()
    viewer.add_image(volume((6, 16, 16)), name="stack", scale=(0.4, 0.2, 0.2))
    widget = RestoreWidget(viewer)
    for model in ("rcan-a", "rcan-b", "cubic"):
        widget.model.value = model
        widget._on_run()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert [layer.name for layer in viewer.layers] == [
        "stack", "stack [rcan-a x2]", "stack [rcan-b x2]", "stack [cubic x2]"]


def test_preview_of_a_whole_view_covers_every_voxel(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(volume((10, 40, 126)), name="wide", scale=(0.15, 0.034, 0.034))
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Restore")
    viewer.reset_view()
    widget.model.value = "linear"
    widget._on_preview()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    preview = viewer.layers["wide [linear x4] preview"]
    assert preview.metadata["volsr"]["preview_region"][1:] == [[0, 40], [0, 126]]
    assert "y 0-39 (all 40), x 0-125 (all 126)" in widget.status.value
