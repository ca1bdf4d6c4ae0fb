"""What the benches share: the dynamics benches' options and trainer loop (``branching.py``,
``dynamics_baselines.py``), mean ± std and tables, and the cells of a paired comparison.

The statistics come from :mod:`analysis.stats` and the tables from :mod:`analysis.tables`, as
in ``labrun analyze``, so a bench prints the same numbers the analysis would, and a
statistic the data cannot support as a dash with a footnote, never as 0.000. The benches that
go through HTTP start and stop a plain ``mlflow server`` here.
"""
from __future__ import annotations

import argparse
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from analysis.stats import Paired
    from analysis.tables import Footnotes


def dynamics_options(p: argparse.ArgumentParser, what: str) -> argparse.ArgumentParser:
    """``--seeds --config --steps --set``: the options every dynamics bench takes."""
    p.add_argument("--seeds", type=int, default=3, help=f"seeds 0..N-1 per {what} (default 3; the sweep uses 5)")
    p.add_argument("--config", default="spiky", help="base config of the dynamics task (default spiky)")
    p.add_argument("--steps", type=int, default=0, help="override train.steps (default: the config's)")
    p.add_argument("--set", action="append", default=[], help="extra dotted override, repeatable")
    return p


def base_overrides(a: argparse.Namespace) -> list[str]:
    """``--set`` values, then ``--steps`` as ``train.steps`` when given."""
    return list(a.set) + ([f"train.steps={a.steps}"] if a.steps else [])


def dynamics_config(config: str, overrides: list[str]):
    from projects.dynamics.config import Config
    from tracking.config import resolve_config

    return resolve_config(Config, config, overrides)


def train(cfg, on_step: Callable[[Any, dict], None] | None = None) -> tuple[Any, float]:
    """The config's steps on a fresh Trainer; returns it and the CPU seconds the steps took."""
    from projects.dynamics.trainer import Trainer

    t = Trainer(cfg)
    t0 = time.process_time()
    for _ in range(cfg.train.steps):
        m = t.step()
        if on_step is not None:
            on_step(t, m)
    return t, time.process_time() - t0


def ms(values: Sequence[float], fmt: str = "{:.3g}") -> str:
    """``mean ± std`` over seeds (NaNs left out; one value shows ± 0), ``-`` for none."""
    from analysis.stats import describe

    d = describe(values, n_boot=0)
    if d.n == 0:
        return "-"
    return f"{fmt.format(d.mean)} ± {fmt.format(d.std if d.n > 1 else 0.0)}"


def table(rows: Sequence[Sequence[object]], head: Sequence[str]) -> str:
    """Left-aligned columns, as these benches have always printed them."""
    from analysis.tables import render

    return render(rows, head, align="l")


def diff_cells(p: "Paired", notes: "Footnotes", fmt: str = "{:+.4f}") -> list[str]:
    """Mean difference, its 95% CI and the paired t-test's p; an absent one is a dash marked
    in ``notes`` with the reason (print ``notes.lines`` under the table)."""
    from analysis.tables import pvalue

    ci = f"[{fmt.format(p.ci_low)}, {fmt.format(p.ci_high)}]" if math.isfinite(p.ci_low) else "–"
    return [fmt.format(p.mean_diff), notes.mark(ci, p.notes.get("ci")), notes.mark(pvalue(p.t_p), p.notes.get("t_p"))]


def print_table(rows: Sequence[Sequence[object]], head: Sequence[str], notes: "Footnotes | None" = None,
                align: str = "lr") -> None:
    """A table with its footnotes under it."""
    from analysis.tables import render

    print(render(rows, head, align=align))
    for line in notes.lines if notes is not None else ():
        print(line)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, db: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A plain ``mlflow server`` on 127.0.0.1 over ``db`` (default ``folder/server.db``); stop it
    with :func:`stop_server` (its whole process group)."""
    import urllib.request

    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "LABRUN_PROGRESS": "0", "GIT_PYTHON_REFRESH": "quiet"}

    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{db or folder / 'server.db'}", "--serve-artifacts",
           "--artifacts-destination", str(folder / "artifacts"), "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=folder, env=dict(os.environ, **env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return proc, url
        except Exception:
            time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError("the tracking server did not come up in 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
