"""A copy of the state that later training cannot change, taken at ``save_checkpoint``.

By default (``checkpoint.snapshot=deferred``) the big tensors are copied later, on the
writer thread, and the training thread is held at the first point that could change them
(:class:`Deferred`); the copies go into memory lent by a :class:`SnapshotPool`.
"""
from __future__ import annotations

import copy
import threading
from typing import Any, Mapping

from tracking.checkpoint.errors import CheckpointError, SaveCancelled


class SnapshotPool:
    """CPU tensors of a finished save, lent to the next snapshot of the same shapes.

    Copying into memory the process already touched is a plain memcpy; fresh memory is
    page-faulted in on first write, which made the 120 MB snapshot 2-3x slower on this
    machine. The price is that the snapshot's memory stays allocated between saves.
    """

    def __init__(self) -> None:
        self._free: dict[tuple, list] = {}
        self._lock = threading.Lock()

    def take(self, shape: tuple, dtype: Any) -> Any:
        with self._lock:
            free = self._free.get((tuple(shape), dtype))
            return free.pop() if free else None

    def give(self, state: Any) -> None:
        """Return every tensor of a snapshot nobody reads any more."""
        import torch

        stack, seen = [state], set()
        while stack:
            item = stack.pop()
            if isinstance(item, torch.Tensor):
                if id(item) not in seen and item.layout == torch.strided and item.device.type == "cpu":
                    seen.add(id(item))
                    with self._lock:
                        self._free.setdefault((tuple(item.shape), item.dtype), []).append(item)
            elif isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, (list, tuple)):
                stack.extend(item)


def snapshot(state: Any, pool: SnapshotPool | None = None, *, defer: Mapping[str, Any] | None = None,
             defer_min_bytes: int | None = None) -> Any:
    """A copy of ``state`` that later training cannot change: every tensor copied into new
    CPU memory (or memory from ``pool``), containers rebuilt, other objects deep-copied.

    ``state_dict()`` hands out the live parameter and moment tensors; a background writer
    compressing those would save whatever the next optimizer step wrote into them. The copy
    is a plain memcpy on one thread: torch's own parallel ``copy_`` was 5x slower on the
    loaded 2-core machine (two threads fighting over one core), and two numpy threads gave
    nothing either (bench/checkpoint.py: memory bandwidth, not the thread count, bounds it).

    ``defer`` (the tracked objects, ``checkpoint.snapshot=deferred``): big CPU tensors are
    not copied here but by the writer thread, and the training thread is held at the first
    point that may change them; the result is a :class:`DeferredState` (see :class:`Deferred`
    for the contract and what it cannot see).
    """
    pending: list | None = [] if defer is not None else None
    limit = DEFER_MIN_BYTES if defer_min_bytes is None else defer_min_bytes
    out = _snap(state, pool, pending, limit, "")
    if defer is None or not pending:
        return out
    deferred = Deferred(pending)
    deferred.guard(defer)
    return DeferredState(out, deferred)


def _snap(state: Any, pool: SnapshotPool | None, pending: list | None, limit: int, where: str) -> Any:
    import numpy as np
    import torch

    if isinstance(state, torch.Tensor):
        return _copy_tensor(state, pool, pending, limit, where)
    if isinstance(state, dict):
        out = copy.copy(state)  # keeps the type and attributes (state_dict's _metadata)
        for key, value in state.items():
            out[key] = _snap(value, pool, pending, limit, f"{where}.{key}" if where else str(key))
        return out
    if isinstance(state, (list, tuple)):
        items = [_snap(v, pool, pending, limit, f"{where}[{i}]") for i, v in enumerate(state)]
        if isinstance(state, list):
            return items
        return type(state)(*items) if hasattr(state, "_fields") else tuple(items)
    if isinstance(state, np.ndarray):
        return state.copy()
    if state is None or isinstance(state, (bool, int, float, complex, str, bytes)):
        return state
    return copy.deepcopy(state)


def _copy_tensor(t, pool: SnapshotPool | None, pending: list | None = None, limit: int = 0, where: str = ""):
    import numpy as np
    import torch

    t = t.detach()
    if t.layout != torch.strided or t.is_quantized:
        return copy.deepcopy(t.cpu())
    if t.device.type != "cpu" or not t.is_contiguous():
        return t.to("cpu", copy=True).contiguous()
    out = pool.take(t.shape, t.dtype) if pool is not None else None
    if out is None:
        out = torch.empty(t.shape, dtype=t.dtype)
    if not t.numel():
        return out
    if pending is not None and t.numel() * t.element_size() >= limit:
        pending.append((where, t, out, t._version))   # copied by Deferred.copy
    else:
        np.copyto(byte_view(out), byte_view(t))
    return out


DEFER_MIN_BYTES = 256 << 10
"""Tensors smaller than this are copied at once even in deferred mode: they are a negligible
part of the copy, and they include what changes outside ``optimizer.step`` (Adam's ``step``
counters, a tensor learning rate a scheduler fills, BatchNorm's running statistics)."""

_ACTIVE: list["Deferred"] = []          # deferred snapshots the training thread has not settled
_ACTIVE_LOCK = threading.Lock()
_STEP_HOOK: list = []                   # the process-wide optimizer step pre-hook, once
_LOAD_HOOKS: list = []
"""load_state_dict pre-hooks of the last guard. They are removed at the next guard, not at
settling: torch iterates a module's load pre-hooks without a copy, so a hook that removed
itself would break the very ``load_state_dict`` that settled it; once settled they do nothing."""


