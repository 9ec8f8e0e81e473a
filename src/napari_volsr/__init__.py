"""napari-volsr: restore 3D volumes and make anisotropic ones isotropic.

Console use::

    import napari_volsr as vs
    vs.restore(viewer.layers["stack"], model="cubic", z_factor=4)
    model = vs.train(raw=viewer.layers["noisy"], target=viewer.layers["clean"], steps=500)
    vs.restore(viewer.layers["noisy"], model=model.config.name)
"""

from __future__ import annotations

import os as _os
import sys as _sys

__version__ = "0.1.0"

# PyTorch's CPU allocator reads this once, when torch loads: buffers of 2 MiB and more
# then live on transparent huge pages. A 3D activation otherwise costs one page fault
# per 4 KiB each time it is allocated, a quarter of an RCAN restore's CPU time
# (benchmarks/inference.py). Only set when torch is not loaded yet and the user has not
# chosen (THP_MEM_ALLOC_ENABLE=0 opts out).
if "torch" not in _sys.modules:
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__all__ = ["__version__", "list_models", "load_model", "restore", "train"]


def __getattr__(name):
    # Lazy: importing the package (napari does at start-up) must not import torch.
    if name in ("restore", "list_models", "train", "load_model"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'napari_volsr' has no attribute {name!r}")
