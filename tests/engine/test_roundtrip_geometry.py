"""Geometry survives every round trip: TIFF (ImageJ), OME-TIFF and NIfTI.

A tiny volume with a non-zero origin is written with the format's reference library
(tifffile, nibabel), restored with z-factors 1..6 through the file pipeline, written,
and read back twice: with the plugin's reader and with the reference library. Scale,
origin (napari ``translate``), unit and orientation must equal what was restored
within 1e-6 of a voxel.
"""

import math

import numpy as np
import pytest
import tifffile

from napari_volsr._reader import read_layers
from napari_volsr._writer import write_image
from napari_volsr.engine.geometry import output_geometry
from napari_volsr.engine.io import Volume, read_volume, write_volume
from napari_volsr.engine.io.files import atomic_path, final_path
from napari_volsr.engine.pipeline import iter_restore_file
from napari_volsr.engine.predict import drain

nib = pytest.importorskip("nibabel")

SHAPE = (4, 9, 10)
SPACING = (0.9, 0.21, 0.17)  # z, y, x in µm
ORIGIN = (3.3, -1.2, 0.75)
# A NIfTI input's orientation: x mirrored, then turned 30 degrees about z (not RAS).
_TURN = math.radians(30.0)
_DIRECTIONS = np.array([[math.cos(_TURN), -math.sin(_TURN), 0.0],
                        [math.sin(_TURN), math.cos(_TURN), 0.0],
                        [0.0, 0.0, 1.0]]) @ np.diag([-1.0, 1.0, 1.0])


def _data():
    grid = np.mgrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]].astype(np.float32)
    return np.sin(grid[0] * 0.7) + np.cos(grid[1] * 0.4) * np.sin(grid[2] * 0.3)


def _input_affine() -> np.ndarray:
    """The input's affine: the data axes' directions, voxel sizes and an origin."""
    affine = np.eye(4)
    affine[:3, :3] = _DIRECTIONS * np.array(SPACING[::-1])[None, :]
    affine[:3, 3] = _DIRECTIONS @ np.array(ORIGIN[::-1])
    return affine


def _write_input(folder, suffix):
    """The input file, written by the reference library alone (not by the plugin)."""
    path, data = folder / f"in{suffix}", _data()
    if suffix == ".tif":  # Fiji's description: origins in pixels, negated
        tifffile.imwrite(path, data, imagej=True, resolution=(1 / SPACING[2], 1 / SPACING[1]),
                         metadata={"axes": "ZYX", "unit": "micron", "spacing": SPACING[0],
                                   **{f"{ax}origin": -o / s for ax, o, s
                                      in zip("zyx", ORIGIN, SPACING)}})
    elif suffix == ".ome.tif":
        planes = {"PositionZ": [ORIGIN[0] + k * SPACING[0] for k in range(SHAPE[0])],
                  "PositionY": [ORIGIN[1]] * SHAPE[0], "PositionX": [ORIGIN[2]] * SHAPE[0],
                  **{f"Position{ax}Unit": ["µm"] * SHAPE[0] for ax in "ZYX"}}
        tifffile.imwrite(path, data, ome=True, photometric="minisblack", metadata={
            "axes": "ZYX", "Plane": planes,
            **{f"PhysicalSize{ax}": s for ax, s in zip("ZYX", SPACING)}})
    else:
        img = nib.Nifti1Image(data.transpose(2, 1, 0), _input_affine())
        img.header.set_xyzt_units(xyz="micron", t="msec")
        img.set_qform(img.affine, code=1)
        img.set_sform(img.affine, code=2)
        nib.save(img, path)
    return path


