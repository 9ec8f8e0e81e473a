import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_volsr.engine.tiling import (
    ArrayMerger,
    BlockPlan,
    RestorerGeometry,
    ZarrMerger,
    auto_block_shape,
    geometry_of,
    parse_block_shape,
    plan_restore,
    read_block,
)


@st.composite
def plans(draw):
    ndim = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.integers(1, 40)) for _ in range(ndim))
    block = tuple(draw(st.integers(1, 24)) for _ in range(ndim))
    halo = tuple(draw(st.integers(0, 5)) for _ in range(ndim))
    align = tuple(draw(st.sampled_from([1, 2, 4])) for _ in range(ndim))
    overlap = tuple(draw(st.integers(0, 8)) for _ in range(ndim))
    z_factor = draw(st.integers(1, 6))
    return BlockPlan(shape, block, halo, z_factor, align, overlap)


@settings(max_examples=150, deadline=None)
@given(plans())
def test_every_output_voxel_written_and_weights_sum_to_one(plan):
    total = np.zeros(plan.out_shape, dtype=np.float64)
    hits = np.zeros(plan.out_shape, dtype=np.int32)
    for block in plan:
        write_shape = tuple(s.stop - s.start for s in block.write)
        weight = plan.weight(block)
        assert weight.shape == write_shape
        assert (weight > 0).all()
        total[block.write] += weight
        hits[block.write] += 1
    assert (hits >= 1).all()
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


@settings(max_examples=150, deadline=None)
@given(plans())
def test_block_geometry_is_consistent(plan):
    for block in plan:
        inp = block.input_shape
        for axis, n in enumerate(inp):
            assert n % plan.align[axis] == 0
            scale = plan.scale[axis]
            crop, write, read = block.crop[axis], block.write[axis], block.read[axis]
            # The crop fits inside the prediction of the padded input ...
            assert 0 <= crop.start < crop.stop <= n * scale
            # ... and is as long as the place it is written to.
            assert crop.stop - crop.start == write.stop - write.start
            assert 0 <= read.start < read.stop <= plan.shape[axis]
            # The core's context: halo on each side, read or mirrored.
            core_start = write.start // scale
            assert core_start - read.start + block.pad[axis][0] == plan.halo[axis]


def test_single_block_when_it_fits():
    plan = BlockPlan((10, 20, 30), (64, 64, 64), halo=(2, 3, 3), z_factor=4)
    assert len(plan) == 1
    (block,) = plan
    assert block.pad == ((2, 2), (3, 3), (3, 3))
    assert block.write == (slice(0, 40), slice(0, 20), slice(0, 30))


def test_read_block_mirrors_edges(rng):
    data = rng.random((5, 6))
    plan = BlockPlan(data.shape, (5, 3), halo=(2, 1))
    block = plan.block((0, 0))
    region = read_block(data, block)
    assert region.shape == block.input_shape
    np.testing.assert_array_equal(region[2:7, 1:5], data[:, 0:4])
    np.testing.assert_array_equal(region[1], data[0, np.r_[0, 0:4]][: region.shape[1]])


def test_mergers_reassemble_identity(tmp_path, rng):
    data = rng.random((9, 17, 13)).astype(np.float32)
    plan = BlockPlan(data.shape, (4, 6, 5), halo=(1, 2, 2), overlap=(2, 2, 2))
    mergers = [ArrayMerger(plan), ZarrMerger(plan, str(tmp_path / "m.zarr"))]
    for merger in mergers:
        for block in plan:
            merger.add(block, read_block(data, block)[None])
        np.testing.assert_allclose(np.asarray(merger.result())[0], data, atol=1e-6)


def test_auto_block_shape_fits_budget():
    shape, halo = (64, 512, 512), (2, 8, 8)
    budget = 50e6
    block = auto_block_shape(shape, halo, 4, 40.0, budget)
    padded = [b + 2 * h for b, h in zip(block, halo)]
    assert math.prod(padded) * 4 * 40.0 <= budget
    assert auto_block_shape(shape, halo, 1, 1.0, 1e12) == shape


@pytest.mark.parametrize("shape,halo,align,overlap,z_factor,budget", [
    ((20, 40, 36), (2, 5, 5), (1, 4, 4), 0, 1, 20_000),
    ((20, 40, 36), (3, 3, 3), 1, 4, 2, 30_000),
    ((9, 30, 17), (1, 6, 2), (1, 2, 1), (1, 6, 2), 3, 12_000),
])
def test_auto_block_shape_reads_least_of_all_blocks_that_fit(shape, halo, align, overlap,
                                                             z_factor, budget):
    def reads(block):
        plan = BlockPlan(shape, block, halo, z_factor, align, overlap)
        padded = math.prod(plan.max_input_shape())
        return (len(plan) * padded, len(plan)) if padded * z_factor <= budget else None

    chosen = reads(auto_block_shape(shape, halo, z_factor, 1.0, budget, align, overlap=overlap))
    assert chosen is not None  # fits
    floor = [min(8, n) for n in shape]
    every = [reads((a, b, c)) for a in range(floor[0], shape[0] + 1)
             for b in range(floor[1], shape[1] + 1) for c in range(floor[2], shape[2] + 1)]
    assert chosen == min(r for r in every if r is not None)


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="z_factor"):
        BlockPlan((4, 4, 4), 4, z_factor=0)
    with pytest.raises(ValueError, match="block_shape"):
        BlockPlan((4, 4, 4), (4, 4))


