"""Progress for people watching a run: a bar on long loops and one line per epoch."""
from __future__ import annotations

import sys
from typing import Iterable, Mapping, TextIO, TypeVar

T = TypeVar("T")


def bars_enabled(stream: TextIO | None = None) -> bool:
    """Bars only where a person watches a terminal: a bar redraws with carriage returns, which
    a pipe, a file or a CI log keeps as one endless line glued to the log lines around it.
    ``LABRUN_PROGRESS=0`` turns them off on a terminal too; ``=1`` cannot turn them on in a pipe."""
    from tracking import env

    stream = stream or sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return bool(env.LABRUN_PROGRESS.get()) and tty


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "",
             initial: int = 0) -> Iterable[T]:
    """A tqdm bar on stderr when it is a terminal (see :func:`bars_enabled`); the epoch lines
    in the log say how far a run is otherwise."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, initial=initial, disable=not bars_enabled(),
                mininterval=1.0, dynamic_ncols=True, file=sys.stderr, leave=False)


def epoch_line(epoch: int, total: int, metrics: Mapping[str, float], elapsed_s: float,
               keys: Iterable[str] | None = None) -> str:
    """``Epoch 10/100 | loss.total: 198.3 | loss.recon: 180.5 | time: 5.2s``"""
    names = list(keys) if keys is not None else list(metrics)
    parts = [f"Epoch {epoch}/{total}"]
    parts += [f"{k}: {metrics[k]:.4g}" for k in names if k in metrics]
    parts.append(f"time: {elapsed_s:.1f}s")
    return " | ".join(parts)
