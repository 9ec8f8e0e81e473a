"""The benchmark scripts still run against the current engine (tiny networks, tiny volumes).

Their figures are not checked here (timings belong in the scripts' output, not in
assertions); what is checked is that each script finishes and prints its table.
"""

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, *args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], cwd=BENCHMARKS,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_inference_benchmark_prints_its_tables():
    # MONAI is a benchmark-only extra: without it the script skips that table.
    monai = importlib.util.find_spec("monai") is not None
    out = run_script("inference.py", "--families", "gan,srunet", "--presets", "tiny",
                     "--z-factors", "1,2", "--shape", "8,32,32", "--repeats", "1",
                     "--block-shape", "4,16,16", *([] if monai else ["--no-monai"]))
    assert "Restore throughput" in out
    assert ("MONAI sliding_window_inference" in out) == monai
    rows = [line for line in out.splitlines() if line.startswith(("gan ", "srunet "))]
    assert len(rows) == (8 if monai else 4)  # 2 families x 2 z-factors, per table
    assert all("nan" not in row for row in rows)


def test_training_benchmark_prints_steps_per_second():
    out = run_script("training.py", "--families", "rcan", "--presets", "tiny",
                     "--z-factors", "1", "--steps", "2", "--warmup", "1",
                     "--shape", "40,136,80")
    assert "steps/s" in out and "rcan" in out


def test_profile_restore_groups_operators():
    out = run_script("profile_restore.py", "--family", "srunet", "--preset", "tiny",
                     "--shape", "8,32,32")
    assert "convolution" in out and "margin" in out


def test_layout_benchmark_compares_both_layouts():
    out = run_script("layout.py", "--families", "gan", "--presets", "tiny", "--z-factors", "2",
                     "--shape", "8,32,32", "--repeats", "1")
    row = [line for line in out.splitlines() if line.startswith("gan ")]
    assert len(row) == 1 and "nan" not in row[0]


def test_denoise_matrix_prints_its_table(tmp_path):
    # BM4D is a benchmark-only extra (and CAREamics lives in its own venv): without it,
    # the script prints a skipped row; here bm4d runs only when installed.
    methods = ["gaussian", "synthetic", "noise2void"]
    if importlib.util.find_spec("bm4d") is not None:
        methods.append("bm4d")
    out = run_script("denoise_matrix.py", "--quick", "--volumes", "em", "--peaks", "30",
                     "--methods", ",".join(methods), "--preset", "tiny",
                     "--out", str(tmp_path))
    assert out.startswith("command: ") and "PSNR" in out
    rows = {line.split()[2]: line.split() for line in out.splitlines()
            if line.startswith("em ")}
    assert set(rows) == {"noisy", *methods}
    for cells in rows.values():  # finite scores (a seconds-long training may score low)
        psnr, ssim = float(cells[4]), float(cells[5])
        assert math.isfinite(psnr) and -1 <= ssim <= 1
    for method in ("synthetic", "noise2void"):  # train wall/CPU, restore wall/CPU, steps
        assert all(float(value) >= 0 for value in rows[method][6:10])
        assert int(rows[method][10]) >= 1
    assert (tmp_path / "results.csv").is_file()


def test_noisy_isotropic_prints_every_row(tmp_path):
    out = run_script("noisy_isotropic.py", "--quick", "--methods", "iso,n2v",
                     "--minutes", "0.03", "--out", str(tmp_path))
    assert out.startswith("command: ")
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert set(rows) == {"spline", "gaussian+spline", "iso", "n2v+spline", "n2v>iso"}
    for line in rows.values():
        assert math.isfinite(float(line.split()[2]))
    # The one-job chain restores exactly what the two separate restores give.
    assert "max |diff| 0.00e+00" in rows["n2v>iso"]


def test_tta_gain_prints_both_restores(tmp_path):
    out = run_script("tta_gain.py", "--runs", "nuclei:noise2void:unet:2:tiny:patch=16x16:steps=2",
                     "--crop", "40", "--peak", "10", "--out", str(tmp_path))
    assert "PSNR" in out and "flips" in out and "gain" in out


def test_lateral_matrix_prints_every_family(tmp_path):
    out = run_script("lateral_matrix.py", "--quick", "--volumes", "em", "--factors", "2",
                     "--families", "rcan,unet", "--out", str(tmp_path))
    rows = {line.split()[2]: line.split() for line in out.splitlines()
            if line.split()[:1] == ["em"]}
    assert set(rows) == {"cubic", "rcan", "unet"}
    for cells in rows.values():
        assert math.isfinite(float(cells[4])) and -1 <= float(cells[5]) <= 1
    for family in ("rcan", "unet"):  # a delta to the spline, times, steps
        assert math.isfinite(float(rows[family][6])) and int(rows[family][11]) == 2
    assert "input (8, 24, 24)" in out
