"""What restores a block: the interpolation baseline or a trained network, loaded once."""

from __future__ import annotations

import copy
from collections.abc import Generator
from functools import lru_cache
from pathlib import Path

import torch

from .geometry import describe_factors, resolve_factors, validate_factors
from .interp import INTERPOLATION_MODES, INTERPOLATION_REACH, upsample, upsample_z
from .model_cache import load_model_cached, stamp_or_none
from .models import (
    LoadedModel,
    ModelError,
    library_problem,
    list_library,
    load_model,
    read_model_config,
    resolve_model_path,
)
from .plane_restore import PlaneRestorer
from .predict import RestoreProgress, Restorer
from .registry import DISPLAY_NAMES, build_network, family
from .restore_factors import (  # noqa: F401  (check_not_a_no_op, resolve_z_factor: used from here)
    BASELINES,
    axes_text,
    check_model_factors,
    check_not_a_no_op,
    is_baseline,
    resolve_restore_factors,
    resolve_z_factor,
)
from .restorer_parts import Compiled, block_bytes_per_voxel
from .tiling import RestorerGeometry, geometry_of
from .tta import average_over_flips, describe_flips, resolve_flips


class InterpolationRestorer:
    """Interpolation on the slab grid of every upsampled axis: the baseline.

    ``factors`` (z, y, x) takes precedence over ``z_factor``, the shorthand for
    ``(z_factor, 1, 1)``; given both, they must agree.
    """

    outputs = ("restored",)
    batchable = True

    def __init__(self, mode: str = "cubic", z_factor: int = 1, factors=None):
        if mode not in INTERPOLATION_MODES:
            raise ValueError(f"method must be one of {', '.join(INTERPOLATION_MODES)}, got {mode!r}")
        self.mode = mode
        if factors is None:
            self.factors = validate_factors(z_factor)
        else:
            self.factors = resolve_factors(None if z_factor == 1 else z_factor, factors)
        self.z_factor = self.factors[0]
        self.name = mode
        self.halo = tuple(INTERPOLATION_REACH[mode] if f > 1 else 0 for f in self.factors)
        self.divisor = (1, 1, 1)
        self.overlap = (0, 0, 0)
        # input block + f output phases + their sum, float32
        self.bytes_per_voxel = 4.0 * 3
        self.description = f"{mode} interpolation along {axes_text(self.factors)}"

    def prepare(self, device, dtype) -> None:
        """Nothing to move: interpolation has no weights."""

    def __call__(self, x):
        if self.factors[1:] == (1, 1):
            return upsample_z(x, self.z_factor, self.mode)
        return upsample(x, self.factors, self.mode)


