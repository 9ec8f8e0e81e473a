"""Restore speed per family against the machine's convolution throughput and MONAI.

For each family's presets in 3D, restores a random smooth volume through the public
engine (``predict.restore``, default settings) and prints:

- parameters, and voxels per second of the whole restore (normalise, tile, network,
  merge), median of ``--repeats``;
- the network's FLOPs per output voxel: convolution, transposed convolution and linear
  multiply-adds x 2, counted with forward hooks on a shape-only ("meta") pass of one
  block; ``margin``: FLOPs the restore executes (every block with its halo and the
  mirrored edges) over the FLOPs of the output alone;
- ``achieved``: output voxels x FLOPs per voxel / restore time (GFLOP/s);
  ``sustained``: the machine's GFLOP/s on the same layers, each timed alone in a tight
  loop on its real input shape for one block of the plan, in the faster of the default
  and channels-last layouts, in the same run; ``ratio`` = achieved / sustained (the
  goal: 0.70 or more); ``busy`` = ratio x margin, the share of the restore that the
  executed layers would take at the sustained rate (what tiling and the other
  operations cost is 1 - busy);
- the same trained network through MONAI's ``sliding_window_inference`` (gaussian,
  overlap 0.25, ``roi_size`` = the network input of our blocks, same device and
  precision, ``torch.inference_mode``, the network as a user would pass it). For the
  same output quality at the edges MONAI gets the volume mirrored by our halo, as our
  blocks see it, and its output is cropped back. Printed: its time over ours (the goal:
  1.5 or more) and how far its output is from ours (RMS over the standard deviation of
  ours, and the largest difference over the range). With several windows the two tilings
  differ, so both are also scored against the network run over the whole mirrored volume
  in one pass (``ours-ref``, ``MONAI-ref``): the output no tiling changes, when it fits
  in memory (``--no-reference`` skips it).

The 2D isotropic path (XZ and YZ planes through a 2D net, fused) gets the same two tables
(``--iso2d-families``, ``--iso2d-shape``; ``_iso2d_timing.py``); ``--families ''`` skips 3D.

On a machine shared with other work, wall-clock times move with the load; the ``cores``
column (CPU seconds per wall second of the restore) shows how much of the machine the
run had, and ``ratio cpu`` repeats the ratio from CPU times, which the load moves less.

The networks are randomly initialised with ``torch.manual_seed(0)``: time does not
depend on the weights, and untrained networks make the agreement with MONAI a strict
test (SRUNet's pooling grid is then as visible as its content). ``--shape`` is the output
shape: the z-factor 4 rows restore an input a quarter as deep to the same output.
Diffusion is timed per sampling step (one DDIM step, one sample; a restore with S steps
and N samples costs about S x N times more). Its default preset in 3D is left out unless
``--diffusion-default`` asks for it (on ``--diffusion-shape``): its halo of 64 voxels
makes every block at least 136^3 voxels, 4.7 TFLOP per step, and auto blocks of any
volume number in the hundreds on a CPU (diffusion restores in 2D by default). Diffusion
samples use different noise per tile, so their agreement with MONAI is not checked.

Usage::

    python benchmarks/inference.py                  # the full table (about 45 min, 2 cores)
    python benchmarks/inference.py --quick          # 32x128x128, small presets, 1 repeat
    python benchmarks/inference.py --families rcan,srunet --presets small --z-factors 1

MONAI is a benchmark-only dependency (``pip install napari-volsr[bench]``); without it,
or with ``--no-monai``, the comparison is skipped.
"""

# napari_volsr first: it sets torch's CPU allocator option before torch loads.
import napari_volsr  # noqa: F401, I001

import argparse
import copy
import math
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from napari_volsr.engine.config import ModelConfig
from napari_volsr.engine.data import DEFAULT_PERCENTILES, percentile_normalization
from napari_volsr.engine.models import LoadedModel
from napari_volsr.engine.predict import resolve_device, resolve_precision, restore
from napari_volsr.engine.registry import Family, build_network, network_config
from napari_volsr.engine.restorers import NetworkRestorer
from napari_volsr.engine.tiling import BlockPlan

COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
           nn.ConvTranspose3d, nn.Linear)
# MONAI's output agrees with ours when RMS(MONAI - ours) / std(ours) is below this.
AGREEMENT_TOLERANCE = 1e-3


# ------------------------------------------------------------------------ FLOPs

