"""The Restore panel's BioImage Model Zoo buttons: export the selected model, import a package."""

import zipfile

import numpy as np
import pytest

pytest.importorskip("bioimageio.spec")

import helpers  # noqa: E402

from napari_volsr.engine.bioimageio import export_bioimageio  # noqa: E402


def _shown(widget, button) -> bool:
    # The test viewer's window is never shown: ask whether the button would be.
    return button.native.isVisibleTo(widget.native)


def _wait_zoo(qtbot, widget):
    qtbot.waitUntil(lambda: widget.files.worker is None, timeout=120_000)


def _answer_dialog(monkeypatch, method, path):
    monkeypatch.setattr(f"qtpy.QtWidgets.QFileDialog.{method}",
                        lambda *args, **kwargs: (str(path), ""))


def test_export_button_follows_the_model(restore_panel, library):
    helpers.save_tiny(library / "rcan-x1", family="rcan", z_factor=1)
    helpers.save_tiny(library / "iso-2d", family="rcan", task="isotropic", spatial_dims=2,
                      z_factor=2)
    _, widget = restore_panel
    widget.refresh_models()
    button = widget.export_zoo_button
    assert widget.model.value == "cubic"
    assert not _shown(widget, button)  # baselines have no network to export
    widget.model.value = "rcan-x1"
    assert _shown(widget, button) and button.enabled
    widget.model.value = "iso-2d"
    assert _shown(widget, button) and not button.enabled
    assert "XZ and the YZ planes" in button.tooltip  # the engine's reason, as the CLI says it
    widget.model.value = "linear"
    assert not _shown(widget, button)


def test_export_writes_a_valid_model_zoo_package(qtbot, restore_panel, library, tmp_path,
                                                 monkeypatch, errors):
    from bioimageio.spec import load_description
    from bioimageio.spec.model import v0_5

    helpers.save_tiny(library / "up2", family="gan", z_factor=2)
    _, widget = restore_panel
    widget.refresh_models()
    widget.model.value = "up2"
    out = tmp_path / "out"
    out.mkdir()
    _answer_dialog(monkeypatch, "getSaveFileName", out / "up2-zoo")  # no extension typed
    widget.export_zoo_button.native.click()
    assert widget.files.worker is not None  # off the UI thread
    assert not widget.export_zoo_button.enabled and "exporting 'up2'" in widget.status.value
    _wait_zoo(qtbot, widget)
    package = out / "up2-zoo.zip"
    assert errors == []
    assert widget.status.value.startswith(f"wrote {package}: BioImage Model Zoo package")
    assert widget.export_zoo_button.enabled
    assert [p.name for p in out.iterdir()] == [package.name]  # no temporary file left
    descr = load_description(package, perform_io_checks=True)
    assert isinstance(descr, v0_5.ModelDescr), descr.validation_summary.format()
    assert descr.outputs[0].axes[-3].scale == 0.5  # z x2 in the package
    helpers.zoo_test(package)


def test_import_of_our_export_selects_it_and_restores_identically(
        qtbot, restore_panel, library, tmp_path, monkeypatch, errors, smooth_volume):
    viewer, widget = restore_panel
    helpers.save_tiny(library / "sr2", family="srunet", z_factor=2)
    package, _ = export_bioimageio("sr2", tmp_path / "sr2.zip")
    viewer.add_image(smooth_volume, name="stack", scale=(0.4, 0.2, 0.2))
    widget.refresh_models()
    _answer_dialog(monkeypatch, "getOpenFileName", package)
    widget.import_zoo_button.native.click()
    assert widget.files.worker is not None
    _wait_zoo(qtbot, widget)
    assert errors == []
    # 'sr2' is in the library already: the package comes in beside it, selected.
    assert widget.model.value == "sr2-2" and "sr2-2" in widget.model.choices
    assert "'sr2' is already in the library" in widget.status.value
    assert (library / "sr2-2" / "config.json").is_file()

    results = []
    for name in ("sr2-2", "sr2"):
        widget.model.value = name
        widget._on_run()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
        results.append(viewer.layers[-1])
    assert [x.name for x in results] == ["stack [sr2-2 x2]", "stack [sr2 x2]"]
    np.testing.assert_array_equal(results[0].data, results[1].data)


def test_bad_packages_explain_and_change_nothing(qtbot, restore_panel, library, tmp_path,
                                                  errors):
    helpers.save_tiny(library / "rcan-x1", family="rcan", z_factor=1)
    ours, _ = export_bioimageio("rcan-x1", tmp_path / "ours.zip")
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(ours) as src, zipfile.ZipFile(foreign, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "rdf.yaml":
                data = data.replace(b"napari_volsr.engine.nets.rcan", b"somelab.unet")
            dst.writestr(item, data)
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    _, widget = restore_panel
    widget.refresh_models()
    before = (sorted(p.name for p in library.iterdir()), list(widget.model.choices))
    for package, words in ((junk, "not a valid Model Zoo model package"),
                           (foreign, "its architecture is somelab.unet.RCAN; napari-volsr "
                                     "imports Model Zoo packages whose")):
        widget.import_zoo_package(package)
        _wait_zoo(qtbot, widget)
        assert words in errors[-1] and errors[-1].startswith("Model Zoo import failed")
        assert (sorted(p.name for p in library.iterdir()), list(widget.model.choices)) == before
        assert widget.model.value == "cubic" and widget.import_zoo_button.enabled
    assert len(errors) == 2


def test_one_model_zoo_job_at_a_time(qtbot, restore_panel, library, tmp_path, errors):
    helpers.save_tiny(library / "rcan-x1", family="rcan", z_factor=1)
    _, widget = restore_panel
    widget.refresh_models()
    widget.model.value = "rcan-x1"
    widget.export_zoo_package(tmp_path / "a.zip")
    widget.import_zoo_package(tmp_path / "b.zip")
    assert errors == ["A Model Zoo export is running: wait for it to finish."]
    _wait_zoo(qtbot, widget)
    assert (tmp_path / "a.zip").is_file() and widget.export_zoo_button.enabled


def test_debug_flag_runs_the_import_on_the_main_thread(restore_panel, library, tmp_path,
                                                       monkeypatch, errors):
    monkeypatch.setattr("napari_volsr._qt.restore_models.NO_THREADS", True)
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK but not really")
    _, widget = restore_panel
    widget.import_zoo_package(junk)
    # Done when the call returns: no worker, the refusal shown, the buttons back.
    assert widget.files.worker is None and widget.files.job is None
    assert "not a valid Model Zoo model package" in errors[-1]
    assert widget.import_zoo_button.enabled and not any(library.iterdir())
