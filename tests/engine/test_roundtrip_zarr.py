"""Geometry survives every round trip: OME-Zarr, z-factors 1..6 (with the TIFF and NIfTI
rows in test_roundtrip_geometry.py).

The input is written by ome-zarr-py alone (scale, translation, µm), restored through the
file pipeline into an OME-Zarr, and read back with the plugin's reader and with
ome-zarr-py's: scale, translation and units must equal what was restored within 1e-6
of a voxel, and the output validates with ome-zarr-models.
"""

import numpy as np
import pytest

from napari_volsr._reader import read_layers
from napari_volsr.engine.geometry import output_geometry
from napari_volsr.engine.pipeline import iter_restore_file
from napari_volsr.engine.predict import drain

zarr = pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")

SHAPE = (4, 9, 10)
SPACING = (0.9, 0.21, 0.17)
ORIGIN = (3.3, -1.2, 0.75)


def _write_input(path):
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_multiscales_metadata

    grid = np.mgrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]].astype(np.float32)
    data = np.sin(grid[0] * 0.7) + np.cos(grid[1] * 0.4) * np.sin(grid[2] * 0.3)
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=data, chunks=SHAPE, chunk_key_encoding={"name": "v2",
                                                                          "separator": "/"})
    write_multiscales_metadata(
        group, [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": list(SPACING)},
            {"type": "translation", "translation": list(ORIGIN)}]}],
        fmt=FormatV04(), axes=[{"name": ax, "type": "space", "unit": "micrometer"}
                               for ax in "zyx"], name="in")
    return path


def _ome_zarr_py_level0(path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    [node, *_] = list(Reader(parse_url(str(path)))())
    scale, translation = node.metadata["coordinateTransformations"][0]
    return (scale["scale"], translation["translation"], [a["unit"] for a in
            node.metadata["axes"]], node.metadata["name"], node.data[0].shape)


@pytest.mark.parametrize("z_factor", range(1, 7))
def test_ome_zarr_geometry_survives_restoring(tmp_path, z_factor):
    source = _write_input(tmp_path / "in.ome.zarr")
    out = tmp_path / "out.ome.zarr"
    reference = source if z_factor == 1 else None  # interpolation at x1 needs a fit target
    written = drain(iter_restore_file(source, out, "cubic", z_factor, reference=reference))
    spacing, origin = output_geometry(SPACING, ORIGIN, z_factor)
    result = written.result
    assert result.spacing == pytest.approx(spacing) and result.origin == pytest.approx(origin)
    tolerance = 1e-6 * np.asarray(spacing)

    scale, translation, units, name, shape = _ome_zarr_py_level0(out)
    np.testing.assert_array_less(np.abs(np.subtract(scale, spacing)), tolerance)
    np.testing.assert_array_less(np.abs(np.subtract(translation, origin)), tolerance)
    assert units == ["micrometer"] * 3 and name == "out"
    assert shape == (SHAPE[0] * z_factor, *SHAPE[1:])

    [(data, kwargs, _)] = read_layers(str(out))
    np.testing.assert_array_less(np.abs(np.subtract(kwargs["scale"], spacing)), tolerance)
    np.testing.assert_array_less(np.abs(np.subtract(kwargs["translate"], origin)), tolerance)
    assert kwargs["units"] == ("micrometer",) * 3

    models = pytest.importorskip("ome_zarr_models.v04")
    models.Image.from_zarr(zarr.open_group(str(out), mode="r"))  # raises on violations
