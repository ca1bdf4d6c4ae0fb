"""Progress for people watching a run: a bar on long loops and one line per epoch."""
from __future__ import annotations

import sys
from typing import Iterable, Mapping, TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "",
             initial: int = 0) -> Iterable[T]:
    """A tqdm bar on stderr; off when LABRUN_PROGRESS=0 (logs of batch jobs stay clean)."""
    from tqdm.auto import tqdm

    from tracking import env

    disable = not env.LABRUN_PROGRESS.get()
    return tqdm(iterable, total=total, desc=desc, initial=initial, disable=disable,
                mininterval=1.0, dynamic_ncols=True, file=sys.stderr, leave=False)


def epoch_line(epoch: int, total: int, metrics: Mapping[str, float], elapsed_s: float,
               keys: Iterable[str] | None = None) -> str:
    """``Epoch 10/100 | loss.total: 198.3 | loss.recon: 180.5 | time: 5.2s``"""
    names = list(keys) if keys is not None else list(metrics)
    parts = [f"Epoch {epoch}/{total}"]
    parts += [f"{k}: {metrics[k]:.4g}" for k in names if k in metrics]
    parts.append(f"time: {elapsed_s:.1f}s")
    return " | ".join(parts)
