import numpy as np
import pytest

import napari_volsr as vs
from napari_volsr._qt.restore_widget import RestoreWidget
from napari_volsr._qt.train_widget import TrainWidget
from napari_volsr.engine.models import list_library, load_model

SCALE = (2.0, 0.5, 0.5)
TRANSLATE = (1.0, 2.0, 3.0)


@pytest.fixture(autouse=True)
def library(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(tmp_path / "library"))
    return tmp_path / "library"


@pytest.fixture
def panel(make_napari_viewer, pair):
    viewer = make_napari_viewer()
    noisy, clean = pair
    viewer.add_image(noisy, name="noisy", scale=SCALE, translate=TRANSLATE)
    viewer.add_image(clean, name="clean", scale=SCALE, translate=TRANSLATE)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.source.value = "paired"
    widget.raw.value = viewer.layers["noisy"]
    widget.target.value = viewer.layers["clean"]
    configure(widget)
    return viewer, widget


def configure(widget, name="denoise", steps=6, validate_every=2):
    # A 3D RCAN, chosen: these tests follow the panel's mechanics, not its defaults.
    widget.family.value = "rcan"
    widget.dims.value = 3
    widget.preset.value = "tiny"
    widget.steps.value = steps
    widget.validate_every.value = validate_every
    widget.batch_size.value = 2
    widget.learning_rate.value = "1e-3"
    widget.patch_z.value, widget.patch_y.value, widget.patch_x.value = 4, 16, 16
    widget.model_name.value = name


def train(qtbot, widget, resume=False):
    (widget._on_resume if resume else widget._on_start)()
    assert widget.worker is not None
    # Not waitSignal(worker.finished): a run that fails at once may finish before it connects.
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)


def test_paired_training_plots_previews_saves_and_restores(qtbot, panel, pair, monkeypatch):
    viewer, widget = panel
    infos = []
    monkeypatch.setattr("napari.utils.notifications.show_info", infos.append)
    restore = RestoreWidget(viewer)
    viewer.window.add_dock_widget(restore, name="Restore")
    assert "denoise" not in restore.model.choices
    previews = []
    show_preview = type(widget)._show_preview
    # Patch the class: undoing an instance patch deletes the attribute, which a magicgui
    # Container takes as removing a child widget.
    monkeypatch.setattr(type(widget), "_show_preview",
                        lambda self, a: (previews.append(a), show_preview(self, a)))
    assert widget.z_factor.value == 1 and widget.dims.value == 3

    train(qtbot, widget)

    assert widget.plot.loss_steps == [1, 2, 3, 4, 5, 6]
    assert widget.plot.psnr_steps == [2, 4, 6] and len(widget.plot.psnr_values) == 3
    assert len(previews) == 3 and not np.array_equal(previews[0], previews[-1])
    preview = viewer.layers["denoise preview"]
    # Central crop of at most 8 x 64 x 64 raw voxels, placed where it was cut.
    assert preview.data.shape == (8, 48, 48)
    np.testing.assert_allclose(preview.scale, SCALE)
    np.testing.assert_allclose(preview.translate, (TRANSLATE[0] + 4 * SCALE[0], *TRANSLATE[1:]))
    # The last preview is the final model's restoration of that crop.
    np.testing.assert_allclose(preview.data, vs.restore(widget.run_info.preview_input,
                                                        model="denoise"), atol=1e-4)
    assert list_library() == ["denoise"]
    card = load_model("denoise").config.training
    assert card["steps"] == 6 and not card["stopped_early"]
    assert card["voxel_spacing"] == list(SCALE)
    assert "denoise" in restore.model.choices  # refreshed, no layer event needed
    assert any("model 'denoise' saved" in m for m in infos)
    assert "saved" in widget.status.value and widget.start_button.enabled

    restore.image.value = viewer.layers["noisy"]
    restore.model.value = "denoise"
    restore._on_run()
    assert restore.worker is not None
    qtbot.waitUntil(lambda: restore.worker is None, timeout=60_000)
    out = viewer.layers["noisy [denoise]"]
    assert out.data.shape == (16, 48, 48)
    np.testing.assert_allclose(out.scale, SCALE)
    np.testing.assert_allclose(out.translate, TRANSLATE)
    assert out.metadata["volsr"]["model"] == "denoise"
    # Inputs untouched.
    np.testing.assert_array_equal(viewer.layers["noisy"].data, pair[0])
    np.testing.assert_array_equal(viewer.layers["clean"].data, pair[1])


