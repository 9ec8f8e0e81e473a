"""``volsr restore`` with several -m: a chain of models as one job."""

import numpy as np
from helpers import TINY_NETWORK, error_line, run_cli, save_tiny, smooth

from napari_volsr.engine.io import Volume, read_volume, write_volume


def test_restore_with_a_denoiser_then_an_upsampling_model(capsys, tmp_path, rng, tiny_library):
    save_tiny(tiny_library / "den", family="rcan", z_factor=1)
    data = np.round(smooth(rng, (6, 20, 24))).astype(np.uint16)
    src = write_volume(tmp_path / "in.tif", Volume(data, (0.4, 0.2, 0.2), "ZYX", "um"))
    out = tmp_path / "out.tif"
    code, stdout, _ = run_cli(capsys, "restore", "-i", src, "-o", out, "-m", "den",
                              "--model", TINY_NETWORK)
    assert code == 0
    assert f"(den then {TINY_NETWORK} x2; den: " in stdout
    result = read_volume(out)
    assert result.data.shape == (12, 20, 24) and result.data.dtype == np.uint16
    assert result.spacing == (0.2, 0.2, 0.2)
    code, _, stderr = run_cli(capsys, "restore", "-i", src, "-o", tmp_path / "o.zarr", "-m", "den",
                              "-m", TINY_NETWORK, "--workers", "1")
    error_line(stderr)
    assert code != 0 and "a chain of models runs in this process" in stderr
