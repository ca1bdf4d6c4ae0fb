"""Loading a run's files runs no one's code: checkpoints unpickle through an allow-list.

A pickle can name any importable callable and call it (``os.system`` through
``__reduce__``); ``pickle.load`` and ``torch.load(weights_only=False)`` do so. Every
checkpoint labrun reads goes through :class:`RestrictedUnpickler` instead, whose
``find_class`` resolves only the names of :func:`allowed_globals`: tensor and storage rebuild
functions, torch dtypes and devices, NumPy arrays, dtypes, scalars and RNG states, plain
containers, and whatever a task registered with :func:`register_safe_globals` (as
``torch.serialization.add_safe_globals`` does for ``torch.load``). Any other name is refused
with :class:`~tracking.checkpoint.errors.UnsafeCheckpoint` before it is imported or called,
so nothing of it runs. Saving checks the same list (:func:`scan`), so a task cannot write a
checkpoint it could not read back.

``--trust-checkpoints`` (``labrun run``) and ``LABRUN_TRUST_CHECKPOINTS=1`` turn the check
off for a user's own files; one line on stderr says so.
"""
from __future__ import annotations

import functools
import io
import pickle
import sys
import threading
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Callable, Iterator

from tracking.checkpoint.errors import CheckpointError, UnsafeCheckpoint

_REGISTERED: dict[str, Any] = {}
_LOCK = threading.Lock()
_TRUST: list[str] = []           # why checkpoints are trusted now ("--trust-checkpoints")
_TRUST_SAID: list[bool] = []     # the stderr line is printed once per process

_BUILTINS = ("bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list", "range",
             "set", "slice", "str", "tuple")
_TORCH_REBUILDS = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                   "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_sparse_tensor",
                   "_rebuild_meta_tensor_no_storage", "_rebuild_nested_tensor", "_rebuild_wrapper_subclass",
                   "_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor")


# --------------------------------------------------------------------------- the list

def _name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def register_safe_globals(*objects: Any) -> None:
    """Let checkpoints hold these classes or functions (a task's own state types).

    Pass the objects themselves, or ``(obj, "module.name")`` for a name the pickles use that
    differs from the object's own. Registering a class lets a checkpoint create instances of
    it and set their state; register only types whose construction runs no code you would
    not run. Call it in the task's module, next to the class.
    """
    with _LOCK:
        for item in objects:
            obj, name = item if isinstance(item, tuple) else (item, _name(item))
            _REGISTERED[name] = obj


@contextmanager
def safe_globals(*objects: Any) -> Iterator[None]:
    """:func:`register_safe_globals` for the ``with`` block only."""
    names = [item[1] if isinstance(item, tuple) else _name(item) for item in objects]
    with _LOCK:
        before = {n: _REGISTERED[n] for n in names if n in _REGISTERED}
    register_safe_globals(*objects)
    try:
        yield
    finally:
        with _LOCK:
            for n in names:
                _REGISTERED.pop(n, None)
            _REGISTERED.update(before)


@functools.lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    """labrun's own list: what model, optimizer, scheduler, sampler and RNG states pickle to."""
    import _codecs
    import collections
    import random

    rc: dict[str, Any] = {f"builtins.{n}": getattr(__import__("builtins"), n) for n in _BUILTINS}
    rc.update({f"collections.{c.__name__}": c for c in (collections.OrderedDict, collections.defaultdict,
                                                        collections.Counter, collections.deque)})
    rc.update({"_codecs.encode": _codecs.encode, "random.Random": random.Random})
    rc.update(_torch_globals())
    rc.update(_numpy_globals())
    return rc


def _torch_globals() -> dict[str, Any]:
    import torch
    import torch._utils

    kinds = (torch.dtype, torch.layout, torch.memory_format, torch.qscheme)
    rc: dict[str, Any] = {f"torch.{n}": v for n in dir(torch) if isinstance(v := getattr(torch, n, None), kinds)}
    rc.update({f"torch._utils.{n}": getattr(torch._utils, n) for n in _TORCH_REBUILDS if hasattr(torch._utils, n)})
    rc.update({"torch.Size": torch.Size, "torch.device": torch.device, "torch.Tensor": torch.Tensor,
               "torch.nn.parameter.Parameter": torch.nn.Parameter, "torch.Generator": torch.Generator,
               "torch._C.Generator": torch.Generator,
               "torch.serialization._get_layout": torch.serialization._get_layout,
               "torch._tensor._rebuild_from_type_v2": torch._tensor._rebuild_from_type_v2})
    rc.update({_name(t): t for t in torch._tensor_classes})
    for s in torch._storage_classes:  # legacy typed storages load as torch.load has them
        plain = s in (torch.storage.TypedStorage, torch.storage.UntypedStorage)
        rc[_name(s)] = s if plain else torch.serialization.StorageType(s.__name__)
    return rc


