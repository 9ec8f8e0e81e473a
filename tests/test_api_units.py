"""The Train side reads a layer's unit from napari's ``units`` when its metadata has none."""

import numpy as np
import pytest
from napari.layers import Image

import napari_volsr as vs
from napari_volsr.api import volume_input


def _layer(units=None, metadata=None, scale=(0.8, 0.2, 0.2)):
    data = np.random.default_rng(0).random((8, 32, 32)).astype(np.float32)
    return Image(data, scale=scale, units=units, metadata=metadata or {}, name="stack")


def test_napari_units_give_the_unit():
    item = volume_input(_layer(units=("micrometer",) * 3))
    assert item.unit == "µm"
    assert item.spacing == pytest.approx((0.8, 0.2, 0.2))


def test_mixed_length_units_become_the_smallest_with_the_spacing_converted():
    item = volume_input(_layer(units=("nanometer", "micrometer", "micrometer"),
                               scale=(40.0, 0.01, 0.01)))
    assert item.unit == "nm"
    assert item.spacing == pytest.approx((40.0, 10.0, 10.0))


def test_metadata_unit_wins_and_pixels_mean_no_unit():
    # The metadata holds the file's own spelling, which this plugin's reader put there.
    assert volume_input(_layer(units=("nanometer",) * 3, metadata={"unit": "µm"})).unit == "µm"
    assert volume_input(_layer()).unit is None  # napari's default: pixels


def test_a_layers_napari_units_reach_the_model_card(library):
    model = vs.train(volume=_layer(units=("micrometer",) * 3), preset="tiny", steps=1,
                     name="units")
    assert model.config.training["voxel_unit"] == "µm"
