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


def resolve_device(name: str = "auto"):
    """'auto' -> CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
