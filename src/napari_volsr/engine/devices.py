"""Where restoration runs: devices, precisions and the memory a block may use."""

from __future__ import annotations

import os
import time

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str = "auto"):
    """``auto`` picks CUDA, then Apple MPS, then the CPU."""
    import torch

    if device not in DEVICES and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
    return torch.device(device)


def resolve_precision(precision: str, device):
    """Autocast dtype or None for fp32. ``auto``: bf16/fp16 on GPUs, fp32 on CPUs."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _free_ram() -> float:
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float(4 * 2**30)


def host_memory() -> float:
    """Bytes of RAM a process can still take (4 GiB if the system does not say).

    Linux's MemAvailable (free plus reclaimable caches), else the free RAM.
    """
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _free_ram()


def available_memory(device) -> float:
    """Bytes free on ``device``: free GPU memory, or free RAM (4 GiB if unknown)."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    return _free_ram()


def memory_budget(device) -> float:
    """Bytes a block may use: half the free GPU memory, or a share of available RAM."""
    available = available_memory(device)
    if device.type == "cuda":
        return 0.5 * available
    # Big blocks pay: every block re-reads its halo (SRUNet's is 33 voxels laterally).
    return float(min(0.25 * available, 4 * 2**30))


_BUDGETS: dict[str, tuple[float, str, float]] = {}
_BUDGET_TTL_S = 30.0


def device_budget(device: str = "auto") -> tuple[str, float]:
    """Return ``(resolved device, bytes a block may use)``, cached for a few seconds.

    For forms that re-plan on every keystroke: asking CUDA for free memory is slow.

    Raises
    ------
    ValueError
        Unknown devices or a GPU that is not there.
    """
    now = time.monotonic()
    hit = _BUDGETS.get(device)
    if hit is not None and now - hit[0] < _BUDGET_TTL_S:
        return hit[1], hit[2]
    torch_device = resolve_device(device)
    budget = memory_budget(torch_device)
    _BUDGETS[device] = (now, str(torch_device), budget)
    return str(torch_device), budget
