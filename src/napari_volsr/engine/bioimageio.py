"""BioImage Model Zoo packages (bioimage.io model format 0.5): export ours, import ours back.

A package is a zip with an ``rdf.yaml`` that Model Zoo tools (bioimageio.core, deepImageJ,
ilastik, CAREamics) read. napari-volsr writes the weights as ``pytorch_state_dict`` with the
architecture named as a callable of this package (``napari_volsr.engine.nets.<module>.<Class>``
and the constructor's arguments), plus TorchScript where the network traces; test tensors
come from the network itself on a normalised crop. Importing rebuilds the model folder from
the state dict (``torch.load(weights_only=True)``: nothing is unpickled).
``bioimageio.spec`` (the ``bioimageio`` extra) is imported on use.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

from . import bioimageio_context as ctx
from .config import ModelConfig
from .data.normalization import percentile_normalization
from .export import check_archive_dest
from .models import (
    CONFIG_FILE, ModelError, check_state_dict, import_torch_weights, library_dir, load_model,
    resolve_model_path, save_model,
)
from .registry import FAMILIES, build_network, family_entry

NETS_PACKAGE = "napari_volsr.engine.nets"
INPUT_ID, OUTPUT_ID = "raw", "restored"
CONFIG_KEY = "napari_volsr"
# The weights are the user's: the license is theirs to choose (``license=``). CC-BY-4.0 is
# the license the Model Zoo asks uploaded models to use, so a package with it can be shared
# there as it is; the README says so and how to change it.
DEFAULT_LICENSE = "CC-BY-4.0"
DEFAULT_AUTHOR = "napari-volsr user"
# The paper each family follows; cited by DOI (no web request while validating).
CITATIONS = {
    "rcan": ("Chen et al. 2021: Three-dimensional residual channel attention networks "
             "denoise and sharpen fluorescence microscopy image volumes. Nature Methods",
             "10.1038/s41592-021-01155-x"),
    "srunet": ("Heinrich, Bogovic and Saalfeld 2017: Deep learning for isotropic "
               "super-resolution from non-isotropic 3D electron microscopy. MICCAI",
               "10.48550/arXiv.1706.00120"),
    "gan": ("Isola et al. 2017: Image-to-image translation with conditional adversarial "
            "networks (ResNet generator, PatchGAN discriminator). CVPR",
            "10.48550/arXiv.1611.07004"),
    "unet": ("Weigert et al. 2018: Content-aware image restoration: pushing the limits of "
             "fluorescence microscopy. Nature Methods", "10.1038/s41592-018-0216-7"),
}
_INSTALL = "pip install 'napari-volsr[bioimageio]'"


def _require_spec():
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise ModelError(f"BioImage Model Zoo packages need bioimageio.spec: {_INSTALL}") from None


def unsupported_reason(config: ModelConfig) -> str | None:
    """Why ``config`` cannot be a Model Zoo model (None when it can)."""
    if config.family == "diffusion":
        return (f"model '{config.name}' is a diffusion model: it restores by sampling (the "
                "network runs once per sampler step and sample on random noise, then the "
                "samples' mean and standard deviation are taken), which a Model Zoo model, one "
                "deterministic pass of the network, cannot express; export it with --format zip")
    if config.spatial_dims == 2 and config.z_factor > 1:
        return (f"model '{config.name}' is a 2D plane-wise model with z-factor "
                f"{config.z_factor}: it restores by running its 2D network on the XZ and the YZ "
                "planes and averaging the two results, a fusion a Model Zoo model (one network "
                "applied to the tensor it is given) cannot express; a package of the plane "
                "network alone would be run on XY images by Model Zoo tools and give other "
                "results without warning; export it with --format zip")
    return None


def architecture(config: ModelConfig) -> tuple[str, str, dict]:
    """``(import_from, callable, kwargs)`` that rebuild ``config``'s network (2.5D: PlaneStack)."""
    entry = family_entry(config.family)
    params = config.network.model_dump(mode="json", exclude=set(entry.not_net_args))
    kwargs = {"spatial_dims": config.spatial_dims, "in_channels": config.in_channels,
              "out_channels": config.out_channels, "z_factor": config.z_factor, **params}
    if config.lateral_factors != (1, 1):
        # Written only when lateral: packages of z-only models keep their architecture.
        kwargs["factors"] = list(config.net_factors)
    return ctx.wrap_architecture(config, f"{NETS_PACKAGE}.{entry.net_module}", entry.net_class,
                                 kwargs)


