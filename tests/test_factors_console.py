"""Per-axis factors from the napari console: ``vs.restore(..., factors=...)``, ``vs.train``."""

import numpy as np
import pytest

import napari_volsr as vs
from napari_volsr.engine.interp import upsample

ANISOTROPIC = (0.8, 0.2, 0.2)


def test_restore_an_array_with_lateral_factors(smooth_volume):
    out = vs.restore(smooth_volume, model="cubic", factors=(1, 2, 2))
    assert isinstance(out, np.ndarray) and out.shape == (12, 40, 48)
    # The engine's slab-grid interpolation of y and x (z untouched), up to the output cast.
    import torch

    expected = upsample(torch.from_numpy(smooth_volume)[None, None], (1, 2, 2), "cubic")[0, 0]
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-4)
    # z_factor agreeing with factors changes nothing; z alone is the shorthand (f, 1, 1).
    np.testing.assert_array_equal(vs.restore(smooth_volume, "cubic", 1, factors=[1, 2, 2]), out)
    np.testing.assert_array_equal(vs.restore(smooth_volume, "cubic", factors=(2, 1, 1)),
                                  vs.restore(smooth_volume, "cubic", z_factor=2))


def test_restore_a_layer_adds_it_on_the_slab_grid(make_napari_viewer, smooth_volume):
    viewer = make_napari_viewer()
    layer = viewer.add_image(smooth_volume, name="stack", scale=ANISOTROPIC,
                             translate=(1.0, 2.0, 3.0))
    (data, kwargs, kind), = vs.restore(layer, model="cubic", factors=(1, 2, 2), viewer=viewer)
    added = viewer.layers["stack [cubic x(1,2,2)]"]
    assert added.data.shape == data.shape == (12, 40, 48)
    np.testing.assert_allclose(added.scale, (0.8, 0.1, 0.1))
    # Each upsampled axis moves by (f - 1) / 2 output voxels: half of 0.1 in y and x.
    np.testing.assert_allclose(added.translate, (1.0, 1.95, 2.95))
    assert added.metadata["volsr"]["factors"] == [1, 2, 2]
    vs.restore(layer, model="cubic", z_factor=4, viewer=viewer)
    assert "stack [cubic x4]" in viewer.layers  # z-only names as before


@pytest.mark.parametrize(("z_factor", "factors"), [
    (None, (0, 2, 2)), (None, (1, 2)), (None, (1.5, 2, 2)), (None, (1, 17, 1)),
    (None, "1,2,2"), (2, (1, 2, 2)), (None, (True, 2, 2)),
])
def test_bad_factors_are_refused_and_nothing_is_added(make_napari_viewer, smooth_volume,
                                                      z_factor, factors):
    viewer = make_napari_viewer()
    before = smooth_volume.copy()
    layer = viewer.add_image(smooth_volume, name="stack", scale=ANISOTROPIC)
    with pytest.raises(ValueError, match="factor"):
        vs.restore(layer, model="cubic", z_factor=z_factor, factors=factors, viewer=viewer)
    with pytest.raises(ValueError, match="factor"):
        vs.restore(smooth_volume, model="cubic", z_factor=z_factor, factors=factors)
    assert [x.name for x in viewer.layers] == ["stack"]
    np.testing.assert_array_equal(smooth_volume, before)


def test_train_then_restore_with_lateral_factors(library, rng):
    from helpers import smooth

    target = smooth(rng, (8, 32, 32))
    model = vs.train(target=target, source="synthetic", family="srunet", preset="tiny",
                     factors=(1, 2, 2), steps=2, validate_every=1, name="sr2")
    assert model.config.factors == (1, 2, 2) and model.config.lateral_factors == (2, 2)
    assert (library / "sr2").is_dir()
    low = target[:, ::2, ::2].copy()
    out = vs.restore(low, model="sr2")  # the model's own factors
    assert out.shape == (8, 32, 32)
    with pytest.raises(ValueError, match="trained for factors"):
        vs.restore(low, model="sr2", factors=(1, 4, 4))
