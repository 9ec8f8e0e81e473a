"""napari units and axis labels through the viewer: open, restore (panel and console), save."""

import numpy as np
import pytest
import tifffile

import napari_volsr as vs
from napari_volsr.engine.io import Volume, write_volume


def _names(units):
    return tuple(str(u) for u in units)


def test_opened_file_has_units_and_labels(make_napari_viewer, tmp_path, rng):
    data = rng.integers(0, 255, size=(4, 6, 7), dtype=np.uint8)
    path = write_volume(tmp_path / "em.ome.tif", Volume(data, (40.0, 8.0, 8.0), unit="nm"))
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-volsr")
    assert _names(layer.units) == ("nanometer",) * 3
    assert tuple(layer.axis_labels) == ("z", "y", "x")
    np.testing.assert_allclose(layer.scale, (40.0, 8.0, 8.0))


def test_panel_output_inherits_the_layers_units(qtbot, restore_panel, smooth_volume):
    viewer, widget = restore_panel
    viewer.add_image(smooth_volume, name="stack", scale=(0.6, 0.2, 0.2),
                     units=("micrometer",) * 3, axis_labels=("z", "row", "col"))
    widget._on_run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    out = viewer.layers["stack [cubic x3]"]
    assert _names(out.units) == ("micrometer",) * 3
    assert tuple(out.axis_labels) == ("z", "row", "col")


def test_console_output_inherits_units_and_saves_them(make_napari_viewer, tmp_path,
                                                      smooth_volume):
    from napari.plugins.io import save_layers

    viewer = make_napari_viewer()
    layer = viewer.add_image(smooth_volume, name="stack", scale=(0.6, 0.2, 0.2),
                             units=("micrometer",) * 3)
    vs.restore(layer, model="cubic", viewer=viewer)
    out = viewer.layers["stack [cubic x3]"]
    assert _names(out.units) == ("micrometer",) * 3
    # napari hands the writer pint units; ImageJ's spelling of µm is "micron".
    [written] = save_layers(str(tmp_path / "out.tif"), [out], plugin="napari-volsr")
    with tifffile.TiffFile(written) as tif:
        assert tif.imagej_metadata["unit"] == "micron"
        assert tif.imagej_metadata["spacing"] == pytest.approx(0.2)  # the output z spacing