def test_stop_saves_the_model_and_adds_nothing_else(qtbot, panel):
    viewer, widget = panel
    configure(widget, name="stopped", steps=100_000, validate_every=10_000)
    widget._on_start()
    worker = widget.worker
    qtbot.waitUntil(lambda: len(widget.plot.loss_steps) >= 2, timeout=30_000)
    widget._on_start()  # a second run is refused while one is going
    assert widget.worker is worker
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        widget._on_stop()
    card = load_model("stopped").config.training
    assert 2 <= card["steps"] < 100_000 and card["stopped_early"]
    assert "psnr" in card["final_validation"]
    assert [layer.name for layer in viewer.layers] == ["noisy", "clean"]
    assert widget.worker is None and widget.start_button.enabled and not widget.stop_button.enabled
    qtbot.wait(10)  # the event loop still runs
    assert "stopped early" in widget.status.value


def test_resume_continues_from_the_checkpoint(qtbot, panel):
    viewer, widget = panel
    configure(widget, name="resumed", steps=3, validate_every=3)
    train(qtbot, widget)
    assert load_model("resumed").config.training["steps"] == 3
    widget.steps.value = 6
    train(qtbot, widget, resume=True)
    assert load_model("resumed").config.training["steps"] == 6
    assert widget.plot.loss_steps == [1, 2, 3, 4, 5, 6]  # earlier history is kept
    assert len(viewer.layers["resumed preview"].data) == 8  # one preview layer, reused
    assert [layer.name for layer in viewer.layers].count("resumed preview") == 1


def test_closing_the_viewer_stops_training_and_saves(qtbot, make_napari_viewer, pair):
    viewer = make_napari_viewer()
    viewer.add_image(pair[1], name="clean")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.source.value = "synthetic"
    configure(widget, name="closed", steps=100_000, validate_every=10_000)
    widget._on_start()
    worker = widget.worker
    qtbot.waitUntil(lambda: len(widget.plot.loss_steps) >= 1, timeout=30_000)
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        viewer.close()
    card = load_model("closed").config.training
    assert card["stopped_early"] and card["steps"] < 100_000


def _mismatched(viewer, widget):
    viewer.add_image(np.zeros((16, 40, 48), np.float32), name="cropped")
    widget.target.value = viewer.layers["cropped"]
    return "differ in Y/X"


def _plane(viewer, widget):
    viewer.add_image(np.zeros((48, 48), np.float32), name="plane")
    widget.raw.value = viewer.layers["plane"]
    return "3D volume"


def _z_conflict(viewer, widget):
    viewer.add_image(np.zeros((8, 48, 48), np.float32), name="thick")
    widget.raw.value = viewer.layers["thick"]
    assert widget.z_factor.value == 2  # from the shapes: 16 / 8
    widget.z_factor.value = 3
    return "set the z-factor to 2"


def _no_name(viewer, widget):
    widget.model_name.value = "  "
    return "Enter a model name"


def _bad_name(viewer, widget):
    widget.model_name.value = "../escape"
    return "not a valid model name"


def _no_budget(viewer, widget):
    widget.steps.value = 0  # 0 means no limit in the form: with minutes 0 nothing stops it
    widget.minutes.value = 0
    return "set at least one budget"


@pytest.mark.parametrize("arrange", [_mismatched, _plane, _z_conflict, _no_name, _bad_name,
                                     _no_budget])
