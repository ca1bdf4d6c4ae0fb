"""The tensors' bytes cut into chunks, floating ones split into byte planes, and the
codec threads that compress or decompress those chunks in order."""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterator


def shufflable(t) -> bool:
    return t.is_floating_point() and t.element_size() > 1


def plan_chunks(tensors: list, chunk: int) -> list[list[tuple[int, int, int]]]:
    """Cut the tensors' bytes into chunks of ~``chunk`` bytes at element boundaries:
    each chunk is a list of ``(tensor index, byte offset, byte count)``."""
    plan, cur, room = [], [], chunk
    for ti, t in enumerate(tensors):
        size, step = t.numel() * t.element_size(), t.element_size()
        off = 0
        while off < size:
            n = min(size - off, max(step, room // step * step))
            cur.append((ti, off, n))
            off, room = off + n, room - n
            if room < step:
                plan.append(cur)
                cur, room = [], chunk
    if cur:
        plan.append(cur)
    return plan


def gather(segs: list, views: list, shuffled: list, sizes: list) -> Any:
    """One chunk's bytes, floating segments split into byte planes.

    Plane by plane (``plane[j] = bytes[j::k]``) rather than one transposed copy: measured
    1.1 ms vs 1.2 ms per 4 MiB here, and 1.0 vs 3.5 ms the other way round on load.
    """
    import numpy as np

    if len(segs) == 1 and not shuffled[segs[0][0]]:
        ti, off, n = segs[0]
        return views[ti][off:off + n]
    out = np.empty(sum(s[2] for s in segs), dtype=np.uint8)
    pos = 0
    for ti, off, n in segs:
        src, dst, k = views[ti][off:off + n], out[pos:pos + n], sizes[ti]
        if shuffled[ti]:
            planes, elems = dst.reshape(k, n // k), src.reshape(n // k, k)
            for j in range(k):
                planes[j] = elems[:, j]
        else:
            dst[...] = src
        pos += n
    return out


def scatter(raw: Any, segs: list, views: list, shuffled: list, sizes: list) -> None:
    pos = 0
    for ti, off, n in segs:
        src, dst, k = raw[pos:pos + n], views[ti][off:off + n], sizes[ti]
        if shuffled[ti]:
            planes, elems = src.reshape(k, n // k), dst.reshape(n // k, k)
            for j in range(k):
                elems[:, j] = planes[j]
        else:
            dst[...] = src
        pos += n


def in_order(fn: Callable[[Any], Any], items: list, workers: int) -> Iterator[Any]:
    """``map(fn, items)`` in order on ``workers`` threads (zstd and numpy release the GIL),
    at most 2 x workers results held at once. Even one worker runs beside the caller, so
    the caller's file writes overlap the next chunk's compression; 0 runs inline."""
    if workers <= 0 or len(items) <= 1:
        yield from map(fn, items)
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(workers, thread_name_prefix="labrun-codec")
    try:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
