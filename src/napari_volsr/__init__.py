"""napari-volsr: restore 3D volumes and make anisotropic ones isotropic.

Console use::

    import napari_volsr as vs
    vs.restore(viewer.layers["stack"], model="cubic", z_factor=4)
    model = vs.train(raw=viewer.layers["noisy"], target=viewer.layers["clean"], steps=500)
    vs.restore(viewer.layers["noisy"], model=model.config.name)
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "list_models", "load_model", "restore", "train"]


def __getattr__(name):
    # Lazy: importing the package (napari does at start-up) must not import torch.
    if name in ("restore", "list_models", "train", "load_model"):
        from . import _api

        return getattr(_api, name)
    raise AttributeError(f"module 'napari_volsr' has no attribute {name!r}")
