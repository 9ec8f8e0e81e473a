import os

import numpy as np
import pytest
import tifffile
from helpers import records_and_result

from napari_volsr.engine.io import Volume, read_volume, write_volume
from napari_volsr.engine.pipeline import iter_restore_file, iter_restore_job
from napari_volsr.engine.predict import drain, restore
from napari_volsr.engine.restorers import get_restorer


def test_restore_job_loads_then_restores(smooth_volume):
    records, result = records_and_result(iter_restore_job(
        smooth_volume, "cubic", spacing=(0.8, 0.2, 0.2), block_shape=(6, 10, 12)))
    assert [r.stage for r in records[:3]] == ["load", "load", "normalise"]
    assert records[-1].stage == "finalise" and result.z_factor == 4  # from the spacing
    expected = restore(smooth_volume, get_restorer("cubic", 4), spacing=(0.8, 0.2, 0.2))
    np.testing.assert_allclose(result.data, expected.data, atol=1e-5)
    assert result.spacing == expected.spacing and result.origin == expected.origin


def test_a_trained_model_is_loaded_once_while_its_files_are_unchanged(tiny_library):
    first = get_restorer("tiny-x2", cache=True)
    again = get_restorer("tiny-x2", 2, cache=True)
    assert again.net is first.net  # one network for both (panels restoring at once)
    assert get_restorer("tiny-x2").net is not first.net  # uncached: a fresh load
    folder = tiny_library / "tiny-x2"
    later = max(p.stat().st_mtime for p in folder.iterdir()) + 10
    for path in folder.iterdir():  # saved again (retrained): newer files
        os.utime(path, (later, later))
    assert get_restorer("tiny-x2", cache=True).net is not first.net


def test_restore_job_frees_the_cached_network_afterwards(tiny_library, smooth_volume):
    restorer = get_restorer("tiny-x2", cache=True)
    drain(iter_restore_job(smooth_volume[:4, :16, :16], "tiny-x2", device="cpu"))
    assert next(restorer.net.parameters()).device.type == "cpu"


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_file_is_restored_and_written(tmp_path, smooth_volume, suffix):
    src = write_volume(tmp_path / "in.tif", Volume(smooth_volume, (0.8, 0.2, 0.2), "ZYX", "um"))
    out = tmp_path / f"out{suffix}"
    records, written = records_and_result(
        iter_restore_file(src, out, "linear", block_shape=(6, 10, 12)))
    assert any(r.stage == "blocks" for r in records)
    result = read_volume(out)
    expected = restore(smooth_volume, get_restorer("linear", 4)).data
    np.testing.assert_allclose(result.data, expected, atol=1e-4)
    assert result.spacing == pytest.approx((0.2, 0.2, 0.2))
    assert written.describe().startswith(f"wrote {out}: (48, 20, 24) float32, spacing 0.2 x 0.2")
    assert "(linear x4; 8 block(s) of 6x10x12" in written.describe()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", f"out{suffix}"]


def test_file_fitted_to_a_reference(tmp_path, smooth_volume):
    src = write_volume(tmp_path / "in.tif", Volume(smooth_volume, (2.0, 1.0, 1.0)))
    truth = restore(smooth_volume, get_restorer("cubic", 2)).data * 3 + 5
    ref = write_volume(tmp_path / "ref.tif", Volume(truth, (1.0, 1.0, 1.0)))
    written = drain(iter_restore_file(src, tmp_path / "out.tif", "cubic", reference=ref))
    np.testing.assert_allclose(read_volume(tmp_path / "out.tif").data, truth, rtol=1e-4)
    assert "fitted to ref.tif: 3 * x + 5" in written.describe()


def test_a_plane_is_refused_in_the_engines_words(tmp_path):
    src = tmp_path / "plane.tif"
    tifffile.imwrite(src, np.ones((8, 8), np.float32))
    with pytest.raises(ValueError) as refused:
        drain(iter_restore_file(src, tmp_path / "out.tif", "no-such-model"))
    with pytest.raises(ValueError) as engine:
        restore(np.ones((8, 8), np.float32), get_restorer("linear", 2))
    assert str(refused.value) == str(engine.value)  # before looking for the model
    assert not (tmp_path / "out.tif").exists()


def test_a_failed_restore_leaves_no_output(tmp_path, smooth_volume):
    bad = smooth_volume.copy()
    bad[3, 4, 5] = np.nan
    src = write_volume(tmp_path / "in.tif", Volume(bad, (1.0, 1.0, 1.0)))
    for name in ("out.tif", "out.zarr"):
        with pytest.raises(ValueError, match="NaN or Inf"):
            drain(iter_restore_file(src, tmp_path / name, "linear", 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]
