"""napari units and axis labels: every reader gives them, every writer keeps them.

Each file is checked twice: with the format's reference library (tifffile, nibabel,
zarr) and with the plugin's own reader.
"""

import json
import warnings

import numpy as np
import pytest
import tifffile

from napari_volsr._layers import result_layers
from napari_volsr._reader import read_layers
from napari_volsr._writer import write_image
from napari_volsr.engine.io import (
    Volume,
    VolsrWarning,
    common_unit,
    normalise_unit,
    read_volume,
    write_volume,
)
from napari_volsr.engine.pipeline import iter_restore_file, iter_restore_job
from napari_volsr.engine.predict import drain

SPACING = (0.8, 0.2, 0.25)


@pytest.fixture
def stack(rng):
    return rng.integers(0, 4000, size=(4, 6, 7), dtype=np.uint16)


def _meta(units, scale=SPACING, metadata=None):
    """The ``meta`` napari hands a writer for a 3D image layer."""
    return {"scale": list(scale), "translate": [0.0, 0.0, 0.0], "units": units,
            "axis_labels": ("z", "y", "x"), "metadata": dict(metadata or {})}


def _plugin_layer(path):
    [(data, kwargs, layer_type)] = read_layers(str(path))
    assert layer_type == "image"
    return data, kwargs


def _ome_pixels(path):
    with tifffile.TiffFile(path) as tif:
        return tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]


def _zarr_axes(path):
    zarr = pytest.importorskip("zarr")
    return zarr.open_group(str(path), mode="r").attrs["multiscales"][0]["axes"]


# ------------------------------------------------------------------ the unit vocabulary
@pytest.mark.parametrize(("spelling", "short"), [
    ("micron", "µm"), ("microns", "µm"), ("\\u00B5m", "µm"), ("um", "µm"), ("µm", "µm"),
    ("\N{GREEK SMALL LETTER MU}m", "µm"), ("micrometer", "µm"), ("nm", "nm"),
    ("nanometers", "nm"), ("millimetre", "mm"), ("\N{ANGSTROM SIGN}", "Å"),
    ("pixel", None), ("", None), (None, None),
    ("ms", "ms"), ("inch", "inch"),  # not lengths we know: carried, never reinterpreted
])
def test_unit_spellings_become_one_short_form(spelling, short):
    assert normalise_unit(spelling) == short


def test_axes_in_different_units_share_the_smallest():
    unit, spacing, origin = common_unit(["micrometer", "nm", "nanometer"], (0.5, 40, 40), (1, 0, 0))
    assert unit == "nm"
    assert spacing == (500.0, 40.0, 40.0) and origin == (1000.0, 0.0, 0.0)
    # One axis without a physical unit: nothing is guessed.
    assert common_unit(["pixel", "nm", "nm"], (1, 40, 40))[0] is None


# ------------------------------------------------------------------ TIFF (ImageJ)
@pytest.mark.parametrize(("units", "imagej", "napari"), [
    (("micrometer",) * 3, "micron", "micrometer"),
    (("nanometer",) * 3, "nm", "nanometer"),
])
def test_imagej_tiff_keeps_the_layers_unit(tmp_path, stack, units, imagej, napari):
    [path] = write_image(str(tmp_path / "s.tif"), stack, _meta(units))
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["unit"] == imagej
        assert tif.imagej_metadata["spacing"] == pytest.approx(0.8)
    data, kwargs = _plugin_layer(path)
    np.testing.assert_array_equal(data, stack)
    assert kwargs["units"] == (napari,) * 3
    assert kwargs["axis_labels"] == ("z", "y", "x")
    np.testing.assert_allclose(kwargs["scale"], SPACING, rtol=1e-6)


def test_a_micrometre_napari_layer_saved_as_tiff_keeps_micrometres(tmp_path, stack):
    """napari hands writers pint units; the layer's metadata has no ``unit`` of ours."""
    pint = pytest.importorskip("pint")
    um = pint.get_application_registry().micrometer
    [path] = write_image(str(tmp_path / "p.tif"), stack, _meta((um, um, um)))
    assert read_volume(path).unit == "µm"
    assert _plugin_layer(path)[1]["units"] == ("micrometer",) * 3


