"""Parts of a network restorer: compiling its network, its memory per voxel."""

from __future__ import annotations

import math
import warnings

import torch


class Compiled(torch.nn.Module):
    """``module`` through ``torch.compile``, or as it is once compiling has failed."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module
        # Frozen weights let inductor prepack them for oneDNN and fold constants.
        self.compiled = torch.compile(module, options={"freezing": True})
        self.failed = False

    def forward(self, *args):
        """Run the compiled module; fall back to the module itself if compiling fails."""
        if not self.failed:
            try:
                return self.compiled(*args)
            except Exception as exc:
                from .predict import _is_out_of_memory

                if _is_out_of_memory(exc):
                    raise
                warnings.warn(f"torch.compile failed, running the network uncompiled: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                              RuntimeWarning, stacklevel=2)
                self.failed = True
        return self.module(*args)


def block_bytes_per_voxel(config, net) -> float:
    """Peak memory of a 3D network pass per output voxel, in bytes (float32).

    From the live activations of each architecture, checked against the resident
    memory of passes on two block sizes on the CPU (slope, channels-last; measured in
    brackets): SRUNet's decoder holds its concatenation and convolutions on the output
    grid, 4 (2 w1 + 4 w0) (small x1 503, default x1 918, small x4 421); the GAN's
    features live on the input grid until the last upsampling, (16 / f + 4) C
    (small x1 216, default x1 512, default x4 192); RCAN 24 C (small 292, default 640),
    / f on the input grid with sub-pixel upsampling (f: output voxels per input voxel,
    the product of the per-axis factors); the diffusion UNet with the sampler's
    tensors 80 x its first width (small 1170, default 1930); the U-Net (CARE) runs on the
    output grid, its top level dominating, 24 w0 (small x1 310, default x1 728, small x4 327).
    """
    cfg = config.network
    # Input-grid activations spread over every output voxel their input voxel covers.
    f = math.prod(config.factors)
    if cfg.family == "srunet":
        return 4.0 * (2 * cfg.widths[1] + 4 * cfg.widths[0])
    if cfg.family == "gan":
        return cfg.channels * (16.0 / f + 4.0)
    if cfg.family == "unet":
        return 4.0 * 6 * cfg.widths[0]
    if cfg.family == "diffusion":
        return 4.0 * 20 * cfg.base_channels * cfg.channel_mults[0]
    # RCAN's sub-pixel upsampling keeps the features on the input grid.
    return 4.0 * cfg.channels * 6 / (f if getattr(net, "shuffle", False) else 1)
