import numpy as np
import pytest

from napari_volsr._qt.restore_widget import RestoreWidget


def _restore_with_defaults(qtbot, widget):
    widget._on_run()
    # The panel forgets its worker when it finishes (on the main thread); waiting for
    # that cannot miss a quick worker's 'finished' signal as a late waitSignal could.
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)


def test_dropped_tiff_opens_scaled_and_restores_with_defaults(qtbot, make_napari_viewer,
                                                               anisotropic_tiff):
    path, data = anisotropic_tiff
    viewer = make_napari_viewer()
    widget = RestoreWidget(viewer)
    [layer] = viewer.open(str(path), plugin="napari-volsr")
    np.testing.assert_allclose(layer.scale, (0.8, 0.2, 0.2))
    assert widget.image.value is layer and widget.z_factor.value == 4
    _restore_with_defaults(qtbot, widget)
    out = viewer.layers["stack [cubic x4]"]
    assert out.data.shape == (32, 24, 20)
    np.testing.assert_allclose(out.scale, (0.2, 0.2, 0.2))
    np.testing.assert_array_equal(layer.data, data)


def test_dropped_nifti_opens_scaled_and_restores(qtbot, make_napari_viewer, tmp_path, rng):
    nib = pytest.importorskip("nibabel")
    xyz = rng.random((12, 10, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(xyz, np.diag([0.5, 0.5, 2.0, 1.0])), tmp_path / "t1.nii.gz")
    viewer = make_napari_viewer()
    widget = RestoreWidget(viewer)
    # napari's built-in reader also claims every file, so a drop asks which reader
    # to use (and can remember it); choosing ours is what plugin= does here.
    [layer] = viewer.open(str(tmp_path / "t1.nii.gz"), plugin="napari-volsr")
    assert layer.data.shape == (4, 10, 12)
    np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.5))
    _restore_with_defaults(qtbot, widget)
    out = viewer.layers["t1 [cubic x4]"]
    assert out.data.shape == (16, 10, 12)
    assert out.metadata["nifti_affine"] == layer.metadata["nifti_affine"]