def _numpy_globals() -> dict[str, Any]:
    import numpy as np
    import numpy.random._pickle as nprp

    reconstruct, scalar = np.ndarray.__reduce__(np.zeros(1))[0], np.float64(0).__reduce__()[0]
    rc: dict[str, Any] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):   # NumPy 1 and 2 spell it so
        rc[f"{core}._reconstruct"], rc[f"{core}.scalar"] = reconstruct, scalar
    rc.update({f"numpy.dtypes.{n}": v for n in dir(getattr(np, "dtypes", None))
               if isinstance(v := getattr(np.dtypes, n), type) and issubclass(v, np.dtype)})
    rc.update({f"numpy.random._pickle.{n}": getattr(nprp, n) for n in dir(nprp) if n.endswith("_ctor")})
    for cls in (np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937, np.random.Philox, np.random.SFC64,
                np.random.Generator, np.random.RandomState, np.random.SeedSequence):
        rc[_name(cls)] = cls
    seq = np.random.bit_generator
    rc["numpy.random.bit_generator.__pyx_unpickle_SeedSequence"] = getattr(seq, "__pyx_unpickle_SeedSequence")
    return rc


def allowed_globals() -> dict[str, Any]:
    """Every name a checkpoint may hold, with the object it loads as."""
    with _LOCK:
        return {**_defaults(), **_REGISTERED}


# --------------------------------------------------------------------------- trust

@contextmanager
def trusting(reason: str | None) -> Iterator[None]:
    """Inside the block, checkpoints load without the allow-list (``reason``: the
    ``--trust-checkpoints`` of the run's command line); None changes nothing."""
    if reason is None:
        yield
        return
    _TRUST.append(reason)
    try:
        yield
    finally:
        _TRUST.remove(reason)


def is_trusted(explicit: bool | None = None) -> bool:
    """Whether the allow-list is off: ``explicit``, else :func:`trusting` or
    ``LABRUN_TRUST_CHECKPOINTS=1``; the first time it is, one line on stderr says so."""
    from tracking import env

    reasons = list(_TRUST) + ([f"{env.LABRUN_TRUST_CHECKPOINTS.name}=1"]
                              if env.LABRUN_TRUST_CHECKPOINTS.get() else [])
    on = bool(reasons) if explicit is None else explicit
    if on and not _TRUST_SAID:
        _TRUST_SAID.append(True)
        print(f"labrun: checkpoints are trusted ({', '.join(reasons) or 'trusted=True'}): loading one may "
              f"run code it holds", file=sys.stderr)
    return on


# --------------------------------------------------------------------------- unpickling