def test_bad_input_is_explained_and_changes_nothing(qtbot, panel, monkeypatch, library, arrange):
    viewer, widget = panel
    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_error", messages.append)
    expected = arrange(viewer, widget)
    layers = [(layer.name, layer.data.copy()) for layer in viewer.layers]
    widget._on_start()
    assert widget.worker is None
    assert len(messages) == 1 and expected in messages[0], messages
    assert messages[0] == widget.status.value
    assert [layer.name for layer in viewer.layers] == [name for name, _ in layers]
    for (_, before), layer in zip(layers, viewer.layers, strict=True):
        np.testing.assert_array_equal(layer.data, before)
    assert list_library() == []


def test_errors_inside_the_worker_become_notifications(qtbot, panel, monkeypatch):
    viewer, widget = panel
    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_error", messages.append)

    def refuse(*args, **kwargs):  # a refusal raised while the worker cuts the patches
        raise ValueError("'noisy' holds no patch of this size: use a smaller patch")

    # (A patch with no room for validation rows used to be refused here; the engine now
    # trains without validation and says so: see the next test.)
    monkeypatch.setattr("napari_volsr.engine.data.make_training_data", refuse)
    train(qtbot, widget)
    assert len(messages) == 1 and "smaller patch" in messages[0], messages
    assert [layer.name for layer in viewer.layers] == ["noisy", "clean"]
    assert list_library() == [] and widget.start_button.enabled


def test_a_patch_without_room_for_validation_trains_and_says_so(qtbot, panel, monkeypatch):
    viewer, widget = panel
    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_error", messages.append)
    widget.patch_y.value = 40  # no room left for validation rows in 48
    said = []
    native = widget.status.native
    set_text = native.setText
    native.setText = lambda text: (said.append(text), set_text(text))
    train(qtbot, widget)
    assert messages == [] and any("training without validation" in s for s in said), said
    assert load_model("denoise").config.training["settings"]["patch_shape"] == [4, 40, 16]


def test_a_runtime_error_in_training_still_ends_the_run(qtbot, panel, monkeypatch):
    # superqt's worker swallows RuntimeError (never emitting finished) unless re-typed.
    viewer, widget = panel
    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_error", messages.append)

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")
        yield

    monkeypatch.setattr("napari_volsr.engine.train.iter_train", out_of_memory)
    train(qtbot, widget)
    assert len(messages) == 1 and "out of memory" in messages[0]
    assert widget.start_button.enabled


def test_existing_name_asks_for_another_name_or_resume(qtbot, panel, monkeypatch):
    viewer, widget = panel
    configure(widget, name="taken", steps=1, validate_every=1)
    train(qtbot, widget)
    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_error", messages.append)
    widget._on_start()
    # The engine's sentence (every door shows it): another name, resume or overwrite.
    assert widget.worker is None and "exists in" in messages[0]
    assert "choose another name" in messages[0] and "resume it" in messages[0]
    assert messages[0] == widget.status.value
    widget.overwrite.value = True
    train(qtbot, widget)  # ticking overwrite replaces it
    assert load_model("taken").config.training["steps"] == 1


def test_resume_with_another_family_is_refused_with_the_engines_sentence(qtbot, panel,
                                                                           monkeypatch):
    from napari_volsr.api import volume_input
    from napari_volsr.engine.training_request import TrainingRequestError, resolve_training

    viewer, widget = panel
    configure(widget, name="rcan-run", steps=2, validate_every=2)
    train(qtbot, widget)
    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_error", messages.append)
    widget.family.value = "gan"
    widget.steps.value = 4
    widget._on_resume()
    assert widget.worker is None
    with pytest.raises(TrainingRequestError) as refusal:  # the engine's own sentence
        resolve_training(raw=volume_input(viewer.layers["noisy"]),
                         target=volume_input(viewer.layers["clean"]), family="gan",
                         name="rcan-run", resume=True, steps=4)
    assert "family rcan (not gan)" in str(refusal.value)
    assert messages == [str(refusal.value)] and widget.status.value == messages[0]
    assert widget.family.value == "gan"  # a refused resume leaves the form as it was
    assert load_model("rcan-run").config.training["steps"] == 2


