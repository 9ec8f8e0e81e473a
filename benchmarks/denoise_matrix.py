"""Denoising matrix: our trained denoisers next to a Gaussian filter, BM4D and CAREamics N2V.

Each volume of ``../shared/data`` is normalised to [0, 1] by its 0.1 / 99.9 percentiles
and split along Y: the first half is the *clean* volume of the same kind that the
``synthetic`` method trains on, the last half is the scored half. The scored half gets
Poisson-Gaussian noise (``--peaks`` photons at intensity 1, plus Gaussian ``--gaussian``)
and every method restores it:

- ``noise2void`` (ours): trained on the noisy scored half alone (as N2V is used).
- ``synthetic`` (ours): trained on the clean first half, degraded on the fly with the
  known noise (converted to the engine's own 1 / 99.8 percentile units), then applied
  to the noisy half.
- ``noise2noise`` (ours, optional): trained on the noisy half and a second, independent
  noise draw of it (the second acquisition); the first draw is restored.
- ``gaussian``: a Gaussian filter at the sigma with the best PSNR against the truth
  (an oracle choice, the best any Gaussian can do).
- ``bm4d``: the ``bm4d`` package on the generalized Anscombe transform of the counts,
  with sigma 1 there, then the closed-form unbiased inverse (Makitalo & Foi).
- ``careamics``: CAREamics' Noise2Void (its ``create_n2v_config`` defaults) as a 3D
  network on ZYX patches of ``--careamics-patch`` (default 32x64x64, batch 4: our
  engine's own 3D patch and batch), trained on the noisy half for the same budget, run
  in its own interpreter (``benchmarks/_careamics_n2v.py``).
- ``careamics-2d`` (optional): the same, as a 2D network on the z slices (axes SYX,
  64x64 patches, batch 128: the same voxels per step; CAREamics' usual way with
  stacks, and much faster per step on a CPU).

Our methods train through the public console API (``napari_volsr.api.train`` /
``restore``) with nothing but the source, the budget and (synthetic) the noise model,
so the rows measure the defaults a user gets; ``--family``, ``--preset`` and
``--spatial-dims`` pass through when given. PSNR and SSIM use data range 1 and ignore a
border of 4 voxels. Times are wall and CPU seconds (this process plus reaped children);
BM4D and the Gaussian have no training, their time is the restore column.

How to run the full matrix on the 2-core machine, kept otherwise idle (the defaults:
2 volumes x 2 peaks x 4 trained methods x 1+3+10 budget minutes, plus restores and
BM4D: about 6 h; the 10-minute FIB-SEM peak-30 rows alone take about 1 h)::

    # CAREamics 0.3.5 pins torchvision<=0.26 (torch 2.11), so it lives in its own venv
    python3 -m venv /work/benchvenv && /work/benchvenv/bin/pip install careamics==0.3.5
    export VOLSR_CAREAMICS_PYTHON=/work/benchvenv/bin/python
    pip install -e '.[bench]'          # bm4d
    python benchmarks/denoise_matrix.py --volumes em,nuclei --peaks 10,30 \\
        --minutes 1,3,10 --out /tmp/volsr-denoise-matrix
    python benchmarks/denoise_matrix.py --volumes em --peaks 30 --minutes 10   # must-show

    # the CI-sized check (a tiny crop, seconds-long budgets, the same table)
    python benchmarks/denoise_matrix.py --quick --methods gaussian,synthetic,noise2void

``python benchmarks/quality.py --case denoise-matrix ...`` runs the same script.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOLUMES = {
    "em": "em_fibsem_fly_medulla_10nm_128x160x160.tif",
    "nuclei": "fluo_ovule_nuclei_confocal_100x100x100.tif",
    "membrane": "fluo_ovule_membrane_confocal_32x128x128.tif",
}
OURS = ("noise2void", "synthetic", "noise2noise")
BASELINES = ("gaussian", "bm4d", "careamics", "careamics-2d")
BORDER = 4
QUICK_CROP = (16, 64, 64)  # halves of 16 x 32 x 64: SSIM past the border, 32x32 N2V patches
RUNNER = Path(__file__).resolve().parent / "_careamics_n2v.py"


@dataclass
class Row:
    """One line of the table (None prints as '-')."""

    volume: str
    peak: float
    method: str
    budget: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    train_s: float | None = None
    train_cpu_s: float | None = None
    restore_s: float | None = None
    restore_cpu_s: float | None = None
    steps: int | None = None
    note: str = ""


COLUMNS = (("volume", 8, "s"), ("peak", 4, "g"), ("method", 11, "s"), ("budget", 6, "g"),
           ("psnr", 6, ".2f"), ("ssim", 6, ".4f"), ("train_s", 8, ".1f"),
           ("train_cpu_s", 8, ".1f"), ("restore_s", 8, ".1f"), ("restore_cpu_s", 8, ".1f"),
           ("steps", 6, "d"))
TITLES = {"budget": "min", "psnr": "PSNR", "ssim": "SSIM", "train_s": "train s",
          "train_cpu_s": "trainCPU", "restore_s": "rest. s", "restore_cpu_s": "rest.CPU"}


def header() -> str:
    cells = [f"{TITLES.get(n, n):<{w}}" if f == "s" else f"{TITLES.get(n, n):>{w}}"
             for n, w, f in COLUMNS]
    return " ".join(cells) + "  note"


def format_row(row: Row) -> str:
    cells = []
    for name, width, fmt in COLUMNS:
        value = getattr(row, name)
        text = "-" if value is None else format(value, fmt)
        cells.append(f"{text:<{width}}" if fmt == "s" else f"{text:>{width}}")
    return " ".join(cells) + (f"  {row.note}" if row.note else "")


# ---------------------------------------------------------------- data and scores
def normalise(volume: np.ndarray) -> np.ndarray:
    """Map the 0.1 / 99.9 percentiles to 0 / 1 (float32, not clipped)."""
    low, high = np.percentile(volume, [0.1, 99.9])
    return ((volume.astype(np.float32) - low) / (high - low)).astype(np.float32)


def load_halves(name: str, data_dir: Path, quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """(clean training half, clean scored half): the first and last half of the Y rows."""
    from napari_volsr.engine.io import read_volume

    volume = normalise(np.asarray(read_volume(data_dir / VOLUMES[name]).data))
    if quick:  # a centred crop: the same code path in seconds
        starts = [max(0, (n - c) // 2) for n, c in zip(volume.shape, QUICK_CROP, strict=True)]
        volume = volume[tuple(slice(s, s + c) for s, c in zip(starts, QUICK_CROP, strict=True))]
    half = volume.shape[1] // 2
    return volume[:, :half].copy(), volume[:, half:2 * half].copy()


def add_noise(clean: np.ndarray, peak: float, sigma: float, seed: int) -> np.ndarray:
    """Poisson (``peak`` photons at 1) plus Gaussian noise: the engine's own noise model."""
    from napari_volsr.engine.degrade import add_noise as engine_noise

    return engine_noise(clean, np.random.default_rng(seed), poisson_peak=peak,
                        gaussian_sigma=sigma)


