"""``labrun check SPEC --against BASELINE``: did the current code change the results?

The spec is rerun on today's code into an experiment of its own (a fresh one per check, so no
cell is skipped as already finished), and every group (same config, ``labrun.group``) is
paired seed by seed with the stored baseline runs. A group is the same when every pair agrees
within the tolerance; otherwise a paired t-test over the seeds, Holm-corrected across groups,
says whether the change is systematic. A worse systematic change, or a change that too few
seeds cannot judge, is a regression: exit 1, so the command can gate a merge in CI.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

from tracking import runs
from tracking import tags as T
from tracking.config import ConfigError

ALPHA = 0.05


@dataclass
class GroupCheck:
    group: str
    label: str
    seeds: int
    base: float
    new: float
    p_holm: float | None
    verdict: str  # same | better | worse | changed | untested

    @property
    def regression(self) -> bool:
        return self.verdict in ("worse", "untested")

    @property
    def changed(self) -> bool:
        return self.verdict != "same"


def check(spec_path: str, against: str, metric: str, *, rtol: float = 0.0, atol: float = 0.0,
          alpha: float = ALPHA, sets: Sequence[str] = ()) -> tuple[list[GroupCheck], str]:
    """Rerun, pair, test; returns the per-group verdicts and the experiment of the rerun."""
    from sweeps.spec import SweepSpec, load_spec
    from sweeps.sweep import run_sweep

    spec, _ = load_spec(SweepSpec, spec_path, list(sets))
    base_runs = _baseline(spec, against)
    experiment = f"{spec.experiment or spec.entry} · check {time.strftime('%Y%m%d-%H%M%S')}"
    spec, raw = load_spec(SweepSpec, spec_path, [*sets, f"experiment={experiment}"])
    code = run_sweep(spec, raw, out=sys.stderr)  # stdout holds the verdict only
    if code not in (0,):
        raise RuntimeError(f"the rerun of {spec_path} ended with exit {code}; see its cells in {experiment!r}")
    new_runs = _runs(experiment)
    return _compare(base_runs, new_runs, metric, rtol, atol, alpha), experiment


def _runs(experiment: str, tag: tuple[str, str] | None = None) -> list[Any]:
    from tracking import store

    c = store.client()
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    flt = "attributes.status = 'FINISHED'" + (f" and tags.`{tag[0]}` = '{tag[1]}'" if tag else "")
    return [r for r in c.search_runs([exp.experiment_id], filter_string=flt, max_results=50_000)
            if T.GROUP in r.data.tags and r.data.tags.get(T.KIND) is None]


def _baseline(spec: Any, against: str) -> list[Any]:
    """``EXPERIMENT`` or ``TAG=VALUE`` (runs of the spec's experiment with that tag, e.g.
    ``labrun.status=baseline``)."""
    if "=" in against:
        key, value = against.split("=", 1)
        runs = _runs(spec.experiment or spec.entry, (key.strip(), value.strip()))
    else:
        runs = _runs(against)
    if not runs:
        raise ConfigError(f"no FINISHED task runs match --against {against!r}; name an experiment, or a tag "
                          f"such as {T.STATUS}=baseline on runs of {spec.experiment or spec.entry!r}")
    return runs


def _compare(base: list[Any], new: list[Any], metric: str, rtol: float, atol: float,
             alpha: float) -> list[GroupCheck]:
    from analysis import stats
    from tracking.metrics import default_direction

    old = {(r.data.tags[T.GROUP], r.data.tags.get(T.SEED)): r for r in base}
    pairs: dict[str, list[tuple[float, float]]] = {}
    labels: dict[str, str] = {}
    for r in new:
        key = (r.data.tags[T.GROUP], r.data.tags.get(T.SEED))
        if key in old and metric in r.data.metrics and metric in old[key].data.metrics:
            pairs.setdefault(key[0], []).append((old[key].data.metrics[metric], r.data.metrics[metric]))
            labels[key[0]] = r.info.run_name or key[0]
    if not pairs:
        raise ConfigError(f"no run of the rerun pairs with a baseline run (same {T.GROUP} and seed) that "
                          f"logged {metric!r}; is the baseline from this spec, and the metric logged?")
    sign = 1.0 if default_direction(metric) == "max" else -1.0
    tests = {g: stats.paired_comparison([b for b, _ in v], [n for _, n in v]) for g, v in pairs.items()}
    holm = dict(zip(tests, stats.holm([_p(t) for t in tests.values()])))
    out = []
    for g, v in pairs.items():
        same = all(abs(n - b) <= atol + rtol * abs(b) for b, n in v)
        diff = sum(n - b for b, n in v) / len(v)
        out.append(GroupCheck(g, _short(labels[g]), len(v), sum(b for b, _ in v) / len(v),
                              sum(n for _, n in v) / len(v), None if same else _finite(holm[g]),
                              _verdict(same, v, tests[g], holm[g], sign * diff, alpha)))
    return sorted(out, key=lambda c: c.label)


def _p(test: Any) -> float:
    """The t-test's p, or 0 for a shift identical on every seed (systematic by construction)."""
    if test.n >= 2 and not math.isfinite(test.t_p) and test.mean_diff not in (0.0,) \
            and math.isfinite(test.mean_diff):
        return 0.0
    return test.t_p


