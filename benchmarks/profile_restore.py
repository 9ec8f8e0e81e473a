"""Where a restore's time goes: torch profiler, operators grouped by kind.

Restores the same random smooth volume as ``benchmarks/inference.py`` (same family
preset, z-factor, default settings), once to warm up and once under
``torch.profiler``, and prints:

- the wall time of the profiled restore and the share of it inside torch operators;
  the rest is Python and numpy around the network (normalisation, padding, the block
  merger, output conversion);
- operator self time grouped into convolution, elementwise (activations, adds,
  multiplies), pooling and attention reductions, layout and copies (the channels-last
  copies, padding, concatenation, pixel shuffle) and the rest, with the top operators;
- the executed network FLOPs over the output FLOPs (``margin``: the halo and the
  mirrored edges), from the block plan.

Usage::

    python benchmarks/profile_restore.py --family rcan --preset small --z-factor 1
    python benchmarks/profile_restore.py --family srunet --preset small --z-factor 4
"""

# napari_volsr first: it sets torch's CPU allocator option before torch loads.
import napari_volsr  # noqa: F401, I001

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from inference import make_restorer, make_volume, restore_work  # this folder
from napari_volsr.engine.predict import restore

GROUPS = {
    "convolution": ("conv", "mkldnn_convolution", "_convolution"),
    "elementwise": ("relu", "leaky_relu", "add", "mul", "sigmoid", "sub", "div", "silu",
                    "gelu", "clamp", "where", "threshold"),
    "pooling / attention": ("mean", "avg_pool", "adaptive", "max_pool", "sum", "softmax",
                            "scaled_dot_product", "bmm", "matmul", "norm"),
    "layout / copies": ("copy_", "contiguous", "clone", "cat", "pad", "reflection",
                        "replication", "pixel_shuffle", "permute", "to_dense", "empty",
                        "zero_", "fill_", "upsample", "slice", "index"),
}


def group_of(name: str) -> str:
    key = name.removeprefix("aten::").lower()
    for group, needles in GROUPS.items():
        if any(needle in key for needle in needles):
            return group
    return "other"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="rcan")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--z-factor", type=int, default=1)
    parser.add_argument("--shape", default="64,256,256", help="output shape (z, y, x)")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    out_shape = tuple(int(v) for v in args.shape.split(","))
    f = args.z_factor
    in_shape = (max(1, out_shape[0] // f), *out_shape[1:])
    volume = make_volume(in_shape)
    restorer = make_restorer(args.family, args.preset, f)
    restore(volume[:, :32, :32], restorer)  # warm-up: kernels, allocator
    restore(volume, restorer)  # the same block shapes as the profiled run
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        result = restore(volume, restorer)
        wall = time.perf_counter() - start

    plan, _, _, margin = restore_work(restorer, in_shape, result)

    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total_self = sum(e.self_cpu_time_total for e in events) / 1e6
    groups = defaultdict(float)
    for e in events:
        groups[group_of(e.key)] += e.self_cpu_time_total / 1e6
    print(f"{args.family} {args.preset} x{f}: input {in_shape}, plan {len(plan)} x "
          f"{'x'.join(map(str, plan.max_input_shape()))}, margin {margin:.2f}, "
          f"{torch.get_num_threads()} threads")
    print(f"restore {wall:.2f} s under the profiler; torch operators {total_self:.2f} s "
          f"({100 * total_self / wall:.0f}%), outside them {wall - total_self:.2f} s")
    print(f"{'group':<22} {'s':>7} {'share':>6}")
    for group, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"{group:<22} {seconds:>7.2f} {100 * seconds / wall:>5.1f}%")
    print(f"\ntop {args.top} operators by self time")
    print(f"{'operator':<40} {'calls':>6} {'s':>7} {'share':>6}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        seconds = e.self_cpu_time_total / 1e6
        print(f"{e.key:<40} {e.count:>6} {seconds:>7.2f} {100 * seconds / wall:>5.1f}%")


if __name__ == "__main__":
    main()
