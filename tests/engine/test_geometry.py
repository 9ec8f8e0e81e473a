import numpy as np
import pytest

from napari_volsr.engine.geometry import (
    default_z_factor,
    output_geometry,
    region_geometry,
    validate_z_factor,
)


@pytest.mark.parametrize(("scale", "expected"), [
    ((0.8, 0.2, 0.2), 4),
    ((1.0, 1.0, 1.0), 1),
    ((0.62, 0.2, 0.2), 3),  # rounded
    ((0.1, 0.2, 0.2), 1),  # finer z than x: never below 1
    ((40.0, 0.1, 0.1), 16),  # capped
    ((2.0, 0.8, 0.2, 0.2), 4),  # leading axes (channels, time) are ignored
    ((0.2, 0.2), 1),  # a plane
    ((0.8, 0.2, 0.0), 1),  # no x spacing
])
def test_default_z_factor_is_the_spacing_ratio(scale, expected):
    assert default_z_factor(scale) == expected


@pytest.mark.parametrize("z", [0, -1, 17, 2.5, True])
def test_bad_z_factors_name_the_value(z):
    with pytest.raises(ValueError, match="z_factor must be an integer from 1 to 16"):
        validate_z_factor(z)


def test_output_geometry_follows_the_slab_convention():
    spacing, origin = output_geometry((2.0, 0.5, 0.5), (10.0, 1.0, 2.0), 4)
    assert spacing == (0.5, 0.5, 0.5)
    assert origin == (10.0 - 1.5 * 0.5, 1.0, 2.0)
    assert output_geometry((2.0, 1.0, 1.0), None, 1) == ((2.0, 1.0, 1.0), (0.0, 0.0, 0.0))


def test_region_geometry_follows_the_slab_convention():
    spacing, origin = (0.8, 0.2, 0.2), (1.0, 2.0, 3.0)
    full_scale, full_origin = output_geometry(spacing, origin, 4)
    scale, translate = region_geometry(spacing, origin, (3, 5, 7), 4)
    np.testing.assert_allclose(scale, full_scale)
    # the crop's first output voxel is output voxel (3 * 4, 5, 7) of the whole volume
    np.testing.assert_allclose(translate, np.add(full_origin, np.multiply((12, 5, 7), scale)))


def test_default_z_factor_of_extreme_spacings_stays_in_range():
    from napari_volsr.engine.geometry import default_z_factor

    assert default_z_factor((1e300, 1.0, 1e-300)) == 16  # an infinite ratio: the cap
    assert default_z_factor((float("nan"), 1.0, 1.0)) == 1
    assert default_z_factor((0.8, 0.2, 0.2)) == 4
