import numpy as np
import pytest
import tifffile

from napari_volsr.engine.io import (
    Volume, VolumeIOError, format_suffix, nifti_affine_for, read_volume, write_volume,
)


@pytest.fixture
def volume(rng):
    data = rng.integers(0, 4000, size=(6, 9, 11), dtype=np.uint16)
    return Volume(data, (0.8, 0.2, 0.25), "ZYX", "µm")


@pytest.mark.parametrize("suffix", [".tif", ".ome.tif", ".nii.gz", ".nii", ".zarr", ".ome.zarr"])
def test_round_trip_keeps_data_dtype_spacing(tmp_path, volume, suffix):
    path = write_volume(tmp_path / f"v{suffix}", volume)
    back = read_volume(path)
    np.testing.assert_array_equal(np.asarray(back.data), volume.data)
    assert back.data.dtype == volume.data.dtype
    assert back.axes == "ZYX"
    np.testing.assert_allclose(back.spacing, volume.spacing, rtol=1e-5)
    assert back.unit == "µm"


@pytest.mark.parametrize("suffix", [".tif", ".ome.tif", ".zarr", ".nii.gz"])
def test_channel_axis_is_kept(tmp_path, rng, suffix):
    data = rng.random((2, 4, 5, 6), dtype=np.float32)
    vol = Volume(data, (2.0, 0.5, 0.5), "CZYX", "µm")
    back = read_volume(write_volume(tmp_path / f"c{suffix}", vol))
    assert back.axes == "CZYX"
    np.testing.assert_array_equal(np.asarray(back.data), data)
    np.testing.assert_allclose(back.spacing, (2.0, 0.5, 0.5), rtol=1e-6)


def test_imagej_spacing_is_read(anisotropic_tiff):
    path, data = anisotropic_tiff
    vol = read_volume(path)
    np.testing.assert_allclose(vol.spacing, (0.8, 0.2, 0.2))
    assert vol.unit == "µm"


def test_ome_physical_sizes_are_read(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
    tifffile.imwrite(tmp_path / "o.ome.tif", data, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeZ": 1.5, "PhysicalSizeY": 0.3, "PhysicalSizeX": 0.4,
    })
    vol = read_volume(tmp_path / "o.ome.tif")
    assert vol.spacing == (1.5, 0.3, 0.4)


def test_nifti_is_zyx_with_affine_round_trip(tmp_path, rng):
    nib = pytest.importorskip("nibabel")
    xyz = rng.random((7, 5, 3)).astype(np.float32)
    affine = np.array([[0, -2.0, 0, 10], [1.0, 0, 0, -5], [0, 0, 3.0, 1], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(xyz, affine), tmp_path / "a.nii.gz")
    vol = read_volume(tmp_path / "a.nii.gz")
    assert vol.data.shape == (3, 5, 7)
    np.testing.assert_array_equal(vol.data, xyz.transpose(2, 1, 0))
    assert vol.spacing == (3.0, 2.0, 1.0)
    write_volume(tmp_path / "b.nii.gz", vol)
    back = nib.load(tmp_path / "b.nii.gz")
    np.testing.assert_allclose(back.affine, affine)
    np.testing.assert_array_equal(back.get_fdata(), xyz)


def test_nifti_affine_follows_z_upsampling():
    affine = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 4.0, 100.0], [0, 0, 0, 1]])
    vol = Volume(np.zeros((16, 2, 2)), (1.0, 1.0, 1.0), "ZYX",
                 metadata={"nifti_affine": affine.tolist(), "nifti_spacing": [4.0, 1.0, 1.0]})
    new = nifti_affine_for(vol)
    # New k = 0 centre sits at old index (0.5 / 4 - 0.5) = -0.375, i.e. z = 100 - 1.5.
    np.testing.assert_allclose(new[:3, :3], np.diag([1.0, 1.0, 1.0]))
    np.testing.assert_allclose(new[:3, 3], [0.0, 0.0, 98.5])