class NetworkRestorer(PlaneRestorer):
    """Apply a trained network to normalised blocks (B, 1, D, H, W).

    A 3D network sees the block and upsamples every axis by the model's factors. A 2D
    network with z-factor 1 runs slice by slice (YX planes; lateral factors upsample
    them); a 2D network with z-factor > 1 (isotropic reconstruction) runs on the XZ and
    YZ planes, whose first axis is z, and the two results are averaged (CARE isotropic,
    DESIGN 5). Diffusion adds a per-voxel standard deviation output.

    Parameters
    ----------
    model
        A loaded model.
    diffusion_steps, diffusion_samples
        Sampler steps and number of samples (default: from the model config).
    seed
        Seed of the diffusion noise; each block gets its own stream derived from it.
    rcan_halo
        Cap on RCAN's context around blocks, in input voxels. Its channel attention
        pools over the whole block, so no finite halo makes tiles exact; beyond this,
        more halo only costs time, and overlapping blocks are blended instead.
    plane_pixels
        Output pixels per network call for 2D networks (bounds activation memory).
    flips
        Test-time augmentation: average the outputs over all flips of the network's axes
        (4 passes in 2D, 8 in 3D; never for diffusion, which averages samples already).
        None: the model's default (:func:`~napari_volsr.engine.tta.default_flips`).
    channels_last
        Run a private copy of the weights in the channels-last memory layout. None
        (default): for 3D networks on the CPU, where oneDNN convolves 16-channel layers
        faster that way, except RCAN wider than 16 channels, which was slower
        (benchmarks/layout.py). Outputs change by float
        rounding only (about 1e-6 relative); the loaded network is left as it is.
    compile
        Run the network through ``torch.compile`` (inductor, weights frozen). Compiling
        takes 5-30 s once per block shape; on the CPU the network then runs 1.0-1.4x
        faster (benchmarks/inference.py), so it pays for long restores and diffusion
        sampling (steps x samples calls per block), not for short ones. If compiling
        fails (no C++ compiler, say), the network runs uncompiled with a warning.
    """

    # Calls may say which output region is kept (predict.call_restorer).
    accepts_keep = True

    def __init__(self, model: LoadedModel, diffusion_steps=None, diffusion_samples=None,
                 seed: int = 0, rcan_halo: int = 16, plane_pixels: int = 1_000_000,
                 flips: bool | None = None, channels_last: bool | None = None,
                 compile: bool = False):
        config = model.config
        if config.in_channels != 1 or config.out_channels != 1:
            # Volumes are restored channel by channel (DESIGN 3): each block is (B, 1, ...).
            raise ValueError(
                f"model '{config.name}' takes {config.in_channels} input and gives "
                f"{config.out_channels} output channels; restoration runs each channel "
                "separately through a one-channel model: retrain it with in_channels = "
                "out_channels = 1"
            )
        self.model = model
        self.config = config
        self.family = family(config.network.family)
        self.name = DISPLAY_NAMES[self.family]
        self.factors = tuple(config.factors)
        self.z_factor = self.factors[0]
        self.spatial_dims = config.spatial_dims
        self.context = config.context_planes
        self.plane_pixels = plane_pixels
        self.flips = resolve_flips(config, flips)
        self.seed = seed
        self._calls = 0
        net = model.net
        self.net = net
        self.channels_last = channels_last
        self.compile = bool(compile)
        self._runner = net  # what blocks go through: the net, or its channels-last copy
        self._runner_key = None
        if self.family.value == "diffusion":
            from .methods.diffusion import DiffusionMethod

            # The loaded weights are the EMA ones; the method samples with its EMA copy.
            self.method = DiffusionMethod(net)
            self.steps = diffusion_steps or config.network.sample_steps
            self.n_samples = diffusion_samples or config.network.n_samples
            self.outputs = ("restored", "uncertainty")
            # Each call draws its own noise (seed + call count): one block per call keeps
            # the result independent of how blocks are grouped.
            self.batchable = False
        else:
            self.batchable = True
            self.method = None
            self.n_samples = 1
            self.outputs = ("restored",)
        self._plan_blocks(net, rcan_halo)
        self.device = torch.device("cpu")
        self.description = (f"{config.name} ({self.name}, {config.task}, "
                            f"{describe_factors(self.factors)})"
                            + (f"; {describe_flips(self.spatial_dims)}" if self.flips else ""))
        self.metadata = {
            "model": config.name,
            "model_folder": str(model.folder) if model.folder else None,
            "config_hash": model.config_hash,
            "family": self.family.value,
            "task": config.task,
            "flips": self.flips,
        }
        if self.method is not None:
            self.metadata.update(diffusion_steps=self.steps, diffusion_samples=self.n_samples)

    def _plan_blocks(self, net, rcan_halo: int) -> None:
        """Halo, divisor, overlap and bytes per voxel of the blocks, per volume axis."""
        config = self.config
        # Global channel attention makes RCAN depend on the block: cap, then blend.
        attention = self.family.value == "rcan"
        halo = tuple(min(h, rcan_halo) if attention else h for h in net.halo)
        divisor = tuple(net.divisor)
        if self.spatial_dims == 3:
            self.halo, self.divisor = halo, divisor
        elif self.z_factor == 1:
            # YX planes (lateral factors are the net's); 2.5D: c planes of z context, so a
            # block's planes see their real neighbours.
            self.halo, self.divisor = (self.context, *halo), (1, *divisor)
        else:
            # Planes are (z, lateral): lateral halo and divisor apply to y and x alike.
            self.halo = (halo[0], halo[1], halo[1])
            self.divisor = (divisor[0], divisor[1], divisor[1])
        self.overlap = tuple(max(h, 4) for h in self.halo) if attention else (0, 0, 0)
        if self.spatial_dims == 3:
            self.bytes_per_voxel = block_bytes_per_voxel(config, net) * self.n_samples
        else:
            # Planes go through the net a few at a time (``plane_pixels``), so a block
            # only holds its input, the outputs and their fused copy: whole volumes
            # fit in one block and no halo is read twice.
            self.bytes_per_voxel = 4.0 * 4

    def prepare(self, device, dtype) -> None:
        """Move the network (and the diffusion method) to ``device``; pick the layout."""
        self.device = torch.device(device)
        self.net.to(self.device).eval()
        if self.method is not None:
            self.method.to(self.device)
        use = self.channels_last
        if use is None:
            use = self.spatial_dims == 3 and self.device.type == "cpu"
            # RCAN at 32 channels ran slower channels-last, at 16 faster
            # (benchmarks/layout.py; figures in the README).
            if self.family.value == "rcan" and self.config.network.channels > 16:
                use = False
        # Reuse the runner (and what it compiled) while the weights stay the same.
        key = (str(self.device), use, self.compile,
               tuple((p.data_ptr(), p._version) for p in self.net.parameters()))
        if key == self._runner_key:
            return
        self._runner_key = key
        self._runner = self.net
        if use:
            layout = torch.channels_last_3d if self.spatial_dims == 3 else torch.channels_last
            # A copy (weights are small): the loaded network may be training elsewhere
            # (previews), where a changed layout would reach its optimizer and saving.
            self._runner = copy.deepcopy(self.net).to(memory_format=layout)
            if self.method is not None:
                self.method.ema.to(memory_format=layout)  # the method's own copy
        if self.compile:
            if self.method is None:
                self._runner = Compiled(self._runner)
            elif not isinstance(self.method.ema, Compiled):
                self.method.ema = Compiled(self.method.ema)

    def _apply(self, x):
        """Run on network-shaped input (N, 1, *S) -> (N, K, *S_out)."""
        if self.method is None and self.flips:
            return average_over_flips(self._runner, x)
        if self.method is None:
            return self._runner(x)
        generator = torch.Generator(device=x.device).manual_seed(self.seed + self._calls)
        self._calls += 1
        mean, std = self.method.sample(x, steps=self.steps, n_samples=self.n_samples,
                                       generator=generator)
        return torch.cat([mean, std], dim=1)

    def __call__(self, x, keep=None):
        """Restore ``x`` (B, 1, D, H, W); ``keep``: the output region the caller keeps.

        ``keep`` (output-grid slices z, y, x, or None: all) lets the 2D isotropic path
        skip the planes whose values would be cropped away; outside it the output is
        not meant to be read.
        """
        if self.spatial_dims == 3:
            return self._apply(x)
        if self.z_factor > 1:
            return self._isotropic(x, keep)
        return self._slices(x)


