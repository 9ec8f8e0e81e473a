"""A network that could copy the masked voxel gains nothing by copying (Noise2Void's premise).

On pure, independent noise the only thing a network could learn at a blind spot is the
voxel itself. A 1x1 convolution sees exactly the voxel at its output position, so the most its
best weights (the least-squares line from input to target over the masked voxels) can
remove from the MSE loss is the squared correlation: about 0 (nothing revealed), where an
unmasked pair would give 1 (the copy is perfect).
"""

import numpy as np
import pytest
import torch
from torch import nn

from napari_volsr.engine.config import BlindSpotConfig
from napari_volsr.engine.data import noise2void_data
from napari_volsr.engine.methods.supervised import SupervisedMethod

FULL_RANGE = (0.0, 100.0)


@pytest.fixture(scope="module")
def pure_noise():
    return np.random.default_rng(11).random((16, 64, 64)).astype(np.float32)


def masked_pairs(volume, spatial_dims, replacement, batches=40):
    patch = (8, 16, 16) if spatial_dims == 3 else (32, 32)
    data = noise2void_data(volume, patch, spatial_dims=spatial_dims, n_val=1,
                           percentiles=FULL_RANGE, blind_spot=BlindSpotConfig(replacement=replacement))
    pairs = [data.batch(step, 8) for step in range(batches)]
    inputs = np.concatenate([p[0] for p in pairs])
    targets = np.concatenate([p[1] for p in pairs])
    known = np.isfinite(targets)
    return inputs[known], targets[known]


def explained(inputs, targets) -> float:
    """Share of the target's variance the best 1x1 convolution (a line) removes: r^2."""
    return float(np.corrcoef(inputs, targets)[0, 1] ** 2)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("replacement", ["median", "neighbour"])
def test_the_best_copying_network_learns_nothing_at_blind_spots(pure_noise, spatial_dims,
                                                                replacement):
    inputs, targets = masked_pairs(pure_noise, spatial_dims, replacement)
    assert inputs.size > 2000
    # About 5000 masked voxels: r^2 of independent values stays well under 0.005.
    assert explained(inputs, targets) < 0.005
    # Control: had the voxel stayed in the input, copying would remove all of it.
    assert explained(targets, targets) == pytest.approx(1.0)


def test_training_a_copying_network_leaves_it_predicting_the_mean(pure_noise):
    torch.manual_seed(0)
    data = noise2void_data(pure_noise, (32, 32), spatial_dims=2, n_val=1,
                           percentiles=FULL_RANGE)
    net = nn.Conv2d(1, 1, 1)
    with torch.no_grad():  # start as the identity: the copy a blind spot must unlearn
        net.weight.fill_(1.0)
        net.bias.zero_()
    method = SupervisedMethod(net, "mse")
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for step in range(150):
        inputs, targets = data.batch(step, 16)
        loss = method({"input": torch.from_numpy(inputs), "target": torch.from_numpy(targets)})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert abs(net.weight.item()) < 0.15
    assert net.bias.item() == pytest.approx(0.5, abs=0.1)  # the noise's mean
