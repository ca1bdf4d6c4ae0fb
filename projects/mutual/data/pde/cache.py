"""On-disk cache of generated PDE data, keyed by the generator config that made it.

Each entry is ``<dir>/<key>.npz`` (the arrays) beside ``<key>.json`` (the generator config,
the arrays' BLAKE2b digest, shapes). The key is a hash of the config, so a second run with
the same generator settings reuses the file and any change (viscosity, grid, seed, count)
is a different entry. Both files are written atomically (temp file + rename); an entry whose
arrays cannot be read or whose digest does not match is reported and regenerated.

The directory: ``pde.cache_dir`` if set, else ``$LABRUN_PDE_CACHE``, else
``~/.cache/labrun/pde``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

log = logging.getLogger(__name__)
VERSION = 1
"""Bumped when a generator's numerics change: old entries then simply stop matching."""


def cache_dir(configured: str | None = None) -> Path:
    path = configured or os.environ.get("LABRUN_PDE_CACHE") or Path.home() / ".cache" / "labrun" / "pde"
    return Path(path).expanduser()


def cache_key(spec: Mapping[str, Any]) -> str:
    text = json.dumps({"version": VERSION, **spec}, sort_keys=True, separators=(",", ":"), default=str)
    return f"{spec.get('dataset', 'pde')}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_entry(folder: Path, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of entry ``key``, or None when missing or corrupted (a warning says which)."""
    data_path, meta_path = folder / f"{key}.npz", folder / f"{key}.json"
    if not data_path.exists() or not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(data_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        if _digest(arrays) != meta["digest"]:
            raise ValueError("checksum mismatch")
        return arrays
    except Exception as exc:  # any unreadable entry is regenerated, never trusted
        log.warning("pde cache: entry %s in %s is corrupted (%s: %s); regenerating it", key, folder,
                    type(exc).__name__, exc)
        return None


def write_entry(folder: Path, key: str, spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / f"{key}.npz", lambda fh: np.savez(fh, **arrays))
    meta = {"key": key, "version": VERSION, "spec": dict(spec), "digest": _digest(arrays),
            "shapes": {k: list(v.shape) for k, v in arrays.items()}}
    _atomic_write(folder / f"{key}.json", lambda fh: fh.write(json.dumps(meta, indent=1, default=str)), "w")


def cached(folder: Path, specs: Mapping[str, Mapping[str, Any]],
           generate: Callable[[list[str]], Mapping[str, dict[str, np.ndarray]]]) -> tuple[dict, dict]:
    """Arrays for every name in ``specs`` (name -> generator config), generating only the
    missing ones in one call (``generate(missing_names)`` -> name -> arrays). Returns
    ``(arrays by name, {name: {"key": ..., "hit": bool}})``."""
    out: dict[str, dict[str, np.ndarray]] = {}
    info: dict[str, dict[str, Any]] = {}
    missing = []
    for name, spec in specs.items():
        key = cache_key(spec)
        got = read_entry(folder, key)
        info[name] = {"key": key, "hit": got is not None}
        if got is None:
            missing.append(name)
        else:
            out[name] = got
    if missing:
        made = generate(missing)
        for name in missing:
            arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in made[name].items()}
            write_entry(folder, info[name]["key"], specs[name], arrays)
            out[name] = arrays
    return out, info