def interior(volume: np.ndarray) -> np.ndarray:
    return volume[tuple(slice(BORDER, n - BORDER) for n in volume.shape)]


def score(prediction, truth) -> tuple[float, float]:
    """PSNR and SSIM with data range 1, a border of ``BORDER`` voxels ignored."""
    from napari_volsr.engine.metrics import psnr, ssim

    pred, ref = interior(np.asarray(prediction, np.float32)), interior(truth)
    return psnr(pred, ref, 1.0), ssim(pred, ref, 1.0)


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Clock:
    """Wall and CPU seconds of a ``with`` block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu


# ---------------------------------------------------------------- baselines
def gaussian_best(noisy: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, float]:
    """The Gaussian filter (sigma 0.3 .. 3.0 voxels, steps of 0.1) with the best PSNR."""
    from scipy.ndimage import gaussian_filter

    best = (-math.inf, None, 0.0)
    for sigma in np.round(np.arange(0.3, 3.01, 0.1), 1):
        smooth = gaussian_filter(noisy, float(sigma), mode="reflect")
        value = score(smooth, truth)[0]
        if value > best[0]:
            best = (value, smooth, float(sigma))
    return best[1], best[2]


def gat_forward(counts: np.ndarray, sigma: float) -> np.ndarray:
    """Generalized Anscombe transform of Poisson counts plus Gaussian noise (gain 1).

    ``2 sqrt(max(z + 3/8 + sigma^2, 0))`` makes the noise variance about 1
    (M. Makitalo and A. Foi, "Optimal inversion of the generalized Anscombe
    transformation for Poisson-Gaussian noise", IEEE Trans. Image Process. 22(1),
    91-103, 2013; after Murtagh, Starck and Bijaoui 1995).

    Parameters
    ----------
    counts
        Noisy data in photon units (Poisson counts plus Gaussian noise).
    sigma
        Standard deviation of the Gaussian part, in photon units.
    """
    return 2.0 * np.sqrt(np.maximum(counts + 0.375 + sigma**2, 0.0))


def gat_inverse(denoised: np.ndarray, sigma: float) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse of :func:`gat_forward`.

    ``D^2/4 + sqrt(3/2)/(4 D) - 11/(8 D^2) + 5 sqrt(3/2)/(8 D^3) - 1/8 - sigma^2``,
    clipped at 0 (Makitalo and Foi, IEEE Trans. Image Process. 22(1), 2013, eq. 20;
    the Poisson part from their "Closed-form approximation of the exact unbiased
    inverse of the Anscombe variance-stabilizing transformation", IEEE TIP 20(9),
    2011). ``D`` is held at 2 sqrt(3/8), the transform of zero photons, where the
    series gives 0 and below which its negative powers would blow up.
    """
    d = np.maximum(denoised, 2.0 * math.sqrt(0.375))
    root = math.sqrt(1.5)
    value = (d**2 / 4 + root / (4 * d) - 11 / (8 * d**2) + 5 * root / (8 * d**3)
             - 0.125 - sigma**2)
    return np.maximum(value, 0.0)


