"""`volsr train` at the defaults: it trains on the shipped samples and on small volumes,
the console resolves the same config, and errors suggest only settings the doors offer."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

import helpers
import napari_volsr
from napari_volsr.engine.degrade import default_degradation
from napari_volsr.engine.models import read_model_config
from napari_volsr.engine.training_request import VolumeInput, resolve_training

run = helpers.run_cli
SAMPLE = Path(napari_volsr.__file__).parent / "sample_data" / "chromosomes_anisotropic.tif"
QUICK = ["--preset", "tiny", "-q"]  # everything else at its default


def write_tiff(path, data, z_spacing, xy=0.2):
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / xy, 1 / xy),
                     metadata={"spacing": z_spacing, "unit": "um", "axes": "ZYX"})
    return path


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    """A 100^3 volume, the size of the ovule sample the issue trained on."""
    path = tmp_path_factory.mktemp("cube") / "cube.tif"
    return write_tiff(path, helpers.smooth(np.random.default_rng(5), (100, 100, 100)), 0.2)


def dry_run(capsys, *args) -> tuple[dict, str]:
    code, stdout, stderr = run(capsys, "train", *args, "--dry-run")
    assert code == 0, stderr
    return json.loads(stdout), stderr


@pytest.mark.parametrize("sample", ["chromosomes", "cube"])
def test_cli_trains_the_shipped_samples_at_the_defaults(capsys, library, cube, sample):
    inputs = (["--source", "isotropic", "--volume", SAMPLE] if sample == "chromosomes"
              else ["--target", cube, "-z", "2"])
    code, stdout, stderr = run(capsys, "train", *inputs, *QUICK, "--steps", "2")
    assert code == 0, stderr
    (name,) = [p.name for p in library.iterdir() if not p.name.startswith(".")]
    card = read_model_config(library / name).training
    assert card["steps"] == 2 and card["final_validation"]["psnr"] > 0
    assert "interpolation baseline: PSNR" in stdout
    assert card["voxel_unit"] == "µm"  # the model card says what the spacing is in


@pytest.mark.parametrize("z_factor,shape", [(2, (4, 32, 32)), (8, (3, 32, 32))])
def test_cli_trains_small_anisotropic_volumes_at_the_defaults(capsys, tmp_path, library, rng,
                                                             z_factor, shape):
    path = write_tiff(tmp_path / "small.tif", helpers.smooth(rng, shape), 0.2 * z_factor)
    code, _, stderr = run(capsys, "train", "--volume", path, *QUICK, "--steps", "1")
    assert code == 0, stderr
    assert read_model_config(library / "small-rcan").z_factor == z_factor


@pytest.mark.parametrize("z_factor", range(2, 9))
def test_default_patches_fit_every_z_factor_down_to_32_pixels(rng, z_factor):
    for shape in [(3, 32, 32), (5, 32, 48), (4, 47, 33), (2, 64, 40)]:
        volume = VolumeInput(rng.random(shape).astype(np.float32), (z_factor, 1, 1), "v")
        request = resolve_training(volume=volume, preset="tiny", name="fit",
                                   output_dir="/nonexistent")
        data = request.data  # the sampler accepts the fitted patch and validation split
        assert data.patch_shape == request.config.patch_shape
        assert len(data.validation) == request.config.n_val


def test_a_patch_too_tall_for_validation_trains_without_it(capsys, library):
    # The second try: before, "... or n_val=0", a setting the CLI does not offer.
    config, stderr = dry_run(capsys, "--volume", SAMPLE, "--patch", "32,64", *QUICK)
    assert config["patch_shape"] == [32, 64] and config["n_val"] == 0
    assert "training without validation" in stderr
    code, _, stderr = run(capsys, "train", "--volume", SAMPLE, "--patch", "64,64", *QUICK)
    assert code == 1
    line = helpers.error_line(stderr)
    assert "use a smaller patch" in line and "n_val" not in line


def console_config(monkeypatch, **kwargs) -> dict:
    """The config ``vs.train`` resolves for ``kwargs``, captured before it trains."""
    import napari_volsr.engine.training_request as training_request

    resolved = []

    def capture(**request):
        resolved.append(resolve_training(**request))
        raise KeyboardInterrupt  # stop before training

    monkeypatch.setattr(training_request, "resolve_training", capture)
    with pytest.raises(KeyboardInterrupt):
        napari_volsr.train(**kwargs)
    return resolved[0].config.model_dump(mode="json")


@pytest.mark.parametrize("sample", ["chromosomes", "cube"])
def test_console_and_cli_resolve_the_same_defaults(capsys, monkeypatch, library, cube, sample):
    from napari_volsr.engine.io import read_volume

    path, role, z_factor = ((SAMPLE, "volume", 4) if sample == "chromosomes"
                            else (cube, "target", 2))
    cli, _ = dry_run(capsys, f"--{role}", path, "-z", z_factor, "--name", "same")
    data = np.asarray(read_volume(path).data)
    console = console_config(monkeypatch, **{role: data}, z_factor=z_factor, name="same")
    assert console == cli
    source = "isotropic" if role == "volume" else "synthetic"
    assert cli["degradation"] == default_degradation(source).model_dump(mode="json")
    assert cli["validate_every"] == 50


def test_synthetic_denoising_is_not_refused_at_the_defaults(capsys, library, cube):
    config, _ = dry_run(capsys, "--target", cube)  # z-factor 1: blur and noise by default
    assert config["model"]["z_factor"] == 1
    assert max(config["degradation"]["gaussian_sigma"]) > 0