def test_zarr_is_read_lazily(tmp_path, volume):
    path = write_volume(tmp_path / "v.ome.zarr", volume)
    lazy = read_volume(path, lazy=True)
    assert type(lazy.data).__module__.startswith("dask")


def test_compound_suffixes():
    assert format_suffix("a/b.NII.GZ") == ".nii.gz"
    assert format_suffix("x.ome.tif") == ".ome.tif"
    assert format_suffix("x.tiff") == ".tiff"


@pytest.mark.parametrize("name,content,match", [
    ("missing.tif", None, "no such file"),
    ("empty.tif", b"", "empty"),
    ("garbage.tif", b"II*\x00garbage" * 10, "not a readable TIFF"),
    ("garbage.nii.gz", b"\x1f\x8b\x08not really gzip", "not a readable NIfTI"),
    ("notes.txt", b"hello", "unsupported format"),
])
def test_bad_files_give_clear_errors(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VolumeIOError, match=match):
        read_volume(path)


def test_truncated_tiff(tmp_path, anisotropic_tiff):
    path, _ = anisotropic_tiff
    raw = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(VolumeIOError, match="cut.tif"):
        read_volume(cut)


def test_failed_write_leaves_no_file_and_keeps_old(tmp_path, volume, monkeypatch):
    target = tmp_path / "out.tif"
    target.write_bytes(b"previous result")
    from napari_volsr.engine import io

    def explode(path, vol):
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(io.WRITERS, ".tif", explode)
    with pytest.raises(VolumeIOError, match="No space left"):
        write_volume(target, volume)
    assert target.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_write_refuses_missing_folder(tmp_path, volume):
    with pytest.raises(VolumeIOError, match="does not exist"):
        write_volume(tmp_path / "nope" / "x.tif", volume)


def test_remove_tree_waits_for_zarr_writes_still_in_flight(tmp_path):
    # A Ctrl-C abandons the wait in zarr's sync(), not the write on zarr's IO thread:
    # a chunk landing after the removal would bring the temporary store back.
    import asyncio
    import time

    from zarr.core.sync import _get_loop

    from napari_volsr.engine.io import remove_tree

    store = tmp_path / ".out.zarr.abc.part-merge.zarr"
    store.mkdir()

    async def late_chunk():
        await asyncio.sleep(0.3)
        (store / "c" / "0").mkdir(parents=True, exist_ok=True)
        (store / "c" / "0" / "0").write_bytes(b"chunk")

    future = asyncio.run_coroutine_threadsafe(late_chunk(), _get_loop())
    remove_tree(store)
    assert future.done()
    time.sleep(0.1)
    assert not store.exists()


def test_zarr_stores_are_written_whole_so_missing_chunks_mean_damage(tmp_path, recwarn):
    import zarr

    background = Volume(np.zeros((8, 100, 100), np.uint16), (0.8, 0.2, 0.2))  # zeros only
    path = write_volume(tmp_path / "zeros.zarr", background)
    array = zarr.open(str(path), mode="r")["0"]
    assert array.nchunks_initialized == array.nchunks == 4
    read_volume(path)
    assert [w for w in recwarn if "chunks are missing" in str(w.message)] == []


def test_tiff_refuses_a_voxel_size_its_fractions_cannot_hold(tmp_path):
    tiny = Volume(np.zeros((4, 8, 8), np.uint16), (1.0, 1e-300, 1e-300))
    with pytest.raises(VolumeIOError, match="fraction of 32-bit integers, which cannot hold "
                                            "1e-300 x 1e-300; write .zarr or .nii.gz"):
        write_volume(tmp_path / "t.tif", tiny)
    assert list(tmp_path.iterdir()) == []
    assert read_volume(write_volume(tmp_path / "t.zarr", tiny)).spacing == (1.0, 1e-300, 1e-300)