def run_bm4d(noisy: np.ndarray, peak: float, sigma: float, profile: str) -> np.ndarray:
    """BM4D with a variance-stabilising transform for the Poisson part.

    The normalised data times ``peak`` are photon counts plus Gaussian noise of
    ``sigma * peak``; after :func:`gat_forward` the noise is about unit-variance
    Gaussian, so BM4D runs with ``sigma_psd=1``, and :func:`gat_inverse` maps back.
    """
    import bm4d

    read_noise = sigma * peak
    stable = gat_forward(noisy.astype(np.float64) * peak, read_noise)
    denoised = bm4d.bm4d(stable, sigma_psd=1.0, profile=profile)
    return (gat_inverse(np.asarray(denoised), read_noise) / peak).astype(np.float32)


def careamics_python(args) -> str | None:
    """The interpreter that has CAREamics: the option, the variable, or this one."""
    given = args.careamics_python or os.environ.get("VOLSR_CAREAMICS_PYTHON")
    if given:
        return given if Path(given).exists() else None
    return sys.executable if importlib.util.find_spec("careamics") else None


def run_careamics(noisy: np.ndarray, minutes: float, args, work: Path,
                  two_d: bool = False) -> tuple:
    """CAREamics N2V in its own interpreter; returns (restored, report dict)."""
    python = careamics_python(args)
    if python is None:
        raise SkipRow("careamics not found: pass --careamics-python or set "
                      "VOLSR_CAREAMICS_PYTHON (see benchmarks/_careamics_n2v.py)")
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "noisy.npy", noisy)
    command = [python, str(RUNNER), "--input", str(work / "noisy.npy"),
               "--output", str(work / "restored.npy"), "--report", str(work / "report.json"),
               "--minutes", f"{minutes:g}", "--work-dir", str(work),
               "--axes", "SYX" if two_d else "ZYX",
               "--patch", args.careamics_2d_patch if two_d else args.careamics_patch,
               "--batch", str(args.careamics_2d_batch if two_d else args.careamics_batch)]
    # Generous: the budget, then the prediction and the imports.
    limit = minutes * 60 * 2 + 1200
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise SkipRow(f"careamics runner still running after {limit:.0f} s") from None
    if proc.returncode != 0:
        (work / "runner.log").write_text(proc.stdout + proc.stderr)
        lines = proc.stderr.strip().splitlines() or ["no output"]
        reason = next((line for line in reversed(lines) if "Error" in line), lines[-1])
        raise SkipRow(f"careamics runner failed ({work / 'runner.log'}): {reason.strip()}")
    report = json.loads((work / "report.json").read_text())
    return np.load(work / "restored.npy"), report


class SkipRow(Exception):
    """A row that cannot run here; the message is printed in its place."""


