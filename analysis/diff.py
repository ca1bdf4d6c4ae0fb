"""What changed between two runs: config, code, environment and results.

``labrun diff A B`` and ``labrun reproduce`` both ask it. The answer is read from what every
run records (``config.yaml``, ``git.diff``, ``environment.json``, the metric histories), so
it holds for runs made months apart, on other machines, by other people.
"""
from __future__ import annotations

import json
import math
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from tracking import tags as T
from tracking.config import ConfigError, flatten

# Settings that change how a run executes, not what it computes (fingerprint leaves them out).
EXECUTION_PREFIXES = ("checkpoint.", "execution.", "train.num_threads", "train.sleep_s")


@dataclass
class Parting:
    """The first step where two metric series differ (None values: missing in that run)."""

    metric: str
    step: int
    a: float | None
    b: float | None

    def text(self) -> str:
        return f"{self.metric} at step {self.step}: {_num(self.a)} vs {_num(self.b)}"


@dataclass
class MetricDelta:
    metric: str
    final_a: float | None
    final_b: float | None
    steps_a: int
    steps_b: int
    parting: Parting | None

    @property
    def delta(self) -> float | None:
        if self.final_a is None or self.final_b is None:
            return None
        return self.final_b - self.final_a


@dataclass
class RunSide:
    """What one run recorded, as the diff needs it."""

    run_id: str
    name: str
    tags: dict[str, str]
    config: dict[str, Any]
    environment: dict[str, Any]
    git_diff: str
    histories: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def commit(self) -> str:
        """labrun's tag, else MLflow's (a foreign project run by ``mlflow run``)."""
        return self.tags.get(T.GIT_COMMIT) or self.tags.get("mlflow.source.git.commit") or "unknown"


@dataclass
class RunDiff:
    a: RunSide
    b: RunSide
    config: list[tuple[str, Any, Any]]
    environment: list[tuple[str, Any, Any]]
    metrics: list[MetricDelta]
    code: str

    @property
    def parting(self) -> Parting | None:
        """The earliest step (over all metrics) where the two runs' series part."""
        found = [m.parting for m in self.metrics if m.parting is not None]
        return min(found, key=lambda p: (p.step, p.metric)) if found else None

    @property
    def identical_results(self) -> bool:
        return bool(self.metrics) and self.parting is None


_MISSING = object()


def read_side(client: Any, run_id: str, *, histories: bool = True) -> RunSide:
    """One run's recorded provenance; a run that does not exist is a one-line ConfigError."""
    try:
        run = client.get_run(run_id)
    except Exception:
        raise ConfigError(f"no run {run_id!r} in the tracking store; copy the id from the run's page or "
                          f"`labrun analyze` output") from None
    with tempfile.TemporaryDirectory() as tmp:
        config = _artifact(client, run_id, "config.yaml", tmp)
        env = _artifact(client, run_id, "environment.json", tmp)
        git_diff = _artifact(client, run_id, "git.diff", tmp) or ""
    import yaml

    doc = yaml.safe_load(config) if config else None
    cfg = doc.get("config", {}) if isinstance(doc, dict) else {}
    if not cfg:  # a run without labrun's config.yaml (a foreign project): its params
        cfg = dict(run.data.params)
    side = RunSide(run_id, run.info.run_name or run_id, dict(run.data.tags), cfg,
                   json.loads(env) if env else {}, git_diff)
    if histories:
        for key in sorted(k for k in run.data.metrics if not k.startswith("system/")):  # the machine's, not the run's
            hist = client.get_metric_history(run_id, key)
            side.histories[key] = [(m.step, m.value) for m in sorted(hist, key=lambda m: (m.step, m.timestamp))]
    return side


def _artifact(client: Any, run_id: str, path: str, tmp: str) -> str | None:
    try:
        local = client.download_artifacts(run_id, path, tmp)
    except Exception:
        return None
    return Path(local).read_text(errors="replace")


def compare(a: RunSide, b: RunSide, *, repo: str | Path | None = None) -> RunDiff:
    return RunDiff(a, b, _changed(flatten(a.config), flatten(b.config)),
                   _changed(flatten(a.environment), flatten(b.environment)),
                   [_metric(k, a.histories.get(k, []), b.histories.get(k, []))
                    for k in sorted(set(a.histories) | set(b.histories))],
                   code_diff(a, b, repo))


def _changed(x: Mapping[str, Any], y: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    keys = sorted(set(x) | set(y))
    return [(k, x.get(k, _MISSING), y.get(k, _MISSING)) for k in keys
            if not _same(x.get(k, _MISSING), y.get(k, _MISSING))]


def _same(u: Any, v: Any) -> bool:
    if isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v):
        return True
    return u == v


