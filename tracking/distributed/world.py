"""Where this process stands in a torchrun group, and the few collectives the run contract
needs. Read from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``); a plain ``python -m`` process is a world of one and
every collective is the identity, so the single-process path pays nothing."""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

log = logging.getLogger("labrun")

FAILURE_KEY = "labrun/failure"
"""The first rank that fails writes ``rank K: Type: message`` here, its traceback under
``FAILURE_KEY + '/trace'``: rank 0 names it when the group ends (torchrun's own store, so
it works across machines)."""


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""
    _store: Any = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "World":
        env = os.environ if environ is None else environ
        return cls(rank=int(env.get("RANK", 0)), size=int(env.get("WORLD_SIZE", 1)),
                   local_rank=int(env.get("LOCAL_RANK", 0)))

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ setup
    def init(self, device: Any, timeout_s: float) -> None:
        """The process group: gloo on CPU, nccl on CUDA (one device per local rank). A
        collective that waits longer than ``timeout_s`` raises instead of hanging."""
        import torch
        import torch.distributed as dist

        if not self.distributed or dist.is_initialized():
            self.backend = dist.get_backend() if dist.is_initialized() else ""
            return
        cuda = getattr(device, "type", str(device)) == "cuda"
        if cuda:
            torch.cuda.set_device(self.local_rank)
        self.backend = "nccl" if cuda else "gloo"
        dist.init_process_group(self.backend, timeout=datetime.timedelta(seconds=timeout_s))

    def device(self, device: Any) -> Any:
        """The rank's own device: ``cuda:LOCAL_RANK`` under CUDA, else ``device``."""
        import torch

        if self.distributed and getattr(device, "type", "") == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def close(self) -> None:
        import torch.distributed as dist

        if self.distributed and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception as exc:  # a peer already gone: nothing left to tear down
                log.debug("destroy_process_group: %s", exc)

    # ------------------------------------------------------------------ collectives
    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (the run id, a resume decision)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value if self.leader else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value`` on rank 0 (in rank order); None on the others."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        out = [None] * self.size if self.leader else None
        dist.gather_object(value, out, dst=0)
        return out

    def mean(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """The mean of each metric over the ranks that have a value (NaN: none has); every
        rank calls it with the same names."""
        if not self.distributed or not metrics:
            return {k: float(v) for k, v in metrics.items()}
        import torch
        import torch.distributed as dist

        names = sorted(metrics)
        dev = torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")
        values = torch.tensor([float(metrics[k]) for k in names], dtype=torch.float64, device=dev)
        seen = ~torch.isnan(values)
        both = torch.cat([torch.where(seen, values, torch.zeros_like(values)), seen.double()])
        dist.all_reduce(both)
        total, count = both[:len(names)].tolist(), both[len(names):].tolist()
        return {k: t / c if c else float("nan") for k, t, c in zip(names, total, count)}

    # ------------------------------------------------------------------ failures
    def _kv(self) -> Any:
        """A client of torchrun's rendezvous store (it outlives any one rank)."""
        if self._store is None:
            from torch.distributed import TCPStore

            self._store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                                   is_master=False, timeout=datetime.timedelta(seconds=10))
        return self._store

    def report_failure(self, failure: str, trace: str) -> None:
        """Tell rank 0 why this rank fails (first failure wins), before the process dies."""
        if not self.distributed:
            return
        try:
            kv = self._kv()
            if kv.compare_set(FAILURE_KEY, "", f"rank {self.rank}: {failure}").decode().startswith(
                    f"rank {self.rank}:"):
                kv.set(FAILURE_KEY + "/trace", f"rank {self.rank}:\n{trace}")
        except Exception as exc:  # the store is gone too: the group ends anyway
            log.debug("could not report the failure of rank %d: %s", self.rank, exc)

    def peer_failure(self) -> tuple[str, str] | None:
        """(failure, traceback) of the rank that failed first, if one said so."""
        if not self.distributed:
            return None
        try:
            kv = self._kv()
            if not kv.check([FAILURE_KEY]):
                return None
            failure = kv.get(FAILURE_KEY).decode()
            trace = kv.get(FAILURE_KEY + "/trace").decode() if kv.check([FAILURE_KEY + "/trace"]) else ""
            return failure, trace
        except Exception as exc:
            log.debug("could not read a peer's failure: %s", exc)
            return None


_CURRENT: list[World] = []


def current() -> World:
    """This process's world (read once from the environment)."""
    if not _CURRENT:
        _CURRENT.append(World.from_env())
    return _CURRENT[0]


__all__ = ["FAILURE_KEY", "World", "current"]
