import numpy as np
import torch

from napari_volsr.engine.data import Normalization
from napari_volsr.engine.predict import drain, restore
from napari_volsr.engine.preview import (
    RenormalizedRestorer,
    expand_region,
    iter_preview,
    trim_slices,
    visible_region,
)
from napari_volsr.engine.restorers import get_restorer


def test_visible_region_clips_and_keeps_slices_around_the_current_one():
    shape = (12, 20, 24)
    # z sliced at 6.2 (slice 6), y visible from -3.0 to 7.4, x from 10.6 to 40
    region = visible_region(shape, (6.2, -3.0, 10.6), (6.2, 7.4, 40.0),
                            (True, False, False), context=2)
    assert region == (slice(4, 9), slice(0, 8), slice(11, 24))
    assert visible_region(shape, (12.6, 0, 0), (12.6, 5, 5), (True, False, False)) is None
    assert visible_region(shape, (3, 0, 30), (3, 5, 40), (True, False, False)) is None
    read = expand_region(region, (2, 3, 3), shape)
    assert read == (slice(2, 11), slice(0, 11), slice(8, 24))
    assert trim_slices(read, region, 4) == (slice(8, 28), slice(0, 8), slice(3, 16))


def test_renormalized_restorer_undoes_crop_normalisation():
    class Square:  # a non-linear "network" with an uncertainty output
        outputs = ("restored", "uncertainty")

        def __call__(self, x):
            return torch.cat([x**2, x.abs()], dim=1)

    crop, volume = Normalization(10.0, 30.0), Normalization(0.0, 100.0)
    wrapped = RenormalizedRestorer(Square(), crop, volume)
    raw = torch.tensor([[[[[12.0, 25.0]]]]])
    out = wrapped(torch.from_numpy(crop.forward(raw.numpy())))
    expected = volume.inverse((volume.forward(raw.numpy())) ** 2)
    np.testing.assert_allclose(crop.inverse(out[:, :1].numpy()), expected, rtol=1e-5)
    expected_std = np.abs(volume.forward(raw.numpy())) * volume.span
    np.testing.assert_allclose(out[:, 1:].numpy() * crop.span, expected_std, rtol=1e-5)


def test_preview_equals_the_full_restore_over_its_region(smooth_volume):
    spacing, origin = (0.8, 0.2, 0.2), (1.0, 2.0, 3.0)
    keep = (slice(4, 9), slice(3, 11), slice(10, 18))
    read = expand_region(keep, get_restorer("cubic", 4).halo, smooth_volume.shape)
    records = []
    generator = iter_preview(smooth_volume, "cubic", 4, keep=keep, read=read,
                             spacing=spacing, origin=origin, device="cpu")
    preview = drain(_recording(generator, records))
    assert [r.stage for r in records[:2]] == ["load", "load"]
    full = restore(smooth_volume, get_restorer("cubic", 4), spacing=spacing, origin=origin)
    window = (slice(16, 36), keep[1], keep[2])
    np.testing.assert_allclose(preview.data, full.data[window], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(preview.origin, np.add(full.origin, (16 * 0.2, 3 * 0.2, 10 * 0.2)))
    assert preview.settings["preview"] and preview.settings["preview_region"][0] == [4, 9]


def _recording(generator, records):
    while True:
        try:
            record = next(generator)
        except StopIteration as stop:
            return stop.value
        records.append(record)
        yield record