def _metric(name: str, ha: Sequence[tuple[int, float]], hb: Sequence[tuple[int, float]]) -> MetricDelta:
    return MetricDelta(name, ha[-1][1] if ha else None, hb[-1][1] if hb else None, len(ha), len(hb),
                       first_parting(name, ha, hb))


def first_parting(name: str, ha: Sequence[tuple[int, float]], hb: Sequence[tuple[int, float]]) -> Parting | None:
    """The first position where the series differ bit for bit (NaN equals NaN), or None."""
    for (sa, va), (sb, vb) in zip(ha, hb):
        if sa != sb:
            return Parting(name, min(sa, sb), va if sa <= sb else None, vb if sb <= sa else None)
        if not _same(va, vb):
            return Parting(name, sa, va, vb)
    if len(ha) != len(hb):
        longer, (step, value) = (ha, ha[len(hb)]) if len(ha) > len(hb) else (hb, hb[len(ha)])
        return Parting(name, step, value if longer is ha else None, value if longer is hb else None)
    return None


def code_diff(a: RunSide, b: RunSide, repo: str | Path | None = None) -> str:
    """The commits' diff (from the repository at ``repo``, default here) and each run's own
    uncommitted changes, named by file."""
    lines = []
    if a.commit != b.commit:
        lines.append(f"commits {a.commit[:12]} -> {b.commit[:12]}:")
        lines.append(_git_diff(a.commit, b.commit, repo))
    for side in (a, b):
        if side.git_diff.strip():
            files = sorted({ln[len("+++ b/"):] for ln in side.git_diff.splitlines() if ln.startswith("+++ b/")})
            lines.append(f"uncommitted in {side.run_id[:12]} ({', '.join(files) or 'see git.diff'}):")
            lines.append(side.git_diff.rstrip())
    if a.git_diff.strip() and a.git_diff == b.git_diff:
        lines.append("(both runs carry the same uncommitted changes)")
    return "\n".join(lines)


def _git_diff(x: str, y: str, repo: str | Path | None) -> str:
    cmd = ["git", "-C", str(repo or "."), "diff", x, y]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(git diff failed: {exc})"
    if out.returncode != 0:
        return (f"(the commits are not both in the repository at {Path(repo or '.').resolve()}: "
                f"{out.stderr.strip().splitlines()[0] if out.stderr.strip() else 'git diff failed'})")
    return out.stdout.rstrip() or "(no difference in tracked files)"


# ----------------------------------------------------------------------------- rendering

def _num(v: Any) -> str:
    if v is None or v is _MISSING:
        return "—"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def render(d: RunDiff, fmt: str = "text") -> str:
    md = fmt == "md"
    head = (f"## labrun diff `{d.a.run_id}` → `{d.b.run_id}`" if md else
            f"labrun diff {d.a.run_id} ({d.a.name}) -> {d.b.run_id} ({d.b.name})")
    out = [head, ""]
    out += _section("Config", ("key", "A", "B"), [(k, _num(u), _num(v)) for k, u, v in d.config], md,
                    "identical resolved configs")
    out += _section("Environment", ("key", "A", "B"), [(k, _num(u), _num(v)) for k, u, v in d.environment],
                    md, "same packages, device and threads")
    rows = [(m.metric, _num(m.final_a), _num(m.final_b), _num(m.delta),
             f"step {m.parting.step}" if m.parting else "never")
            for m in d.metrics]
    out += _section("Metrics", ("metric", "final A", "final B", "B - A", "series part at"), rows, md,
                    "no metrics")
    parting = d.parting
    out.append(f"First difference: {parting.text()}" if parting else
               ("Every metric series is identical, step for step." if d.metrics else ""))
    out += ["", "### Code" if md else "Code:"]
    code = d.code or "same commit, no uncommitted changes"
    out += (["```diff", code, "```"] if md and d.code else [code])
    return "\n".join(out).rstrip() + "\n"


def _section(title: str, header: Sequence[str], rows: list[Sequence[str]], md: bool, empty: str) -> list[str]:
    import pandas as pd

    from analysis.tables import to_markdown, to_text

    lines = [f"### {title}" if md else f"{title}:"]
    if not rows:
        return lines + [f"({empty})", ""]
    table = pd.DataFrame([list(r) for r in rows], columns=list(header))
    return lines + [(to_markdown if md else to_text)(table), ""]
