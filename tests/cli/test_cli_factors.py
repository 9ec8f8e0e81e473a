"""``--factors Z,Y,X`` on ``volsr restore`` and ``volsr train`` (issue 16: per-axis factors)."""

import json

import numpy as np
import pytest
import tifffile
from helpers import error_line, run_cli, save_tiny

from napari_volsr.engine.io import read_volume


def _spacing_from_tiff(path):
    """(z, y, x) spacing an ImageJ TIFF records: the z spacing and the pixels per unit."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        x_res, y_res = (page.tags[f"{a}Resolution"].value for a in "XY")
        z = tif.imagej_metadata["spacing"]
    return z, y_res[1] / y_res[0], x_res[1] / x_res[0]


def test_restore_with_lateral_factors_doubles_y_and_x_and_halves_their_spacing(
        capsys, tmp_path, anisotropic_tiff):
    src, data = anisotropic_tiff  # (8, 24, 20), spacing 0.8 x 0.2 x 0.2 µm
    out = tmp_path / "out.tif"
    code, _, stderr = run_cli(capsys, "restore", "-i", src, "--model", "cubic",
                              "--factors", "1,2,2", "-o", out, "-q")
    assert code == 0, stderr
    written = tifffile.imread(out)
    assert written.shape == (8, 48, 40) and written.dtype == data.dtype
    np.testing.assert_allclose(_spacing_from_tiff(out), (0.8, 0.1, 0.1), rtol=1e-5)
    volume = read_volume(out)
    np.testing.assert_allclose(volume.spacing, (0.8, 0.1, 0.1), rtol=1e-5)
    # The slab grid: the first output pixel sits a quarter input pixel before the input's.
    np.testing.assert_allclose(volume.origin[1:], (-0.05, -0.05), atol=1e-6)
    assert tifffile.imread(src).tolist() == data.tolist()  # input untouched


def test_factors_with_z_only_is_the_z_factor(capsys, tmp_path, anisotropic_tiff):
    src, _ = anisotropic_tiff
    outs = [tmp_path / "z.tif", tmp_path / "factors.tif"]
    for out, flags in zip(outs, (["--z-factor", "2"], ["--factors", "2,1,1"])):
        code, _, stderr = run_cli(capsys, "restore", "-i", src, "-o", out, *flags, "-q")
        assert code == 0, stderr
    first, second = (read_volume(p) for p in outs)
    assert first.data.shape == (16, 24, 20)
    np.testing.assert_array_equal(first.data, second.data)
    np.testing.assert_allclose(first.spacing, second.spacing)


def test_agreeing_z_factor_and_factors_are_accepted(capsys, tmp_path, anisotropic_tiff):
    out = tmp_path / "out.tif"
    code, stdout, stderr = run_cli(capsys, "restore", "-i", anisotropic_tiff[0], "-o", out,
                                   "-z", "2", "--factors", "2,2,2")
    assert code == 0, stderr
    assert read_volume(out).data.shape == (16, 48, 40)
    assert "x(2,2,2)" in stdout  # the line says what was done


@pytest.mark.parametrize("value", ["0,2,2", "1,2", "1,2,2,2", "a,b,c", "1.5,2,2", "1,17,1",
                                   "", "2,-2,2"])
def test_bad_factors_are_one_line_naming_the_flag(capsys, tmp_path, anisotropic_tiff, value):
    out = tmp_path / "out.tif"
    code, stdout, stderr = run_cli(capsys, "restore", "-i", anisotropic_tiff[0], "-o", out,
                                   "--factors", value)
    assert code != 0 and stdout == ""
    line = error_line(stderr)
    assert "--factors" in line and "1 to 16" in line and repr(value) in line
    assert not out.exists() and list(tmp_path.iterdir()) == [anisotropic_tiff[0]]


def test_z_factor_and_factors_that_disagree_are_refused(capsys, tmp_path, anisotropic_tiff):
    out = tmp_path / "out.tif"
    code, _, stderr = run_cli(capsys, "restore", "-i", anisotropic_tiff[0], "-o", out,
                              "--z-factor", "4", "--factors", "1,2,2")
    assert code != 0
    line = error_line(stderr)
    assert "--z-factor 4" in line and "--factors 1,2,2" in line and "disagree" in line
    assert not out.exists()


def test_train_takes_factors(capsys, tmp_path, library, rng):
    clean = tmp_path / "clean.tif"
    tifffile.imwrite(clean, (rng.random((16, 64, 64)) * 1000).astype(np.uint16))
    code, stdout, stderr = run_cli(capsys, "train", "--source", "synthetic", "--target", clean,
                                   "--factors", "1,2,2", "--family", "srunet", "--dry-run")
    assert code == 0, stderr
    model = json.loads(stdout)["model"]
    assert model["z_factor"] == 1 and model["lateral_factors"] == [2, 2]
    assert model["task"] == "upsample"
    for flags, words in ((["--factors", "1,2"], "--factors"),
                         (["--z-factor", "2", "--factors", "1,2,2"], "disagree")):
        code, _, stderr = run_cli(capsys, "train", "--source", "synthetic", "--target", clean,
                                  *flags, "--dry-run")
        assert code != 0 and words in error_line(stderr)
    assert list(library.iterdir()) == []  # nothing trained, nothing reserved


def test_models_list_shows_a_lateral_models_factors(capsys, library):
    save_tiny(library / "sr2", family="srunet", z_factor=1, lateral_factors=(2, 2),
              task="upsample")
    save_tiny(library / "up2", family="srunet", z_factor=2)
    code, stdout, _ = run_cli(capsys, "models", "list", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(stdout)}
    assert rows["sr2"]["factors"] == [1, 2, 2] and "factors" not in rows["up2"]
    code, stdout, _ = run_cli(capsys, "models", "list")
    table = {line.split()[0]: line.split() for line in stdout.splitlines()[1:]}
    assert table["sr2"][3] == "1,2,2" and table["up2"][3] == "2"