def list_restorers() -> list[str]:
    """Baselines and the models in the library."""
    return [*BASELINES, *list_library()]


def get_restorer(model, z_factor: int | None = None, *, factors=None, spacing=None,
                 cache: bool = False, allow_identity: bool = False, **options) -> Restorer:
    """A restorer from a baseline name, a library name, a folder or a LoadedModel.

    Every door (console, command line, panels, dask workers) gets its restorers here.

    Parameters
    ----------
    model
        ``"cubic"``, ``"linear"``, ``"nearest"``, a model name or folder, or a LoadedModel.
    z_factor, factors
        The upsampling: ``factors`` (z, y, x), or ``z_factor``, the shorthand for
        ``(z_factor, 1, 1)`` (:func:`~.geometry.resolve_factors`). For baselines the
        factors to use; for models they must be the model's (``z_factor`` alone: its z
        factor). Neither: see :func:`~.restore_factors.resolve_restore_factors`.
    spacing
        Voxel spacing of the volume to restore: the baselines' default z-factor (z only).
    cache
        Reuse a model loaded before while its folder's files are unchanged
        (:func:`load_model_cached`): restorers built from it share one network.
    allow_identity
        Accept a baseline at z-factor 1, which returns the volume unchanged (refused
        otherwise, :func:`check_not_a_no_op`): e.g. before fitting it to a reference.
    **options
        Passed to :class:`NetworkRestorer` (diffusion steps and samples, seed).

    Raises
    ------
    ValueError
        Unknown names (the message lists the valid ones), bad or conflicting z-factors,
        unusable model folders, a baseline at z-factor 1 (a no-op).
    """
    given = z_factor is not None or factors is not None
    chosen = resolve_restore_factors(model, z_factor, factors, spacing)
    if is_baseline(model):
        restorer = InterpolationRestorer(model, factors=chosen)
        if not allow_identity:
            check_not_a_no_op(model, restorer.factors, spacing, given)
        return restorer
    if not isinstance(model, LoadedModel):
        try:
            model = load_model_cached(model) if cache else load_model(model)
        except ModelError as exc:
            raise _model_error(model, exc) from None
    check_model_factors(model.config, z_factor, factors)
    return NetworkRestorer(model, **options)


