"""The 2D isotropic restore path for inference.py: XZ and YZ planes through a 2D net, fused.

What most users run after self-supervised isotropic training (DESIGN 5): a 2D network
with z-factor f > 1 upsamples the first axis of every XZ plane and every YZ plane of a
block, and the two results are averaged. Timed like the 3D rows of ``inference.py``
(whose helpers it uses): the whole restore through ``predict.restore`` at its default
settings on a random smooth volume of ``--iso2d-shape`` (the output, default ``--shape``;
the input is f times thinner), median of ``--repeats``; FLOPs per output voxel counted
on both plane passes (so about twice a single 2D pass) with the real plane batch of the
restore (``plane_pixels``), times the flip passes when test-time flips are on;
``sustained`` times those layers alone at those shapes; ``ratio`` = achieved /
sustained. ``margin`` counts the work beyond the output: the z and x halo of every XZ
plane (the y and z halo of every YZ plane) and mirrored edges; the planes of the block's
y halo (x halo for YZ) are not run, since the restorer is told the kept region.

MONAI: the same network through ``sliding_window_inference`` on the same planes: the
normalised volume mirrored by our halo (as our blocks see it), its XZ planes (one per
row y) and YZ planes (one per column x) as batches with ``roi_size`` the plane of our
block input, ``sw_batch_size`` our plane batch, gaussian blending, overlap 0.25; the two
predictions cropped and averaged. Printed: MONAI's time over ours and the distance of
its output from ours (RMS / std, max / range).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from inference import (
    AGREEMENT_TOLERANCE,
    autocast,
    distance,
    make_restorer,
    make_volume,
    medians,
    sustained_gflops,
    timed,
    trace_layers,
)

from napari_volsr.engine.data import DEFAULT_PERCENTILES, percentile_normalization
from napari_volsr.engine.predict import restore
from napari_volsr.engine.registry import Family
from napari_volsr.engine.restorers import NetworkRestorer
from napari_volsr.engine.tiling import BlockPlan
from napari_volsr.engine.tta import flip_passes


def make_iso_restorer(fam: str, preset: str, z_factor: int, **options) -> NetworkRestorer:
    """A randomly initialised 2D isotropic model (seed 0) in a NetworkRestorer."""
    return make_restorer(fam, preset, z_factor, spatial_dims=2, **options)


@dataclass
class IsoRow:
    family: str
    preset: str
    z_factor: int
    params: int
    in_shape: tuple[int, ...]
    out_voxels: int
    plan: BlockPlan
    plane_batch: tuple[int, int]
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
        # "2D:" keeps these rows apart from the 3D rows of the same family.
        name = f"2D:{self.family}" + (" (1 step)" if self.family == Family.DIFFUSION else "")
        return f"{name:<16} {self.preset:<8} {self.z_factor:>2}"

    @property
    def achieved(self) -> float:
        return self.flops_per_voxel * self.out_voxels / self.seconds / 1e9


def plane_passes(restorer: NetworkRestorer, block_input: tuple[int, ...],
                 kept: tuple[int, int]):
    """[(net, input shapes, extra, planes per block)] of one block's XZ and YZ passes.

    ``kept``: the (y, x) extent of the block's kept output, the rows and columns whose
    planes run. Each pass is traced at the batch of planes the restorer sends per call;
    the last, smaller call of a pass is counted at the same per-plane cost.
    """
    d, h, w = block_input
    net = restorer.method.ema if restorer.method is not None else restorer.net
    passes = []
    for lateral, planes in ((w, kept[0]), (h, kept[1])):  # XZ (one per kept row), YZ (column)
        per_plane = d * lateral * restorer.z_factor * restorer.n_samples
        batch = min(planes, max(1, restorer.plane_pixels // per_plane))
        if restorer.method is not None:
            size = [d * restorer.z_factor, lateral]
            size = [n + (-n) % k for n, k in zip(size, restorer.net.output_divisor, strict=True)]
            shapes, extra = [(batch, 1, *size), (batch, 1, *size)], [torch.ones(batch)]
        else:
            shapes, extra = [(batch, 1, d, lateral)], []
        passes.append((net, shapes, extra, planes, batch))
    return passes


def iso_work(restorer: NetworkRestorer, in_shape, result):
    """(plan, layers, FLOPs per output voxel, margin, plane batches) of a finished restore.

    ``margin``: the FLOPs all blocks execute (halo planes and pixels, mirrored edges) over
    those of the output alone.
    """
    s = result.settings
    plan = BlockPlan(in_shape, s["block_shape"], s["halo"], restorer.z_factor,
                     restorer.divisor, restorer.overlap)
    flips = flip_passes(2) if restorer.flips else 1
    d_in = plan.max_input_shape()[0]
    layers, block_flops, flops_per_voxel, batches = [], 0.0, 0.0, []
    kept = tuple(min(b, n) for b, n in zip(plan.block_shape[1:], plan.shape[1:], strict=True))
    for net, shapes, extra, planes, batch in plane_passes(restorer, plan.max_input_shape(),
                                                          kept):
        traced = trace_layers(net, *shapes, extra=extra)
        layers += traced
        per_plane = sum(layer.flops for layer in traced) / batch * flips
        block_flops += per_plane * planes
        # Each pass predicts every output voxel once: its cost per output pixel.
        flops_per_voxel += per_plane / (d_in * restorer.z_factor * shapes[0][-1])
        batches.append(batch)
    margin = block_flops * len(plan) / (flops_per_voxel * math.prod(result.data.shape))
    return plan, layers, flops_per_voxel, margin, tuple(batches)


def measure_iso(fam, preset, z_factor, out_shape, args, device, dtype) -> IsoRow:
    in_shape = (max(1, out_shape[0] // z_factor), *out_shape[1:])
    volume = make_volume(in_shape)
    restorer = make_iso_restorer(fam, preset, z_factor, compile=args.compile)
    kwargs = dict(device=str(device), precision=args.precision)
    if args.block_shape:
        kwargs["block_shape"] = args.block_shape
    restore(volume[:, :32, :32], restorer, **kwargs)  # warm-up: kernels, allocator
    runs = [timed(lambda: restore(volume, restorer, **kwargs), device)
            for _ in range(args.repeats)]
    result = runs[-1][2]
    seconds, cpu_seconds = medians(runs)
    plan, layers, flops_per_voxel, margin, batches = iso_work(restorer, in_shape, result)
    sustained, sustained_cpu = sustained_gflops(layers, device, dtype, repeats=2)
    params = sum(p.numel() for p in restorer.net.parameters())
    return IsoRow(fam, preset, z_factor, params, in_shape, math.prod(result.data.shape), plan,
                  batches, seconds, cpu_seconds, flops_per_voxel, margin, sustained,
                  sustained_cpu, np.asarray(result.data))


def monai_planes(row: IsoRow, args, device, dtype) -> dict:
    """The same 2D network through MONAI's sliding window on the same XZ / YZ planes."""
    from monai.inferers import sliding_window_inference

    volume = make_volume(row.in_shape)
    restorer = make_iso_restorer(row.family, row.preset, row.z_factor, channels_last=False)
    restorer.prepare(device, dtype)
    if restorer.method is not None:
        generator = torch.Generator(device=device).manual_seed(0)

        def predictor(x):
            return restorer.method.sample(x, steps=1, n_samples=1, generator=generator)[0]
    else:
        predictor = restorer.net
    d_in, h_in, w_in = row.plan.max_input_shape()
    halo, f = row.plan.halo, row.z_factor
    pads = [(hh, hh + (-(n + 2 * hh)) % a)
            for n, hh, a in zip(row.in_shape, halo, restorer.divisor, strict=True)]
    d, h, w = row.in_shape
    zc = slice(pads[0][0] * f, (pads[0][0] + d) * f)
    yc, xc = slice(pads[1][0], pads[1][0] + h), slice(pads[2][0], pads[2][0] + w)

    def run():
        norm = percentile_normalization(volume, DEFAULT_PERCENTILES)
        x = torch.from_numpy(norm.forward(np.pad(volume, pads, mode="symmetric"))).to(device)
        with torch.inference_mode(), autocast(device, dtype):
            xz = x[:, yc, :].permute(1, 0, 2)[:, None]  # (h, 1, D, W): one plane per row
            out_xz = sliding_window_inference(xz, (d_in, w_in), row.plane_batch[0], predictor,
                                              overlap=0.25, mode="gaussian")
            yz = x[:, :, xc].permute(2, 0, 1)[:, None]  # (w, 1, D, H): one plane per column
            out_yz = sliding_window_inference(yz, (d_in, h_in), row.plane_batch[1], predictor,
                                              overlap=0.25, mode="gaussian")
        fused_xz = out_xz[:, 0][:, zc, xc].permute(1, 0, 2).float()
        fused_yz = out_yz[:, 0][:, zc, yc].permute(1, 2, 0).float()
        return norm.inverse(((fused_xz + fused_yz) / 2).cpu().numpy())

    runs = [timed(run, device) for _ in range(args.monai_repeats or args.repeats)]
    seconds, cpu_seconds = medians(runs)
    big_d, big_h, big_w = (n + a + b for n, (a, b) in zip(row.in_shape, pads, strict=True))

    def windows(sizes, roi):
        return math.prod(1 if n <= r else math.ceil((n - r) / max(1, int(r * 0.75))) + 1
                         for n, r in zip(sizes, roi, strict=True))

    info = {"seconds": seconds, "cpu_seconds": cpu_seconds, "roi": (d_in, w_in, h_in),
            "windows": (windows((big_d, big_w), (d_in, w_in)),
                        windows((big_d, big_h), (d_in, h_in)))}
    if restorer.method is None:
        info["rms"], info["max"] = distance(runs[-1][2], row.output)
    return info