def _canonical(module: str, name: str) -> str:
    """``module.name`` as Python 3 spells it: protocol-2 pickles (``torch.save``) may say
    ``__builtin__``; torch renamed ``torch.tensor`` to ``torch._tensor``."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{'torch._tensor' if module == 'torch.tensor' else module}.{name}"


class _Stub:
    """What every global becomes in a :func:`scan`: takes any call or opcode, runs nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Stub":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "_Stub":
        return _Stub()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def add(self, value: Any) -> None:
        pass


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come from :func:`allowed_globals` only.

    ``tensors``: what the v2 format's persistent ids index. ``check_only``: resolve every
    name as a load would, but return stand-ins that run nothing (:func:`scan`).
    """

    def __init__(self, file: Any, *, source: str, tensors: list | None = None, trusted: bool = False,
                 check_only: bool = False, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.source, self.tensors, self.trusted, self.check_only = source, tensors, trusted, check_only
        self._allowed = allowed_globals()
        if tensors is not None or check_only:  # an instance attribute: torch.load sets its own
            self.persistent_load = self._tensor

    def find_class(self, module: str, name: str) -> Any:
        full = _canonical(module, name)
        if full == "torch.storage._load_from_bytes":   # torch.load(weights_only=False) inside
            found: Any = functools.partial(_load_from_bytes, source=self.source, trusted=self.trusted)
        else:
            found = self._allowed.get(full)
        if found is None and not self.trusted:
            raise UnsafeCheckpoint(self.source, full)
        if self.check_only:
            return _Stub
        return super().find_class(module, name) if found is None else found

    def _tensor(self, pid: Any) -> Any:
        if self.check_only:
            return _Stub()
        if self.tensors is None or type(pid) is not int or not 0 <= pid < len(self.tensors):
            raise CheckpointError(f"{self.source}: damaged (a tensor reference {pid!r} out of range)")
        return self.tensors[pid]


def restricted_loads(data: bytes, *, source: str, tensors: list | None = None, trusted: bool | None = None) -> Any:
    """Unpickle ``data`` through the allow-list; a damaged stream is a :class:`CheckpointError`."""
    unpickler = RestrictedUnpickler(io.BytesIO(data), source=source, tensors=tensors,
                                    trusted=is_trusted(trusted))
    return _checked(unpickler.load, source)


def scan(data: bytes, *, source: str, saving: bool = False) -> None:
    """Refuse, as a load would, a pickle that names a global off the list; runs nothing of it.
    ``saving``: the refusal says the object cannot be saved."""
    try:
        _checked(RestrictedUnpickler(io.BytesIO(data), source=source, check_only=True).load, source)
    except UnsafeCheckpoint as exc:
        raise exc.when_saving() if saving else exc from None


def _checked(load: Callable[[], Any], source: str) -> Any:
    try:
        return load()
    except CheckpointError:
        raise
    except Exception as exc:   # a stream no pickler of ours wrote
        raise CheckpointError(f"{source}: damaged ({type(exc).__name__}: {exc})") from None


def pickle_module(source: str, trusted: bool) -> ModuleType:
    """A ``pickle_module`` for ``torch.load(..., weights_only=False)`` that unpickles
    through the allow-list (torch subclasses its ``Unpickler``)."""
    module = ModuleType("labrun_restricted_pickle")

    class Unpickler(RestrictedUnpickler):
        def __init__(self, file: Any, **kwargs: Any) -> None:
            super().__init__(file, source=source, trusted=trusted, **kwargs)

    module.Unpickler = Unpickler
    module.load = lambda file, **kwargs: Unpickler(file, **kwargs).load()
    module.loads = lambda data, **kwargs: Unpickler(io.BytesIO(data), **kwargs).load()
    module.UnpicklingError = pickle.UnpicklingError
    return module


def torch_load(blob: bytes, *, source: str, trusted: bool | None = None) -> Any:
    """``torch.load`` of ``torch.save`` bytes (format-1 checkpoints, a Lightning ``.ckpt``)
    through the allow-list, onto the CPU."""
    import torch

    flag = is_trusted(trusted)
    return _checked(lambda: torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False,
                                       pickle_module=pickle_module(source, flag)), source)


def _load_from_bytes(b: bytes, *, source: str, trusted: bool) -> Any:
    """``torch.storage._load_from_bytes`` (how a pickled storage comes back), restricted."""
    return torch_load(b, source=source, trusted=trusted)


def scan_torch_bytes(blob: bytes, *, source: str, saving: bool = False) -> None:
    """:func:`scan` for ``torch.save`` bytes: the pickle inside its zip, else a restricted load."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            data = zf.read(pickles[0]) if len(pickles) == 1 else None
    except zipfile.BadZipFile:
        data = None
    if data is not None:
        scan(data, source=source, saving=saving)
        return
    try:   # the legacy format, or something else: load it, restricted, and drop it
        torch_load(blob, source=source, trusted=False)
    except UnsafeCheckpoint as exc:
        raise exc.when_saving() if saving else exc from None


__all__ = ["RestrictedUnpickler", "allowed_globals", "pickle_module", "register_safe_globals",
           "restricted_loads", "safe_globals", "scan", "scan_torch_bytes", "torch_load", "trusting", "is_trusted"]