def _model_error(model, exc: ModelError) -> ValueError:
    """The ValueError every door shows for a model that cannot be used."""
    if isinstance(model, str) and "unknown model" in str(exc):
        problem = library_problem()
        return ValueError(f"unknown model {model!r}; choose one of: {', '.join(list_restorers())}"
                          + (f" ({problem})" if problem else ""))
    return ValueError(str(exc))


def release(restorer) -> None:
    """Move a (cached) network back to the CPU so GPU memory is free between runs."""
    net = getattr(getattr(restorer, "inner", restorer), "net", None)
    if net is not None and hasattr(net, "to"):
        net.to("cpu")


def iter_load(model, z_factor: int | None = None, *, factors=None, spacing=None, **options
              ) -> Generator[RestoreProgress, None, Restorer]:
    """Get a cached restorer (:func:`get_restorer`), yielding a ``load`` stage around it."""
    yield RestoreProgress("load", 0, 1, f"loading {Path(str(model)).name}")
    restorer = get_restorer(model, z_factor, factors=factors, spacing=spacing, cache=True,
                            **options)
    yield RestoreProgress("load", 1, 1, getattr(restorer, "description", ""))
    return restorer


@lru_cache(maxsize=32)
def _network_geometry(folder: str, stamp, samples: int | None) -> RestorerGeometry:
    config = read_model_config(folder)
    try:
        # Shapes only: halo and divisor are plain integers, so no memory is allocated.
        with torch.device("meta"):
            net = build_network(config)
            restorer = NetworkRestorer(LoadedModel(config, net, Path(folder)),
                                       diffusion_samples=samples)
    except Exception:  # a family that needs real tensors to build: do it on the CPU
        net = build_network(config)
        restorer = NetworkRestorer(LoadedModel(config, net, Path(folder)),
                                   diffusion_samples=samples)
    return geometry_of(restorer)


def restorer_geometry(model: str, z_factor: int = 1, diffusion_samples: int | None = None,
                      *, factors=None) -> RestorerGeometry:
    """Geometry of a baseline or saved model, from its config alone (never its weights).

    ``z_factor`` or ``factors`` (z, y, x) are a baseline's; a model has its own.
    Networks are built on torch's ``meta`` device and cached per folder and file times.

    Raises
    ------
    ValueError
        Unknown model names, unusable folders (the message says why).
    """
    if model in BASELINES:
        return geometry_of(InterpolationRestorer(model, z_factor, factors))
    try:
        folder = resolve_model_path(model).resolve()
        return _network_geometry(str(folder), stamp_or_none(folder), diffusion_samples)
    except ModelError as exc:
        raise _model_error(model, exc) from None
