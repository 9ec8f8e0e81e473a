"""PlaneStack: a 2.5D model's 2D network run on every z plane of a volume with its neighbours."""

from __future__ import annotations

import torch
from torch import nn

from napari_volsr.engine.config import ModelConfig
from napari_volsr.engine.nets._common import check_input
from napari_volsr.engine.registry import build_network


def context_stacks(x: torch.Tensor, c: int) -> torch.Tensor:
    """Each plane of (B, 1, D, H, W) with its ``c`` neighbours each side: (B*D, 2c+1, H, W).

    Beyond the block's ends planes are mirrored half-sample symmetrically, as the tiler
    pads volume borders (``read_block``) and as numpy's and bioimageio.core's
    ``symmetric`` padding does, so a whole-volume pass, tiles and Model Zoo tools agree.

    Parameters
    ----------
    x
        A (B, 1, D, H, W) block.
    c
        Context planes on each side (0: each plane alone).

    Returns
    -------
    torch.Tensor
        (B*D, 2c+1, H, W): batch-major, the plane being restored in the middle channel.
    """
    b, _, d, h, w = x.shape
    index = torch.arange(-c, d + c, device=x.device) % (2 * d)
    index = torch.where(index >= d, 2 * d - 1 - index, index)
    padded = x[:, 0, index]
    planes = torch.stack([padded[:, k : k + d] for k in range(2 * c + 1)], dim=2)
    return planes.reshape(b * d, 2 * c + 1, h, w)


class PlaneStack(nn.Module):
    """A 2.5D model as one volumetric network: (B, 1, Z, Y, X) -> (B, 1, Z, Y, X).

    The 2D network restores each z plane from the plane and its ``context_planes``
    neighbours on each side, given as input channels (:func:`context_stacks`); this
    module applies it to all planes at once, which is what napari-volsr's restore does
    slice by slice. It exists so a 2.5D model can be written as one network that other
    tools run on volumes (BioImage Model Zoo packages).

    Parameters
    ----------
    context_planes
        Neighbouring planes on each side, 1..4.
    family
        The 2D network's family (``unet`` or ``srunet``).
    spatial_dims, in_channels, out_channels, z_factor
        The 2D network's, with ``in_channels`` the image's channels (1), not the stack's:
        2, 1, 1 and 1 (anything else is refused, as the model config refuses it).
    **network
        The family's network arguments (``widths``...).

    Attributes
    ----------
    net
        The 2D network (so state-dict keys are ``net.<its key>``).
    halo, divisor : tuple of int
        Per axis (z, y, x): the context planes along z, the 2D network's laterally.
    """

    def __init__(self, context_planes: int, family: str, spatial_dims: int = 2,
                 in_channels: int = 1, out_channels: int = 1, z_factor: int = 1, **network):
        super().__init__()
        # The model config holds the one rule for the 2D network of a 2.5D model
        # (stack channels in, the centre channel as the U-Net's residual).
        config = ModelConfig(spatial_dims=spatial_dims, in_channels=in_channels,
                             out_channels=out_channels, z_factor=z_factor,
                             context_planes=context_planes,
                             network={**network, "family": family})
        if config.context_planes < 1 or in_channels != 1:
            raise ValueError(f"PlaneStack needs context_planes >= 1 and one image channel, got "
                             f"context_planes {context_planes}, in_channels {in_channels}")
        self.context = config.context_planes
        self.out_channels = config.out_channels
        self.net = build_network(config)
        self.halo = (self.context, *self.net.halo)
        self.divisor = (1, *self.net.divisor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, 1, Z, Y, X) to (B, out_channels, Z, Y, X)."""
        check_input(x, 3, 1)
        b, _, d, h, w = x.shape
        out = self.net(context_stacks(x, self.context))
        return out.reshape(b, d, self.out_channels, h, w).permute(0, 2, 1, 3, 4)