@pytest.mark.parametrize(("written", "napari"), [
    ("micron", "micrometer"), ("\\u00B5m", "micrometer"), ("um", "micrometer"),
    ("nm", "nanometer"), ("mm", "millimeter"),
])
def test_imagej_unit_spellings_are_read(tmp_path, stack, written, napari):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, stack, imagej=True, resolution=(5.0, 5.0),
                     metadata={"spacing": 0.8, "unit": written, "axes": "ZYX"})
    assert _plugin_layer(path)[1]["units"] == (napari,) * 3


def test_imagej_pixel_unit_gives_no_units(tmp_path, stack):
    path = tmp_path / "px.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"unit": "pixel", "axes": "ZYX"})
    kwargs = _plugin_layer(path)[1]
    assert "units" not in kwargs  # napari's default, pixels, rather than a guess
    assert kwargs["axis_labels"] == ("z", "y", "x")


def test_non_ascii_units_are_escaped_as_imagej_does(tmp_path, stack):
    volume = Volume(stack, (8.0, 2.0, 2.0), "ZYX", "Å")
    path = write_volume(tmp_path / "a.tif", volume)
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["unit"] == "\\u00C5"
    assert read_volume(path).unit == "Å"
    assert _plugin_layer(path)[1]["units"] == ("angstrom",) * 3


# ------------------------------------------------------------------ OME-TIFF
@pytest.mark.parametrize(("units", "ome", "napari"), [
    (("micrometer",) * 3, "µm", "micrometer"),
    (("nanometer",) * 3, "nm", "nanometer"),
])
def test_ome_tiff_keeps_the_layers_unit(tmp_path, stack, units, ome, napari):
    [path] = write_image(str(tmp_path / "s.ome.tif"), stack, _meta(units))
    pixels = _ome_pixels(path)
    assert {pixels[f"PhysicalSize{ax}Unit"] for ax in "XYZ"} == {ome}
    assert float(pixels["PhysicalSizeZ"]) == pytest.approx(0.8)
    assert _plugin_layer(path)[1]["units"] == (napari,) * 3


def test_ome_tiff_without_a_unit_says_pixel(tmp_path, stack):
    """OME readers take a missing unit for µm; a unitless volume must not become µm."""
    path = write_volume(tmp_path / "n.ome.tif", Volume(stack, SPACING))
    assert _ome_pixels(path)["PhysicalSizeXUnit"] == "pixel"
    assert read_volume(path).unit is None
    assert "units" not in _plugin_layer(path)[1]


def test_ome_tiff_axes_in_different_units_are_converted(tmp_path, stack):
    path = tmp_path / "mixed.ome.tif"
    tifffile.imwrite(path, stack, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeZ": 0.5, "PhysicalSizeZUnit": "µm",
        "PhysicalSizeY": 40.0, "PhysicalSizeYUnit": "nm",
        "PhysicalSizeX": 50.0, "PhysicalSizeXUnit": "nm",
    })
    _, kwargs = _plugin_layer(path)
    assert kwargs["units"] == ("nanometer",) * 3
    np.testing.assert_allclose(kwargs["scale"], (500.0, 40.0, 50.0))


# ------------------------------------------------------------------ NIfTI
def test_nifti_keeps_micrometres(tmp_path, stack):
    nib = pytest.importorskip("nibabel")
    [path] = write_image(str(tmp_path / "s.nii.gz"), stack, _meta(("micrometer",) * 3))
    img = nib.load(path)
    assert img.header.get_xyzt_units()[0] == "micron"
    np.testing.assert_allclose(img.header.get_zooms(), SPACING[::-1], rtol=1e-6)
    assert _plugin_layer(path)[1]["units"] == ("micrometer",) * 3


def test_nanometres_go_to_nifti_as_micrometres(tmp_path, stack):
    """NIfTI has no nanometre: the values are converted, not labelled mm."""
    nib = pytest.importorskip("nibabel")
    nm = (40.0, 8.0, 10.0)
    [path] = write_image(str(tmp_path / "nm.nii.gz"), stack,
                         {**_meta(("nanometer",) * 3, scale=nm), "translate": [80.0, 0, 0]})
    img = nib.load(path)
    assert img.header.get_xyzt_units()[0] == "micron"
    np.testing.assert_allclose(img.header.get_zooms(), np.array(nm[::-1]) * 1e-3)
    np.testing.assert_allclose(img.affine[2, 3], 0.08)
    _, kwargs = _plugin_layer(path)
    assert kwargs["units"] == ("micrometer",) * 3
    np.testing.assert_allclose(kwargs["scale"], np.array(nm) * 1e-3, rtol=1e-6)


