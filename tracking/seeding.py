"""Seeding and device choice, kept together because determinism depends on both."""
from __future__ import annotations

import os
import random


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (CUDA too); optionally force deterministic kernels.

    Bit-identical resume on CPU needs the deterministic flags: some kernels otherwise pick
    algorithms by timing.
    """
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch
    except ImportError:  # tracking works for non-torch tasks too
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        _deterministic_kernels(torch)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def set_threads(num_threads: int | None) -> None:
    """``execution.num_threads`` (0 or None: leave torch's default). Applied by ``start_run``
    for every task, so no task sets threads by hand."""
    if not num_threads:
        return
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(num_threads)


def resolve_device(name: str = "auto"):
    """'auto' -> CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_device(name: str) -> None:
    """A one-line ConfigError, before any run exists, for a device this machine does not have:
    torch would fail later with a traceback and leave a FAILED run behind."""
    if name in ("auto", "cpu"):
        return
    import torch

    from tracking.config import ConfigError

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device {name!r} is not a torch device; this machine has: {', '.join(available_devices())} "
                          f"('auto' picks the best)") from None
    backend = getattr(torch, device.type, None) if device.type != "mps" else torch.backends.mps
    ok = device.type == "cpu" or (backend is not None and getattr(backend, "is_available", lambda: False)())
    if ok and device.type == "cuda" and device.index is not None:
        ok = device.index < torch.cuda.device_count()
    if not ok:
        raise ConfigError(f"device {name!r} is not available here; this machine has: "
                          f"{', '.join(available_devices())} ('auto' picks the best)")


def available_devices() -> list[str]:
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def _deterministic_kernels(torch) -> None:
    """``torch.use_deterministic_algorithms(True)`` without its 2-5 s import of inductor.

    The public call imports ``torch._inductor.config`` only to set one flag for
    ``torch.compile``; every run (and every sweep cell) would pay that start-up cost.
    The inductor flag is set when inductor is already loaded; otherwise the public call
    is used if the private one is gone in a future torch.
    """
    import sys

    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(True, warn_only=True)
        return
    setter(True, warn_only=True)
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = True
