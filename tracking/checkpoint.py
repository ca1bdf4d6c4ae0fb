"""Full-state checkpoints: one zstd-compressed file per save, atomic, checksummed.

The state is built from each tracked object's own ``state_dict`` (Lightning's
``dump_checkpoint`` idea) plus every RNG the run touches, so a resumed run continues
bit-identically on CPU. A file that fails its checksum is reported and skipped in favour
of the previous valid one, never loaded half-way.

File layout: ``MAGIC (8) | version u32 | payload length u64 | BLAKE2b-256 of payload (32) | payload``
where the payload is ``torch.save`` bytes compressed with zstandard.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

MAGIC = b"LABRUNCK"
VERSION = 1
_HEADER = struct.Struct("<8sIQ32s")
_NAME = re.compile(r"^cp_(\d+)\.ptz$")
_QBLOCK = 4096
log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used (truncated, corrupted, wrong format)."""


@dataclass
class ResumeInfo:
    """Where a restored run continues from."""

    run_id: str
    path: str
    global_step: int
    epoch: int
    extra: dict[str, Any]


# --------------------------------------------------------------------------- state

def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _object_state(obj: Any) -> Any:
    import numpy as np
    import torch

    if isinstance(obj, torch.Generator):
        return {"__kind__": "torch.Generator", "state": obj.get_state()}
    if isinstance(obj, np.random.Generator):
        return {"__kind__": "numpy.Generator", "state": obj.bit_generator.state}
    if isinstance(obj, random.Random):
        return {"__kind__": "random.Random", "state": obj.getstate()}
    if hasattr(obj, "state_dict"):
        return obj.state_dict()
    raise TypeError(
        f"cannot checkpoint {type(obj).__name__}: give objects with state_dict()/"
        f"load_state_dict(), or torch/numpy/random generators"
    )


def _load_object_state(obj: Any, state: Any) -> None:
    if isinstance(state, dict) and "__kind__" in state:
        kind = state["__kind__"]
        if kind == "torch.Generator":
            obj.set_state(state["state"])
        elif kind == "numpy.Generator":
            obj.bit_generator.state = state["state"]
        else:
            obj.setstate(state["state"])
        return
    obj.load_state_dict(state)


def collect(objects: Mapping[str, Any], *, global_step: int, epoch: int = 0,
            extra: Mapping[str, Any] | None = None, quantize_moments: bool = False) -> dict:
    """Everything needed to continue: each object's state, RNGs, step, epoch, extra."""
    state = {name: _object_state(obj) for name, obj in objects.items()}
    if quantize_moments:
        state = {k: quantize_optimizer_state(v) if _is_optimizer_state(v) else v
                 for k, v in state.items()}
    return {"format": VERSION, "objects": state, "rng": _rng_state(),
            "global_step": int(global_step), "epoch": int(epoch), "extra": dict(extra or {})}


def apply(state: Mapping[str, Any], objects: Mapping[str, Any]) -> None:
    """Load a collected state into live objects and restore the RNGs last."""
    saved = state["objects"]
    missing = sorted(set(objects) - set(saved))
    if missing:
        raise CheckpointError(
            f"checkpoint has no state for {', '.join(missing)} (it holds {', '.join(sorted(saved))})"
        )
    for name, obj in objects.items():
        value = saved[name]
        if _is_optimizer_state(value):
            value = dequantize_optimizer_state(value)
        _load_object_state(obj, value)
    _set_rng_state(state["rng"])


# --------------------------------------------------------------------------- 8-bit moments

def _is_optimizer_state(value: Any) -> bool:
    return isinstance(value, dict) and "state" in value and "param_groups" in value


def _quantize(t):
    import torch

    flat = t.detach().float().flatten()
    pad = (-flat.numel()) % _QBLOCK
    blocks = torch.nn.functional.pad(flat, (0, pad)).view(-1, _QBLOCK)
    scale = blocks.abs().amax(dim=1).clamp_min(1e-30)
    q = torch.round(blocks / scale[:, None] * 127).to(torch.int8)
    return {"__q8__": True, "q": q, "scale": scale, "shape": tuple(t.shape), "dtype": str(t.dtype)}