def _restore(folder, suffix, z_factor):
    """Restore ``in{suffix}`` to ``out{suffix}``: the written path and the restored geometry.

    Interpolation at z-factor 1 is refused as a no-op unless the result is fitted to a
    reference; the input itself serves (the fit leaves the geometry alone).
    """
    source = _write_input(folder, suffix)
    reference = source if z_factor == 1 else None
    written = drain(iter_restore_file(source, folder / f"out{suffix}", "cubic", z_factor,
                                      reference=reference))
    # The input's origin was read, then moved on the slab grid.
    spacing, origin = output_geometry(SPACING, ORIGIN, z_factor)
    result = written.result
    assert result.spacing == pytest.approx(spacing) and result.origin == pytest.approx(origin)
    return written.path, result


def _assert_geometry(scale, translate, result):
    """Scale and translate equal the restored ones within 1e-6 of a voxel."""
    tolerance = 1e-6 * np.asarray(result.spacing)
    np.testing.assert_array_less(np.abs(np.subtract(scale, result.spacing)), tolerance)
    np.testing.assert_array_less(np.abs(np.subtract(translate, result.origin)), tolerance)


def _assert_plugin_reads(path, result):
    """The plugin's reader places the layer where the restored volume lies, in µm."""
    [(data, kwargs, _)] = read_layers(str(path))
    assert np.shape(data) == (SHAPE[0] * result.z_factor, *SHAPE[1:])
    _assert_geometry(kwargs["scale"], kwargs["translate"], result)
    assert kwargs["units"] == ("micrometer",) * 3
    assert kwargs["axis_labels"] == ("z", "y", "x")


def _tifffile_imagej(path):
    """(scale, translate, unit, axes) as tifffile reads an ImageJ hyperstack."""
    with tifffile.TiffFile(path) as tif:
        meta, page, axes = tif.imagej_metadata, tif.pages[0], tif.series[0].axes
        sizes = {"Z": meta["spacing"]}
        for ax, tag in (("X", "XResolution"), ("Y", "YResolution")):
            num, den = page.tags[tag].value
            sizes[ax] = den / num
    scale = [sizes[ax] for ax in "ZYX"]
    translate = [-meta.get(f"{ax.lower()}origin", 0.0) * sizes[ax] for ax in "ZYX"]
    return scale, translate, meta["unit"], axes


def _tifffile_ome(path):
    """(scale, translate, unit, axes, image) as tifffile reads an OME-TIFF."""
    with tifffile.TiffFile(path) as tif:
        image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        axes = tif.series[0].axes
    pixels = image["Pixels"]
    first = pixels["Plane"][0]
    scale = [pixels[f"PhysicalSize{ax}"] for ax in "ZYX"]
    translate = [first[f"Position{ax}"] for ax in "ZYX"]
    return scale, translate, pixels["PhysicalSizeZUnit"], axes, image


@pytest.mark.parametrize("z_factor", range(1, 7))
def test_imagej_tiff_geometry_survives_restoring(tmp_path, z_factor):
    path, result = _restore(tmp_path, ".tif", z_factor)
    _assert_plugin_reads(path, result)
    scale, translate, unit, axes = _tifffile_imagej(path)
    _assert_geometry(scale, translate, result)
    assert unit == "micron" and axes == "ZYX"


@pytest.mark.parametrize("z_factor", range(1, 7))
def test_ome_tiff_geometry_survives_restoring(tmp_path, z_factor):
    path, result = _restore(tmp_path, ".ome.tif", z_factor)
    _assert_plugin_reads(path, result)
    scale, translate, unit, axes, image = _tifffile_ome(path)
    _assert_geometry(scale, translate, result)
    assert unit == "µm" and axes == "ZYX"
    assert image["Name"] == "out"  # the output's name, not the temporary file's
    # Every plane carries its own position: z steps by the output's spacing.
    planes = image["Pixels"]["Plane"]
    assert len(planes) == SHAPE[0] * z_factor
    for plane in planes:
        assert plane["PositionZUnit"] == plane["PositionXUnit"] == "µm"
        expected = result.origin[0] + plane["TheZ"] * result.spacing[0]
        assert abs(plane["PositionZ"] - expected) < 1e-6 * result.spacing[0]
        assert (plane["PositionY"], plane["PositionX"]) == pytest.approx(result.origin[1:])