# ---------------------------------------------------------------- ours
def synthetic_degradation(clean_train: np.ndarray, peak: float, sigma: float) -> dict:
    """The known noise in the engine's units (its 1 / 99.8 percentiles map to 0 / 1).

    A value ``t`` of our [0, 1] scale is ``u = (t - a) / (b - a)`` there, so ``peak``
    photons at our 1 are ``peak * (b - a)`` at its 1 and the Gaussian sigma is
    ``sigma / (b - a)``; the shot noise of our small offset ``a`` is left out.
    """
    from napari_volsr.engine.data import DEFAULT_PERCENTILES

    low, high = np.percentile(clean_train, DEFAULT_PERCENTILES)
    span = float(high - low)
    engine_peak, engine_sigma = peak * span, sigma / span
    return {"poisson_peak": (engine_peak, engine_peak),
            "gaussian_sigma": (engine_sigma, engine_sigma),
            "blur_sigma": (0.0, 0.0), "lateral_blur_sigma": (0.0, 0.0)}


def train_ours(method: str, case: dict, minutes: float, args, name: str):
    """Train one of our methods through ``napari_volsr.api.train``; returns (model, Clock)."""
    import napari_volsr.api as vs

    options = {k: v for k, v in (("family", args.family), ("preset", args.preset),
                                 ("spatial_dims", args.spatial_dims),
                                 ("context_planes", args.context_planes)) if v is not None}
    if method == "synthetic":
        inputs = dict(target=case["clean_train"], degradation=synthetic_degradation(
            case["clean_train"], case["peak"], args.gaussian))
    elif method == "noise2void":
        inputs = dict(volume=case["noisy"])
    else:
        inputs = dict(volume=[case["noisy"], case["noisy_b"]])
    with Clock() as clock:
        model = vs.train(source=method, minutes=minutes, name=name, overwrite=True,
                         output_dir=args.out / "models", **inputs, **options)
    return model, clock


def run_ours(method: str, case: dict, minutes: float, args) -> Row:
    import napari_volsr.api as vs

    name = f"bench-{case['volume']}-p{case['peak']:g}-{method}-{minutes:g}m".replace(".", "p")
    model, train_clock = train_ours(method, case, minutes, args, name)
    with Clock() as restore_clock:
        restored = vs.restore(case["noisy"], model=str(model.folder))
    value, structure = score(restored, case["truth"])
    card = model.config.training
    network = model.config.network
    note = f"{network.family} {'2D' if model.config.spatial_dims == 2 else '3D'}"
    if method == "synthetic":  # the known noise as the engine got it
        noise = synthetic_degradation(case["clean_train"], case["peak"], args.gaussian)
        note += (f"; noise in engine units: peak {noise['poisson_peak'][0]:.1f}, "
                 f"sigma {noise['gaussian_sigma'][0]:.3f}")
    return Row(case["volume"], case["peak"], method, minutes, value, structure,
               train_clock.wall, train_clock.cpu, restore_clock.wall, restore_clock.cpu,
               int(card.get("steps", 0)), note)


def run_baseline(method: str, case: dict, minutes: float | None, args) -> Row:
    row = Row(case["volume"], case["peak"], method, minutes)
    if method == "gaussian":
        with Clock() as clock:
            restored, sigma = gaussian_best(case["noisy"], case["truth"])
        row.note = f"best sigma {sigma:.1f} (oracle; time: the whole sigma search)"
    elif method == "bm4d":
        if importlib.util.find_spec("bm4d") is None:
            raise SkipRow("bm4d not installed (pip install -e '.[bench]')")
        with Clock() as clock:
            restored = run_bm4d(case["noisy"], case["peak"], args.gaussian, args.bm4d_profile)
        row.note = f"profile '{args.bm4d_profile}', GAT + closed-form inverse"
    else:
        work = args.out / method / f"{case['volume']}-p{case['peak']:g}-{minutes:g}m"
        restored, report = run_careamics(case["noisy"], minutes, args, work,
                                         two_d=method == "careamics-2d")
        row.train_s, row.train_cpu_s = report["train_s"], report["train_cpu_s"]
        row.steps = report["steps"]
        clock = argparse.Namespace(wall=report["predict_s"], cpu=report["predict_cpu_s"])
        dims = "3D" if report["axes"] == "ZYX" else "2D"
        row.note = (f"N2V {dims} patch {report['patch']} batch {report['batch']}, "
                    f"{report['epochs']} epochs, torch {report['torch']}")
    row.psnr, row.ssim = score(restored, case["truth"])
    row.restore_s, row.restore_cpu_s = clock.wall, clock.cpu
    return row


