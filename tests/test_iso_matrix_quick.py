"""The isotropic matrix and the 2D isotropic inference timing run end to end (tiny, quick).

As in test_benchmarks.py, figures are not asserted: a seconds-long training scores what
it scores. What is checked: every row is printed, the CSBDeep row says how to enable it
when its interpreter is not set, and the slab-grid upsampling the CSBDeep runner feeds
IsotropicCARE is the engine's own linear interpolation.
"""

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
FAMILIES = ("rcan", "srunet", "gan", "diffusion", "unet")


def run_benchmark(name: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "VOLSR_CSBDEEP_PYTHON"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], cwd=BENCHMARKS,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("csbdeep") is not None,
                    reason="csbdeep in this environment: the CSBDeep row would train")
def test_quick_iso_matrix_prints_every_row(tmp_path):
    table = tmp_path / "rows.tsv"
    # Through quality.py, which hands every option over to iso_matrix.py.
    out = run_benchmark("quality.py", "--case", "iso-matrix", "--quick", "--volumes", "em",
                        "--z-factors", "4", "--out", str(table))
    assert out.startswith("command: ") and "dCubic" in out
    rows = {line.split()[2]: line for line in out.splitlines() if line.startswith("em ")}
    assert set(rows) == {"cubic", *FAMILIES, "isotropic-care"}
    assert "skipped: set VOLSR_CSBDEEP_PYTHON" in rows["isotropic-care"]
    assert float(rows["cubic"].split()[6]) == 0.0  # the deltas' reference
    for family in FAMILIES:
        cells = rows[family].split()
        psnr, ssim, delta = float(cells[4]), float(cells[5]), float(cells[6])
        assert math.isfinite(psnr) and -1 <= ssim <= 1
        assert delta == pytest.approx(psnr - float(rows["cubic"].split()[4]), abs=0.011)
        assert all(float(v) >= 0 for v in cells[7:11])  # train and restore wall / CPU s
        assert int(cells[11]) >= 1  # training steps
    lines = table.read_text().splitlines()
    assert lines[0].split("\t")[:3] == ["volume", "z", "method"]
    assert len(lines) == 1 + len(rows)


def test_quick_iso2d_inference_prints_both_tables():
    monai = importlib.util.find_spec("monai") is not None
    out = run_benchmark("inference.py", "--families", "", "--iso2d-families", "gan,srunet",
                        "--presets", "tiny", "--iso2d-shape", "8,32,32", "--repeats", "1",
                        *([] if monai else ["--no-monai"]))
    assert "Restore throughput, 2D isotropic" in out
    assert "Restore throughput, 3D" not in out  # --families '' skips the 3D rows
    assert ("MONAI sliding_window_inference on the same planes" in out) == monai
    rows = [line.split() for line in out.splitlines()
            if line.startswith(("2D:gan ", "2D:srunet "))]
    assert len(rows) == (4 if monai else 2)
    throughput = rows[:2]
    for cells in throughput:
        assert cells[4] == "2x32x32"  # the input: output depth / z-factor 4
        # counted from the end: the plan column holds spaces
        seconds, margin, ratio = float(cells[-10]), float(cells[-6]), float(cells[-3])
        # Tiny networks on tiny planes: most of the restore is overhead, so the ratio may
        # print as 0.00; it must still be a number. The halo makes margin > 1.
        assert seconds > 0 and margin > 1 and 0 <= ratio and math.isfinite(ratio)
    if monai:
        assert all(cells[-1] == "yes" for cells in rows[2:])


@pytest.mark.parametrize("z_factor", [2, 4, 6])
def test_csbdeep_runner_upsamples_on_the_slab_grid(z_factor):
    # The runner hands IsotropicCARE a volume already upsampled along z (factor 1 left for
    # its own zoom) so its output lands on the slab grid: linear interpolation there is
    # what the engine's own "linear" baseline computes.
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _csbdeep_iso import predict
    finally:
        sys.path.remove(str(BENCHMARKS))
    import torch

    from napari_volsr.engine.interp import upsample_z

    class Identity:  # IsotropicCARE.predict with factor 1 and a network that changes nothing
        def predict(self, volume, axes, factor):
            assert axes == "ZYX" and factor == 1
            return volume

    volume = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    ours = predict(Identity(), volume, z_factor, "slab")
    engine = upsample_z(torch.from_numpy(volume)[None, None], z_factor, "linear")[0, 0].numpy()
    assert ours.shape == (5 * z_factor, 6, 7)
    np.testing.assert_allclose(ours, engine, atol=1e-5)
