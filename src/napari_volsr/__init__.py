"""napari-volsr: restore 3D volumes and make anisotropic ones isotropic.

Console use::

    import napari_volsr as vs
    vs.restore(viewer.layers["stack"], model="cubic", z_factor=4)
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "list_models", "restore"]


def __getattr__(name):
    # Lazy: importing the package (napari does at start-up) must not import torch.
    if name in ("restore", "list_models"):
        from . import _api

        return getattr(_api, name)
    raise AttributeError(f"module 'napari_volsr' has no attribute {name!r}")
