"""What a checkpoint holds: each tracked object's own ``state_dict`` (Lightning's
``dump_checkpoint`` idea) plus every RNG the run touches, step, epoch and the loop's extra,
so a resumed run continues bit-identically on CPU."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping

from tracking.checkpoint.errors import CheckpointError
from tracking.checkpoint.fileformat import VERSION
from tracking.checkpoint.quantize import (dequantize_optimizer_state, is_optimizer_state,
                                          quantize_optimizer_state)
from tracking.checkpoint.snapshot import settle_pending


@dataclass
class ResumeInfo:
    """Where a restored run continues from."""

    run_id: str
    path: str
    global_step: int
    epoch: int
    extra: dict[str, Any]


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
        state = {k: quantize_optimizer_state(v) if is_optimizer_state(v) else v
                 for k, v in state.items()}
    return {"format": VERSION, "objects": state, "rng": _rng_state(),
            "global_step": int(global_step), "epoch": int(epoch), "extra": dict(extra or {})}


def rank_local(obj: Any) -> bool:
    """Objects each DDP rank has its own of (its data order): generators, and anything that
    says so with ``rank_local = True`` (a sharded sampler). The model, optimizer and
    scheduler are the same on every rank and are saved once, from rank 0."""
    import numpy as np
    import torch

    return (isinstance(obj, (torch.Generator, np.random.Generator, random.Random))
            or getattr(obj, "rank_local", False) is True)


def rank_state(objects: Mapping[str, Any]) -> dict:
    """One rank's share of a checkpoint: its RNGs and its rank-local objects."""
    return {"rng": _rng_state(),
            "objects": {name: _object_state(obj) for name, obj in objects.items() if rank_local(obj)}}


def apply(state: Mapping[str, Any], objects: Mapping[str, Any], *, rank: int = 0, world_size: int = 1) -> None:
    """Load a collected state into live objects and restore the RNGs last.

    A checkpoint of a DDP run holds every rank's RNGs and rank-local objects (``ranks``):
    rank ``rank`` takes its own. A rank the checkpoint has no share for (more processes than
    it was saved with) keeps its fresh seeding, so two ranks never draw the same data."""
    settle_pending()  # a deferred snapshot still reading these tensors finishes first
    saved = state["objects"]
    missing = sorted(set(objects) - set(saved))
    if missing:
        raise CheckpointError(
            f"checkpoint has no state for {', '.join(missing)} (it holds {', '.join(sorted(saved))})"
        )
    ranks = state.get("ranks") or [{"rng": state["rng"], "objects": {}}]
    mine = ranks[rank] if rank < len(ranks) else None
    for name, obj in objects.items():
        value = saved[name]
        if rank_local(obj) and (mine is None or rank > 0):
            if mine is None or name not in mine["objects"]:
                continue
            value = mine["objects"][name]
        if is_optimizer_state(value):
            value = dequantize_optimizer_state(value)
        _load_object_state(obj, value)
    if mine is not None:
        _set_rng_state(mine["rng"])


def saved_world_size(state: Mapping[str, Any]) -> int:
    return len(state.get("ranks") or [None])
