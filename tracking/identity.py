"""What makes two runs the same work: the fingerprint (identical experiment fields, seed
included) and the group key (the seeds of one cell), both blind to :func:`execution` fields."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from pydantic import BaseModel

from tracking.schema import TaskConfig, is_execution


def digest(payload: Mapping[str, Any]) -> str:
    """The 16-hex identity of a JSON-able mapping (fingerprints, groups, foreign cells)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def experiment_fields(cfg: BaseModel) -> dict[str, Any]:
    """The resolved config without its :func:`execution` fields, at any depth."""
    out: dict[str, Any] = {}
    for name, info in type(cfg).model_fields.items():
        if is_execution(info):
            continue
        value = getattr(cfg, name)
        out[name] = experiment_fields(value) if isinstance(value, BaseModel) else \
            cfg.model_dump(mode="json", include={name})[name]
    return out


def fingerprint(cfg: TaskConfig) -> str:
    """Identical work: task + the experiment's fields including the seed."""
    return digest({"task": cfg.task, "config": experiment_fields(cfg)})


def group_key(cfg: TaskConfig) -> str:
    """The seeds of one cell share this: the fingerprint without the seed."""
    tree = experiment_fields(cfg)
    tree.pop("seed", None)
    return digest({"task": cfg.task, "config": tree})