def test_resume_takes_the_checkpoints_dimensionality(qtbot, panel, pair):
    _, widget = panel
    vs.train(target=pair[1], family="rcan", preset="tiny", spatial_dims=2, name="flat", steps=1,
             patch_shape=(16, 16), batch_size=2, n_val=2, validate_every=1,
             degradation={"gaussian_sigma": (0.05, 0.1)})
    widget.source.value = "synthetic"
    widget.model_name.value = "flat"
    widget.steps.value = 2
    assert widget.dims.value == 3
    train(qtbot, widget, resume=True)
    assert widget.dims.value == 2 and not shown(widget.patch_z)  # the checkpoint's settings
    config = load_model("flat").config
    assert config.spatial_dims == 2 and config.training["steps"] == 2


def shown(widget):
    return not widget.native.isHidden()


def test_isotropic_source_defaults_from_the_layer(make_napari_viewer, pair):
    viewer = make_napari_viewer()
    viewer.add_image(pair[1], name="aniso", scale=(2.0, 0.5, 0.5))
    widget = TrainWidget(viewer)
    widget.source.value = "isotropic"
    assert shown(widget.volume) and not shown(widget.raw) and not shown(widget.target)
    assert widget.z_factor.value == 4  # round(2.0 / 0.5)
    assert widget.dims.value == 2 and not widget.dims.enabled
    assert not shown(widget.patch_z)
    assert widget.patch_y.value * 4 * 2 <= 48  # room for training and validation rows


def test_console_train_with_arrays_feeds_restore(pair):
    noisy, clean = pair
    model = vs.train(raw=noisy, target=clean, preset="tiny", name="console", steps=3,
                     patch_shape=(4, 16, 16), batch_size=2, n_val=2, validate_every=3)
    assert model.config.name == "console" and model.config.training["steps"] == 3
    assert vs.load_model("console").config.family == "unet"  # same-shape: the U-Net
    out = vs.restore(noisy, model="console")
    assert out.shape == noisy.shape and np.isfinite(out).all()
    np.testing.assert_array_equal(pair[0], noisy)


def test_console_train_slice_wise_and_isotropic(pair):
    _, clean = pair
    flat = vs.train(target=clean, preset="tiny", spatial_dims=2, steps=2, patch_shape=(16, 16),
                    batch_size=2, n_val=2, degradation={"gaussian_sigma": (0.05, 0.1)})
    assert flat.config.spatial_dims == 2 and flat.config.task == "restore"
    assert vs.restore(clean, model=flat.config.name).shape == clean.shape
    iso = vs.train(volume=clean[::2], z_factor=2, family="srunet", preset="tiny", steps=2,
                   patch_shape=(8, 16), batch_size=2, n_val=2)
    assert iso.config.task == "isotropic"
    assert vs.restore(clean[::2], model=iso.config.name, z_factor=2).shape == (16, 48, 48)
    with pytest.raises(ValueError, match="z-factor"):
        vs.train(raw=clean[::2], target=clean, z_factor=3, steps=1)


def test_family_and_dimensionality_follow_the_task_until_chosen(make_napari_viewer, pair):
    viewer = make_napari_viewer()
    viewer.add_image(pair[1], name="clean")
    widget = TrainWidget(viewer)
    widget.source.value = "synthetic"
    assert (widget.family.value, widget.dims.value) == ("unet", 2)  # denoising defaults
    widget.z_factor.value = 2
    assert (widget.family.value, widget.dims.value) == ("rcan", 3)  # upsampling needs 3D
    widget.z_factor.value = 1
    widget.family.value = "srunet"
    widget.dims.value = 3
    widget.source.value = "noise2void"
    assert (widget.family.value, widget.dims.value) == ("srunet", 3)  # the user's choice
