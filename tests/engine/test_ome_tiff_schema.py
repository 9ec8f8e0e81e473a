"""OME-TIFF outputs validate against the OME schema (ome-types' bundled XSD, offline)."""

import numpy as np
import pytest
import tifffile

from napari_volsr.engine.io import Volume, write_volume

ome_types = pytest.importorskip("ome_types")


@pytest.mark.parametrize("axes", ["ZYX", "CZYX"])
def test_ome_tiff_output_passes_the_schema(tmp_path, rng, axes):
    shape = (2, 5, 6, 7) if axes == "CZYX" else (5, 6, 7)
    volume = Volume(rng.random(shape).astype(np.float32), (0.5, 0.2, 0.25), axes=axes,
                    unit="µm", origin=(1.0, -2.0, 3.0))
    path = tmp_path / "restored.ome.tif"
    write_volume(path, volume)
    with tifffile.TiffFile(path) as tif:
        ome = ome_types.from_xml(tif.ome_metadata, validate=True)  # raises when invalid
    (image,) = ome.images
    assert image.name == "restored"
    pixels = image.pixels
    assert (pixels.physical_size_z, pixels.physical_size_y, pixels.physical_size_x) == (
        0.5, 0.2, 0.25)
    assert len(pixels.planes) == shape[0] * (shape[1] if axes == "CZYX" else 1)
    first = pixels.planes[0]
    assert (first.position_z, first.position_y, first.position_x) == (1.0, -2.0, 3.0)
    assert first.position_z_unit.value == "µm"


def test_the_schema_check_is_real(tmp_path, rng):
    path = tmp_path / "restored.ome.tif"
    write_volume(path, Volume(rng.random((3, 4, 4)).astype(np.float32), (1.0, 1.0, 1.0),
                              unit="µm"))
    with tifffile.TiffFile(path) as tif:
        broken = tif.ome_metadata.replace('PhysicalSizeX="1.0"', 'PhysicalSizeX="one"', 1)
    assert broken != tif.ome_metadata
    with pytest.raises(Exception, match="PhysicalSizeX"):
        ome_types.from_xml(broken, validate=True)
