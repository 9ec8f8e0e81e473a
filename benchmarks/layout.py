"""Whole restores in the contiguous and the channels-last layout, interleaved.

``NetworkRestorer(channels_last=None)`` picks the layout by itself; this script is the
measurement behind that rule. For each family, preset and z-factor it restores a random
smooth volume (as ``benchmarks/inference.py`` does) with ``channels_last=False`` and
``True`` in turn, ``--repeats`` times each, and prints the median seconds, the speed-up
of channels-last and the largest output difference over the output range.

Usage::

    python benchmarks/layout.py --families rcan --presets small,default --z-factors 4
"""

# napari_volsr first: it sets torch's CPU allocator option before torch loads.
import napari_volsr  # noqa: F401, I001

import argparse
import statistics
import time

import numpy as np
import torch

from inference import make_restorer, make_volume  # this folder
from napari_volsr.engine.predict import restore


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="rcan,srunet,gan")
    parser.add_argument("--presets", default="small,default")
    parser.add_argument("--z-factors", default="1,4")
    parser.add_argument("--shape", default="64,256,256", help="output shape (z, y, x)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    out_shape = tuple(int(v) for v in args.shape.split(","))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, cpu; "
          f"medians of {args.repeats} interleaved restores; output {args.shape}")
    print(f"{'family':<8} {'preset':<8} {'z':>2} {'contiguous s':>12} {'channels-last s':>15} "
          f"{'speed-up':>8} {'max diff/range':>14}")
    for fam in args.families.split(","):
        for preset in args.presets.split(","):
            for z in (int(v) for v in args.z_factors.split(",")):
                volume = make_volume((max(1, out_shape[0] // z), *out_shape[1:]))
                restorers = {cl: make_restorer(fam, preset, z, channels_last=cl)
                             for cl in (False, True)}
                for r in restorers.values():
                    restore(volume[:, :32, :32], r, device="cpu")  # warm-up
                times: dict[bool, list[float]] = {False: [], True: []}
                outputs = {}
                for _ in range(args.repeats):
                    for cl, r in restorers.items():
                        start = time.perf_counter()
                        outputs[cl] = restore(volume, r, device="cpu").data
                        times[cl].append(time.perf_counter() - start)
                plain, fast = (statistics.median(times[cl]) for cl in (False, True))
                diff = np.abs(outputs[True] - outputs[False]).max() / np.ptp(outputs[False])
                print(f"{fam:<8} {preset:<8} {z:>2} {plain:>12.2f} {fast:>15.2f} "
                      f"{plain / fast:>8.2f} {diff:>14.1e}", flush=True)


if __name__ == "__main__":
    main()