def layer_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """2 x multiply-adds of a convolution, transposed convolution or linear layer."""
    if isinstance(module, nn.Linear):
        return 2 * inp.numel() // inp.shape[-1] * module.in_features * module.out_features
    kernel = math.prod(module.kernel_size)
    if isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d):
        # Every input voxel scatters a kernel of out_channels / groups values.
        return 2 * inp.numel() * kernel * module.out_channels // module.groups
    return 2 * out.numel() * kernel * (module.in_channels // module.groups)


@dataclass
class Layer:
    """One counted layer call of a network pass: the module and its input shape."""

    module: nn.Module
    shape: tuple[int, ...]
    flops: int


def trace_layers(net: nn.Module, *shapes: tuple[int, ...], extra=()) -> list[Layer]:
    """Counted layers of ``net(*inputs, *extra)`` for inputs of ``shapes``, shape-only.

    The pass runs on the "meta" device (no memory, no arithmetic); the recorded modules
    are the real ones, for timing.
    """
    meta = copy.deepcopy(net).to("meta")
    real = dict(net.named_modules())
    layers: list[Layer] = []
    hooks = []
    for name, module in meta.named_modules():
        if isinstance(module, COUNTED):
            def hook(mod, args, out, name=name):
                layers.append(Layer(real[name], tuple(args[0].shape),
                                    layer_flops(mod, args[0], out)))
            hooks.append(module.register_forward_hook(hook))
    with torch.inference_mode():
        meta(*[torch.empty(s, device="meta") for s in shapes],
             *[torch.as_tensor(e, device="meta") for e in extra])
    for h in hooks:
        h.remove()
    return layers


def network_pass(restorer: NetworkRestorer, block_input: tuple[int, ...]):
    """(net, input shapes, extra args, output voxels) of one network call on a block."""
    z = restorer.z_factor
    out = [n * (z if i == 0 else 1) for i, n in enumerate(block_input)]
    if restorer.method is not None:
        # One sampling step: the UNet sees the noisy target and the condition, both on
        # the output grid padded to its divisor, and the noise level.
        out = [n + (-n) % d for n, d in zip(out, restorer.net.output_divisor, strict=True)]
        return restorer.method.ema, [(1, 1, *out), (1, 1, *out)], [torch.ones(1)], math.prod(out)
    return restorer.net, [(1, 1, *block_input)], [], math.prod(out)


# ----------------------------------------------------------------- timing helpers

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result) of ``fn()``."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def medians(runs) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def _signature(layer: Layer) -> tuple:
    m = layer.module
    keys = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
            "groups", "output_padding", "in_features", "out_features")
    return type(m).__name__, tuple(str(getattr(m, k, None)) for k in keys), layer.shape


def sustained_gflops(layers: list[Layer], device, dtype, repeats: int) -> tuple[float, float]:
    """GFLOP/s of ``layers``, each alone in a tight loop: per wall and per CPU second.

    Identical layers (type, sizes, input shape) are timed once. Each is timed in the
    default and the channels-last layout, and the faster counts: the machine's limit,
    not one layout's.
    """
    groups: dict[tuple, list[Layer]] = {}
    for layer in layers:
        groups.setdefault(_signature(layer), []).append(layer)
    flops = wall = cpu = 0.0
    for same in groups.values():
        layer = same[0]
        x = torch.randn(layer.shape, device=device)
        layouts = [torch.contiguous_format]
        if x.ndim in (4, 5) and not isinstance(layer.module, nn.Linear):
            layouts.append(torch.channels_last if x.ndim == 4 else torch.channels_last_3d)
        best = (math.inf, math.inf)
        for layout in layouts:
            m = copy.deepcopy(layer.module).to(device, memory_format=layout)
            xi = x.contiguous(memory_format=layout)
            with torch.inference_mode(), autocast(device, dtype):
                m(xi)  # warm-up: oneDNN builds its kernels on the first call
                runs = [timed(lambda m=m, xi=xi: m(xi), device)[:2] for _ in range(repeats)]
            best = min(best, medians(runs))
        flops += layer.flops * len(same)
        wall += best[0] * len(same)
        cpu += best[1] * len(same)
    return flops / wall / 1e9, flops / cpu / 1e9


class autocast:
    """``torch.autocast`` for a dtype, or nothing for fp32 (None)."""

    def __init__(self, device, dtype):
        self.ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else None

    def __enter__(self):
        return self.ctx.__enter__() if self.ctx is not None else None

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc) if self.ctx is not None else False


# ------------------------------------------------------------------- the rows