@pytest.mark.parametrize("z_factor", range(1, 7))
def test_nifti_geometry_survives_restoring(tmp_path, z_factor):
    path, result = _restore(tmp_path, ".nii.gz", z_factor)
    _assert_plugin_reads(path, result)
    img = nib.load(path)
    header = img.header
    zooms = header.get_zooms()[:3][::-1]
    # The affine's translation in the data axes' frame is the origin (reader convention).
    directions = img.affine[:3, :3] / np.asarray(header.get_zooms()[:3])[None, :]
    translate = np.linalg.solve(directions, img.affine[:3, 3])[::-1]
    _assert_geometry(zooms, translate, result)
    assert header.get_xyzt_units() == ("micron", "msec")
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 2)
    np.testing.assert_allclose(header.get_qform(), header.get_sform(), atol=1e-6)
    # Orientation: the input's, and every voxel where the slab grid puts it in the world.
    assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(_input_affine())
    to_input = np.eye(4)
    to_input[2, 2], to_input[2, 3] = 1 / z_factor, 0.5 / z_factor - 0.5
    atol = 1e-6 * min(result.spacing)
    np.testing.assert_allclose(img.affine, _input_affine() @ to_input, rtol=0, atol=atol)


# ------------------------------------------------------------------ single formats
def test_a_fiji_origin_is_read_in_physical_units(tmp_path):
    """ImageJ's Calibration: a voxel at pixel x lies at (x - xorigin) * pixelWidth."""
    path = tmp_path / "fiji.tif"
    tifffile.imwrite(path, np.zeros((3, 4, 5), np.uint8), imagej=True, resolution=(2.0, 4.0),
                     metadata={"axes": "ZYX", "unit": "micron", "spacing": 1.5,
                               "xorigin": 10.0, "yorigin": -2.0, "zorigin": 4.0})
    volume = read_volume(path)
    assert volume.spacing == pytest.approx((1.5, 0.25, 0.5))
    assert volume.origin == pytest.approx((-6.0, 0.5, -5.0))


def test_imagej_writes_the_origin_as_fiji_does(tmp_path):
    volume = Volume(np.zeros((3, 4, 5), np.uint16), (1.5, 0.25, 0.5), unit="µm",
                    origin=(-6.0, 0.0, 2.0))
    path = write_volume(tmp_path / "o.tif", volume)
    with tifffile.TiffFile(path) as tif:
        meta = tif.imagej_metadata
    assert meta["zorigin"] == pytest.approx(4.0) and meta["xorigin"] == pytest.approx(-4.0)
    assert "yorigin" not in meta  # ImageJ writes only the non-zero ones


def test_ome_planes_follow_each_channel(tmp_path):
    data = np.zeros((2, 3, 4, 5), np.float32)
    volume = Volume(data, (2.0, 0.5, 0.5), "CZYX", "nm", (10.0, 1.0, -1.0))
    path = write_volume(tmp_path / "two channels.ome.tiff", volume)
    _, _, unit, _, image = _tifffile_ome(path)
    assert image["Name"] == "two channels" and unit == "nm"
    planes = image["Pixels"]["Plane"]
    assert [(p["TheC"], p["TheZ"]) for p in planes] == [(c, z) for c in range(2) for z in range(3)]
    assert [p["PositionZ"] for p in planes] == pytest.approx([10.0, 12.0, 14.0] * 2)
    back = read_volume(path)
    assert back.axes == "CZYX" and back.origin == pytest.approx((10.0, 1.0, -1.0))


