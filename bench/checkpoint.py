"""Checkpoint speed and size for a ~10M-parameter model with Adam state (120 MB).

Prints, each beside its limit on this machine:

- the training thread's stall per checkpoint inside a training loop, with the default
  ``checkpoint.snapshot=deferred`` (the copy runs on the writer thread; the loop waits for
  it at its next ``optimizer.step()``) and with ``copy`` (a full copy before
  ``save_checkpoint`` returns), each against ``torch.save``'s whole time measured
  right after it, and the copy's floor: a bare memcpy of the state, on one and two threads;
- end-to-end save (file fsynced) and load throughput of labrun's files, with 1 and 2 codec
  threads, against ``torch.save``/``torch.load`` and zstd alone at the chosen level;
- file sizes against ``torch.save``'s, with and without 8-bit moments.

Every figure is measured ``--repeats`` times; best and median are printed with the load
average, because the machine is shared (other jobs make the median worse than the best).

    python bench/checkpoint.py [--params 10e6] [--repeats 5] [--workers 1,2]
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def _state(n_params: float):
    import torch

    width = int((n_params / 4) ** 0.5)
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(4)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):  # real, non-zero moments
        opt.zero_grad()
        model(torch.randn(16, width)).pow(2).mean().backward()
        opt.step()
    return model, opt


def _timed(fn, repeats: int) -> tuple[float, float, object]:
    """(best s, median s, last result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), out


def _row(label: str, mb: float, t: tuple[float, float], note: str = "") -> None:
    best, med = t
    print(f"  {label:<44}{best * 1e3:>9.1f}{med * 1e3:>9.1f}{mb / best:>9.0f}{mb / med:>9.0f}  {note}")


def _limits(raw_state, tensors, tmp: Path, raw_mb: float, repeats: int) -> dict:
    import numpy as np
    import torch
    import zstandard

    from tracking import checkpoint as ckpt

    out = {}
    out["torch.save"] = _timed(lambda: torch.save(raw_state, tmp / "plain.pt"), repeats)
    out["torch.load"] = _timed(lambda: torch.load(tmp / "plain.pt", weights_only=False), repeats)
    bufs = [torch.empty_like(t) for t in tensors]
    out["memcpy"] = _timed(lambda: [np.copyto(ckpt.byte_view(b), ckpt.byte_view(t))
                                    for b, t in zip(bufs, tensors)], repeats)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # idea: split the snapshot's copy over both cores
        halves = [(ckpt.byte_view(b), ckpt.byte_view(t)) for b, t in zip(bufs, tensors)]
        out["memcpy2"] = _timed(lambda: list(pool.map(lambda bt: np.copyto(*bt), halves)), repeats)
    planes = b"".join(np.ascontiguousarray(ckpt.byte_view(t).reshape(-1, t.element_size()).T).tobytes()
                      for t in tensors)
    cctx = zstandard.ZstdCompressor(level=ckpt.LEVEL, write_checksum=True)
    frame = cctx.compress(planes)
    out["zstd"] = _timed(lambda: cctx.compress(planes), repeats)
    out["unzstd"] = _timed(lambda: zstandard.ZstdDecompressor().decompress(frame), repeats)
    out["zstd_ratio"] = len(frame) / len(planes)
    return out


def _train_step(model, opt, x, settle_timer: list | None = None) -> None:
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    if settle_timer is not None:  # what the step pre-hook does, timed: wait for a deferred copy
        from tracking import checkpoint as ckpt

        t0 = time.perf_counter()
        ckpt.settle_pending()
        settle_timer.append(time.perf_counter() - t0)
    opt.step()


def _stall(objects, raw_state, tmp: Path, raw_mb: float, repeats: int) -> None:
    """The training thread's stall per checkpoint inside a real training loop (batch 16):
    ``save_checkpoint``'s own time (collect, snapshot, hand-over) plus, for a deferred
    snapshot, the wait at the next ``optimizer.step()`` for the copy still running. Each
    save is paired with a ``torch.save`` of the same state right after the writer finished,
    so each ratio sees nearly the same load."""
    import torch

    from tracking import checkpoint as ckpt
    from tracking.writer import CheckpointWriter

    model, opt = objects["model"], objects["optimizer"]
    x = torch.randn(16, model[0].in_features)
    print("training-thread stall per checkpoint, in a training loop (save, forward, backward, step)")
    for mode in ("deferred", "copy"):
        writer, pool = CheckpointWriter("bench"), ckpt.SnapshotPool()
        saves, waits, ratios, t_torch, loads = [], [], [], [], []
        for r in range(repeats + 1):
            writer.wait()
            t0 = time.perf_counter()
            state = ckpt.snapshot(ckpt.collect(objects, global_step=r), pool,
                                  defer=objects if mode == "deferred" else None)

            def job(cancel, state=state):
                ckpt.save(state, tmp / "async.ptz", cancel=cancel)
                pool.give(state)

            writer.submit(job)
            t_save = time.perf_counter() - t0
            settle: list = []
            _train_step(model, opt, x, settle)
            writer.wait()
            t1 = time.perf_counter()
            torch.save(raw_state, tmp / "plain.pt")
            t_plain = time.perf_counter() - t1
            if r == 0:
                continue  # the first fills the pool
            saves.append(t_save)
            waits.append(settle[0])
            t_torch.append(t_plain)
            ratios.append((t_save + settle[0]) / t_plain)
            loads.append(os.getloadavg()[0])
        writer.close()
        med = statistics.median
        stall = [a + b for a, b in zip(saves, waits)]
        print(f"  {mode + (' (default)' if mode == 'deferred' else ''):<19} stall median {med(stall) * 1e3:6.1f} ms (best {min(stall) * 1e3:.1f}): "
              f"save_checkpoint {med(saves) * 1e3:.1f} ms + wait at the next step {med(waits) * 1e3:.1f} ms; "
              f"torch.save median {med(t_torch) * 1e3:.0f} ms; stall / torch.save pair by pair: median "
              f"{med(ratios) * 100:.1f}%, range {min(ratios) * 100:.1f}-{max(ratios) * 100:.1f}% "
              f"(target < 10%); load {min(loads):.1f}-{max(loads):.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=float, default=10e6)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", default="1,2", help="codec thread counts to compare")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="labrun-ckpt-"))
    try:
        _run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # ~650 MB of files