def _verdict(same: bool, pairs: list, test: Any, p_holm: float, better_by: float, alpha: float) -> str:
    if same:
        return "same"
    if len(pairs) < 2:
        return "untested"
    if not (math.isfinite(p_holm) and p_holm < alpha):
        return "changed"
    return "better" if better_by > 0 else "worse"


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _short(name: str) -> str:
    return name.rsplit("-s", 1)[0] if "-s" in name else name


def render(checks: list[GroupCheck], metric: str, experiment: str) -> str:
    import pandas as pd

    from analysis.tables import to_text

    table = pd.DataFrame([(c.label, c.seeds, f"{c.base:.6g}", f"{c.new:.6g}", f"{c.new - c.base:+.3g}",
                           "—" if c.p_holm is None else f"{c.p_holm:.3g}", c.verdict) for c in checks],
                         columns=["group", "seeds", "baseline", "now", "now - baseline", "p (Holm)", "verdict"])
    bad = [c for c in checks if c.regression]
    tail = (f"REGRESSION in {len(bad)} of {len(checks)} groups" if bad else
            f"no regression in {len(checks)} groups") + f" on {metric} (rerun in experiment {experiment!r})"
    notes = ("\n'untested': the results changed but fewer than 2 paired seeds cannot say whether the change "
             "is systematic; add seeds to the spec." if any(c.verdict == "untested" for c in checks) else "")
    if any(c.verdict == "changed" for c in checks):
        notes += ("\n'changed': the results differ from the baseline, but not significantly for the worse over "
                  "these seeds; --fail-on change fails on any difference (a refactor that must not move results).")
    return to_text(table) + "\n" + tail + notes + "\n"


def log_check(experiment: str, text: str, checks: list[GroupCheck], against: str, metric: str) -> str:
    """The check as a run in ``<rerun's experiment> · analysis``, beside the cells it judged
    (not among them: its metric would take over their charts)."""
    from analysis.report import analysis_experiment
    from tracking import store

    c = store.client()
    exp_id = analysis_experiment(c, {store.experiment_id(experiment): experiment})
    tags = {T.ANALYSIS: "true", T.KIND: "check", "mlflow.note.content":
            f"labrun check of {metric} against {against}: "
            f"{sum(x.regression for x in checks)} regression(s) in {len(checks)} groups"}
    with runs.recorded(c, exp_id, name=f"check vs {against}"[:60], tags=tags, source="labrun check") as run_id:
        c.log_text(run_id, text, "check.txt")
        c.log_metric(run_id, "check.regressions", float(sum(x.regression for x in checks)))
    return run_id