def test_nifti_in_millimetres_is_read_as_such(tmp_path, rng):
    nib = pytest.importorskip("nibabel")
    img = nib.Nifti1Image(rng.random((5, 4, 3)).astype(np.float32), np.diag([1.0, 1.0, 2.5, 1]))
    img.header.set_xyzt_units(xyz="mm")
    nib.save(img, tmp_path / "t1.nii.gz")
    _, kwargs = _plugin_layer(tmp_path / "t1.nii.gz")
    assert kwargs["units"] == ("millimeter",) * 3
    assert kwargs["axis_labels"] == ("z", "y", "x")


def test_nifti_without_units_stays_without(tmp_path, stack):
    nib = pytest.importorskip("nibabel")
    path = write_volume(tmp_path / "u.nii.gz", Volume(stack, SPACING))
    assert nib.load(path).header.get_xyzt_units()[0] == "unknown"  # not a silent mm
    assert "units" not in _plugin_layer(path)[1]


def test_a_unit_nifti_cannot_hold_is_said(tmp_path, stack):
    nib = pytest.importorskip("nibabel")
    with pytest.warns(VolsrWarning, match="'inch'"):
        path = write_volume(tmp_path / "i.nii.gz", Volume(stack, SPACING, unit="inch"))
    assert nib.load(path).header.get_xyzt_units()[0] == "unknown"


def test_nifti_affine_follows_a_unit_conversion(tmp_path, rng):
    """A NIfTI volume relabelled in nm keeps its orientation and lands in µm."""
    nib = pytest.importorskip("nibabel")
    affine = np.array([[0, -2.0, 0, 10], [1.0, 0, 0, -5], [0, 0, 3.0, 1], [0, 0, 0, 1]])
    img = nib.Nifti1Image(rng.random((7, 5, 3)).astype(np.float32), affine)
    img.header.set_xyzt_units(xyz="micron")
    nib.save(img, tmp_path / "a.nii.gz")
    volume = read_volume(tmp_path / "a.nii.gz")
    in_nm = Volume(volume.data, tuple(s * 1e3 for s in volume.spacing), "ZYX", "nm",
                   tuple(t * 1e3 for t in volume.origin),
                   {**volume.metadata,
                    "nifti_affine": (np.diag([1e3, 1e3, 1e3, 1]) @ affine).tolist(),
                    "nifti_spacing": [s * 1e3 for s in volume.metadata["nifti_spacing"]]})
    out = nib.load(write_volume(tmp_path / "b.nii.gz", in_nm))
    np.testing.assert_allclose(out.affine, affine, atol=1e-9)
    assert out.header.get_xyzt_units()[0] == "micron"


# ------------------------------------------------------------------ zarr / OME-Zarr
@pytest.mark.parametrize(("units", "ome"), [
    (("micrometer",) * 3, "micrometer"), (("nanometer",) * 3, "nanometer"),
])
def test_ome_zarr_keeps_the_layers_unit(tmp_path, stack, units, ome):
    [path] = write_image(str(tmp_path / "s.ome.zarr"), stack, _meta(units))
    axes = _zarr_axes(path)
    assert [a["name"] for a in axes] == ["z", "y", "x"]
    assert [a.get("unit") for a in axes] == [ome] * 3
    data, kwargs = _plugin_layer(path)
    np.testing.assert_array_equal(np.asarray(data), stack)
    assert kwargs["units"] == (ome,) * 3
    assert kwargs["axis_labels"] == ("z", "y", "x")


