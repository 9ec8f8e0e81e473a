"""Chains of models in one restore job: a same-shape model, then an upsampling one."""

import numpy as np
import pytest
from helpers import TINY_NETWORK, records_and_result, save_tiny

from napari_volsr._layers import result_layers
from napari_volsr.engine.chain import (
    NOT_DISTRIBUTED,
    chain_geometry,
    chain_notes,
    stage_geometries,
)
from napari_volsr.engine.dtypes import to_output_dtype
from napari_volsr.engine.geometry import output_geometry, region_geometry
from napari_volsr.engine.io import Volume, write_volume
from napari_volsr.engine.pipeline import check_distributable, iter_restore_file, iter_restore_job
from napari_volsr.engine.predict import RestoreCancelled, drain
from napari_volsr.engine.preview import iter_preview
from napari_volsr.engine.tiling import RestorerGeometry

CHAIN = ["den", TINY_NETWORK]  # a same-shape RCAN, then the tiny GAN's z x2
SPACING = (0.8, 0.2, 0.2)


@pytest.fixture
def chain_library(tiny_library):
    save_tiny(tiny_library / "den", family="rcan", z_factor=1)
    return tiny_library


@pytest.fixture
def folder(tmp_path):
    """Where inputs and outputs go (``tmp_path`` holds the library too)."""
    (tmp_path / "files").mkdir()
    return tmp_path / "files"


@pytest.fixture
def volume(rng):
    from helpers import smooth

    return smooth(rng, (6, 20, 24))


def test_a_chain_equals_one_model_after_the_other(chain_library, volume):
    data = np.round(volume).astype(np.uint16)
    blocks = {"block_shape": (4, 12, 12)}
    records, chained = records_and_result(iter_restore_job(data, CHAIN, **blocks))
    first = drain(iter_restore_job(data, "den", output_dtype="float32", **blocks)).data
    second = drain(iter_restore_job(first, TINY_NETWORK, output_dtype="float32", **blocks)).data
    # float32 in between; the result in the input's type, as one model would give it
    assert chained.data.dtype == np.uint16
    expected = to_output_dtype(second, "auto", np.uint16)
    np.testing.assert_allclose(chained.data, expected, atol=1)  # float rounding at .5
    assert np.mean(chained.data == expected) > 0.99
    stages = [r.stage for r in records]
    assert stages[:4] == ["load"] * 3 + ["normalise"] and stages[-1] == "finalise"
    assert set(stages[4:-1]) == {"blocks"}  # the second model's percentiles count as blocks
    blocks = [r for r in records if r.stage == "blocks"]
    assert {r.total for r in blocks} == {blocks[-1].done}  # one bar: the whole job's blocks
    assert [r.done for r in blocks] == sorted(r.done for r in blocks)
    assert blocks[0].message.startswith("den (1/2): ")
    assert blocks[-1].message.startswith(f"{TINY_NETWORK} (2/2): ")


def test_geometry_and_names_of_a_same_shape_then_x2_chain(chain_library, volume):
    result = drain(iter_restore_job(volume, CHAIN, spacing=SPACING, origin=(3.0, 1.0, 2.0)))
    assert result.data.shape == (12, 20, 24) and result.z_factor == 2
    assert (result.spacing, result.origin) == output_geometry(SPACING, (3.0, 1.0, 2.0), 2)
    settings = result.settings
    assert settings["model"] == f"den then {TINY_NETWORK}"
    assert [s["model"] for s in settings["chain"]] == CHAIN
    assert [s["z_factor"] for s in settings["chain"]] == [1, 2]
    assert all(s["config_hash"] for s in settings["chain"])  # each stage says what it was
    (_, kwargs, _), = result_layers(result, "stack")
    assert kwargs["name"] == f"stack [den then {TINY_NETWORK} x2]"


def test_two_upsampling_stages_compose_on_the_slab_grid(tiny_library, volume):
    # the model's x2, then cubic for what is left of the job's x4
    result = drain(iter_restore_job(volume, [TINY_NETWORK, "cubic"], 4, spacing=SPACING,
                                    origin=(1.0, 0.0, 0.0)))
    assert result.data.shape == (24, 20, 24)
    assert [s["z_factor"] for s in result.settings["chain"]] == [2, 2]
    once = output_geometry(SPACING, (1.0, 0.0, 0.0), 4)
    twice = output_geometry(*output_geometry(SPACING, (1.0, 0.0, 0.0), 2), 2)
    np.testing.assert_allclose(result.spacing, once[0])
    np.testing.assert_allclose(result.origin, once[1])
    np.testing.assert_allclose(twice[1], once[1])  # x2 of x2 is the slab grid of x4


