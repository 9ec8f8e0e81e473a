"""BioImage Model Zoo export and import (engine/bioimageio.py), checked with bioimageio.core."""

import zipfile

import numpy as np
import pytest
import yaml

pytest.importorskip("bioimageio.core")

import helpers  # noqa: E402
from napari_volsr.engine.bioimageio import export_bioimageio, import_bioimageio  # noqa: E402
from napari_volsr.engine.models import ModelError  # noqa: E402


def _rdf(package):
    with zipfile.ZipFile(package) as archive:
        return yaml.safe_load(archive.read("rdf.yaml")), set(archive.namelist())


def test_rcan_package_passes_the_model_zoo_test(tmp_path, save_tiny):
    folder = save_tiny(tmp_path / "rcan-z1", family="rcan", z_factor=1, percentiles=(2.0, 99.5))
    path, notes = export_bioimageio(folder, tmp_path / "rcan.zip")
    assert notes == []  # TorchScript written too
    rdf, names = _rdf(path)
    assert {"rdf.yaml", "weights.pt", "weights_torchscript.pt", "test_input.npy",
            "test_output.npy", "cover.png", "README.md"} <= names
    weights = rdf["weights"]["pytorch_state_dict"]
    assert weights["architecture"]["import_from"] == "napari_volsr.engine.nets.rcan"
    assert weights["architecture"]["callable"] == "RCAN"
    steps = [s for s in rdf["inputs"][0]["preprocessing"] if s["id"] == "scale_range"]
    assert steps[0]["kwargs"]["min_percentile"] == 2.0
    assert steps[0]["kwargs"]["max_percentile"] == 99.5
    assert [a.get("id", a["type"]) for a in rdf["inputs"][0]["axes"]] == [
        "batch", "channel", "z", "y", "x"]
    assert rdf["license"] and rdf["authors"] and rdf["cite"]
    helpers.zoo_test(path)


def test_z_factor_is_the_output_z_scale(tmp_path, save_tiny):
    folder = save_tiny(tmp_path / "gan-z2", family="gan", z_factor=2)
    path, _ = export_bioimageio(folder, tmp_path / "gan.zip")
    rdf, _ = _rdf(path)
    z = next(a for a in rdf["outputs"][0]["axes"] if a.get("id") == "z")
    assert z["scale"] == 0.5 and z["size"] == {"tensor_id": "raw", "axis_id": "z"}
    with zipfile.ZipFile(path) as archive:
        archive.extract("test_input.npy", tmp_path)
        archive.extract("test_output.npy", tmp_path)
    assert np.load(tmp_path / "test_output.npy").shape[2] == 2 * np.load(
        tmp_path / "test_input.npy").shape[2]
    helpers.zoo_test(path)


def test_import_of_our_export_restores_identically(tmp_path, library, save_tiny, smooth_volume):
    from napari_volsr.engine.predict import restore
    from napari_volsr.engine.restorers import get_restorer

    folder = save_tiny(tmp_path / "srunet-z2", family="srunet", z_factor=2)
    path, _ = export_bioimageio(folder, tmp_path / "srunet.zip")
    imported = import_bioimageio(path, name="back")
    assert imported == library / "back"
    original = restore(smooth_volume, get_restorer(str(folder)), device="cpu").data
    again = restore(smooth_volume, get_restorer("back"), device="cpu").data
    np.testing.assert_array_equal(again, original)
    with pytest.raises(ModelError, match="exists"):
        import_bioimageio(path, name="back")


@pytest.mark.parametrize("family, fields, words", [
    ("diffusion", {}, "diffusion model: it restores by sampling"),
    ("rcan", {"task": "isotropic", "spatial_dims": 2}, "XZ and the YZ planes"),
])
def test_inexpressible_models_are_refused(tmp_path, save_tiny, family, fields, words):
    folder = save_tiny(tmp_path / "m", family=family, z_factor=2, **fields)
    with pytest.raises(ModelError, match=words):
        export_bioimageio(folder, tmp_path / "m.zip")
    assert not (tmp_path / "m.zip").exists()


def test_other_architectures_are_refused_with_what_is_supported(tmp_path, library, save_tiny):
    folder = save_tiny(tmp_path / "rcan-z1", family="rcan", z_factor=1)
    path, _ = export_bioimageio(folder, tmp_path / "ours.zip")
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(foreign, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "rdf.yaml":
                data = data.replace(b"napari_volsr.engine.nets.rcan", b"somelab.unet")
            dst.writestr(item, data)
    with pytest.raises(ModelError, match="its architecture is somelab.unet.RCAN; napari-volsr "
                                         "imports Model Zoo packages whose"):
        import_bioimageio(foreign)
    assert not any(library.iterdir())


def test_cli_export_and_import(capsys, tmp_path, library, save_tiny):
    save_tiny(library / "up2", family="gan", z_factor=2)
    dest = tmp_path / "up2.zip"
    code, out, err = helpers.run_cli(capsys, "models", "export", "up2", dest,
                                     "--format", "bioimageio")
    assert code == 0, err
    assert "BioImage Model Zoo package" in out and "rdf.yaml" in _rdf(dest)[1]
    code, out, err = helpers.run_cli(capsys, "models", "import", dest, "--name", "up2-back")
    assert code == 0, err
    assert (library / "up2-back" / "config.json").is_file()
    code, out, err = helpers.run_cli(capsys, "models", "export", "up2", tmp_path / "x.zip")
    assert code == 0, err
    assert "up2/config.json" in zipfile.ZipFile(tmp_path / "x.zip").namelist()  # the folder zip