def test_ome_zarr_axes_in_different_units_are_converted(tmp_path, stack):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "m.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=stack.shape, dtype=stack.dtype)[...] = stack
    group.attrs["multiscales"] = json.loads(json.dumps([{
        "version": "0.4",
        "axes": [{"name": "z", "type": "space", "unit": "micrometer"},
                 {"name": "y", "type": "space", "unit": "nanometer"},
                 {"name": "x", "type": "space", "unit": "nanometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [0.5, 40.0, 40.0]},
            {"type": "translation", "translation": [1.0, 0.0, 0.0]}]}],
    }]))
    _, kwargs = _plugin_layer(tmp_path / "m.zarr")
    assert kwargs["units"] == ("nanometer",) * 3
    np.testing.assert_allclose(kwargs["scale"], (500.0, 40.0, 40.0))
    np.testing.assert_allclose(kwargs["translate"], (1000.0, 0.0, 0.0))


def test_channels_get_spatial_units_and_labels(tmp_path, rng):
    data = rng.random((2, 4, 5, 6), dtype=np.float32)
    path = write_volume(tmp_path / "c.ome.zarr", Volume(data, SPACING, "CZYX", "nm"))
    kwargs = _plugin_layer(path)[1]
    assert kwargs["channel_axis"] == 0
    # Per channel layer: the channel axis is split off, so three spatial axes remain.
    assert kwargs["units"] == ("nanometer",) * 3 and kwargs["axis_labels"] == ("z", "y", "x")


# ------------------------------------------------------------------ writers' fallbacks
def test_writer_falls_back_to_the_readers_unit(tmp_path, stack):
    """A layer whose napari units are pixels but which this plugin read in µm."""
    [path] = write_image(str(tmp_path / "f.tif"), stack,
                         _meta(("pixel",) * 3, metadata={"unit": "µm"}))
    assert read_volume(path).unit == "µm"


def test_writer_converts_a_layer_with_mixed_units(tmp_path, stack):
    [path] = write_image(str(tmp_path / "mix.ome.tif"), stack,
                         _meta(("micrometer", "nanometer", "nanometer"), scale=(0.5, 40, 50)))
    volume = read_volume(path)
    assert volume.unit == "nm"
    np.testing.assert_allclose(volume.spacing, (500.0, 40.0, 50.0))


# ------------------------------------------------------------------ restore outputs
def test_restore_output_layers_inherit_units_and_labels(smooth_volume):
    result = drain(iter_restore_job(smooth_volume, "linear", spacing=(0.6, 0.2, 0.2)))
    [(_, kwargs, _)] = result_layers(result, "stack", {"unit": "nm"})
    assert kwargs["units"] == ("nanometer",) * 3
    np.testing.assert_allclose(kwargs["scale"], (0.2, 0.2, 0.2))
    # The input layer's own napari units and labels win over the reader's metadata.
    [(_, kwargs, _)] = result_layers(result, "stack", {"unit": "nm"},
                                     units=("micrometer",) * 3, axis_labels=("z", "row", "col"))
    assert kwargs["units"] == ("micrometer",) * 3
    assert kwargs["axis_labels"] == ("z", "row", "col")
    [(_, kwargs, _)] = result_layers(result, "stack", {})
    assert "units" not in kwargs  # no unit in, none made up


@pytest.mark.parametrize(("suffix", "check"), [
    (".ome.zarr", lambda path: [a.get("unit") for a in _zarr_axes(path)] == ["nanometer"] * 3),
    (".ome.tif", lambda path: _ome_pixels(path)["PhysicalSizeZUnit"] == "nm"),
])
def test_restored_files_keep_the_inputs_unit(tmp_path, stack, suffix, check):
    source = write_volume(tmp_path / "in.ome.tif", Volume(stack, (400.0, 100.0, 100.0), unit="nm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VolsrWarning)
        written = drain(iter_restore_file(source, tmp_path / f"out{suffix}", "linear"))
    assert written.unit == "nm" and check(written.path)
    assert read_volume(written.path).spacing == pytest.approx((100.0, 100.0, 100.0))


def test_restored_nanometres_go_to_nifti_as_micrometres(tmp_path, stack):
    nib = pytest.importorskip("nibabel")
    source = write_volume(tmp_path / "in.ome.tif", Volume(stack, (400.0, 100.0, 100.0), unit="nm"))
    written = drain(iter_restore_file(source, tmp_path / "out.nii.gz", "linear"))
    img = nib.load(written.path)
    assert img.header.get_xyzt_units()[0] == "micron"
    np.testing.assert_allclose(img.header.get_zooms(), (0.1, 0.1, 0.1), rtol=1e-6)