def _run(args, tmp: Path) -> None:
    import torch

    from tracking import checkpoint as ckpt

    load0 = os.getloadavg()
    model, opt = _state(args.params)
    objects = {"model": model, "optimizer": opt}
    raw_state = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    buf = io.BytesIO()
    torch.save(raw_state, buf)
    raw_mb, plain_bytes = buf.tell() / 1e6, buf.tell()
    tensors = [t for t in [*raw_state["model"].values(),
                           *[v for s in raw_state["optimizer"]["state"].values() for v in s.values()]]
               if isinstance(t, torch.Tensor)]
    lim = _limits(raw_state, tensors, tmp, raw_mb, args.repeats)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.1f}M parameters + Adam moments; state {raw_mb:.0f} MB uncompressed; "
          f"zstd level {ckpt.LEVEL}, {ckpt.CHUNK >> 20} MiB frames, codec threads: "
          f"{ckpt.SAVE_WORKERS} to save, {ckpt.LOAD_WORKERS} to load (defaults)")
    print(f"{args.repeats} repeats each; load average {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} "
          f"(1/5/15 min) at start, {os.cpu_count()} CPUs")
    print(f"  {'what':<44}{'best ms':>9}{'med ms':>9}{'best MB/s':>9}{'med MB/s':>9}")
    print("limits")
    _row("torch.save to a file (no fsync)", raw_mb, lim["torch.save"][:2])
    _row("torch.load", raw_mb, lim["torch.load"][:2])
    _row("memcpy of every tensor (snapshot floor)", raw_mb, lim["memcpy"][:2])
    _row("the same memcpy on 2 threads", raw_mb, lim["memcpy2"][:2],
         f"{lim['memcpy'][1] / lim['memcpy2'][1]:.2f}x one thread's median (no gain when memory-bound; "
         f"a gain under heavy load is a bigger share of the cores, not bandwidth)")
    _row(f"zstd alone, level {ckpt.LEVEL}, 1 thread, byte planes", raw_mb, lim["zstd"][:2],
         f"ratio {lim['zstd_ratio']:.3f}")
    _row("zstd decompress alone, 1 thread", raw_mb, lim["unzstd"][:2])

    _stall(objects, raw_state, tmp, raw_mb, args.repeats)

    print("end to end, file written (neither fsynced)")
    sizes = {}
    for workers in [int(w) for w in args.workers.split(",")]:
        for shuffle in (True, False):
            path = tmp / f"cp_{workers}_{int(shuffle)}.ptz"
            state = ckpt.snapshot(ckpt.collect(objects, global_step=1))
            t_save = _timed(lambda: ckpt.save(state, path, shuffle=shuffle, workers=workers), args.repeats)
            t_load = _timed(lambda: ckpt.load(path, workers=workers), args.repeats)
            sizes[shuffle] = path.stat().st_size
            tag = "byte planes" if shuffle else "no shuffle"
            _row(f"labrun save, {workers} thread(s), {tag}", raw_mb, t_save[:2], "target >= 500 MB/s")
            _row(f"labrun load, {workers} thread(s), {tag}", raw_mb, t_load[:2], "target >= 800 MB/s")
    q = ckpt.quantize_state(ckpt.snapshot(ckpt.collect(objects, global_step=1)))
    t_q = _timed(lambda: ckpt.save(ckpt.quantize_state(ckpt.snapshot(ckpt.collect(objects, global_step=1))),
                                   tmp / "q.ptz"), args.repeats)
    ckpt.save(q, tmp / "q.ptz")
    _row("labrun save, 8-bit moments (quantize included)", raw_mb, t_q[:2])
    print("file size (x torch.save's)")
    print(f"  torch.save {plain_bytes / 1e6:.1f} MB; labrun byte planes {sizes[True] / plain_bytes:.3f}x "
          f"(target <= 0.85); no shuffle {sizes[False] / plain_bytes:.3f}x; "
          f"8-bit moments {(tmp / 'q.ptz').stat().st_size / plain_bytes:.3f}x (target <= 0.45)")
    load1 = os.getloadavg()
    print(f"load average at the end {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f}")


if __name__ == "__main__":
    main()
