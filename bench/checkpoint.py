"""Checkpoint speed and size for a ~10M-parameter model with Adam state.

Compares plain ``torch.save`` with labrun's zstd files, with and without 8-bit moments.

    python bench/checkpoint.py [--params 10e6]
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=float, default=10e6)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import torch

    from tracking import checkpoint as ckpt

    width = int((args.params / 4) ** 0.5)
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(4)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):  # real, non-zero moments
        opt.zero_grad()
        model(torch.randn(16, width)).pow(2).mean().backward()
        opt.step()
    n_params = sum(p.numel() for p in model.parameters())
    objects = {"model": model, "optimizer": opt}
    tmp = Path(tempfile.mkdtemp(prefix="labrun-ckpt-"))

    def timed(fn):
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        return best, out

    raw_state = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    buf = io.BytesIO()
    torch.save(raw_state, buf)
    raw_mb = buf.tell() / 1e6
    t_save, _ = timed(lambda: torch.save(raw_state, tmp / "plain.pt"))
    t_load, _ = timed(lambda: torch.load(tmp / "plain.pt", weights_only=False))
    rows = [("torch.save (plain)", raw_mb, t_save, t_load)]
    for label, quant in (("labrun zstd", False), ("labrun zstd + 8-bit moments", True)):
        path = tmp / f"cp_{int(quant)}.ptz"
        t_save, _ = timed(lambda: ckpt.save(ckpt.collect(objects, global_step=1, quantize_moments=quant), path))
        t_load, _ = timed(lambda: ckpt.load(path))
        rows.append((label, path.stat().st_size / 1e6, t_save, t_load))
    print(f"model: {n_params / 1e6:.1f}M parameters + Adam moments; state {raw_mb:.0f} MB uncompressed")
    print(f"{'format':<30}{'size MB':>9}{'ratio':>8}{'save s':>8}{'save MB/s':>11}{'load s':>8}{'load MB/s':>11}")
    for label, mb, ts, tl in rows:
        print(f"{label:<30}{mb:>9.1f}{mb / raw_mb:>8.2f}{ts:>8.2f}{raw_mb / ts:>11.0f}{tl:>8.2f}{raw_mb / tl:>11.0f}")


if __name__ == "__main__":
    main()
