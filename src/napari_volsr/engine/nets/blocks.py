"""Layer factories so one network class serves 2D and 3D (MONAI's factory idea)."""

from __future__ import annotations

from torch import nn


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return spatial_dims


def conv(spatial_dims: int, in_ch: int, out_ch: int, kernel_size=3, stride=1, bias=True) -> nn.Module:
    """Convolution with 'same' padding for odd kernels."""
    cls = nn.Conv3d if _check_dims(spatial_dims) == 3 else nn.Conv2d
    if isinstance(kernel_size, int):
        padding = kernel_size // 2
    else:
        padding = tuple(k // 2 for k in kernel_size)
    return cls(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=bias)


def conv_transpose(spatial_dims: int, in_ch: int, out_ch: int, kernel_size, stride) -> nn.Module:
    """Transposed convolution, used for learned upsampling."""
    cls = nn.ConvTranspose3d if _check_dims(spatial_dims) == 3 else nn.ConvTranspose2d
    return cls(in_ch, out_ch, kernel_size, stride=stride)


def max_pool(spatial_dims: int, kernel_size) -> nn.Module:
    """Max pooling with stride equal to the kernel."""
    cls = nn.MaxPool3d if _check_dims(spatial_dims) == 3 else nn.MaxPool2d
    return cls(kernel_size)


def instance_norm(spatial_dims: int, channels: int) -> nn.Module:
    """Instance norm with affine parameters (GAN generator and discriminator)."""
    cls = nn.InstanceNorm3d if _check_dims(spatial_dims) == 3 else nn.InstanceNorm2d
    return cls(channels, affine=True)


def adaptive_avg_pool(spatial_dims: int) -> nn.Module:
    """Global average pool to one voxel (channel attention)."""
    cls = nn.AdaptiveAvgPool3d if _check_dims(spatial_dims) == 3 else nn.AdaptiveAvgPool2d
    return cls(1)