class SnapshotTorn(CheckpointError):
    """A tensor of a deferred snapshot changed in place before the snapshot was settled."""


class DeferredState(dict):
    """A snapshot whose big tensors :attr:`deferred` still has to copy (it does so before
    anything reads them: :func:`write_stream`, :func:`quantize_state`)."""

    def __init__(self, state: Mapping[str, Any], deferred: "Deferred") -> None:
        super().__init__(state)
        self.deferred = deferred


class Deferred:
    """The copy half of a deferred snapshot, and the guard that keeps it consistent.

    ``save_checkpoint`` captured RNGs, samplers, step, small tensors and every non-tensor
    value at the call; the big tensors (parameters, moments, big buffers) are copied on the
    writer thread while training goes on. The training thread *settles* the snapshot (waits
    for the copy, then compares every pending tensor's version counter with the one at the
    save) at the first point that may change those tensors:

    - any ``optimizer.step()`` (a global step pre-hook, registered once per process);
    - the forward of a tracked module that owns one of the deferred buffers (a running
      statistic updated in place by the forward, e.g. a wide BatchNorm);
    - ``load_state_dict`` of a tracked module that owns a deferred tensor, and
      :func:`apply` (a restore to an earlier point, e.g. the dynamics task's branch
      rollouts, copies into the live parameters in place);
    - the next save, and the run's end (:meth:`tracking.writer.CheckpointWriter.wait`).

    The file becomes visible (renamed, uploaded) only after the verdict. Any other in-place
    change torch counts (``p.add_``, ``p.copy_``, ``torch.no_grad()`` edits, an EMA updated
    before the next step) between the save and the settling point fails the save with
    :class:`SnapshotTorn` and leaves no file, whether or not the copy had already passed that
    tensor, so the outcome does not depend on timing (a run then skips that file and goes on
    with full copies: :class:`tracking.checkpointing.CheckpointConnector`). What the version counter
    does not see is not detected: writes through ``p.data`` or through a NumPy view of a
    tensor, and buffers of modules that are not among the tracked objects. A loop that does
    those before its next ``optimizer.step()`` must set ``checkpoint.snapshot=copy``.
    """

    def __init__(self, pending: list) -> None:
        self.pending = pending           # (name, live tensor, destination, version at the save)
        self._copy_lock = threading.Lock()
        self._copied = False
        self._settled = threading.Event()
        self._torn: list[str] = []
        self._hooks: list = []

    def guard(self, objects: Mapping[str, Any]) -> None:
        """Install the settling points for this snapshot (on the training thread)."""
        import torch

        while _LOAD_HOOKS:  # the previous snapshot's, inert since it settled
            _LOAD_HOOKS.pop().remove()
        if not _STEP_HOOK:
            from torch.optim.optimizer import register_optimizer_step_pre_hook

            _STEP_HOOK.append(register_optimizer_step_pre_hook(_settle_hook))
        storages = {src.untyped_storage().data_ptr() for _, src, _, _ in self.pending}

        def owns(tensors) -> bool:
            return any(t is not None and t.device.type == "cpu" and t.untyped_storage().data_ptr() in storages
                       for t in tensors)

        for obj in objects.values():
            if not isinstance(obj, torch.nn.Module):
                continue
            for module in obj.modules():
                buffers = owns(module._buffers.values())
                if buffers:
                    self._hooks.append(module.register_forward_pre_hook(_settle_hook))
                if buffers or owns(module._parameters.values()):
                    _LOAD_HOOKS.append(module.register_load_state_dict_pre_hook(_settle_hook))
        with _ACTIVE_LOCK:
            _ACTIVE.append(self)

    def copy(self) -> None:
        """Copy every pending tensor; whichever thread asks first does it, once."""
        import numpy as np

        with self._copy_lock:
            if not self._copied:
                for _, src, dst, _ in self.pending:
                    np.copyto(byte_view(dst), byte_view(src))   # releases the GIL
                self._copied = True

    def settle(self) -> None:
        """On the training thread: finish the copy, then judge it (see the class)."""
        if self._settled.is_set():
            return
        self.copy()
        self._torn = [name for name, src, _, version in self.pending if src._version != version]
        for handle in self._hooks:   # module pre-hooks are read from a copy: safe inside one
            handle.remove()
        self._hooks = []
        with _ACTIVE_LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)
        self._settled.set()

    def confirm(self, cancel: threading.Event | None = None) -> None:
        """On the writer thread, before the file may become visible: wait for the verdict."""
        while not self._settled.wait(0.05):
            if cancel is not None and cancel.is_set():
                raise SaveCancelled("checkpoint save cancelled")
        if self._torn:
            shown = ", ".join(self._torn[:3]) + (f" and {len(self._torn) - 3} more" if len(self._torn) > 3 else "")
            raise SnapshotTorn(
                f"{shown} changed in place after save_checkpoint and before the next optimizer step; "
                f"a deferred snapshot cannot hold that state (use checkpoint.snapshot=copy)")


def settle_pending() -> None:
    """Settle every deferred snapshot of this process (the training side calls this)."""
    with _ACTIVE_LOCK:
        active = list(_ACTIVE)
    for deferred in active:
        deferred.settle()


def _settle_hook(*_: Any) -> None:
    if _ACTIVE:
        settle_pending()


def byte_view(t):
    """The tensor's memory as a 1-D uint8 numpy array (any dtype, bfloat16 included)."""
    import torch

    return t.reshape(-1).view(torch.uint8).numpy()
