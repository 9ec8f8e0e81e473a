"""``python -m napari_volsr.cli``: the ``volsr`` command (what torchrun starts per replica)."""

from . import main

if __name__ == "__main__":
    main()