def add_iso2d_arguments(parser) -> None:
    parser.add_argument("--iso2d-families", default="rcan,srunet,gan,unet",
                        help="families timed on the 2D isotropic path ('' for none; "
                             "diffusion: one sampling step)")
    parser.add_argument("--iso2d-shape", default=None,
                        help="2D isotropic output shape z,y,x (default: --shape)")
    parser.add_argument("--iso2d-z-factor", type=int, default=4)


def iso2d_rows(args, device, dtype, monai: bool) -> list[IsoRow]:
    """Measure every family of ``--iso2d-families`` (and MONAI unless told not to)."""
    rows = []
    shape = tuple(int(v) for v in (args.iso2d_shape or args.shape).split(","))
    for fam in [f for f in args.iso2d_families.split(",") if f]:
        for preset in args.presets.split(","):
            start = time.perf_counter()
            row = measure_iso(fam, preset, args.iso2d_z_factor, shape, args, device, dtype)
            if monai:
                row.monai = monai_planes(row, args, device, dtype)
            rows.append(row)
            print(f"  2D isotropic {fam} {preset} z={row.z_factor}: restore {row.seconds:.1f} s "
                  f"(row {time.perf_counter() - start:.0f} s)", flush=True)
    return rows


def print_iso2d(rows: list[IsoRow], device) -> None:
    print(f"\nRestore throughput, 2D isotropic (XZ + YZ planes, fused), {device}: whole restore "
          "(default settings) vs the sustained rate of its own layers")
    print(f"{'family':<16} {'preset':<8} {'z':>2} {'params':>9} {'input':>12} "
          f"{'plan (block input)':>22} {'planes/call':>11} {'s':>7} {'cores':>5} "
          f"{'voxels/s':>10} {'MFLOP/vox':>9} {'margin':>6} {'achieved':>8} {'sustained':>9} "
          f"{'ratio':>5} {'cpu':>5} {'busy':>5}")
    for r in rows:
        plan = f"{len(r.plan)} x {'x'.join(map(str, r.plan.max_input_shape()))}"
        ratio = r.achieved / r.sustained
        ratio_cpu = (r.flops_per_voxel * r.out_voxels / r.cpu_seconds / 1e9) / r.sustained_cpu
        print(f"{r.label} {r.params:>9,} {'x'.join(map(str, r.in_shape)):>12} {plan:>22} "
              f"{'/'.join(map(str, r.plane_batch)):>11} {r.seconds:>7.2f} "
              f"{r.cpu_seconds / r.seconds:>5.2f} {r.out_voxels / r.seconds:>10,.0f} "
              f"{r.flops_per_voxel / 1e6:>9.3f} {r.margin:>6.2f} {r.achieved:>8.1f} "
              f"{r.sustained:>9.1f} {ratio:>5.2f} {ratio_cpu:>5.2f} {ratio * r.margin:>5.2f}")
    print("MFLOP/vox: both plane passes (XZ and YZ) per output voxel; planes/call: XZ/YZ "
          "planes per network call; the other columns as in the 3D table.")
    if not any(r.monai for r in rows):
        return
    print("\nMONAI sliding_window_inference on the same planes (XZ, YZ; gaussian, overlap "
          "0.25, roi = our block's plane, volume mirrored by our halo); speed-up = MONAI s / "
          "ours s")
    print(f"{'family':<16} {'preset':<8} {'z':>2} {'roi XZ/YZ':>14} {'windows':>7} "
          f"{'MONAI s':>8} {'ours s':>7} {'speed-up':>8} {'cpu':>5} {'RMS/std':>8} "
          f"{'max/range':>9}  agree")
    for r in rows:
        m = r.monai
        if m is None:
            continue
        d, w, h = m["roi"]
        agree = (f"{m['rms']:>8.1e} {m['max']:>9.1e}  "
                 f"{'yes' if m['rms'] <= AGREEMENT_TOLERANCE else 'NO'}" if "rms" in m
                 else f"{'(samples: not compared)':>18}")
        print(f"{r.label} {f'{d}x{w}/{d}x{h}':>14} {'/'.join(map(str, m['windows'])):>7} "
              f"{m['seconds']:>8.2f} "
              f"{r.seconds:>7.2f} {m['seconds'] / r.seconds:>8.2f} "
              f"{m['cpu_seconds'] / r.cpu_seconds:>5.2f} {agree}")
