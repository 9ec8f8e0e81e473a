"""Lateral (y, x) super-resolution: every family at its defaults next to the cubic spline.

Each volume of ``../shared/data`` named by ``--volumes`` is the ground truth. Its first
half in z is the clean training volume (the ``synthetic`` source: the engine degrades
patches of it itself), its second half is held out: area-downsampled laterally by f
(the mean of each f x f block of voxels, the slab convention on y and x) it is the
input every method restores, and it is what every row is scored on. No method sees the
held-out half at full resolution.

Rows, per volume and lateral factor f (factors (1, f, f)):

- ``cubic``: the prefiltered cubic B-spline on the slab grid, per axis
  (``napari_volsr.api.restore(..., model="cubic", factors=(1, f, f))``), the baseline
  every delta refers to; ``linear`` on request.
- one row per family (``--families``): trained through ``napari_volsr.api.train`` with
  nothing but the clean half, ``source="synthetic"``, the factors, the family and the
  budget (the defaults of ``volsr train --target clean.tif --factors 1,f,f --family F
  --minutes M``), restored with ``napari_volsr.api.restore`` at its defaults.

PSNR and SSIM over the held-out half (the truth's range as data range); ``delta`` is
PSNR minus the cubic spline's. Times are wall and CPU seconds of this process.

Usage (the 2-core machine kept otherwise idle)::

    python benchmarks/lateral_matrix.py --volumes em,nuclei --factors 2,4 --minutes 10
    python benchmarks/lateral_matrix.py --quick   # CI-sized: every code path, no figures

``python benchmarks/quality.py --case lateral ...`` runs the same script.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from iso_matrix import DATA, Clock, SkipRow, load_volume, score  # noqa: E402

VOLUMES = {
    "em": "em_fibsem_fly_medulla_10nm_128x160x160.tif",
    "nuclei": "fluo_ovule_nuclei_confocal_100x100x100.tif",
    "membrane": "fluo_ovule_membrane_confocal_32x128x128.tif",
}
FAMILIES = ("rcan", "srunet", "gan", "diffusion", "unet")
QUICK_CROP = (16, 48, 48)
QUICK_STEPS = 2
COLUMNS = ("volume", "f", "method", "min", "PSNR", "SSIM", "dCubic", "train s", "trainCPU",
           "rest. s", "rest.CPU", "steps")


def area_downsample(volume: np.ndarray, f: int) -> np.ndarray:
    """The mean of each f x f block in y and x (the volume cut to multiples of f)."""
    d, h, w = volume.shape
    cut = volume[:, : h // f * f, : w // f * f]
    return cut.reshape(d, h // f, f, w // f, f).mean(axis=(2, 4), dtype=np.float64).astype(
        np.float32)


def make_case(name: str, volume: np.ndarray, f: int) -> dict:
    half = volume.shape[0] // 2
    _, h, w = volume.shape
    truth = volume[half:, : h // f * f, : w // f * f]
    return {"volume": name, "f": f, "clean": volume[:half], "truth": truth,
            "low": area_downsample(truth, f)}


FORMATS = ((8, "s"), (2, "d"), (10, "s"), (4, "g"), (6, ".2f"), (6, ".4f"), (6, "+.2f"),
           (7, ".1f"), (8, ".1f"), (7, ".1f"), (8, ".1f"), (6, "d"))


def line(values, header: bool = False) -> str:
    cells = []
    for value, (width, fmt) in zip(values, FORMATS, strict=False):
        text = "-" if value is None else (str(value) if header else format(value, fmt))
        cells.append(f"{text:>{width}}")
    extra = values[len(FORMATS):]
    return " ".join(cells) + ("  " + " ".join(map(str, extra)) if extra else "")


def run_interpolation(mode: str, case: dict) -> tuple:
    import napari_volsr.api as vs

    f = case["f"]
    with Clock() as clock:
        restored = vs.restore(case["low"], model=mode, factors=(1, f, f))
    value, structure = score(restored, case["truth"])
    return value, structure, clock, None, None


def run_family(family: str, case: dict, minutes: float, args) -> tuple:
    import napari_volsr.api as vs

    f = case["f"]
    name = f"lateral-{case['volume']}-x{f}-{family}-{minutes:g}m".replace(".", "p")
    budget = {"steps": QUICK_STEPS, "preset": "tiny"} if args.quick else {"minutes": minutes}
    if args.clean_inputs:  # the area average alone, as the held-out input is made
        budget["degradation"] = {"blur_sigma": (0.0, 0.0), "gaussian_sigma": (0.0, 0.0)}
    with Clock() as train_clock:
        model = vs.train(target=case["clean"], source="synthetic", factors=(1, f, f),
                         family=family, name=name, overwrite=True,
                         output_dir=args.out / "models", **budget)
    with Clock() as clock:
        restored = vs.restore(case["low"], model=str(model.folder))
    value, structure = score(restored, case["truth"])
    return value, structure, clock, train_clock, int(model.config.training.get("steps", 0))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", default="em,nuclei")
    parser.add_argument("--factors", default="2,4", help="lateral factors, comma-separated")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--linear", action="store_true", help="also the linear baseline")
    parser.add_argument("--clean-inputs", action="store_true",
                        help="train without the synthetic source's default blur and noise "
                             "ranges (not a default: a probe of what they cost here)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--quick", action="store_true",
                        help="tiny crops, tiny presets, two steps: every code path")
    parser.add_argument("--out", type=Path,
                        default=Path(os.environ.get("TMPDIR", "/tmp")) / "volsr-lateral")
    args = parser.parse_args(argv)
    import torch

    print(f"lateral super-resolution: train on the first half in z (synthetic source), "
          f"score the held-out half; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, {os.cpu_count()} CPUs; budget "
          f"{'2 steps (quick)' if args.quick else f'{args.minutes:g} min'} per family; "
          f"training degradation: {'area average only' if args.clean_inputs else 'default'}")
    print(line(COLUMNS, header=True))
    for name in [v for v in args.volumes.split(",") if v]:
        volume = load_volume(name, args.data, args.quick, VOLUMES, QUICK_CROP)
        for f in [int(x) for x in args.factors.split(",") if x]:
            case = make_case(name, volume, f)
            base = None
            for method in ("cubic", "linear") if args.linear else ("cubic",):
                value, structure, clock, _, _ = run_interpolation(method, case)
                base = value if method == "cubic" else base
                print(line((name, f, method, None, value, structure, None, None, None,
                            clock.wall, clock.cpu, None)), flush=True)
            for family in [x for x in args.families.split(",") if x]:
                try:
                    value, structure, clock, train, steps = run_family(
                        family, case, args.minutes, args)
                except SkipRow as skip:
                    print(line((name, f, family, args.minutes, None, None, None, None, None,
                                None, None, None, f"skipped: {skip}")), flush=True)
                    continue
                print(line((name, f, family, None if args.quick else args.minutes, value,
                            structure, value - base, train.wall, train.cpu, clock.wall,
                            clock.cpu, steps)), flush=True)
            print(f"  shapes: clean {case['clean'].shape}, input {case['low'].shape}, "
                  f"truth {case['truth'].shape}")


if __name__ == "__main__":
    main()
