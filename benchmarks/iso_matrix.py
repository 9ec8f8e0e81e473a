"""Isotropic matrix: every family at its defaults next to spline cubic and CSBDeep's IsotropicCARE.

Each near-isotropic volume of ``../shared/data`` (FIB-SEM, MRI, ovule nuclei) is the
ground truth; its depth is cut to a multiple of the z-factor f and its slab-simulated
anisotropic copy (``engine.degrade.slab_downsample``: the mean of each group of f
slices, DESIGN 3) is all any method sees. Rows, per volume and z-factor:

- ``cubic``: the prefiltered cubic B-spline on the slab grid (``InterpolationRestorer
  ("cubic")``, through ``napari_volsr.api.restore``): the baseline every delta refers
  to. ``linear`` and ``catmull-rom`` are there on request.
- one row per family (``--families``): trained self-supervised on the anisotropic
  volume alone, through the engine's request resolution
  (``engine.training_request.resolve_training``, what ``volsr train``, the Train panel
  and ``napari_volsr.api.train`` call) with nothing but the source, the volume (its
  spacing f x 1 x 1, as a file would carry it, gives the z-factor), the family and the
  budget: the defaults a user gets from ``volsr train --source isotropic --volume X
  --family F --minutes M``. The engine's note on what it chose (patch, batch, ...) is
  printed above the row. Restored with ``napari_volsr.api.restore`` at its defaults.
- ``isotropic-care``: CSBDeep's IsotropicCARE, its example notebook's recipe with slab
  subsampling, trained for the same budget in its own interpreter
  (``benchmarks/_csbdeep_iso.py``; TensorFlow never enters this environment). Without
  ``VOLSR_CSBDEEP_PYTHON`` (or ``--csbdeep-python``) the row says ``skipped``.

PSNR and SSIM over the whole volume with the truth's range as data range; ``delta`` is
PSNR minus the spline cubic's of the same volume and factor. Times are wall and CPU
seconds (this process plus reaped children; CSBDeep's as its runner measured them,
imports excluded, patch generation included in training).

The full matrix on the 2-core machine, kept otherwise idle: 3 volumes x 3 factors x
(5 families + IsotropicCARE) x 10 min, plus restores, about 10 h::

    python3 -m venv /work/csbdeepvenv && /work/csbdeepvenv/bin/pip install csbdeep tensorflow-cpu
    export VOLSR_CSBDEEP_PYTHON=/work/csbdeepvenv/bin/python
    python benchmarks/iso_matrix.py --out /tmp/volsr-iso-matrix
    python benchmarks/iso_matrix.py --volumes em --z-factors 4 --families rcan --minutes 2

    # the CI-sized check: tiny crops, a few steps, every code path, no figures asserted
    python benchmarks/iso_matrix.py --quick

``python benchmarks/quality.py --case iso-matrix ...`` runs the same script.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
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
    "mri": "mri_t1_brain_1mm_stroke.nii.gz",
    "nuclei": "fluo_ovule_nuclei_confocal_100x100x100.tif",
}
FAMILIES = ("rcan", "srunet", "gan", "diffusion", "unet")
INTERPOLATIONS = ("cubic", "linear", "catmull-rom")
METHODS = (*INTERPOLATIONS, "ours", "isotropic-care")
QUICK_CROP = (24, 48, 48)  # depth divisible by 2, 4 and 6; planes the default patch fits
QUICK_STEPS = 2
RUNNER = Path(__file__).resolve().parent / "_csbdeep_iso.py"


@dataclass
class Row:
    """One line of the table (None prints as '-')."""

    volume: str
    z: int
    method: str
    budget: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    delta: float | None = None
    train_s: float | None = None
    train_cpu_s: float | None = None
    restore_s: float | None = None
    restore_cpu_s: float | None = None
    steps: int | None = None
    note: str = ""


COLUMNS = (("volume", 6, "s"), ("z", 2, "d"), ("method", 14, "s"), ("budget", 5, "g"),
           ("psnr", 6, ".2f"), ("ssim", 6, ".4f"), ("delta", 6, "+.2f"), ("train_s", 7, ".1f"),
           ("train_cpu_s", 8, ".1f"), ("restore_s", 7, ".1f"), ("restore_cpu_s", 8, ".1f"),
           ("steps", 6, "d"))
TITLES = {"budget": "min", "psnr": "PSNR", "ssim": "SSIM", "delta": "dCubic",
          "train_s": "train s", "train_cpu_s": "trainCPU", "restore_s": "rest. s",
          "restore_cpu_s": "rest.CPU"}


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


class SkipRow(Exception):
    """A row that cannot run here; the message is printed in its place."""


# ---------------------------------------------------------------- data, scores, clocks
def load_volume(name: str, data_dir: Path, quick: bool, volumes=None,
                crop=QUICK_CROP) -> np.ndarray:
    """The ground-truth ZYX volume as float32 (a centred ``crop`` with ``quick``).

    ``volumes``: the name-to-file table (default: this script's ``VOLUMES``).
    """
    from napari_volsr.engine.io import read_volume

    path = data_dir / (volumes or VOLUMES)[name]
    volume = np.asarray(read_volume(path).data, dtype=np.float32)
    if quick:
        starts = [max(0, (n - c) // 2) for n, c in zip(volume.shape, crop, strict=True)]
        volume = volume[tuple(slice(s, s + c) for s, c in zip(starts, crop, strict=True))]
    return np.ascontiguousarray(volume)


def make_case(volume: np.ndarray, z_factor: int) -> tuple[np.ndarray, np.ndarray]:
    """(truth cut to a multiple of the factor in depth, its slab-downsampled copy)."""
    from napari_volsr.engine.degrade import slab_downsample

    truth = volume[: volume.shape[0] // z_factor * z_factor]
    return truth, slab_downsample(truth, z_factor, axis=0).astype(np.float32)


def score(prediction, truth: np.ndarray) -> tuple[float, float]:
    """PSNR and SSIM of the whole volume, data range: the truth's range."""
    from napari_volsr.engine.metrics import psnr, ssim

    prediction = np.asarray(prediction, dtype=np.float32)
    if prediction.shape != truth.shape:
        raise SkipRow(f"output shape {prediction.shape} is not the truth's {truth.shape}")
    span = float(np.ptp(truth))
    return psnr(prediction, truth, span), ssim(prediction, truth, span)


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


# ---------------------------------------------------------------- rows
def run_interpolation(mode: str, case: dict) -> Row:
    import napari_volsr.api as vs

    with Clock() as clock:
        restored = vs.restore(case["aniso"], model=mode, z_factor=case["z"])
    value, structure = score(restored, case["truth"])
    note = "prefiltered cubic B-spline, slab grid" if mode == "cubic" else ""
    return Row(case["volume"], case["z"], mode, None, value, structure, None, None, None,
               clock.wall, clock.cpu, None, note)


def train_family(family: str, case: dict, minutes: float, args):
    """Train through the engine's request resolution; returns (model, Clock, engine note)."""
    from napari_volsr.engine.predict import drain
    from napari_volsr.engine.training_request import VolumeInput, resolve_training

    f = case["z"]
    name = f"iso-{case['volume']}-x{f}-{family}-{minutes:g}m".replace(".", "p")
    # A file read by the CLI carries its spacing; f x 1 x 1 gives the z-factor f.
    volume = VolumeInput(case["aniso"], spacing=(float(f), 1.0, 1.0), name=case["volume"])
    with Clock() as clock:
        request = resolve_training(
            source="isotropic", volume=[volume], family=family, name=name, overwrite=True,
            output_dir=args.out / "models", minutes=minutes,
            **({"steps": QUICK_STEPS, "preset": "tiny"} if args.quick else {}))
        model = drain(request.iter_train())
    return model, clock, request.note


def run_family(family: str, case: dict, minutes: float, args) -> Row:
    import napari_volsr.api as vs

    model, train_clock, engine_note = train_family(family, case, minutes, args)
    for line in engine_note.splitlines():
        print(f"    engine: {line}", flush=True)
    options = {"diffusion_steps": 2, "diffusion_samples": 1} if args.quick else None
    with Clock() as restore_clock:
        restored = vs.restore(case["aniso"], model=str(model.folder), restorer_options=options)
    value, structure = score(restored, case["truth"])
    card = model.config.training
    network = model.config.network
    patch = card.get("settings", {}).get("patch_shape")
    note = (f"{network.family} 2D" + (f", patch {'x'.join(map(str, patch))}" if patch else "")
            + (", quick: tiny preset" if args.quick else "")
            + (", 2 diffusion steps" if args.quick and family == "diffusion" else ""))
    return Row(case["volume"], case["z"], family, minutes, value, structure, None,
               train_clock.wall, train_clock.cpu, restore_clock.wall, restore_clock.cpu,
               int(card.get("steps", 0)), note)


def csbdeep_python(args) -> str | None:
    """The interpreter with csbdeep: the option, the variable, or this one."""
    given = args.csbdeep_python or os.environ.get("VOLSR_CSBDEEP_PYTHON")
    if given:
        return given if Path(given).exists() else None
    return sys.executable if importlib.util.find_spec("csbdeep") else None


def run_isotropic_care(case: dict, minutes: float, args) -> Row:
    """CSBDeep's IsotropicCARE in its own interpreter, for the same budget."""
    python = csbdeep_python(args)
    if python is None:
        raise SkipRow("set VOLSR_CSBDEEP_PYTHON (or --csbdeep-python) to an interpreter with "
                      "csbdeep and tensorflow (see benchmarks/_csbdeep_iso.py)")
    work = args.out / "isotropic-care" / f"{case['volume']}-x{case['z']}-{minutes:g}m"
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "aniso.npy", case["aniso"])
    command = [python, str(RUNNER), "--input", str(work / "aniso.npy"),
               "--output", str(work / "restored.npy"), "--report", str(work / "report.json"),
               "--factor", str(case["z"]), "--minutes", f"{minutes:g}", "--work-dir", str(work)]
    if args.quick:  # a few steps, few patches: the code path, not the figure
        command += ["--patches", "32", "--steps-per-epoch", str(QUICK_STEPS)]
    limit = minutes * 60 * 2 + 1200  # the budget, then the prediction and the imports
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise SkipRow(f"csbdeep runner still running after {limit:.0f} s") from None
    if proc.returncode != 0:
        (work / "runner.log").write_text(proc.stdout + proc.stderr)
        lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
        reason = next((line for line in reversed(lines) if "Error" in line), lines[-1])
        raise SkipRow(f"csbdeep runner failed ({work / 'runner.log'}): {reason.strip()}")
    report = json.loads((work / "report.json").read_text())
    value, structure = score(np.load(work / "restored.npy"), case["truth"])
    return Row(case["volume"], case["z"], "isotropic-care", minutes, value, structure, None,
               report["train_s"], report["train_cpu_s"], report["predict_s"],
               report["predict_cpu_s"], report["steps"],
               f"CSBDeep {report['csbdeep']}, TF {report['tensorflow']}, patch "
               f"{report['patch']} x {report['patches']}, batch {report['batch']}, "
               f"{report['epochs']} epochs, {report['grid']} grid")