def make_volume(shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape, dtype=np.float32), 2.0)


def make_restorer(fam: str, preset: str, z_factor: int, spatial_dims: int = 3,
                  **options) -> NetworkRestorer:
    task = "restore" if z_factor == 1 else "upsample" if spatial_dims == 3 else "isotropic"
    extra = {"sample_steps": 1, "n_samples": 1} if fam == Family.DIFFUSION else {}
    config = ModelConfig(task=task, z_factor=z_factor, spatial_dims=spatial_dims,
                         network=network_config(fam, preset, **extra))
    torch.manual_seed(0)
    return NetworkRestorer(LoadedModel(config, build_network(config).eval()), **options)


@dataclass
class Row:
    family: str
    preset: str
    z_factor: int
    params: int
    in_shape: tuple[int, ...]
    out_voxels: int
    plan: BlockPlan
    seconds: float
    cpu_seconds: float
    flops_per_voxel: float
    margin: float
    sustained: float
    sustained_cpu: float
    output: np.ndarray
    monai: dict | None = None

    @property
    def label(self) -> str:
        name = self.family + (" (1 step)" if self.family == Family.DIFFUSION else "")
        return f"{name:<16} {self.preset:<8} {self.z_factor:>2}"

    @property
    def achieved(self) -> float:
        return self.flops_per_voxel * self.out_voxels / self.seconds / 1e9

    @property
    def ratio_cpu(self) -> float:
        return self.flops_per_voxel * self.out_voxels / self.cpu_seconds / 1e9 / self.sustained_cpu


def restore_work(restorer: NetworkRestorer, in_shape, result):
    """(plan, layers of one block, FLOPs per output voxel, margin) of a finished restore.

    ``margin``: the FLOPs all blocks execute (halos, mirrored edges) over those of the
    output alone.
    """
    s = result.settings
    plan = BlockPlan(in_shape, s["block_shape"], s["halo"], restorer.z_factor,
                     restorer.divisor, restorer.overlap)
    net, shapes, extra, block_out = network_pass(restorer, plan.max_input_shape())
    layers = trace_layers(net, *shapes, extra=extra)
    block_flops = sum(layer.flops for layer in layers)
    flops_per_voxel = block_flops / block_out
    margin = block_flops * len(plan) / (flops_per_voxel * math.prod(result.data.shape))
    return plan, layers, flops_per_voxel, margin


