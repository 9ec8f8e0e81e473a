"""`volsr restore --ngff-version`: 0.4 by default, 0.5 on request, refused for other formats."""

import numpy as np
import pytest
import tifffile

from helpers import error_line, run_cli

zarr = pytest.importorskip("zarr")


@pytest.fixture
def stack(tmp_path, rng):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, rng.random((6, 20, 20)).astype(np.float32), imagej=True,
                     resolution=(5.0, 5.0),
                     metadata={"axes": "ZYX", "spacing": 0.8, "unit": "micron"})
    return path


@pytest.mark.parametrize(("flag", "version", "zarr_format"),
                         [((), "0.4", 2), (("--ngff-version", "0.5"), "0.5", 3)])
def test_output_version(tmp_path, capsys, stack, flag, version, zarr_format):
    models = pytest.importorskip(f"ome_zarr_models.v0{version[-1]}")
    out = tmp_path / "iso.ome.zarr"
    code, _, err = run_cli(capsys, "restore", "-i", stack, "-o", out, "-m", "linear", "-q",
                           *flag)
    assert code == 0, err
    group = zarr.open_group(str(out), mode="r")
    assert group.metadata.zarr_format == zarr_format
    models.Image.from_zarr(group)  # raises on any NGFF violation


def test_refused_for_other_formats(tmp_path, capsys, stack):
    out = tmp_path / "iso.tif"
    code, _, err = run_cli(capsys, "restore", "-i", stack, "-o", out, "-m", "linear",
                           "--ngff-version", "0.5")
    assert code != 0
    assert "--ngff-version 0.5 applies to .zarr outputs" in error_line(err)
    assert not out.exists()