def test_ome_positions_in_another_unit_are_converted(tmp_path):
    tifffile.imwrite(tmp_path / "p.ome.tif", np.zeros((2, 3, 4), np.uint8), ome=True,
                     photometric="minisblack", metadata={
        "axes": "ZYX", "PhysicalSizeZ": 500.0, "PhysicalSizeZUnit": "nm",
        "PhysicalSizeY": 100.0, "PhysicalSizeYUnit": "nm",
        "PhysicalSizeX": 100.0, "PhysicalSizeXUnit": "nm",
        "Plane": {"PositionZ": [2.0, 2.5], "PositionZUnit": ["µm"] * 2,
                  "PositionY": [3.0, 3.0], "PositionYUnit": ["pixel"] * 2,
                  # No unit: the schema's "reference frame", taken in the image's unit.
                  "PositionX": [-7.0, -7.0]}})
    volume = read_volume(tmp_path / "p.ome.tif")
    assert volume.unit == "nm"
    assert volume.origin == pytest.approx((2000.0, 300.0, -7.0))


def test_a_fresh_nifti_is_scanner_coded_at_its_origin(tmp_path):
    """Not from NIfTI: codes 1 (the instrument's coordinates), the origin in the affine."""
    volume = Volume(_data(), SPACING, unit="µm", origin=ORIGIN)
    img = nib.load(write_volume(tmp_path / "fresh.nii", volume))
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 1)
    assert img.header.get_xyzt_units() == ("micron", "unknown")
    np.testing.assert_allclose(img.affine[:3, 3], ORIGIN[::-1])
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert read_volume(tmp_path / "fresh.nii").origin == pytest.approx(ORIGIN)


def test_a_nifti_without_codes_gets_scanner_codes(tmp_path):
    """With codes 0 readers would ignore the affine and the result's origin with it."""
    img = nib.Nifti1Image(_data().transpose(2, 1, 0), None)
    nib.save(img, tmp_path / "bare.nii.gz")
    volume = read_volume(tmp_path / "bare.nii.gz")
    assert volume.metadata["nifti_codes"] == [0, 0]
    out = nib.load(write_volume(tmp_path / "out.nii.gz", volume))
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (1, 1)
    np.testing.assert_allclose(out.affine, nib.load(tmp_path / "bare.nii.gz").affine)


def test_a_moved_nifti_layer_is_written_where_it_was_moved(tmp_path):
    """The origin, not the kept affine, says where the volume lies (a crop, a shift)."""
    path = _write_input(tmp_path, ".nii.gz")
    volume = read_volume(path)
    shifted = Volume(volume.data, volume.spacing, volume.axes, volume.unit,
                     tuple(o + s for o, s in zip(volume.origin, volume.spacing)),
                     volume.metadata)
    out = nib.load(write_volume(tmp_path / "moved.nii.gz", shifted))
    # One voxel further along every data axis: the input's voxel (1, 1, 1).
    np.testing.assert_allclose(out.affine[:3, 3], (_input_affine() @ [1, 1, 1, 1])[:3],
                               atol=1e-9)


def test_a_nifti_layer_saved_from_napari_keeps_its_header(tmp_path):
    """Through the plugin's reader and writer (napari's doors): affine, codes, time unit."""
    [(data, kwargs, _)] = read_layers(str(_write_input(tmp_path, ".nii.gz")))
    meta = {key: kwargs[key] for key in ("scale", "translate", "units", "metadata")}
    [path] = write_image(str(tmp_path / "saved.nii.gz"), data, meta)
    img = nib.load(path)
    np.testing.assert_allclose(img.affine, _input_affine(), rtol=0, atol=1e-6)
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 2)
    assert img.header.get_xyzt_units() == ("micron", "msec")


def test_final_path_undoes_the_temporary_name(tmp_path):
    target = tmp_path / "result.v2.ome.tif"
    with atomic_path(target) as tmp:
        assert tmp.name != target.name
        assert final_path(tmp) == target
        tmp.write_bytes(b"written")
    assert final_path(target) == target
    assert final_path(tmp_path / ".hidden.ome.tif") == tmp_path / ".hidden.ome.tif"
