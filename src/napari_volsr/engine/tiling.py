"""Block planning (pure geometry) and mergers that blend predicted blocks."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .geometry import validate_factors, validate_z_factor


@dataclass(frozen=True)
class Block:
    """One tile of the plan.

    Attributes
    ----------
    index
        Position in the block grid.
    read
        Input region to read (inside the volume).
    pad
        (before, after) padding per axis applied to what was read: halo beyond the
        volume edge (mirrored) plus the extra needed for the network's divisibility.
    crop
        Region of the prediction (output grid) that this block contributes.
    write
        Where that region goes in the output.
    """

    index: tuple[int, ...]
    read: tuple[slice, ...]
    pad: tuple[tuple[int, int], ...]
    crop: tuple[slice, ...]
    write: tuple[slice, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of the padded network input."""
        return tuple(s.stop - s.start + a + b for s, (a, b) in zip(self.read, self.pad))


def _as_tuple(value, ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        value = (int(value),) * ndim
    value = tuple(int(v) for v in value)
    if len(value) != ndim:
        raise ValueError(f"{name} needs {ndim} values, got {value}")
    return value


def _plan_factors(z_factor, ndim: int) -> tuple[int, ...]:
    """Per-axis factors of a plan: an int upsamples the first axis only."""
    if isinstance(z_factor, (int, np.integer, float)) and not isinstance(z_factor, bool):
        if int(z_factor) != z_factor or z_factor < 1:
            raise ValueError(f"z_factor must be an integer >= 1, got {z_factor}")
        return (int(z_factor),) + (1,) * (ndim - 1)
    factors = tuple(z_factor)
    if len(factors) != ndim or any(isinstance(f, bool) or int(f) != f or f < 1
                                   for f in factors):
        raise ValueError(f"factors must be {ndim} integers >= 1 (one per axis), got {factors}")
    return tuple(int(f) for f in factors)


def factors_of(restorer) -> tuple[int, int, int]:
    """``(fz, fy, fx)`` of a restorer or geometry: its ``factors``, else ``(z_factor, 1, 1)``.

    Restorers written before lateral factors existed have a ``z_factor`` only.
    """
    factors = getattr(restorer, "factors", None)
    if factors is None:
        return (validate_z_factor(restorer.z_factor), 1, 1)
    return validate_factors(factors)


def _axis_starts(length: int, block: int, overlap: int, align: int = 1) -> list[int]:
    """Evenly spread block starts so neighbours overlap by at least ``overlap``.

    With ``align > 1`` (``block`` and ``overlap`` multiples of it) every start is a
    multiple of ``align``: a network that pools or strides then sees the same grid in
    every block as in the whole volume. The last block may then reach up to
    ``align - 1`` voxels past the end (read as mirrored edge, never written).
    """
    if block >= length:
        return [0]
    n = math.ceil((length - overlap) / (block - overlap))
    if align == 1:
        return [round(i * (length - block) / (n - 1)) for i in range(n)]
    step = align * math.ceil((length - block) / (n - 1) / align)
    last = align * math.ceil((length - block) / align)
    return sorted({min(i * step, last) for i in range(n)})


def _split_overlap(overlap: int, block: int, length: int, align: int) -> int:
    """The overlap used along an axis: 0 if unsplit, a multiple of ``align`` below half a block.

    An overlap of half a block or more would make some voxels covered thrice.
    """
    if block >= length:
        return 0
    overlap = align * math.ceil(max(0, min(overlap, block // 2)) / align)
    return overlap if 2 * overlap <= block else overlap - align


def _axis_weights(intervals: list[tuple[int, int]], length: int) -> list[np.ndarray]:
    """Linear ramps over each overlap, normalised so the weights sum to one per voxel."""
    raw = []
    for i, (start, stop) in enumerate(intervals):
        x = np.arange(start, stop, dtype=np.float64) + 0.5
        w = np.ones(stop - start)
        if i > 0 and intervals[i - 1][1] > start:
            w = np.minimum(w, (x - start) / (intervals[i - 1][1] - start))
        if i + 1 < len(intervals) and intervals[i + 1][0] < stop:
            w = np.minimum(w, (stop - x) / (stop - intervals[i + 1][0]))
        raw.append(w)
    total = np.zeros(length)
    for (start, stop), w in zip(intervals, raw):
        total[start:stop] += w
    return [(w / total[start:stop]).astype(np.float32) for (start, stop), w in zip(intervals, raw)]


class BlockPlan:
    """The blocks covering a volume and their blending weights.

    Parameters
    ----------
    shape
        Spatial input shape.
    block_shape
        Core size of each block in input voxels (clipped to ``shape``).
    halo
        Context read around each core (mirrored beyond the volume edge), cropped off
        the prediction.
    z_factor
        Upsampling by the network: an int for the first axis only, or one factor per
        axis (``(fz, fy, fx)``).
    align
        The padded network input must be a multiple of this per axis.
    overlap
        Minimum overlap of neighbouring cores, blended with linear ramps. Zero means
        cores tile the volume and only the halo gives context.
    """

    def __init__(
        self,
        shape: Sequence[int],
        block_shape: Sequence[int] | int,
        halo: Sequence[int] | int = 0,
        z_factor: int | Sequence[int] = 1,
        align: Sequence[int] | int = 1,
        overlap: Sequence[int] | int = 0,
    ):
        self.shape = tuple(int(n) for n in shape)
        ndim = len(self.shape)
        if any(n < 1 for n in self.shape):
            raise ValueError(f"cannot plan blocks for an empty volume of shape {self.shape}")
        self.factors = _plan_factors(z_factor, ndim)
        self.z_factor = self.factors[0]
        block = _as_tuple(block_shape, ndim, "block_shape")
        if any(b < 1 for b in block):
            raise ValueError(f"block_shape must be positive, got {block}")
        self.block_shape = tuple(min(b, n) for b, n in zip(block, self.shape))
        self.halo = _as_tuple(halo, ndim, "halo")
        self.align = _as_tuple(align, ndim, "align")
        if any(h < 0 for h in self.halo) or any(a < 1 for a in self.align):
            raise ValueError(f"halo must be >= 0 and align >= 1, got {self.halo}, {self.align}")
        # Split axes get blocks (and overlaps) in multiples of ``align``, so that every
        # block starts on the network's pooling grid (_axis_starts).
        self.block_shape = tuple(
            b if b >= n else min(n, a * math.ceil(b / a))
            for b, n, a in zip(self.block_shape, self.shape, self.align, strict=True)
        )
        overlap = _as_tuple(overlap, ndim, "overlap")
        self.overlap = tuple(
            _split_overlap(o, b, n, a)
            for o, b, n, a in zip(overlap, self.block_shape, self.shape, self.align, strict=True)
        )
        self.scale = self.factors
        self.out_shape = tuple(n * s for n, s in zip(self.shape, self.scale))
        self.starts = [
            _axis_starts(n, b, o, a)
            for n, b, o, a in zip(self.shape, self.block_shape, self.overlap, self.align,
                                  strict=True)
        ]

    def _intervals(self, axis: int) -> list[tuple[int, int]]:
        """(start, stop) of each core along ``axis``, within the volume."""
        b, n = self.block_shape[axis], self.shape[axis]
        return [(s, min(s + b, n)) for s in self.starts[axis]]

    @cached_property
    def _weights(self) -> list[list[np.ndarray]]:
        out = []
        for axis, s in enumerate(self.scale):
            intervals = [(a * s, e * s) for a, e in self._intervals(axis)]
            out.append(_axis_weights(intervals, self.out_shape[axis]))
        return out

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Number of blocks per axis."""
        return tuple(len(s) for s in self.starts)

    def __len__(self) -> int:
        return math.prod(self.grid_shape)

    def __iter__(self):
        for index in np.ndindex(*self.grid_shape):
            yield self.block(index)

    def block(self, index: tuple[int, ...]) -> Block:
        """The block at grid position ``index``."""
        read, pad, crop, write = [], [], [], []
        for axis, i in enumerate(index):
            n, h, a, s = self.shape[axis], self.halo[axis], self.align[axis], self.scale[axis]
            start, stop = self._intervals(axis)[i]
            end = start + self.block_shape[axis]  # past ``stop`` for an aligned last block
            lo, hi = max(0, start - h), min(n, end + h)
            before, after = h - (start - lo), (end + h) - hi
            after += (-(end - start + 2 * h)) % a
            read.append(slice(lo, hi))
            pad.append((before, after))
            crop.append(slice(h * s, (h + stop - start) * s))
            write.append(slice(start * s, stop * s))
        return Block(tuple(index), tuple(read), tuple(pad), tuple(crop), tuple(write))

    def weight(self, block: Block) -> np.ndarray:
        """Blending weight of ``block`` over its write region (sums to one over blocks)."""
        axes = [self._weights[axis][i] for axis, i in enumerate(block.index)]
        out = axes[0]
        for w in axes[1:]:
            out = np.multiply.outer(out, w)
        return out

    def max_input_shape(self) -> tuple[int, ...]:
        """Largest padded network input of any block (for memory estimates)."""
        return tuple(
            b + 2 * h + (-(b + 2 * h)) % a
            for b, h, a in zip(self.block_shape, self.halo, self.align)
        )

    def block_bytes(self, bytes_per_voxel: float) -> float:
        """Memory estimate of the largest block: padded input voxels x factors x bytes."""
        return float(math.prod(self.max_input_shape()) * math.prod(self.factors)
                     * bytes_per_voxel)

    def describe(self) -> str:
        """One line for people: block shape, halo, number of blocks."""
        return (
            f"{len(self)} block(s) of {'x'.join(map(str, self.block_shape))} "
            f"(+halo {'x'.join(map(str, self.halo))}, overlap {'x'.join(map(str, self.overlap))})"
        )


def plan_blocks(shape, block_shape, halo=0, z_factor=1, align=1, overlap=0) -> BlockPlan:
    """Plan blocks; see :class:`BlockPlan`."""
    return BlockPlan(shape, block_shape, halo, z_factor, align, overlap)


def read_block(data, block: Block, mode: str = "symmetric") -> np.ndarray:
    """Read ``block`` from ``data`` (numpy, dask or zarr; spatial axes last) and pad it.

    Leading non-spatial axes are read whole. Half-sample symmetric padding matches
    the slab grid, on which the edge slice extends as itself.
    """
    lead = data.ndim - len(block.read)
    region = data[(slice(None),) * lead + block.read]
    region = np.asarray(region.compute() if hasattr(region, "compute") else region)
    if any(a or b for a, b in block.pad):
        region = np.pad(region, [(0, 0)] * lead + list(block.pad), mode=mode)
    return region


def _axis_options(n: int, halo: int, align: int, overlap: int, floor: int):
    """(core, blocks, padded input) for splitting an axis of ``n`` into 1, 2, ... blocks."""
    options: dict[int, tuple[int, int]] = {}
    k = 1
    while k <= n:
        core = n if k == 1 else max(floor, math.ceil((n + (k - 1) * overlap) / k))
        if core < n:  # as BlockPlan lays split axes out
            core = min(n, align * math.ceil(core / align))
        if core not in options:
            effective = _split_overlap(overlap, core, n, align)
            padded = core + 2 * halo + (-(core + 2 * halo)) % align
            options[core] = (len(_axis_starts(n, core, effective, align)), padded)
        if core <= floor:
            break
        # Every split up to 16 blocks, then coarser steps: long axes stay cheap to search.
        k = k + 1 if k < 16 else math.ceil(k * 1.25)
    return [(core, count, padded) for core, (count, padded) in options.items()]


def auto_block_shape(
    shape: Sequence[int],
    halo: Sequence[int],
    z_factor: int | Sequence[int],
    bytes_per_voxel: float,
    budget_bytes: float,
    align: Sequence[int] | int = 1,
    min_block: int = 8,
    overlap: Sequence[int] | int = 0,
) -> tuple[int, ...]:
    """The block shape that fits ``budget_bytes`` and makes the network read least.

    A block's memory is estimated as ``bytes_per_voxel`` times the voxels of its padded
    input, times the product of the factors (``z_factor``: an int for z only, or one
    per axis; activations live on the output grid). Every block reads
    its halo again, so among the splits of each axis into 1, 2, ... blocks (at least
    ``min_block`` voxels, neighbours overlapping by ``overlap`` as :class:`BlockPlan`
    lays them out) whose estimate fits, the one with the fewest padded input voxels in
    all wins, then the one with fewer blocks. When nothing fits, the smallest blocks.
    """
    ndim = len(shape)
    halo = _as_tuple(halo, ndim, "halo")
    align = _as_tuple(align, ndim, "align")
    overlap = _as_tuple(overlap, ndim, "overlap")
    upsampling = math.prod(_plan_factors(z_factor, ndim))
    floor = [max(min(min_block, int(n)), 1) for n in shape]
    options = [
        _axis_options(int(n), h, a, o, f)
        for n, h, a, o, f in zip(shape, halo, align, overlap, floor, strict=True)
    ]
    best, best_key = tuple(floor), None
    for combo in itertools.product(*options):
        padded = math.prod(p for _, _, p in combo)
        if padded * upsampling * bytes_per_voxel > budget_bytes:
            continue
        blocks = math.prod(c for _, c, _ in combo)
        key = (blocks * padded, blocks)
        if best_key is None or key < best_key:
            best, best_key = tuple(core for core, _, _ in combo), key
    return best


@dataclass(frozen=True)
class RestorerGeometry:
    """What block planning needs from a restorer: no weights, no device.

    A built restorer has these attributes too, so either may be planned for.
    ``factors`` (z, y, x) defaults to ``(z_factor, 1, 1)``; given, its first value must be
    ``z_factor``.
    """

    name: str
    z_factor: int
    halo: tuple[int, int, int]
    divisor: tuple[int, int, int]
    overlap: tuple[int, int, int]
    bytes_per_voxel: float
    outputs: tuple[str, ...] = ("restored",)
    factors: tuple[int, int, int] | None = None

    def __post_init__(self):
        factors = (self.z_factor, 1, 1) if self.factors is None else self.factors
        factors = validate_factors(factors)
        if factors[0] != self.z_factor:
            raise ValueError(f"z_factor {self.z_factor} disagrees with factors {factors}")
        object.__setattr__(self, "factors", factors)


def geometry_of(restorer) -> RestorerGeometry:
    """Return the planning geometry of a built restorer."""
    return RestorerGeometry(
        name=restorer.name, z_factor=int(restorer.z_factor),
        halo=tuple(int(h) for h in restorer.halo),
        divisor=tuple(int(d) for d in restorer.divisor),
        overlap=tuple(int(o) for o in restorer.overlap),
        bytes_per_voxel=float(restorer.bytes_per_voxel),
        outputs=tuple(restorer.outputs), factors=factors_of(restorer),
    )


def plan_restore(shape: Sequence[int], geometry, block_shape="auto", budget: float = 2**30,
                 overlap=None) -> BlockPlan:
    """The block plan of restoring a volume: the one planner of every door.

    Parameters
    ----------
    shape
        Spatial (ZYX) input shape.
    geometry
        A :class:`RestorerGeometry` or a restorer: halo, divisor, overlap, factors (or
        z-factor) and bytes per voxel.
    block_shape
        ``"auto"`` (the block that fits ``budget`` and reads least, see
        :func:`auto_block_shape`) or a Z,Y,X core block shape (clipped to the volume).
    budget
        Bytes a block may use (per channel), for ``"auto"``.
    overlap
        Blending overlap in input voxels; default: the restorer's.

    Raises
    ------
    ValueError
        Block shapes that are neither ``"auto"`` nor positive integers, bad z-factors.
    """
    shape = tuple(int(n) for n in shape)
    factors = factors_of(geometry)
    overlap = geometry.overlap if overlap is None else overlap
    if isinstance(block_shape, str):
        if block_shape != "auto":
            raise ValueError(f"block_shape must be 'auto' or three integers, got {block_shape!r}")
        core = auto_block_shape(shape, geometry.halo, factors, geometry.bytes_per_voxel,
                                budget, geometry.divisor, overlap=overlap)
    else:
        core = tuple(int(b) for b in block_shape)
    return BlockPlan(shape, core, geometry.halo, factors, geometry.divisor, overlap)


def parse_block_shape(text: str | Sequence[int] | None):
    """``"auto"`` or a Z,Y,X core block shape from text a person typed.

    Accepts ``auto`` (or nothing), one integer (a cube) or three integers separated by
    commas, ``x`` or spaces: ``16,128,128``, ``16x128x128``.

    Raises
    ------
    ValueError
        With a sentence saying what to type.
    """
    if text is None:
        return "auto"
    if not isinstance(text, str):
        values = [int(v) for v in text]
    else:
        stripped = text.strip().lower()
        if stripped in ("", "auto"):
            return "auto"
        parts = [p for p in re.split(r"[,x\s;]+", stripped) if p]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or any(v < 1 for v in values):
        raise ValueError(
            f"block shape {text!r} is not understood: type 'auto' or three positive "
            "integers Z,Y,X such as 16,128,128"
        )
    return tuple(values)


class ArrayMerger:
    """Accumulates weighted block predictions in a numpy array (outputs, *spatial)."""

    def __init__(self, plan: BlockPlan, n_outputs: int = 1):
        self.plan = plan
        self.out = np.zeros((n_outputs, *plan.out_shape), dtype=np.float32)

    def add(self, block: Block, prediction: np.ndarray) -> None:
        """Blend ``prediction`` (outputs, *padded output block) into place."""
        core = prediction[(slice(None),) + block.crop]
        weight = self.plan.weight(block)
        self.out[(slice(None),) + block.write] += core * weight

    def result(self):
        """The merged array."""
        return self.out


class ZarrMerger(ArrayMerger):
    """Accumulates into a zarr array so memory stays bounded by the block size.

    Blocks are added one after another (read-modify-write of the overlap), so one
    process owns the store while merging.
    """

    def __init__(self, plan: BlockPlan, store, n_outputs: int = 1, chunks=None):
        import zarr

        self.plan = plan
        chunks = chunks or (1, *[min(n, 64) for n in plan.out_shape])
        self.out = zarr.open_array(
            store, mode="w", shape=(n_outputs, *plan.out_shape), chunks=chunks,
            dtype="float32", fill_value=0.0, zarr_format=2,
        )

    def add(self, block: Block, prediction: np.ndarray) -> None:
        """Blend ``prediction`` into the store."""
        core = prediction[(slice(None),) + block.crop]
        region = (slice(None),) + block.write
        self.out[region] = self.out[region] + core * self.plan.weight(block)