# ---------------------------------------------------------------- the matrix
def cases(args):
    """One dict per (volume, peak): truth, noisy draws, the clean training half."""
    for v_index, volume in enumerate(args.volumes):
        clean_train, truth = load_halves(volume, args.data, args.quick)
        for p_index, peak in enumerate(args.peaks):
            seed = 1000 * v_index + 10 * p_index
            yield {"volume": volume, "peak": peak, "truth": truth, "clean_train": clean_train,
                   "noisy": add_noise(truth, peak, args.gaussian, seed),
                   "noisy_b": add_noise(truth, peak, args.gaussian, seed + 1)}


def run_matrix(args) -> list[Row]:
    rows = []

    def emit(row: Row) -> None:
        rows.append(row)
        print(format_row(row), flush=True)

    print(header(), flush=True)
    for case in cases(args):
        noisy_psnr, noisy_ssim = score(case["noisy"], case["truth"])
        emit(Row(case["volume"], case["peak"], "noisy", None, noisy_psnr, noisy_ssim,
                 note=f"scored half {case['truth'].shape}, clean half "
                      f"{case['clean_train'].shape}"))
        for method in args.methods:
            budgets = [None] if method in ("gaussian", "bm4d") else args.minutes
            for minutes in budgets:
                try:
                    if method in OURS:
                        emit(run_ours(method, case, minutes, args))
                    else:
                        emit(run_baseline(method, case, minutes, args))
                except SkipRow as exc:
                    emit(Row(case["volume"], case["peak"], method, minutes,
                             note=f"skipped: {exc}"))
    return rows


def write_csv(rows: list[Row], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", default="em,nuclei",
                        help=f"comma-separated, from {', '.join(VOLUMES)}")
    parser.add_argument("--peaks", default="10,30", help="photons at intensity 1")
    parser.add_argument("--gaussian", type=float, default=0.03, help="Gaussian noise sigma")
    parser.add_argument("--minutes", default=None,
                        help="training budgets in minutes (default 1,3,10; --quick: 0.05)")
    parser.add_argument("--methods",
                        default="noise2void,synthetic,gaussian,bm4d,careamics,careamics-2d",
                        help=f"comma-separated, from {', '.join(OURS + BASELINES)}")
    parser.add_argument("--family", default=None, help="our network family (default: engine's)")
    parser.add_argument("--preset", default=None, help="our preset (default: engine's)")
    parser.add_argument("--spatial-dims", type=int, choices=(2, 3), default=None)
    parser.add_argument("--context-planes", type=int, default=None,
                        help="2.5D: z planes each side as input channels (default: engine's)")
    parser.add_argument("--bm4d-profile", default="np", help="bm4d profile: np or refilter")
    parser.add_argument("--careamics-python", default=None,
                        help="interpreter with careamics (default: $VOLSR_CAREAMICS_PYTHON)")
    parser.add_argument("--careamics-patch", default="32,64,64", help="3D N2V patch Z,Y,X")
    parser.add_argument("--careamics-batch", type=int, default=4,
                        help="3D N2V batch (ours; CAREamics advises >= 8 for batch norm)")
    parser.add_argument("--careamics-2d-patch", default="64,64", help="2D N2V patch Y,X")
    parser.add_argument("--careamics-2d-batch", type=int, default=128, help="2D N2V batch")
    parser.add_argument("--quick", action="store_true",
                        help=f"a {QUICK_CROP} crop and seconds-long budgets (CI)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None,
                        help="models, CAREamics runs and results.csv (default: a temp dir)")
    args = parser.parse_args(argv)
    args.volumes = [v for v in args.volumes.split(",") if v]
    args.methods = [m for m in args.methods.split(",") if m]
    for value, allowed in ((args.volumes, VOLUMES), (args.methods, OURS + BASELINES)):
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            parser.error(f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    args.peaks = [float(p) for p in args.peaks.split(",") if p]
    budgets = args.minutes or ("0.05" if args.quick else "1,3,10")
    args.minutes = [float(m) for m in budgets.split(",") if m]
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="volsr-denoise-matrix-"))
    return args


def main(argv=None) -> None:
    import torch

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    print(f"denoising matrix: Poisson peaks {args.peaks} + Gaussian {args.gaussian}; "
          f"budgets {args.minutes} min; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; PSNR/SSIM with data "
          f"range 1, border {BORDER} ignored; out {args.out}", flush=True)
    rows = run_matrix(args)
    write_csv(rows, args.out / "results.csv")
    print(f"wrote {args.out / 'results.csv'}")


if __name__ == "__main__":
    main()
