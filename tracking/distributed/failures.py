"""How a DDP run ended, seen from rank 0: its own failure, a peer's, a lost peer, or a hang.

torchrun ends the whole group when one rank exits, so rank 0 usually learns of another
rank's end as an error in a collective ("Connection closed by peer") or as the agent's
SIGTERM. Neither says what happened; the failing rank does, through the rendezvous store
(:meth:`World.report_failure`) before it exits. Rank 0 reads it here and records the
peer's failure and traceback in the run; a peer that died without a word (SIGKILL, the
OOM killer) leaves the run KILLED, resumable like any killed run.
"""
from __future__ import annotations

import re
import time
import traceback

from tracking.distributed.world import World
from tracking.exits import EXIT_FAILED, EXIT_SIGTERM
from tracking.outcome import Outcome

PEER_WAIT_S = 3.0
"""How long rank 0, after a collective broke, waits for the failing rank's word."""

_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted",
              "ProcessGroup", "Socket Timeout")


def collective_error(exc: BaseException) -> bool:
    """An error of the process group itself, not of the task's computation."""
    try:
        from torch.distributed import DistError
    except ImportError:  # pragma: no cover - torch without distributed
        DistError = ()  # noqa: N806
    text = str(exc)
    return isinstance(exc, DistError) or (isinstance(exc, RuntimeError) and (
        "gloo" in text.lower() or "nccl" in text.lower() or any(s in text for s in _LOST_PEER)))


def timed_out(exc: BaseException) -> bool:
    return "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower()


def classify(end: Outcome, exc: BaseException, world: World, timeout_s: float) -> Outcome:
    """Rank 0's outcome given how its own block ended (``end``) and what the peers said."""
    if not world.distributed or end.status == "FINISHED" or end.pruned:
        return end
    own = end.status == "FAILED" and not collective_error(exc)
    if own:
        world.report_failure(end.failure or type(exc).__name__, _trace(exc))
        return end
    peer = _wait_for_peer(world, PEER_WAIT_S if end.status == "FAILED" else 0.5)
    if peer is not None:
        failure, trace = peer
        return Outcome("FAILED", failure, EXIT_FAILED, trace=trace)
    if end.status == "KILLED":
        return end
    first = _first_line(exc)
    if timed_out(exc):
        return Outcome("FAILED", f"rank 0: a collective waited more than execution.dist_timeout_s={timeout_s:g} s "
                                 f"(a rank hung or died): {first}", EXIT_FAILED, trace=_trace(exc))
    return Outcome("KILLED", f"Interrupted: another rank left the process group ({first})", EXIT_SIGTERM)


def _wait_for_peer(world: World, wait_s: float) -> tuple[str, str] | None:
    """Poll for the failing rank's word; torchrun's SIGTERM (the group is ending) cuts the
    wait short, it does not cut short rank 0's record of the run."""
    deadline = time.monotonic() + wait_s
    try:
        while True:
            found = world.peer_failure()
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.1)
    except KeyboardInterrupt:  # Terminated too
        return world.peer_failure()


def _first_line(exc: BaseException) -> str:
    """``Connection closed by peer [127.0.0.1]:44774``, not gloo's source path and advice."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip())
    return (text.splitlines()[0].split(". ")[0] if text else type(exc).__name__)[:300]


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


__all__ = ["classify", "collective_error", "timed_out"]