# ---------------------------------------------------------------- the matrix
def cases(args):
    """One dict per (volume, z-factor): truth and anisotropic input."""
    for volume_name in args.volumes:
        volume = load_volume(volume_name, args.data, args.quick)
        for f in args.z_factors:
            truth, aniso = make_case(volume, f)
            yield {"volume": volume_name, "z": f, "truth": truth, "aniso": aniso}


def case_rows(case: dict, args):
    """Every row of one (volume, z-factor), baseline first; skips become rows."""
    jobs = [(mode, None) for mode in INTERPOLATIONS if mode == "cubic" or mode in args.methods]
    for minutes in args.minutes:
        if "ours" in args.methods:
            jobs += [(family, minutes) for family in args.families]
        if "isotropic-care" in args.methods:
            jobs.append(("isotropic-care", minutes))
    for method, minutes in jobs:
        try:
            if method in INTERPOLATIONS:
                yield run_interpolation(method, case)
            elif method == "isotropic-care":
                yield run_isotropic_care(case, minutes, args)
            else:
                yield run_family(method, case, minutes, args)
        except SkipRow as exc:
            yield Row(case["volume"], case["z"], method, minutes, note=f"skipped: {exc}")


def run_matrix(args) -> list[Row]:
    rows = []
    print(header(), flush=True)
    for case in cases(args):
        print(f"# {case['volume']} x{case['z']}: truth {case['truth'].shape}, anisotropic "
              f"input {case['aniso'].shape}", flush=True)
        baseline = None
        for row in case_rows(case, args):
            if row.method == "cubic":
                baseline = row.psnr
            if row.psnr is not None and baseline is not None:
                row.delta = row.psnr - baseline
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