def _dequantize(d):
    import torch

    blocks = d["q"].float() / 127 * d["scale"][:, None]
    n = 1
    for s in d["shape"]:
        n *= s
    dtype = getattr(torch, d["dtype"].replace("torch.", ""))
    return blocks.flatten()[:n].view(d["shape"]).to(dtype)


def quantize_optimizer_state(opt_state: dict) -> dict:
    """Adam-style moments to blockwise int8 (absmax per 4096 values).

    The second moment is stored as its square root, which spans far fewer decades, so
    8 bits keep its small entries. Steps and scalars stay exact.
    """
    import torch

    out = {"param_groups": opt_state["param_groups"], "state": {}, "__quantized__": True}
    for pid, pstate in opt_state["state"].items():
        new = {}
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() > 1:
                if key == "exp_avg_sq":
                    new[key] = {"__sqrt__": True, **_quantize(value.sqrt())}
                else:
                    new[key] = _quantize(value)
            else:
                new[key] = value
        out["state"][pid] = new
    return out


def dequantize_optimizer_state(opt_state: dict) -> dict:
    if not opt_state.get("__quantized__"):
        return opt_state
    out = {"param_groups": opt_state["param_groups"], "state": {}}
    for pid, pstate in opt_state["state"].items():
        new = {}
        for key, value in pstate.items():
            if isinstance(value, dict) and value.get("__q8__"):
                t = _dequantize(value)
                new[key] = t.square() if value.get("__sqrt__") else t
            else:
                new[key] = value
        out["state"][pid] = new
    return out


# --------------------------------------------------------------------------- files

def checkpoint_name(global_step: int) -> str:
    return f"cp_{int(global_step)}.ptz"


def dumps(state: Mapping[str, Any], level: int = 1) -> bytes:
    import torch
    import zstandard

    raw = io.BytesIO()
    torch.save(dict(state), raw)
    payload = zstandard.ZstdCompressor(level=level, threads=-1).compress(raw.getvalue())
    return _HEADER.pack(MAGIC, VERSION, len(payload), hashlib.blake2b(payload, digest_size=32).digest()) + payload


def loads(blob: bytes, *, source: str = "<bytes>") -> dict:
    import torch
    import zstandard

    if len(blob) < _HEADER.size:
        raise CheckpointError(f"{source}: truncated ({len(blob)} bytes, header is {_HEADER.size})")
    magic, version, length, digest = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CheckpointError(f"{source}: not a labrun checkpoint (bad magic)")
    if version > VERSION:
        raise CheckpointError(f"{source}: format v{version} is newer than this labrun (v{VERSION})")
    payload = memoryview(blob)[_HEADER.size:]  # no 100 MB copy
    if len(payload) != length:
        raise CheckpointError(f"{source}: truncated ({len(payload)} of {length} payload bytes)")
    if hashlib.blake2b(payload, digest_size=32).digest() != digest:
        raise CheckpointError(f"{source}: checksum mismatch (file corrupted)")
    raw = zstandard.ZstdDecompressor().decompress(payload)
    # Our own files, just verified by checksum; RNG states need full unpickling.
    return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=False)


def save(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write atomically: a crash mid-write leaves the previous file set untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(dumps(state))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load(path: str | Path) -> dict:
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    return loads(blob, source=str(path))


def step_of(path: str | Path) -> int | None:
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def periodic(directory: str | Path) -> list[Path]:
    """``cp_*.ptz`` files in a folder, newest (highest step) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    files = [p for p in directory.iterdir() if step_of(p) is not None]
    return sorted(files, key=lambda p: step_of(p), reverse=True)


def latest_valid(directory: str | Path) -> tuple[Path, dict] | None:
    """The newest checkpoint that passes its checksum; corrupt ones are logged and skipped."""
    for path in periodic(directory):
        try:
            return path, load(path)
        except CheckpointError as exc:
            log.warning("skipping unusable checkpoint: %s", exc)
    return None