# ---------------------------------------------------------------- the one planner
CUBIC_X4 = RestorerGeometry("cubic", 4, halo=(2, 0, 0), divisor=(1, 1, 1), overlap=(0, 0, 0),
                            bytes_per_voxel=12.0)


def test_plan_restore_honours_a_fixed_block_shape():
    plan = plan_restore((12, 20, 24), CUBIC_X4, (4, 10, 12), budget=2**30)
    assert (len(plan), plan.grid_shape, plan.block_shape) == (12, (3, 2, 2), (4, 10, 12))
    assert plan.halo == (2, 0, 0) and plan.out_shape == (48, 20, 24)
    # memory estimate: padded input voxels x z-factor x bytes per voxel
    assert plan.block_bytes(12.0) == (4 + 4) * 10 * 12 * 4 * 12.0
    clipped = plan_restore((12, 20, 24), CUBIC_X4, (64, 64, 64))
    assert clipped.block_shape == (12, 20, 24) and len(clipped) == 1


def test_plan_restore_auto_fits_the_budget_and_reads_least():
    whole = plan_restore((12, 20, 24), CUBIC_X4, "auto", budget=2**30)
    assert len(whole) == 1
    budget = plan_restore((12, 20, 24), CUBIC_X4, (4, 10, 12)).block_bytes(12.0)
    tight = plan_restore((12, 20, 24), CUBIC_X4, "auto", budget=budget)
    assert 1 < len(tight) and tight.block_bytes(12.0) <= budget
    assert tight.block_shape == auto_block_shape((12, 20, 24), (2, 0, 0), 4, 12.0, budget)


def test_plan_restore_takes_a_restorer_and_an_overlap():
    from napari_volsr.engine.restorers import InterpolationRestorer

    restorer = InterpolationRestorer("linear", 2)
    assert geometry_of(restorer) == RestorerGeometry("linear", 2, (1, 0, 0), (1, 1, 1),
                                                     (0, 0, 0), 12.0)
    plan = plan_restore((12, 40, 36), restorer, (6, 16, 16), overlap=(2, 4, 4))
    assert plan.overlap == (2, 4, 4)
    assert plan.block_shape == plan_restore((12, 40, 36), geometry_of(restorer),
                                            (6, 16, 16)).block_shape


def test_iter_restore_uses_the_plan(smooth_volume):
    from napari_volsr.engine.predict import restore
    from napari_volsr.engine.restorers import InterpolationRestorer

    restorer = InterpolationRestorer("cubic", 4)
    plan = plan_restore(smooth_volume.shape, restorer, (4, 10, 12))
    result = restore(smooth_volume, restorer, block_shape=(4, 10, 12), device="cpu")
    assert result.plan == plan.describe()
    assert tuple(result.settings["block_shape"]) == plan.block_shape


@pytest.mark.parametrize("block_shape,match", [
    ("big", "'auto' or three integers"),
    ((0, 8, 8), "block_shape must be positive"),
    ((8, 8), "block_shape needs 3 values"),
])
def test_plan_restore_refuses_bad_block_shapes(block_shape, match):
    with pytest.raises(ValueError, match=match):
        plan_restore((12, 20, 24), CUBIC_X4, block_shape)


@pytest.mark.parametrize(("text", "expected"), [
    ("auto", "auto"), ("", "auto"), (" AUTO ", "auto"), ("16,128,128", (16, 128, 128)),
    ("4x32x32", (4, 32, 32)), ("8 16 16", (8, 16, 16)), ("32", (32, 32, 32)),
])
def test_parse_block_shape(text, expected):
    assert parse_block_shape(text) == expected


@pytest.mark.parametrize("text", ["abc", "1,2", "0,8,8", "4,-8,8", "1,2,3,4"])
def test_parse_block_shape_refuses_with_a_hint(text):
    with pytest.raises(ValueError, match="Z,Y,X"):
        parse_block_shape(text)


def test_model_geometry_without_weights(library, save_tiny):
    from napari_volsr.engine.restorers import restorer_geometry

    folder = save_tiny(library / "tiny-srunet", "srunet", task="upsample", z_factor=2)
    (folder / "weights.safetensors").write_bytes(b"not weights")  # never read for plans
    geometry = restorer_geometry("tiny-srunet", 2)
    assert geometry.z_factor == 2 and geometry.divisor[1] > 1 and min(geometry.halo) > 0
    with pytest.raises(ValueError, match="unknown model 'no-such-model'; choose one of: "
                       "nearest, linear, cubic, catmull-rom, tiny-srunet$"):
        restorer_geometry("no-such-model", 1)