def measure(fam, preset, z_factor, out_shape, args, device, dtype) -> Row:
    in_shape = (max(1, out_shape[0] // z_factor), *out_shape[1:])
    volume = make_volume(in_shape)
    restorer = make_restorer(fam, preset, z_factor, compile=args.compile)
    kwargs = dict(device=str(device), precision=args.precision)
    if args.block_shape:
        kwargs["block_shape"] = args.block_shape
    restore(volume[:, :32, :32], restorer, **kwargs)  # warm-up: kernels, allocator
    runs = [timed(lambda: restore(volume, restorer, **kwargs), device)
            for _ in range(args.repeats)]
    result = runs[-1][2]
    seconds, cpu_seconds = medians(runs)
    plan, layers, flops_per_voxel, margin = restore_work(restorer, in_shape, result)
    out_voxels = math.prod(result.data.shape)
    sustained, sustained_cpu = sustained_gflops(layers, device, dtype, repeats=2)
    params = sum(p.numel() for p in restorer.net.parameters())
    return Row(fam, preset, z_factor, params, in_shape, out_voxels, plan, seconds,
               cpu_seconds, flops_per_voxel, margin, sustained, sustained_cpu,
               np.asarray(result.data))


def monai_compare(row: Row, args, device, dtype) -> dict:
    """The same network through MONAI's sliding window: time and agreement with ours."""
    from monai.inferers import sliding_window_inference

    volume = make_volume(row.in_shape)
    restorer = make_restorer(row.family, row.preset, row.z_factor, channels_last=False)
    restorer.prepare(device, dtype)
    if restorer.method is not None:
        generator = torch.Generator(device=device).manual_seed(0)

        def predictor(x):
            return restorer.method.sample(x, steps=1, n_samples=1, generator=generator)[0]
    else:
        predictor = restorer.net  # the network as loaded: eval mode, default layout
    roi = row.plan.max_input_shape()
    halo, f = row.plan.halo, row.z_factor
    # Mirror the edges by our halo, then up to a multiple of the network's divisor, as
    # our blocks are padded; MONAI's windows then start on the same grid as ours.
    pads = [(h, h + (-(n + 2 * h)) % a)
            for n, h, a in zip(row.in_shape, halo, restorer.divisor, strict=True)]
    crop = tuple(slice(h * s, (h + n) * s)
                 for (h, _), n, s in zip(pads, row.in_shape, (f, 1, 1), strict=True))

    padded_shape = [n + a + b for n, (a, b) in zip(row.in_shape, pads, strict=True)]

    def run(window=roi):
        norm = percentile_normalization(volume, DEFAULT_PERCENTILES)
        padded = np.pad(volume, pads, mode="symmetric")
        x = torch.from_numpy(norm.forward(padded))[None, None].to(device)
        with torch.inference_mode(), autocast(device, dtype):
            out = sliding_window_inference(x, window, 1, predictor, overlap=0.25,
                                           mode="gaussian")
        return norm.inverse(out[0, 0][crop].float().cpu().numpy())

    runs = [timed(run, device) for _ in range(args.monai_repeats or args.repeats)]
    seconds, cpu_seconds = medians(runs)
    windows = math.prod(
        1 if n <= r else math.ceil((n - r) / max(1, int(r * 0.75))) + 1
        for n, r in zip(padded_shape, roi, strict=True)
    )
    info = {"seconds": seconds, "cpu_seconds": cpu_seconds, "roi": roi, "windows": windows}
    if restorer.method is None:
        ours, theirs = row.output, runs[-1][2]
        info["rms"], info["max"] = distance(theirs, ours)
        # The quality yardstick: the network over the whole (mirrored) volume in one
        # pass, which no tiling changes. Skipped when one pass does not fit in memory.
        reference = None
        if windows == 1:
            reference = theirs
        elif not args.no_reference:
            try:
                reference = run(tuple(padded_shape))
            except (RuntimeError, MemoryError) as exc:
                print(f"    whole-volume reference skipped: {str(exc).splitlines()[0][:80]}")
        if reference is not None:
            info["ours_ref"] = distance(ours, reference)[0]
            info["monai_ref"] = distance(theirs, reference)[0]
    return info


def distance(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(RMS(a - b) / std(b), max |a - b| / range(b))."""
    return (float(np.sqrt(np.mean((a - b) ** 2)) / (b.std() or 1.0)),
            float(np.abs(a - b).max() / (np.ptp(b) or 1.0)))


# ---------------------------------------------------------------------- tables

def print_throughput(rows: list[Row], device) -> None:
    print(f"\nRestore throughput, 3D, {device}: whole restore (default settings) vs the "
          "sustained rate of its own layers")
    print(f"{'family':<16} {'preset':<8} {'z':>2} {'params':>9} {'plan (network input)':>22} "
          f"{'s':>7} {'cores':>5} {'voxels/s':>9} {'MFLOP/vox':>9} {'margin':>6} "
          f"{'achieved':>8} {'sustained':>9} {'ratio':>5} {'cpu':>5} {'busy':>5}")
    for r in rows:
        plan = f"{len(r.plan)} x {'x'.join(map(str, r.plan.max_input_shape()))}"
        ratio = r.achieved / r.sustained
        print(f"{r.label} {r.params:>9,} {plan:>22} {r.seconds:>7.2f} "
              f"{r.cpu_seconds / r.seconds:>5.2f} {r.out_voxels / r.seconds:>9,.0f} "
              f"{r.flops_per_voxel / 1e6:>9.3f} {r.margin:>6.2f} {r.achieved:>8.1f} "
              f"{r.sustained:>9.1f} {ratio:>5.2f} {r.ratio_cpu:>5.2f} {ratio * r.margin:>5.2f}")
    print("GFLOP/s: achieved = output voxels x MFLOP/vox / s; ratio = achieved / sustained "
          "(goal >= 0.70), 'cpu' the same from CPU times;\nmargin = executed / output FLOPs "
          "(halo, mirrored edges); busy = ratio x margin = time in the layers at the "
          "sustained rate / restore time.")


def print_monai(rows: list[Row]) -> None:
    print("\nMONAI sliding_window_inference (gaussian, overlap 0.25, roi = our network input, "
          "volume mirrored by our halo); speed-up = MONAI s / ours s (goal >= 1.5)")
    print(f"{'family':<16} {'preset':<8} {'z':>2} {'roi':>14} {'windows':>7} {'MONAI s':>8} "
          f"{'ours s':>7} {'speed-up':>8} {'cpu':>5} {'RMS/std':>8} {'max/range':>9}  agree "
          f"{'ours-ref':>8} {'MONAI-ref':>9}")
    for r in rows:
        m = r.monai
        if m is None:
            continue
        if "rms" in m:
            ok = "yes" if m["rms"] <= AGREEMENT_TOLERANCE else "NO"
            agree = f"{m['rms']:>8.1e} {m['max']:>9.1e}  {ok:<5}"
            if "ours_ref" in m:
                agree += f" {m['ours_ref']:>8.1e} {m['monai_ref']:>9.1e}"
        else:
            agree = f"{'(samples: not compared)':>18}"
        print(f"{r.label} {'x'.join(map(str, m['roi'])):>14} {m['windows']:>7} "
              f"{m['seconds']:>8.2f} {r.seconds:>7.2f} {m['seconds'] / r.seconds:>8.2f} "
              f"{m['cpu_seconds'] / r.cpu_seconds:>5.2f} {agree}")
    print(f"agree: RMS(MONAI - ours) / std(ours) <= {AGREEMENT_TOLERANCE:g}; 'cpu': the "
          "speed-up from CPU times;\nours-ref, MONAI-ref: RMS distance / std from the network "
          "run over the whole mirrored volume in one pass (no tiling; with one window, MONAI's "
          "output is that pass).")


def parse_args():
    from _iso2d_timing import add_iso2d_arguments

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(f.value for f in Family))
    parser.add_argument("--presets", default="small,default")
    parser.add_argument("--z-factors", default="1,4")
    parser.add_argument("--shape", default="64,256,256", help="output shape (z, y, x)")
    parser.add_argument("--diffusion-shape", default="16,128,128",
                        help="output shape for the diffusion default preset")
    parser.add_argument("--diffusion-default", action="store_true",
                        help="also the diffusion default preset (slow: see above)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--block-shape", default=None, help="fixed core block z,y,x (default auto)")
    parser.add_argument("--compile", action="store_true",
                        help="restore with torch.compile (the first timed restore of each "
                             "row compiles for its block shape; 3 repeats keep it out of the "
                             "median)")
    parser.add_argument("--monai-repeats", type=int, default=None,
                        help="repeats of the MONAI run (default: --repeats)")
    parser.add_argument("--no-monai", action="store_true")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the whole-volume pass that both tilings are scored against")
    parser.add_argument("--quick", action="store_true",
                        help="32x128x128 (diffusion 16x64x64), small presets, 1 repeat")
    add_iso2d_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.shape, args.diffusion_shape, args.presets, args.repeats = (
            "32,128,128", "16,64,64", "small", 1)
    return args


def main():
    from _iso2d_timing import iso2d_rows, print_iso2d

    args = parse_args()

    def parse(text):
        return tuple(int(v) for v in text.split(","))

    args.block_shape = parse(args.block_shape) if args.block_shape else None
    device = resolve_device(args.device)
    dtype = resolve_precision(args.precision, device)
    monai = not args.no_monai
    if monai:
        try:
            import monai  # noqa: F401
        except ImportError:
            print("MONAI is not installed (pip install napari-volsr[bench]): comparison skipped")
            monai = False
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, {name}, {torch.get_num_threads()} threads, precision "
          f"{'fp32' if dtype is None else str(dtype).removeprefix('torch.')}"
          f"{', torch.compile' if args.compile else ''}, medians of {args.repeats}; output "
          f"{args.shape} (diffusion default {args.diffusion_shape})")

    rows = []
    for fam in [f for f in args.families.split(",") if f]:
        for preset in args.presets.split(","):
            for z in parse(args.z_factors):
                big = fam == Family.DIFFUSION and preset == "default"
                if big and not args.diffusion_default:
                    continue
                shape = parse(args.diffusion_shape if big else args.shape)
                start = time.perf_counter()
                row = measure(fam, preset, z, shape, args, device, dtype)
                if monai:
                    row.monai = monai_compare(row, args, device, dtype)
                rows.append(row)
                print(f"  {fam} {preset} z={z}: restore {row.seconds:.1f} s "
                      f"(row {time.perf_counter() - start:.0f} s)", flush=True)
    iso_rows = iso2d_rows(args, device, dtype, monai)
    if rows:
        print_throughput(rows, device)
    if monai and rows:
        print_monai(rows)
    if iso_rows:
        print_iso2d(iso_rows, device)


if __name__ == "__main__":
    main()