@pytest.mark.parametrize("models, z_factor, spacing, sentence", [
    ([], None, None, "no model given: name one model, or several to apply one after the other"),
    (["den", "cubic", "linear"], None, SPACING, "the chain den then cubic then linear "
     "interpolates twice (cubic and linear), which only blurs: keep one interpolation "
     "baseline at most"),
    (CHAIN, 4, None, f"the chain den then {TINY_NETWORK} upsamples z by 1 x 2 = 2, not 4: "
     "leave the z-factor out or choose 2"),
    ([TINY_NETWORK, "cubic"], 3, None, f"the models of the chain {TINY_NETWORK} then cubic "
     "upsample z by 2, so its z-factor must be a multiple of 2, not 3"),
    ([TINY_NETWORK, "cubic"], None, (0.4, 0.2, 0.2), f"cubic interpolation in the chain "
     f"{TINY_NETWORK} then cubic would have z-factor 1 and change nothing (the voxel spacing "
     "asks for x2 and the models give x2): leave it out of the chain, or give a larger "
     "z-factor"),
    ([TINY_NETWORK] * 5, None, None, "upsamples z by 2 x 2 x 2 x 2 x 2 = 32, beyond 16: "
     "leave out an upsampling model"),
    (["den", "gone"], None, None, "unknown model 'gone'; choose one of: nearest, linear"),
])
def test_refusals_are_one_sentence_before_any_work(chain_library, volume, models, z_factor,
                                                   spacing, sentence):
    job = iter_restore_job(volume, models, z_factor, spacing=spacing)
    with pytest.raises(ValueError) as refused:
        next(job)
    assert sentence in str(refused.value)


def test_dask_workers_refuse_a_chain():
    check_distributable("cubic")
    with pytest.raises(ValueError, match="a chain of models runs in this process"):
        check_distributable(["den", "cubic"])
    assert "--workers/--scheduler" in NOT_DISTRIBUTED


def _geometry(z_factor=1, halo=(2, 3, 3), outputs=("restored",)):
    return RestorerGeometry("net", z_factor, halo, (1, 1, 1), (0, 0, 0), 10.0, outputs)


def test_notes_and_context_of_a_chain():
    diffusion = _geometry(outputs=("restored", "uncertainty"))
    up = _geometry(z_factor=2, halo=(3, 1, 1))
    assert chain_notes(["d", "iso"], [diffusion, up]) == [
        "d passes its mean to iso; its uncertainty is not kept"]
    assert "same-shape models usually go first" in chain_notes(["iso", "d"], [up, _geometry()])[0]
    # a region's context: each stage's halo, a later z halo in already upsampled voxels
    assert chain_geometry([_geometry(), up]).halo == (5, 4, 4)
    assert chain_geometry([up, _geometry()]).halo == (4, 4, 4)
    assert chain_geometry([up, _geometry()]).z_factor == 2


def test_a_chain_preview_has_the_chains_grid(chain_library, volume):
    geometry = chain_geometry(stage_geometries(CHAIN))
    keep = (slice(2, 4), slice(4, 12), slice(0, 24))
    read = tuple(slice(max(0, k.start - h), min(n, k.stop + h))
                 for k, h, n in zip(keep, geometry.halo, volume.shape))
    result = drain(iter_preview(volume, CHAIN, None, keep=keep, read=read, spacing=SPACING))
    assert result.data.shape == (4, 8, 24)
    assert (result.spacing, result.origin) == region_geometry(SPACING, None, (2, 4, 0), 2)


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_cancel_in_the_second_stage_leaves_no_output(chain_library, volume, folder, suffix):
    src = write_volume(folder / "in.tif", Volume(volume, SPACING))
    job = iter_restore_file(src, folder / f"out{suffix}", CHAIN, block_shape=(4, 12, 12))
    for record in job:
        if record.message.startswith(f"{TINY_NETWORK} (2/2)"):
            job.close()  # as the panel's Cancel and Ctrl-C do
    second = []  # should_stop is polled between blocks: stop once the second model runs
    job = iter_restore_file(src, folder / f"out{suffix}", CHAIN, block_shape=(4, 12, 12),
                            should_stop=lambda: bool(second))
    with pytest.raises(RestoreCancelled):
        for record in job:
            second += [record.message.startswith(f"{TINY_NETWORK} (2/2)")] * ("(2/2)" in
                                                                             record.message)
    assert sorted(p.name for p in folder.iterdir()) == ["in.tif"]


def test_a_zarr_output_streams_every_stage(chain_library, volume, folder):
    src = write_volume(folder / "in.tif", Volume(volume, SPACING))
    written = drain(iter_restore_file(src, folder / "out.zarr", CHAIN))
    in_memory = drain(iter_restore_job(volume, CHAIN, spacing=SPACING))
    from napari_volsr.engine.io import read_volume

    out = read_volume(folder / "out.zarr")
    np.testing.assert_allclose(out.data, in_memory.data, rtol=1e-5, atol=1e-3)
    assert out.spacing == pytest.approx(in_memory.spacing)
    assert f"(den then {TINY_NETWORK} x2; den: " in written.describe()
    assert sorted(p.name for p in folder.iterdir()) == ["in.tif", "out.zarr"]
