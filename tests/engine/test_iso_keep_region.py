"""2D isotropic restores compute only the planes of the output region their callers keep."""

import dask
import numpy as np
import pytest

from helpers import save_tiny, smooth
from napari_volsr.engine import dask_restore, predict
from napari_volsr.engine.predict import call_restorer, kept_region, restore
from napari_volsr.engine.restorers import NetworkRestorer, get_restorer
from napari_volsr.engine.tiling import plan_restore

# Several blocks per axis; x = 35 makes the aligned last U-Net block's crop one voxel
# shorter than the others', so stacked blocks keep a union of unequal crops (and the
# dask graph meets a block that reaches past the volume).
SHAPE = (6, 40, 35)
BLOCKS = (6, 16, 14)


@pytest.fixture(scope="module")
def volume():
    return smooth(np.random.default_rng(3), SHAPE, scale=1.0, offset=0.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny 2D isotropic x4 models with random weights (no training)."""
    root = tmp_path_factory.mktemp("iso_keep")
    return {family: save_tiny(root / family, family, z_factor=4, spatial_dims=2,
                              task="isotropic")
            for family in ("unet", "rcan")}


def _count_planes(restorer, monkeypatch) -> list[int]:
    """Record how many planes each pass of ``restorer`` sends through the network."""
    seen = []
    inner = restorer._apply_planes

    def counting(planes):
        seen.append(planes.shape[0])
        return inner(planes)

    monkeypatch.setattr(restorer, "_apply_planes", counting)
    return seen


def _restore(restorer, volume, block_shape):
    return restore(volume, restorer, block_shape=block_shape, output_dtype="float32").data


@pytest.mark.parametrize("family,flips", [("unet", False), ("unet", True), ("rcan", False)])
@pytest.mark.parametrize("block_shape", [BLOCKS, "auto"])
def test_keeping_the_crop_changes_nothing(models, volume, monkeypatch, family, flips,
                                          block_shape):
    restorer = get_restorer(str(models[family]), flips=flips)
    assert restorer.flips is flips
    planes = _count_planes(restorer, monkeypatch)
    kept = _restore(restorer, volume, block_shape)
    fewer = sum(planes)
    planes.clear()
    with monkeypatch.context() as m:
        m.setattr(NetworkRestorer, "accepts_keep", False)
        full = _restore(restorer, volume, block_shape)
    assert kept.shape == (24, *SHAPE[1:])
    np.testing.assert_allclose(kept, full, rtol=0, atol=1e-5)
    assert fewer < sum(planes)


def test_passes_run_on_the_kept_rows_and_columns_only(models, volume, monkeypatch):
    restorer = get_restorer(str(models["unet"]))
    planes = _count_planes(restorer, monkeypatch)
    monkeypatch.setattr(predict, "blocks_per_call", lambda *args: 1)  # one block per call
    plan = plan_restore(SHAPE, restorer, BLOCKS)
    assert plan.grid_shape[1:] == (3, 3)
    _restore(restorer, volume, BLOCKS)
    lengths = [(b.crop[1].stop - b.crop[1].start, b.crop[2].stop - b.crop[2].start)
               for b in plan]
    assert planes == [n for pair in lengths for n in pair]  # XZ: kept rows, YZ: kept columns
    assert len({x for _, x in lengths}) == 2  # the x crops differ at the volume's edge
    before = [(b.input_shape[1], b.input_shape[2]) for b in plan]
    assert sum(planes) < sum(sum(pair) for pair in before)


def test_stacked_blocks_keep_the_union_of_their_crops(models, volume, monkeypatch):
    plan = plan_restore(SHAPE, get_restorer(str(models["unet"])), BLOCKS)
    last_two = list(plan)[1:3]  # along x: a full crop and the short edge one
    assert last_two[0].crop != last_two[1].crop
    union = kept_region(last_two)
    assert union[2] == last_two[0].crop[2]
    assert union[:2] == last_two[0].crop[:2]


def test_only_restorer_classes_that_accept_keep_get_it():
    import torch

    calls = []

    class Plain:
        def __call__(self, x):
            calls.append("plain")
            return x

    class Wrapper:  # forwards attributes, as preview's RenormalizedRestorer does
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, x):
            calls.append("wrapper")
            return x

    class Keeps:
        accepts_keep = True

        def __call__(self, x, keep=None):
            calls.append(keep)
            return x

    x = torch.zeros(1, 1, 2, 2, 2)
    keep = (slice(0, 2), slice(1, 2), slice(0, 1))
    for restorer in (Plain(), Wrapper(Keeps()), Keeps()):
        call_restorer(restorer, x, keep)
    call_restorer(Keeps(), x)
    assert calls == ["plain", "wrapper", keep, None]


def test_dask_graph_equals_the_in_memory_restore(models, volume):
    folder = models["unet"]
    restorer = get_restorer(str(folder))
    result = restore(volume, restorer, block_shape=BLOCKS, output_dtype="float32")
    plan = plan_restore(SHAPE, restorer, BLOCKS)
    spec = dask_restore.RestorerSpec(str(folder))
    merged = dask_restore.restore_graph(volume[None], spec, result.normalization, plan, 1, 1)
    with dask.config.set(scheduler="threads"):
        values = result.normalization[0].inverse(merged.compute()[0])
    np.testing.assert_allclose(values, result.data, rtol=0, atol=1e-5)
