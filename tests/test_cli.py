import numpy as np
import pytest

from napari_volsr.cli import main
from napari_volsr.engine.io import read_volume


def run(capsys, *args):
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_restore_tiff(capsys, tmp_path, anisotropic_tiff):
    src, data = anisotropic_tiff
    out = tmp_path / "iso.tif"
    code, stdout, _ = run(capsys, "restore", "-i", str(src), "-o", str(out), "-q")
    assert code == 0
    vol = read_volume(out)
    assert vol.data.shape == (32, 24, 20)  # auto z-factor: 0.8 / 0.2 = 4
    np.testing.assert_allclose(vol.spacing, (0.2, 0.2, 0.2))
    assert read_volume(src).data.tolist() == data.tolist()


def test_restore_nifti_with_explicit_options(capsys, tmp_path, rng):
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(rng.random((8, 7, 5)).astype(np.float32), np.diag([1, 1, 3.0, 1])),
             tmp_path / "in.nii.gz")
    out = tmp_path / "out.nii.gz"
    code, _, _ = run(capsys, "restore", "-i", str(tmp_path / "in.nii.gz"), "-o", str(out),
                     "--z-factor", "3", "--method", "linear", "--block-shape", "2,4,4", "-q")
    assert code == 0
    img = nib.load(out)
    assert img.shape == (8, 7, 15)
    np.testing.assert_allclose(img.header.get_zooms(), (1, 1, 1))


def test_info(capsys, anisotropic_tiff):
    code, stdout, _ = run(capsys, "info", str(anisotropic_tiff[0]))
    assert code == 0
    assert "(8, 24, 20)" in stdout and "uint16" in stdout and "0.8 x 0.2 x 0.2 µm" in stdout


@pytest.mark.parametrize("args,message", [
    (["restore", "-i", "MISSING.tif", "-o", "OUT.tif"], "no such file"),
    (["restore", "-i", "SRC", "-o", "OUT.tif", "-z", "0"], "--z-factor"),
    (["restore", "-i", "SRC", "-o", "OUT.tif", "-m", "magic"], "unknown model"),
    (["restore", "-i", "SRC", "-o", "SRC"], "equals the input"),
    (["restore", "-i", "SRC", "-o", "OUT.png"], "cannot write .png"),
    (["restore", "-i", "PLANE", "-o", "OUT.tif"], "2D image"),
    (["restore", "-i", "SRC", "-o", "OUT.tif", "--block-shape", "a,b"], "--block-shape"),
    (["info", "EMPTY.tif"], "empty"),
])
def test_bad_input_is_one_line_and_nonzero(capsys, tmp_path, anisotropic_tiff, args, message):
    import tifffile

    tifffile.imwrite(tmp_path / "plane.tif", np.zeros((5, 6), np.uint8))
    (tmp_path / "empty.tif").write_bytes(b"")
    names = {"SRC": str(anisotropic_tiff[0]), "MISSING.tif": str(tmp_path / "missing.tif"),
             "OUT.tif": str(tmp_path / "out.tif"), "OUT.png": str(tmp_path / "out.png"),
             "PLANE": str(tmp_path / "plane.tif"), "EMPTY.tif": str(tmp_path / "empty.tif")}
    code, stdout, stderr = run(capsys, *[names.get(a, a) for a in args])
    assert code != 0
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("volsr: error:"), stderr
    assert message in lines[0]
    assert "Traceback" not in stderr
    assert not (tmp_path / "out.tif").exists()


def test_existing_output_needs_overwrite(capsys, tmp_path, anisotropic_tiff):
    out = tmp_path / "o.tif"
    out.write_bytes(b"keep me")
    code, _, stderr = run(capsys, "restore", "-i", str(anisotropic_tiff[0]), "-o", str(out))
    assert code == 1 and "--overwrite" in stderr
    assert out.read_bytes() == b"keep me"


def test_headless_demo_writes_a_file(capsys, tmp_path):
    out = tmp_path / "demo.tif"
    code, _, _ = run(capsys, "demo", "--headless", "-o", str(out))
    assert code == 0
    vol = read_volume(out)
    assert vol.data.shape == (160, 152, 126)


def test_restore_with_a_saved_model_uses_its_z_factor(capsys, tmp_path, anisotropic_tiff, monkeypatch):
    from napari_volsr.engine.config import ModelConfig
    from napari_volsr.engine.models import save_model
    from napari_volsr.engine.registry import build_network, network_config

    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(tmp_path / "lib"))
    config = ModelConfig(name="up2", task="upsample", z_factor=2, network=network_config("gan", "tiny"))
    save_model(tmp_path / "lib" / "up2", config, build_network(config))
    out = tmp_path / "up.tif"
    code, _, stderr = run(capsys, "restore", "-m", "up2", "-i", str(anisotropic_tiff[0]),
                          "-o", str(out), "-q")
    assert code == 0, stderr
    vol = read_volume(out)
    assert vol.data.shape == (16, 24, 20)  # the model's x2, not the spacing's x4
    np.testing.assert_allclose(vol.spacing, (0.4, 0.2, 0.2))
    code, _, stderr = run(capsys, "restore", "-m", "up2", "-z", "4", "-i",
                          str(anisotropic_tiff[0]), "-o", str(tmp_path / "x.tif"))
    assert code == 1 and "trained for z-factor 2" in stderr
