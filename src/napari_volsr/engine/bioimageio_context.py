"""Model Zoo package axes and README, and 2.5D models packaged as a volumetric PlaneStack.

A 2.5D model's 2D network restores a plane from a stack of it and its neighbours, which a
Model Zoo tool running the 2D network on XY images cannot build. The package therefore
holds :class:`~napari_volsr.engine.nets.plane_stack.PlaneStack`, the 2D network applied to
every plane of a (batch, channel, z, y, x) volume, with the context planes declared as the
output's z halo; importing unwraps it back into the 2D model.
"""

from __future__ import annotations

from .config import ModelConfig

PLANE_STACK = ("napari_volsr.engine.nets.plane_stack", "PlaneStack")  # import_from, callable
# Input tiles: at least 4 z planes (2c+1 for a stack, so the centre plane has real
# neighbours on both sides) and 16 pixels laterally.
MIN_Z, MIN_YX = 4, 16


def fit(size: int, divisor: int) -> int:
    """``size`` rounded down to a multiple of ``divisor``, at least ``divisor``."""
    return max(divisor, size // divisor * divisor)


def volumetric(config: ModelConfig) -> bool:
    """Whether the package's network takes (batch, channel, z, y, x) volumes."""
    return config.spatial_dims == 3 or config.context_planes > 0


def dims_tag(config: ModelConfig) -> str:
    """The package's dimensionality tag: ``2d``, ``2.5d`` or ``3d``."""
    return "2.5d" if config.context_planes else f"{config.spatial_dims}d"


def factors_text(config: ModelConfig) -> str:
    """``z-factor 4``, or ``factors (z, y, x) 1, 2, 2`` for a model with lateral factors."""
    if tuple(config.lateral_factors) == (1, 1):
        return f"z-factor {config.z_factor}"
    return "factors (z, y, x) " + ", ".join(str(f) for f in config.factors)


def axes(config: ModelConfig, net, input_id: str, output: bool) -> list:
    """The input's or output's axes (``net``: the package's network, for its divisors).

    Sizes are parameterised on the network's divisors; the output's refer to the input
    ``input_id``, each spatial axis scaled by its factor. A 2.5D model's output declares
    its context planes as the z halo: each tile needs that many planes beyond the ones
    it gives.
    """
    from bioimageio.spec.model import v0_5 as m

    names = [f"channel{i}" for i in range(config.out_channels if output else config.in_channels)]
    found = [m.BatchAxis(), m.ChannelAxis(channel_names=[m.Identifier(n) for n in names])]
    spatial = ("z", "y", "x") if volumetric(config) else ("y", "x")
    c = config.context_planes
    factors = dict(zip(("z", "y", "x"), config.factors, strict=True))
    for axis, divisor in zip(spatial, net.divisor, strict=True):
        if output:
            scale = 1.0 / factors[axis]
            size = m.SizeReference(tensor_id=m.TensorId(input_id), axis_id=m.AxisId(axis))
            halo = {"halo": c} if axis == "z" and c else {}  # the spec's halo is >= 1
            kind = m.SpaceOutputAxisWithHalo if halo else m.SpaceOutputAxis
            found.append(kind(id=m.AxisId(axis), size=size, scale=scale, **halo))
        else:
            low = max(MIN_Z, 2 * c + 1) if axis == "z" else MIN_YX
            size = m.ParameterizedSize(min=fit(low, divisor), step=divisor)
            found.append(m.SpaceInputAxis(id=m.AxisId(axis), size=size, scale=1.0))
    return found


def wrap_architecture(config: ModelConfig, import_from: str, name: str, kwargs: dict
                      ) -> tuple[str, str, dict]:
    """The package's architecture: ``PlaneStack`` around the 2D network of a 2.5D model.

    ``import_from, name, kwargs`` are the 2D network's (its ``in_channels`` the image's
    channels); models without context planes keep them.
    """
    if not config.context_planes:
        return import_from, name, kwargs
    return *PLANE_STACK, {"context_planes": config.context_planes, "family": config.family,
                          **kwargs}


def export_network(loaded, kwargs: dict):
    """The network a package of ``loaded`` holds (eval mode): its own, or a PlaneStack.

    ``kwargs`` are the package's architecture arguments: building the PlaneStack from them
    and loading the weights strictly checks that they rebuild this network.
    """
    if not loaded.config.context_planes:
        return loaded.net.eval()
    from .nets.plane_stack import PlaneStack

    wrapper = PlaneStack(**kwargs)
    wrapper.net.load_state_dict(loaded.net.state_dict())
    return wrapper.eval()


def readme_lines(config: ModelConfig) -> list[str]:
    """What the package's README says about context planes (nothing without them)."""
    c = config.context_planes
    if not c:
        return []
    return [
        f"- 2.5D: a 2D network restores each z-plane from a stack of {2 * c + 1} planes (it "
        f"and {c} neighbour(s) on each side); `PlaneStack` applies it to every plane of the "
        "volume. Beyond the volume's ends the planes are mirrored (half-sample symmetric, "
        f"the `symmetric` padding of Model Zoo tools). The output's z halo of {c} tells tiling "
        "tools how many planes of context each tile needs."]


def family_and_context(key: tuple, kwargs: dict, ours: dict) -> tuple[str | None, object]:
    """The family and context planes of an imported architecture ``key``.

    ``ours`` maps our networks' ``(import_from, callable)`` to their families. For a
    PlaneStack its own arguments are popped from ``kwargs``, leaving the 2D network's.
    The family is None for architectures that are not ours; values are checked by the
    model config built from them.
    """
    if tuple(key) == PLANE_STACK:
        return kwargs.pop("family", None), kwargs.pop("context_planes", 0)
    return ours.get(key), 0


def unwrap_state(state: dict) -> dict:
    """The 2D network's weights from a PlaneStack's (``net.`` stripped).

    Keys without the prefix are kept as they are, so the weight check names them.
    """
    return {k.removeprefix("net."): v for k, v in state.items()}


def readme(config: ModelConfig, license: str, notes: list[str], input_id: str,
           output_id: str) -> str:
    """The package's documentation page (README.md); ``input_id``, ``output_id``: its tensors."""
    from .registry import family_entry

    low, high = config.percentiles
    f = config.z_factor
    card = config.training or {}
    val = card.get("final_validation") or {}
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in val.items() if isinstance(v, int | float))
    axes = ("(batch, channel, z, y, x)" if volumetric(config) else
            "(batch, channel, y, x): a 2D network run slice by slice; give the z-slices of "
            "one volume as the batch (the percentiles are taken over all of them)")
    lines = [
        f"# {config.name}", "",
        f"A napari-volsr {family_entry(config.family).display_name} model, task "
        f"'{config.task}', {factors_text(config)}. {card.get('summary', '')}", "",
        "## Inputs and outputs", "",
        f"- Input `{input_id}`: float32, axes {axes}.",
        f"- Preprocessing: `scale_range`, percentiles {low} and {high} of each volume and "
        "channel mapped to 0 and 1.",
        f"- Output `{output_id}`: float32 in those normalised units. napari-volsr maps it back "
        f"to input units (`out * (p{high} - p{low}) + p{low}`); the Model Zoo's postprocessing "
        "cannot express this inverse (`scale_range` maps forward only, `scale_linear` has fixed "
        "values), so apply it yourself if you need input units.",
        *readme_lines(config),
    ]
    if tuple(config.lateral_factors) != (1, 1):
        lines.append(
            f"- {factors_text(config)}: the output has f voxels per input voxel along each "
            "axis (output scale 1/f). On napari-volsr's slab grid each upsampled axis's origin "
            "is the input's minus (f - 1)/2 output voxels (`translate - (f - 1) / 2 * scale / "
            "f`); Model Zoo axes carry no origin, so place the result yourself.")
    elif f > 1:
        lines.append(
            f"- z-factor {f}: the output has {f} z-slices per input slice (output z scale 1/{f}). "
            "On napari-volsr's slab grid the output's z origin is the input's minus "
            f"{(f - 1) / 2}/{f} of an input slice (`translate_z - (f - 1) / 2 * scale_z / f`); "
            "Model Zoo axes carry no origin, so place the result yourself.")
    if config.family == "rcan":
        lines.append("- RCAN's channel attention pools over the whole tile: tile with large "
                     "tiles and overlap.")
    lines += ["", "## Validation", "",
              f"Final validation on held-out patches of the training data: {metrics or 'none'}. "
              "Validate on your own unseen data (PSNR/SSIM against a reference) before use.", "",
              "## License", "",
              f"Weights: {license}, chosen at export (`license=`); the weights are their "
              "trainer's, change it if it does not fit.", ""]
    lines += [f"Note: {n}" for n in notes]
    return "\n".join(lines) + "\n"
