"""Qt-free model engine: IO, tiling, networks, training and restoration."""
