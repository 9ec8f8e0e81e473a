"""Networks: one class per family, each for 2D and 3D."""