def write_table(rows: list[Row], path: Path) -> None:
    """CSV, or tab-separated when the name ends in .tsv."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(rows[0])),
                                delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)


def split(text: str, allowed, parser, what: str) -> list[str]:
    values = [v for v in text.split(",") if v]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        parser.error(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return values


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", default=",".join(VOLUMES),
                        help=f"comma-separated, from {', '.join(VOLUMES)}")
    parser.add_argument("--z-factors", default="2,4,6", help="slab z-subsampling factors")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"our families for the 'ours' rows, from {', '.join(FAMILIES)}")
    parser.add_argument("--minutes", default=None,
                        help="training budgets in minutes (default 10; --quick: 0.05)")
    parser.add_argument("--methods", default="cubic,ours,isotropic-care",
                        help=f"comma-separated, from {', '.join(METHODS)} (cubic always runs: "
                             "the deltas refer to it)")
    parser.add_argument("--csbdeep-python", default=None,
                        help="interpreter with csbdeep (default: $VOLSR_CSBDEEP_PYTHON)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_CROP} crops, tiny presets, {QUICK_STEPS} training steps "
                             "(CI: the code paths, no figures)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None,
                        help="models, CSBDeep runs and the table (a folder; default: a temp "
                             "dir, table results.csv), or a .csv / .tsv file for the table")
    args = parser.parse_args(argv)
    args.volumes = split(args.volumes, VOLUMES, parser, "volume")
    args.families = split(args.families, FAMILIES, parser, "family")
    args.methods = split(args.methods, METHODS, parser, "method")
    args.z_factors = [int(f) for f in args.z_factors.split(",") if f]
    if any(f < 2 for f in args.z_factors):
        parser.error("z-factors must be 2 or more")
    args.minutes = [float(m) for m in (args.minutes or ("0.05" if args.quick else "10")).split(",")
                    if m]
    args.table = None
    if args.out is not None and args.out.suffix in (".csv", ".tsv"):
        args.table, args.out = args.out, args.out.with_suffix("")
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="volsr-iso-matrix-"))
    args.table = args.table or args.out / "results.csv"
    return args


def main(argv=None) -> None:
    import torch

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    print(f"isotropic matrix: z-factors {args.z_factors}, budgets {args.minutes} min; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"PSNR/SSIM over the whole volume, data range of the truth; out {args.out}",
          flush=True)
    rows = run_matrix(args)
    write_table(rows, args.table)
    print(f"wrote {args.table}")


if __name__ == "__main__":
    main()