# --- test tensors ------------------------------------------------------------------------


def _test_volume(config: ModelConfig, net, sample=None) -> np.ndarray:
    """A (C, Z, Y, X) float32 test volume: a centred crop of ``sample`` or smooth noise."""
    divisor = tuple(net.divisor) if ctx.volumetric(config) else (1, *net.divisor)
    shape = tuple(ctx.fit(s, d) for s, d in zip((8, 32, 32), divisor, strict=True))
    if sample is not None:
        data = np.asarray(sample, dtype=np.float32)
        data = data if data.ndim == 4 else data[None]
        shape = tuple(ctx.fit(min(s, n), d) for s, n, d in zip(shape, data.shape[1:], divisor,
                                                              strict=True))
        start = [(n - s) // 2 for n, s in zip(data.shape[1:], shape, strict=True)]
        crop = tuple(slice(a, a + s) for a, s in zip(start, shape, strict=True))
        data = data[(slice(None), *crop)]
        if data.shape[0] != config.in_channels:
            raise ModelError(f"the sample has {data.shape[0]} channels; the model takes "
                             f"{config.in_channels}")
        return np.ascontiguousarray(data)
    from scipy import ndimage

    rng = np.random.default_rng(0)
    noise = rng.random((config.in_channels, *shape))
    smooth = ndimage.gaussian_filter(noise, (0, 1.0, 1.5, 1.5))
    return (100 + 4000 * (smooth - smooth.min()) / np.ptp(smooth)).astype(np.float32)


def _network_tensors(config: ModelConfig, net, volume: np.ndarray):
    """``(input, normalised input, output)`` tensors in the package's axes.

    3D and 2.5D: (batch, channel, z, y, x); 2D slice-wise: the slices are the batch, (z,
    channel, y, x). The output is the network on the input normalised per channel with the
    model's percentiles: what napari-volsr's restore computes before mapping back to input
    units.
    """
    import torch

    norm = np.stack([percentile_normalization(c, config.percentiles).forward(c) for c in volume])
    if ctx.volumetric(config):
        raw, x = volume[None], norm[None]
    else:
        raw, x = volume.transpose(1, 0, 2, 3), norm.transpose(1, 0, 2, 3)
    with torch.no_grad():
        out = net(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    return np.ascontiguousarray(raw), x, out.astype(np.float32)


def _torchscript(net, x: np.ndarray, path: Path) -> str | None:
    """Save ``net`` traced at ``x``; None, or why it was not saved."""
    import torch

    # Another shape (z too for volumes): shapes must not be baked into the trace.
    big = np.concatenate([x, x[:, :, ::-1]], axis=2) if x.ndim == 5 else x
    big = np.concatenate([big, big[..., ::-1, :]], axis=-2)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(net, torch.from_numpy(x), check_trace=False)
            other = torch.from_numpy(np.ascontiguousarray(big))
            if not torch.allclose(traced(other), net(other), rtol=1e-4, atol=1e-5):
                return "TorchScript not written: the traced network differs on another shape"
            torch.jit.save(traced, str(path))
    except Exception as exc:  # noqa: BLE001 - tracing fails in many ways; say why
        return f"TorchScript not written: tracing failed ({type(exc).__name__}: {exc})"
    return None


def _cover(x: np.ndarray, out: np.ndarray, volume: bool, path: Path) -> None:
    """A PNG of the middle XY slice: normalised input left, output right (2:1)."""
    from PIL import Image

    if volume:
        a, b = x[0, 0, x.shape[2] // 2], out[0, 0, out.shape[2] // 2]
    else:
        a, b = x[x.shape[0] // 2, 0], out[out.shape[0] // 2, 0]
    # Lateral factors: the input's pixels repeated onto the output's grid, side by side.
    a = a.repeat(b.shape[0] // a.shape[0], axis=0).repeat(b.shape[1] // a.shape[1], axis=1)

    def grey(img):
        lo, hi = np.percentile(img, (0.5, 99.5))
        return (np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)

    pair = np.concatenate([grey(a), grey(b)], axis=1)
    zoom = max(1, 256 // pair.shape[0])
    Image.fromarray(pair).resize((pair.shape[1] * zoom, pair.shape[0] * zoom),
                                 Image.NEAREST).save(path)


# --- the description ----------------------------------------------------------------------


def _tensors(config: ModelConfig, net, files: dict):
    from bioimageio.spec.model import v0_5 as m

    low, high = config.percentiles
    # Per volume and channel, as restore does: 2D slices of one volume come as the batch.
    norm_axes = ("z", "y", "x") if ctx.volumetric(config) else ("batch", "y", "x")
    scale_range = m.ScaleRangeDescr(kwargs=m.ScaleRangeKwargs(
        axes=[m.AxisId(a) for a in norm_axes], min_percentile=low, max_percentile=high))
    inp = m.InputTensorDescr(
        id=m.TensorId(INPUT_ID), axes=ctx.axes(config, net, INPUT_ID, output=False),
        description="raw volume, any intensity units (float32)",
        test_tensor=m.FileDescr(source=files["test_input"]),
        sample_tensor=m.FileDescr(source=files["sample_input"]),
        data=m.IntervalOrRatioDataDescr(type="float32"), preprocessing=[scale_range])
    out = m.OutputTensorDescr(
        id=m.TensorId(OUTPUT_ID), axes=ctx.axes(config, net, INPUT_ID, output=True),
        description=f"restored volume in normalised units (percentile {low} -> 0, "
                    f"{high} -> 1 of the input)",
        test_tensor=m.FileDescr(source=files["test_output"]),
        sample_tensor=m.FileDescr(source=files["sample_output"]),
        data=m.IntervalOrRatioDataDescr(type="float32"))
    return inp, out


def _weights(config: ModelConfig, files: dict):
    import torch
    from bioimageio.spec.model import v0_5 as m

    from .. import __version__

    version = m.Version(torch.__version__.split("+")[0])
    import_from, name, kwargs = architecture(config)
    author = [m.Author(name=f"napari-volsr {__version__}")]
    state = m.PytorchStateDictWeightsDescr(
        source=files["weights"], pytorch_version=version,
        architecture=m.ArchitectureFromLibraryDescr(
            import_from=import_from, callable=m.Identifier(name), kwargs=kwargs),
        dependencies=m.FileDescr(source=files["environment"]))
    script = None
    if "torchscript" in files:
        script = m.TorchscriptWeightsDescr(
            source=files["torchscript"], pytorch_version=version, parent="pytorch_state_dict",
            authors=author, comment="torch.jit.trace of the state-dict network")
    return m.WeightsDescr(pytorch_state_dict=state, torchscript=script)


def _card(config: ModelConfig, authors, license, cite):
    """Authors, license and citations: arguments, else the model card, else defaults."""
    from bioimageio.spec.model import v0_5 as m

    card = config.training or {}
    authors = authors or card.get("authors") or [DEFAULT_AUTHOR]
    people = [m.Author(**a) if isinstance(a, dict) else m.Author(name=str(a)) for a in authors]
    entries = list(cite or card.get("cite") or [])
    text, doi = CITATIONS[config.family]
    entries.append({"text": text, "doi": doi})
    cites = [m.CiteEntry(**c) if isinstance(c, dict) else c for c in entries]
    return people, license or card.get("license") or DEFAULT_LICENSE, cites


def _environment() -> str:
    from .. import __version__

    return ("name: napari-volsr\nchannels:\n  - conda-forge\n  - nodefaults\ndependencies:\n"
            "  - python>=3.11\n  - pytorch>=2.1\n  - pip\n  - pip:\n"
            f"    - napari-volsr=={__version__}\n")


def _write_files(config: ModelConfig, net, folder: Path, sample, notes: list[str]) -> dict:
    """Weights, test tensors, cover, environment in ``folder``; their paths by role."""
    import torch

    files = {k: folder / v for k, v in (
        ("weights", "weights.pt"), ("test_input", "test_input.npy"),
        ("test_output", "test_output.npy"), ("sample_input", "sample_input.tif"),
        ("sample_output", "sample_output.tif"), ("cover", "cover.png"),
        ("environment", "environment.yaml"), ("config", CONFIG_FILE))}
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    torch.save(state, files["weights"])
    raw, x, out = _network_tensors(config, net, _test_volume(config, net, sample))
    np.save(files["test_input"], raw)
    np.save(files["test_output"], out)
    import tifffile

    # Sample tensors (FAIR): the test tensors again, as TIFFs any image viewer opens.
    tifffile.imwrite(files["sample_input"], raw)
    tifffile.imwrite(files["sample_output"], out)
    _cover(x, out, ctx.volumetric(config), files["cover"])
    files["environment"].write_text(_environment())
    files["config"].write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    note = _torchscript(net, x, folder / "weights_torchscript.pt")
    if note is None:
        files["torchscript"] = folder / "weights_torchscript.pt"
    else:
        notes.append(note)
    return files


def describe(loaded, folder: Path, *, authors=None, license=None, cite=None,
             sample=None, notes: list[str] | None = None):
    """The ``ModelDescr`` of a loaded model, its files written to ``folder``."""
    from bioimageio.spec.model import v0_5 as m

    config = loaded.config
    notes = [] if notes is None else notes
    net = ctx.export_network(loaded, architecture(config)[2])
    files = _write_files(config, net, folder, sample, notes)
    people, license, cites = _card(config, authors, license, cite)
    readme = folder / "README.md"
    readme.write_text(ctx.readme(config, license, notes, INPUT_ID, OUTPUT_ID))
    inp, out = _tensors(config, net, files)
    kind = "super-resolution" if max(config.factors) > 1 else "denoising"
    return m.ModelDescr(
        name=re.sub(r"[^A-Za-z0-9 _().-]", "-", config.name).rjust(5, "_"),  # 5 at least
        description=f"napari-volsr {family_entry(config.family).display_name} "
                    f"{config.task} model ({ctx.factors_text(config)})",
        authors=people, cite=cites, license=license,
        documentation=m.FileDescr(source=readme), covers=[m.FileDescr(source=files["cover"])], attachments=[m.FileDescr(source=files["config"])],
        tags=["napari-volsr", kind, ctx.dims_tag(config), config.family, "pytorch"],
        inputs=[inp], outputs=[out], weights=_weights(config, files),
        config=m.Config(**{CONFIG_KEY: {"model": config.model_dump(mode="json")}}),
    )


def export_bioimageio(name_or_path: str | os.PathLike, dest: str | os.PathLike, *,
                      overwrite: bool = False, authors=None, license: str | None = None,
                      cite=None, sample=None) -> tuple[Path, list[str]]:
    """Write model ``name_or_path`` as a Model Zoo package ``dest`` (a ``.zip``).

    Parameters
    ----------
    name_or_path, dest, overwrite
        Model (library name or folder), the ``.zip`` to write, replace an existing one.
    authors, license, cite
        Names (or bioimage.io author dicts), an SPDX license id, citation dicts (``text``
        and ``doi`` or ``url``); default: the model card's, else ``napari-volsr user``,
        :data:`DEFAULT_LICENSE` and the family's paper (always cited).
    sample
        A (Z, Y, X) or (C, Z, Y, X) array to crop the test input from (default: smooth noise).

    Returns
    -------
    tuple
        The written path and notes (what was not written, e.g. TorchScript, and why).

    Raises
    ------
    ModelError
        Unknown models, unusable destinations, models the format cannot express.
    """
    from bioimageio.spec import save_bioimageio_package

    from .io import atomic_path

    _require_spec()
    folder = resolve_model_path(name_or_path)
    loaded = load_model(folder)
    reason = unsupported_reason(loaded.config)
    if reason:
        raise ModelError(reason)
    dest = check_archive_dest(folder, dest, overwrite)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="volsr-bmz-") as tmp:
        descr = describe(loaded, Path(tmp), authors=authors, license=license, cite=cite,
                         sample=sample, notes=notes)
        with atomic_path(dest) as part:
            save_bioimageio_package(descr, output_path=part)
    return dest, notes


# --- import -------------------------------------------------------------------------------

_OURS = {(f"{NETS_PACKAGE}.{e.net_module}", e.net_class): fam.value
         for fam, e in FAMILIES.items() if fam.value != "diffusion"}


def _supported_text() -> str:
    nets = ", ".join(f"{m}.{c}" for m, c in [*_OURS, ctx.PLANE_STACK])
    return (f"napari-volsr imports Model Zoo packages whose pytorch_state_dict weights use one of "
            f"its own networks ({nets}), as `volsr models export --format bioimageio` writes "
            "them; other architectures cannot run in napari-volsr's restore (run them with "
            "bioimageio.core, deepImageJ or ilastik instead)")


def _load_description(package: Path):
    from bioimageio.spec import load_model_description
    from bioimageio.spec.model import v0_5

    if not package.is_file():
        raise ModelError(f"{package}: no such file")
    try:
        descr = load_model_description(package, format_version="latest")
    except (ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{package}: not a valid Model Zoo model package ({first})") from None
    if not isinstance(descr, v0_5.ModelDescr):  # pragma: no cover - 'latest' is 0.5
        raise ModelError(f"{package}: unsupported model format {descr.format_version}")
    return descr


def _config_from(descr, package: Path, name: str | None) -> ModelConfig:
    """Our model config from a package: its architecture is authoritative for the network."""
    weights = descr.weights.pytorch_state_dict
    arch = getattr(weights, "architecture", None)
    key = (getattr(arch, "import_from", None), str(getattr(arch, "callable", "")))
    kwargs = dict(getattr(arch, "kwargs", None) or {})
    family, context = ctx.family_and_context(key, kwargs, _OURS)
    if weights is None or not family:
        what = "no pytorch_state_dict weights" if weights is None else (
            f"its architecture is {key[0] or arch.source}.{key[1]}")
        raise ModelError(f"{package}: {what}; {_supported_text()}")
    stored = ((descr.config.model_extra or {}).get(CONFIG_KEY) or {}).get("model") or {}
    percentiles = stored.get("percentiles")
    for step in descr.inputs[0].preprocessing:
        if step.id == "scale_range":
            percentiles = (step.kwargs.min_percentile, step.kwargs.max_percentile)
    z_factor = int(kwargs.pop("z_factor", 1))
    net_factors = [int(f) for f in kwargs.pop("factors", None) or ()]
    lateral = tuple(net_factors[-2:]) if net_factors else (1, 1)
    if len(net_factors) == 3:
        z_factor = net_factors[0]
    fields = {
        **stored, "spatial_dims": kwargs.pop("spatial_dims", 3), "z_factor": z_factor,
        "in_channels": kwargs.pop("in_channels", 1), "out_channels": kwargs.pop("out_channels", 1),
        "context_planes": context,
        "network": {**(stored.get("network") or {}), **kwargs, "family": family},
        "name": name or stored.get("name") or re.sub(r"[^A-Za-z0-9._ +-]", "-", descr.name),
    }
    if lateral != (1, 1):
        fields["lateral_factors"] = lateral
    fields.setdefault("task", "restore" if z_factor == 1 and lateral == (1, 1) else "upsample")
    if percentiles is not None:
        fields["percentiles"] = tuple(percentiles)
    fields.pop("package_version", None)
    try:
        return ModelConfig.model_validate(fields)
    except ValueError as exc:
        raise ModelError(f"{package}: its architecture's settings are not a valid napari-volsr "
                         f"model ({str(exc).splitlines()[0]})") from None


def package_model_name(package: str | os.PathLike) -> str:
    """The library name :func:`import_bioimageio` gives a package's model (ModelError as it)."""
    package = Path(package)
    return _config_from(_load_description(package), package, None).name


def import_bioimageio(package: str | os.PathLike, name: str | None = None,
                      overwrite: bool = False) -> Path:
    """Bring a Model Zoo package of one of our families into the library as a model folder.

    The weights are read with ``torch.load(weights_only=True)`` (tensors only, never
    unpickled objects) and checked against the rebuilt network.

    ``package`` is the ``.zip`` (or its ``rdf.yaml``); ``name`` the library name (default:
    the package's); ``overwrite`` replaces a library model of that name. Returns the folder.

    Raises
    ------
    ModelError
        Invalid packages, other architectures (the message says what is supported),
        weights that do not fit.
    """
    _require_spec()
    package = Path(package).expanduser()
    descr = _load_description(package)
    config = _config_from(descr, package, name)
    folder = library_dir() / config.name
    if folder.exists() and not overwrite:
        raise ModelError(f"{folder}: a model named '{config.name}' exists; choose another "
                         "name or pass --overwrite")
    data = descr.weights.pytorch_state_dict.get_reader().read()
    with tempfile.TemporaryDirectory(prefix="volsr-bmz-") as tmp:
        path = Path(tmp) / "weights.pt"
        path.write_bytes(data)
        state = import_torch_weights(path)
    if config.context_planes:
        state = ctx.unwrap_state(state)
    net = build_network(config)
    check_state_dict(net, state, package)
    net.load_state_dict(state)
    return save_model(folder, config, net, overwrite=overwrite)
