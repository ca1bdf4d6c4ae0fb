"""The ``labrun analyze`` pipeline: store -> frame -> stats, ranks, curves -> an analysis run.

Everything is computed and written to a temporary folder *before* the analysis run is
created, so bad input (unknown experiment, metric or group key; a single seed) ends with a
one-line error and nothing half-written in the store. The analysis run (tag
``labrun.analysis``) lives in the analysed experiment so the MLflow UI shows its tables
and figures beside the runs; ``runs_frame`` leaves such runs out of any later analysis.
Under ``mlflow run -e analyze`` the run MLflow created (``MLFLOW_RUN_ID``) is adopted.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from analysis import query, stats, tables
from tracking import env
from tracking import tags as T
from tracking.config import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from analysis.ranking import Ranking

MAX_FIGURE_GROUPS = 30     # beyond this a per-group figure is unreadable
CURVE_GROUPS = 10          # with more groups, the curves show the best ones


@dataclass
class AnalyzeOptions:
    experiments: list[str]
    metric: str
    direction: str | None = None
    group_by: list[str] = field(default_factory=list)
    seed_key: str | None = None
    """The column that says which seed a run is (default ``labrun.seed``), e.g. ``params.seed``."""
    value: str = "final"
    filters: list[str] = field(default_factory=list)
    compare: list[str] = field(default_factory=list)
    """Two group labels: test exactly this pair instead of the winner against each other group."""
    confidence: float = 0.95
    n_boot: int = stats.N_BOOT
    seed: int = stats.SEED
    curves: bool = True
    log_run: bool = True
    out_dir: Path | None = None
    tracking_uri: str | None = None


@dataclass
class AnalysisResult:
    text: str
    summary: "pd.DataFrame"
    rankings: dict
    paired: list
    excluded: dict[str, int]
    warnings: list[str]
    run_id: str | None
    artifacts: list[str]
    frame: "pd.DataFrame"


@dataclass
class _Table:
    """One table's cells, rendered at most once per format.

    The printed text, ``analysis.md`` and the ``*.md`` files show the very same rendering, so
    they cannot drift apart and nothing is formatted twice.
    """

    cells: "pd.DataFrame"

    @cached_property
    def text(self) -> str:
        return tables.to_text(self.cells)

    @cached_property
    def markdown(self) -> str:
        return tables.to_markdown(self.cells)


class _Ranked(NamedTuple):
    """One stratum's ranking as every output shows it."""

    name: str                  # the stratum: "all", or a condition
    ranking: "Ranking"
    line: str                  # the rank-consistency sentence
    table: _Table | None       # per-seed ranks; None when no seed ranks every group


@dataclass
class _Tables:
    """The tables of one analysis; built after the last step, when no number changes any more."""

    summary: _Table
    ranks: list[_Ranked]
    paired: _Table | None


@dataclass
class _Analysis:
    """One analysis as :func:`analyze` builds it, one step at a time.

    Each step fills in its fields; the renderers and writers read them all from here, so no
    function needs a dozen positionals and the text, the Markdown and the files agree.
    """

    opts: AnalyzeOptions
    direction: str
    frame: "pd.DataFrame"                  # the task runs read (after --filter)
    runs: "pd.DataFrame"                   # the analysed ones; _group adds a "group" column
    excluded: dict[str, int]               # reason -> how many runs were left out
    keys: list[str] = field(default_factory=list)            # the group-by columns
    default_group: bool = True
    order: list[str] = field(default_factory=list)           # group labels, first run first
    summary: "pd.DataFrame | None" = None  # one row per group; best first after _sort_summary
    strata: dict[str, "pd.DataFrame"] = field(default_factory=dict)
    rankings: dict[str, "Ranking"] = field(default_factory=dict)
    paired: list[stats.Paired] = field(default_factory=list)
    holm_p: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tables: _Tables | None = None
    text: str = ""

    @property
    def value_col(self) -> str:
        return f"{self.opts.value}.{self.opts.metric}"

    @property
    def exps(self) -> str:
        return ", ".join(self.opts.experiments)


# ----------------------------------------------------------------------------- selection

def _select(frame: "pd.DataFrame", value_col: str, metric: str, exps: str) -> tuple["pd.DataFrame", dict[str, int]]:
    """FINISHED runs that logged the metric, one per fingerprint; the rest counted by reason."""
    excluded: dict[str, int] = {}
    if frame.empty:
        raise ConfigError(f"experiment {exps} has no task runs (runs with a {T.TASK} tag) to analyse")
    withdrawn = _tagged(frame, T.WITHDRAWN)
    if withdrawn.any():  # a sweep worker's claim that lost to another's: never a result
        excluded["withdrawn duplicate claims"] = int(withdrawn.sum())
        frame = frame[~withdrawn]
    diverged = diverged_mask(frame)
    if diverged.any():
        excluded["diverged runs (non-finite training loss; per group in the warnings)"] = int(diverged.sum())
        frame = frame[~diverged]
    for status, count in frame.loc[frame["status"] != "FINISHED", "status"].value_counts().items():
        excluded[f"{str(status).lower()} run{'s' if count != 1 else ''}"] = int(count)
    done = frame[frame["status"] == "FINISHED"]
    if done.empty:
        what = ", ".join(f"{n} {k}" for k, n in excluded.items())
        raise ConfigError(f"experiment {exps} has no FINISHED runs to analyse ({what})")
    if T.STATUS in done.columns:
        marked = done[T.STATUS] == "failed"
        if marked.any():
            excluded[f"runs marked {T.STATUS}=failed"] = int(marked.sum())
            done = done[~marked]
    if value_col not in done.columns or done[value_col].notna().sum() == 0:
        import difflib

        logged = sorted(c[len("final."):] for c in frame.columns if c.startswith("final."))
        close = difflib.get_close_matches(metric, logged, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"logged metrics: {', '.join(logged[:12]) or 'none'}"
        raise ConfigError(f"metric {metric!r} was not logged by any finished run of {exps}; {hint}")
    missing = done[value_col].isna()
    if missing.any():
        excluded[f"finished runs without {metric}"] = int(missing.sum())
        done = done[~missing]
    if T.FINGERPRINT in done.columns:
        dup = done.duplicated(T.FINGERPRINT, keep="last") & done[T.FINGERPRINT].notna()
        if dup.any():  # frames are sorted by start time: the newest repeat of identical work wins
            excluded[f"older repeats of identical runs (same {T.FINGERPRINT})"] = int(dup.sum())
            done = done[~dup]
    return done.reset_index(drop=True), excluded


def _tagged(frame: "pd.DataFrame", tag: str) -> "pd.Series":
    import pandas as pd

    if tag not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame[tag].notna() & (frame[tag].astype(str) != "")


def diverged_mask(frame: "pd.DataFrame") -> "pd.Series":
    """Runs whose watched training loss became non-finite: FAILED with ``NonFinite: ...``
    (``divergence.on_nonfinite=fail``) or FINISHED with ``labrun.diverged`` (``record``)."""
    mask = _tagged(frame, T.DIVERGED)
    if T.FAILURE in frame.columns:
        mask = mask | frame[T.FAILURE].astype(str).str.startswith("NonFinite:")
    return mask


def _diverged_by_group(a: "_Analysis") -> None:
    """Divergence is a result too: say how often each group diverged, beside its statistics."""
    frame = a.frame[~_tagged(a.frame, T.WITHDRAWN)]
    gone = frame[diverged_mask(frame)]
    if gone.empty or any(k not in gone.columns for k in a.keys):
        return
    counts = _labels(gone, a.keys, a.default_group).value_counts()
    total = _labels(frame, a.keys, a.default_group).value_counts()
    parts = [f"{g}: {n} of {int(total.get(g, n))}" for g, n in counts.items()]
    a.warnings.append("diverged runs, left out of the statistics (group: diverged of all its runs): "
                      + "; ".join(parts))


def _labels(frame: "pd.DataFrame", keys: list[str], default: bool) -> "pd.Series":
    """A readable name per group: method (/condition) for labrun.group, else key=value."""
    import pandas as pd

    def show(col: str, v: Any) -> str:
        text = tables.num(v) if isinstance(v, float) else str(v)
        return f"{col[len('params.'):]}={text}" if col.startswith("params.") else text

    if not default:
        return frame[keys].apply(lambda r: "/".join(show(k, r[k]) for k in keys), axis=1).astype(object)
    parts = [T.METHOD] if T.METHOD in frame.columns else []
    if T.CONDITION in frame.columns and frame[T.CONDITION].nunique() > 1:
        parts.append(T.CONDITION)
    key = keys[0]
    base = (frame[parts].astype(str).agg("/".join, axis=1) if parts
            else frame[key].astype(str).str[:8]).astype(object)
    labels = pd.Series(base, index=frame.index, dtype=object)
    per_group = pd.DataFrame({"label": base, "key": frame[key]}).drop_duplicates("key")
    params = [c for c in frame.columns if c.startswith("params.") and c != "params.seed"]
    firsts = frame.groupby(key, sort=False)[params].first() if params else None
    rename: dict[Any, str] = {}
    for label, clash in per_group.groupby("label"):
        if len(clash) < 2:
            continue
        rows = firsts.loc[list(clash["key"])] if firsts is not None else None
        varying = [c for c in params if rows[c].astype(str).nunique() > 1] if rows is not None else []
        for g in clash["key"]:
            extra = ", ".join(show(c, rows.at[g, c]) for c in varying[:3]) if varying else str(g)[:8]
            rename[g] = f"{label} ({extra})"
    if rename:
        labels = frame[key].map(rename).astype(object).where(frame[key].isin(list(rename)), labels)
    return labels


# ----------------------------------------------------------------------------- pipeline

def analyze(opts: AnalyzeOptions) -> AnalysisResult:
    """Run the whole analysis; raises ConfigError (one line) for anything the user can fix.

    Every step that can refuse the input runs before the first file is written, so a refusal
    leaves nothing behind; the text is rendered once and both printed and logged.
    """
    a = _load(opts, _direction(opts))
    _seed_column(a)
    _group(a)
    _diverged_by_group(a)
    _describe(a)
    _rank(a)
    _sort_summary(a)
    _paired_tests(a)
    _warn_many_groups(a)
    a.tables = _tabulate(a)
    a.text = _render_text(a)
    with tempfile.TemporaryDirectory(prefix="labrun-analysis-") as tmp:
        out = Path(tmp)
        artifacts = _write(out, a)
        if opts.out_dir is not None:
            shutil.copytree(out, opts.out_dir, dirs_exist_ok=True)
        run_id = _log_run(out, a) if opts.log_run else None
    return AnalysisResult(a.text, a.summary, a.rankings, a.paired, a.excluded, a.warnings, run_id,
                          sorted(artifacts), a.runs)


def _direction(opts: AnalyzeOptions) -> str:
    """Refuse bad options before the store is read; the direction comes from the name unless given."""
    from tracking.metrics import default_direction

    if opts.value not in ("final", "best"):
        raise ConfigError(f"--value must be final or best, got {opts.value!r}")
    if opts.direction not in (None, "min", "max"):
        raise ConfigError(f"--direction must be min or max, got {opts.direction!r}")
    if not 0 < opts.confidence < 1:
        raise ConfigError(f"--confidence must be between 0 and 1, got {opts.confidence}")
    return opts.direction or default_direction(opts.metric)


def _load(opts: AnalyzeOptions, direction: str) -> _Analysis:
    """The runs worth analysing; only this metric's history is scanned (reading the store is the slow part)."""
    exps = ", ".join(opts.experiments)
    frame = query.runs_frame(opts.experiments, metrics=[opts.metric], directions={opts.metric: direction},
                             tracking_uri=opts.tracking_uri)
    if opts.filters:
        before = len(frame)
        frame = query.apply_filters(frame, opts.filters)
        if frame.empty:
            raise ConfigError(f"no runs of {exps} match --filter {' '.join(opts.filters)} "
                              f"({before} runs before filtering)")
    runs, excluded = _select(frame, f"{opts.value}.{opts.metric}", opts.metric, exps)
    return _Analysis(opts, direction, frame, runs, excluded)


def _seed_column(a: _Analysis) -> None:
    """``--seed-key params.seed``: another project's seed column plays ``labrun.seed``'s part."""
    if not a.opts.seed_key:
        return
    import pandas as pd

    col = query.resolve_column(a.runs, a.opts.seed_key, what="seed key")
    a.runs = a.runs.copy()
    seeds = pd.to_numeric(a.runs[col], errors="coerce")
    a.runs[T.SEED] = seeds if seeds.notna().all() else a.runs[col]


def _group(a: _Analysis) -> None:
    """By default a group is a cell (the seeds of one config), which is what a paper compares."""
    a.default_group = not a.opts.group_by
    if a.default_group:
        a.keys = [T.GROUP if T.GROUP in a.runs.columns else T.METHOD]
        if a.keys[0] not in a.runs.columns:
            raise ConfigError(f"these runs have neither {T.GROUP} nor {T.METHOD}; pass --group-by KEY")
    else:
        a.keys = [query.resolve_column(a.runs, k, what="group key") for k in a.opts.group_by]
    a.runs = a.runs.copy()
    a.runs["group"] = _labels(a.runs, a.keys, a.default_group)
    a.order = list(dict.fromkeys(a.runs["group"]))


def _describe(a: _Analysis) -> None:
    """Per-group statistics; with one run per group there is no spread to report, so refuse."""
    a.summary = stats.group_stats(a.runs, a.value_col, "group", confidence=a.opts.confidence,
                                  n_boot=a.opts.n_boot, seed=a.opts.seed)
    if int(a.summary["n"].max()) < 2:
        raise ConfigError(f"every group of {a.exps} has a single run (single seed): mean ± std and CIs need "
                          f"at least 2 seeds per group; run more seeds or group by fewer keys")
    a.warnings += _small_n_lines(a.summary)


def _rank(a: _Analysis) -> None:
    """Seeds rank the groups, within each condition when conditions differ.

    A method may win under one condition and lose under another; pooled ranks would hide it.
    """
    from analysis import ranking as rk

    runs = a.runs
    a.strata = {"all": runs}
    if a.default_group and T.CONDITION in runs.columns and runs[T.CONDITION].nunique() > 1:
        a.strata = {str(c): part for c, part in runs.groupby(T.CONDITION, sort=True)}
    if T.SEED not in runs.columns:
        a.warnings.append(f"runs have no {T.SEED} tag: no per-seed ranking or paired tests")
        return
    multi = len(a.strata) > 1
    for name, part in a.strata.items():
        if part["group"].nunique() >= 2:
            r = a.rankings[name] = rk.rank_methods(part, a.value_col, item="group", block=T.SEED,
                                                   direction=a.direction)
            a.warnings += [f"[{name}] {w}" if multi else w for w in r.warnings]


def _sort_summary(a: _Analysis) -> None:
    """Best group first (within each condition): the order every table and figure shows."""
    summary = a.summary
    mean_rank: dict[str, float] = {}
    for r in a.rankings.values():
        mean_rank.update({k: float(v) for k, v in r.mean_rank.items()})
    summary["mean_rank"] = summary["group"].map(mean_rank)
    better = summary["mean"] if a.direction == "min" else -summary["mean"]
    by = ["_key"]
    if len(a.strata) > 1:   # conditions apart, best first within each
        first_condition = a.runs.drop_duplicates("group").set_index("group")[T.CONDITION].astype(str)
        summary["_cond"] = summary["group"].map(first_condition)
        by = ["_cond", "_key"]
    summary = summary.assign(_key=better).sort_values(by, kind="stable").drop(columns=by)
    a.summary = summary.reset_index(drop=True)


def _paired_tests(a: _Analysis) -> None:
    """The --compare pair, else each stratum's winner against the others; Holm over them all."""
    if a.opts.compare:
        _compare_pair(a)
    else:
        _winner_pairs(a)
    few_pairs = sorted({p.n for p in a.paired if any("cannot reach" in w for w in p.warnings)})
    if few_pairs:   # one line for all of them, not one per comparison
        a.warnings.append(f"paired tests over {'/'.join(map(str, few_pairs))} shared seeds: a two-sided "
                          "Wilcoxon test cannot reach p < 0.05 below 6 pairs (the paired t-test can)")
    a.holm_p = stats.holm([p.t_p for p in a.paired])


def _compare_pair(a: _Analysis) -> None:
    """The user named the question: refuse a label that is not a group rather than test nothing."""
    groups = list(a.summary["group"])
    if len(a.opts.compare) != 2:
        raise ConfigError(f"--compare takes two group labels, got {len(a.opts.compare)}")
    for label in a.opts.compare:
        if label not in groups:
            raise ConfigError(f"--compare: no group {label!r}; groups: {', '.join(groups[:12])}")
    if T.SEED not in a.runs.columns:
        raise ConfigError(f"--compare needs runs with a {T.SEED} tag to pair them")
    _add_pair(a, _per_seed(a.runs, a.value_col), *a.opts.compare)


def _winner_pairs(a: _Analysis) -> None:
    """Is the winner better than each rival? Asked per stratum, as the ranks were."""
    by_mean = list(a.summary["group"])
    for name, r in a.rankings.items():
        if r.winner is None:
            continue
        table = _per_seed(a.strata[name], a.value_col)
        others = [g for g in by_mean if g != r.winner and g in table.columns]
        if len(others) > MAX_FIGURE_GROUPS - 1:   # the closest ones are the questions worth asking
            a.warnings.append(f"paired tests against the {MAX_FIGURE_GROUPS - 1} closest of {len(others)} "
                              "other groups only")
            others = others[:MAX_FIGURE_GROUPS - 1]
        for other in others:
            _add_pair(a, table, r.winner, other)


def _per_seed(runs: "pd.DataFrame", value_col: str) -> "pd.DataFrame":
    """Seeds x groups; repeats of one group and seed are averaged so that each seed is one pair."""
    return runs.pivot_table(index=T.SEED, columns="group", values=value_col, aggfunc="mean")


def _add_pair(a: _Analysis, table: "pd.DataFrame", x: str, y: str) -> None:
    both = table[[x, y]].dropna()
    p = stats.paired_comparison(both[x], both[y], labels=(x, y), confidence=a.opts.confidence)
    a.paired.append(p)
    a.warnings += [w for w in p.warnings if "cannot reach" not in w]   # summed up in _paired_tests


def _warn_many_groups(a: _Analysis) -> None:
    """Say what the figures leave out, so a missing figure is not taken for a failure."""
    if len(a.order) > MAX_FIGURE_GROUPS:
        a.warnings.append(f"{len(a.order)} groups: the best-vs-final and rank figures are skipped (more than "
                          f"{MAX_FIGURE_GROUPS}) and the curves show the best {CURVE_GROUPS}; narrow with "
                          "--filter or --group-by")


def _small_n_lines(summary: "pd.DataFrame") -> list[str]:
    """One line per kind of small group, naming a few, instead of one line per group."""
    lines = []
    for low, high, what in ((0, 1, "a single run: no std or CI"),
                            (2, 4, "fewer than 5 seeds: wide CIs, unreliable bootstrap CI")):
        part = summary[(summary["n"] >= low) & (summary["n"] <= high)]
        if len(part):
            names = ", ".join(f"{g} (n={n})" for g, n in zip(part["group"][:5], part["n"][:5]))
            more = f" and {len(part) - 5} more" if len(part) > 5 else ""
            lines.append(f"{len(part)} group(s) with {what}: {names}{more}")
    return lines


# ----------------------------------------------------------------------------- cells

def _tabulate(a: _Analysis) -> _Tables:
    """Every table's cells, built once after the last step, for all the outputs to share."""
    multi = len(a.rankings) > 1
    ranks = [_Ranked(name, r, _consistency_line(name, r, multi), _Table(_rank_cells(r)) if r.n_seeds else None)
             for name, r in a.rankings.items()]
    paired = _Table(_paired_cells(a.paired, a.holm_p)) if a.paired else None
    return _Tables(_Table(_summary_cells(a.summary, a.opts.confidence)), ranks, paired)


def _summary_cells(summary: "pd.DataFrame", conf: float) -> "pd.DataFrame":
    import pandas as pd

    pct = f"{conf * 100:g}%"
    return pd.DataFrame({
        "group": summary["group"].astype(str),
        "n": summary["n"].astype(int).astype(str),
        "mean ± std": [tables.pm(m, s) for m, s in zip(summary["mean"], summary["std"])],
        "sem": [tables.num(x, 3) for x in summary["sem"]],
        f"{pct} CI (t)": [tables.interval(a, b) for a, b in zip(summary["ci_low"], summary["ci_high"])],
        f"{pct} CI (bootstrap)": [tables.interval(a, b) for a, b in zip(summary["boot_low"], summary["boot_high"])],
        "mean rank": [tables.num(x, 3) for x in summary["mean_rank"]],
    })


def _rank_cells(r: "Ranking") -> "pd.DataFrame":
    t = r.table()
    t.insert(0, "group", t.index.astype(str))
    t["mean_rank"] = [tables.num(x, 3) for x in t["mean_rank"]]
    for c in t.columns[3:]:
        t[c] = [tables.num(float(x)) for x in t[c]]
    return t.rename(columns={"mean_rank": "mean rank", "wins": "rank-1 seeds"}).reset_index(drop=True).astype(str)


def _paired_cells(paired: list[stats.Paired], holm_p: list[float]) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame({
        "comparison": [f"{p.a} − {p.b}" for p in paired],
        "n pairs": [str(p.n) for p in paired],
        "mean diff": [tables.num(p.mean_diff) for p in paired],
        "95% CI of diff": [tables.interval(p.ci_low, p.ci_high) for p in paired],
        "paired t p": [tables.pvalue(p.t_p) for p in paired],
        "Holm p": [tables.pvalue(x) for x in holm_p],
        "Wilcoxon p": [tables.pvalue(p.wilcoxon_p) for p in paired],
        "effect d_z": [tables.num(p.effect_size_dz, 3) for p in paired],
    })


def _consistency_line(name: str, r: "Ranking", multi: bool) -> str:
    head = f"[{name}] " if multi else ""
    if r.n_seeds < 2:
        return f"{head}rank consistency: needs 2+ seeds shared by every group (have {r.n_seeds})"
    return (f"{head}rank consistency over {r.n_seeds} seeds x {r.n_methods} groups: Kendall's W = "
            f"{tables.num(r.kendall_w, 3)} (chi2 = {tables.num(r.chi2, 3)}, p = {tables.pvalue(r.p_value)}); "
            f"winner {r.winner} is best on {r.winner_wins}/{r.n_seeds} seeds")


def _excluded_line(excluded: dict[str, int]) -> str:
    return "; ".join(f"{n} {what} excluded" for what, n in excluded.items())


def _header(a: _Analysis) -> list[str]:
    better = "lower" if a.direction == "min" else "higher"
    return [f"experiment {a.exps}: {len(a.runs)} FINISHED runs analysed",
            f"{a.opts.metric} ({a.opts.value} value, {better} is better), grouped by {', '.join(a.keys)}"]


# ----------------------------------------------------------------------------- outputs

def _render_text(a: _Analysis) -> str:
    """What ``labrun analyze`` prints (and logs as ``analysis.txt``)."""
    t = a.tables
    lines = _header(a)
    if a.excluded:
        lines.append(_excluded_line(a.excluded))
    lines += ["", t.summary.text, ""]
    for block in t.ranks:
        lines.append(block.line)
        if block.table is not None:
            lines += [block.table.text, ""]
    if t.paired is not None:
        what = "A − B" if a.opts.compare else "winner − other"
        lines += [f"paired comparisons ({what}, over shared seeds):", t.paired.text, ""]
    if a.warnings:
        lines += ["warnings:"] + [f"  - {w}" for w in dict.fromkeys(a.warnings)]
    return "\n".join(lines).rstrip()


def _render_markdown(a: _Analysis, figures: list[str]) -> str:
    """``analysis.md``: the whole analysis on one page, also the analysis run's MLflow description."""
    t = a.tables
    md = ["# Analysis: " + a.opts.metric, "", *_header(a)]
    if a.excluded:
        md.append(_excluded_line(a.excluded))
    md += ["", t.summary.markdown]
    for block in t.ranks:
        md.append(block.line)
        if block.table is not None:
            md += ["", block.table.markdown]
    if t.paired is not None:
        md += ["", "## Paired comparisons", "", t.paired.markdown]
    if a.warnings:
        md += ["", "## Warnings", ""] + [f"- {w}" for w in dict.fromkeys(a.warnings)]
    md += ["", "## Figures", ""] + [f"![{p}]({p})" for p in figures if p.endswith(".png")]
    return "\n".join(md) + "\n"


def _write(out: Path, a: _Analysis) -> list[str]:
    """All artifacts into ``out``; returns their relative paths."""
    written = _write_tables(out, a)
    a.runs.to_csv(out / "runs.csv", index=False)
    (out / "stats.json").write_text(json.dumps(_stats_doc(a), indent=2, default=_f))
    figures = _figures(out, a)
    (out / "analysis.md").write_text(_render_markdown(a, figures))
    (out / "analysis.txt").write_text(a.text + "\n")
    return written + ["runs.csv", "stats.json", *figures, "analysis.md", "analysis.txt"]


def _write_tables(out: Path, a: _Analysis) -> list[str]:
    """Each table as Markdown (the UI) and LaTeX (the paper)."""
    opts, t = a.opts, a.tables
    better = "lower" if a.direction == "min" else "higher"
    caption = (f"{opts.metric} ({opts.value}; {better} is better): "
               f"mean ± std over seeds, {opts.confidence * 100:g}% CIs")
    (out / "table.md").write_text(t.summary.markdown)
    (out / "table.tex").write_text(tables.to_latex(t.summary.cells, caption=caption, bold_row=0,
                                                   label="tab:" + opts.metric.replace(".", "-")))
    written = ["table.md", "table.tex"]
    if t.ranks:
        rank_md, rank_tex = [], []
        for block in t.ranks:
            rank_md.append(block.line + "\n")
            if block.table is not None:
                w = tables.num(block.ranking.kendall_w, 3)
                rank_md.append(block.table.markdown)
                rank_tex.append(tables.to_latex(block.table.cells, caption=f"Per-seed ranks on {opts.metric} "
                                                                            f"({block.name}); Kendall's W = {w}"))
        (out / "ranks.md").write_text("\n".join(rank_md))
        (out / "ranks.tex").write_text("\n".join(rank_tex))
        written += ["ranks.md", "ranks.tex"]
    if t.paired is not None:
        (out / "paired.md").write_text(t.paired.markdown)
        paired_caption = f"Paired comparisons on {opts.metric}"
        (out / "paired.tex").write_text(tables.to_latex(t.paired.cells, caption=paired_caption))
        written += ["paired.md", "paired.tex"]
    return written


def _stats_doc(a: _Analysis) -> dict[str, Any]:
    """``stats.json``: every number of the analysis, for scripts rather than readers."""
    opts = a.opts
    return {
        "experiments": opts.experiments, "metric": opts.metric, "value": opts.value, "direction": a.direction,
        "group_by": a.keys, "excluded": a.excluded, "warnings": list(dict.fromkeys(a.warnings)),
        "groups": json.loads(a.summary.to_json(orient="records")),
        "rankings": {name: {"kendall_w": _f(r.kendall_w), "chi2": _f(r.chi2), "p_value": _f(r.p_value),
                            "winner": r.winner, "winner_wins": r.winner_wins, "n_seeds": r.n_seeds,
                            "mean_rank": {k: _f(v) for k, v in r.mean_rank.items()},
                            "pairwise_win_rate": json.loads(r.pairwise.to_json())}
                     for name, r in a.rankings.items()},
        "paired": [{**p.as_dict(), "holm_p": _f(h)} for p, h in zip(a.paired, a.holm_p)],
    }


def _f(x: Any) -> Any:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return None if math.isnan(x) else x


def _figures(out: Path, a: _Analysis) -> list[str]:
    """Best-vs-final and rank heatmaps while groups stay readable (<= MAX_FIGURE_GROUPS), and curves."""
    from analysis import curves as cv

    opts, runs = a.opts, a.runs
    written: list[str] = []
    fig_dir = out / "figures"
    slug = opts.metric.replace(".", "_")
    ordered = list(a.summary["group"])
    if len(ordered) <= MAX_FIGURE_GROUPS:
        final = stats.group_stats(runs, f"final.{opts.metric}", "group", n_boot=0)
        best = stats.group_stats(runs, f"best.{opts.metric}", "group", n_boot=0)
        final = final.set_index("group").reindex(ordered).reset_index()
        best = best.set_index("group").reindex(ordered).reset_index()
        cv.plot_best_vs_final(final, best, opts.metric, fig_dir / f"best_vs_final_{slug}.png")
        written.append(f"figures/best_vs_final_{slug}.png")
    for name, r in a.rankings.items():
        if r.n_seeds and r.n_methods <= MAX_FIGURE_GROUPS and r.n_seeds <= 60:
            suffix = "" if len(a.rankings) == 1 else "_" + "".join(ch if ch.isalnum() else "_" for ch in name)
            cv.plot_rank_heatmap(r.ranks[list(r.mean_rank.sort_values(kind="stable").index)], opts.metric,
                                 fig_dir / f"ranks_{slug}{suffix}.png")
            written.append(f"figures/ranks_{slug}{suffix}.png")
    if opts.curves:
        written += _curve_figure(out, a, ordered)
    return written


def _curve_figure(out: Path, a: _Analysis, ordered: list[str]) -> list[str]:
    """Mean ± std bands; the histories are the one store read after the frame, so only shown groups'."""
    from analysis import curves as cv

    metric, runs = a.opts.metric, a.runs
    slug = metric.replace(".", "_")
    few = len(ordered) <= MAX_FIGURE_GROUPS
    shown = runs if few else runs[runs["group"].isin(ordered[:CURVE_GROUPS])]
    curves = query.curves_frame(shown["run_id"], [metric], tracking_uri=a.opts.tracking_uri)
    bands = cv.band_frame(curves, dict(zip(shown["run_id"], shown["group"])), metric)
    if bands["step"].nunique() <= 1:
        return []
    title = None if few else f"{metric}: best {CURVE_GROUPS} of {len(ordered)} groups, mean ± std"
    cv.plot_bands(bands, metric, out / "figures" / f"curves_{slug}.png",
                  order=ordered[:len(ordered) if few else CURVE_GROUPS], title=title)
    bands.to_csv(out / f"curves_{slug}.csv", index=False)
    return [f"figures/curves_{slug}.png", f"curves_{slug}.csv"]


def _log_run(out: Path, a: _Analysis) -> str:
    """Create (or adopt) the analysis run and log the folder; FINISHED only when all landed."""
    from mlflow.entities import RunTag
    from mlflow.utils import mlflow_tags

    opts = a.opts
    client, _ = query._client(opts.tracking_uri)
    exp_ids = query.resolve_experiments(client, opts.experiments)
    run_id = env.MLFLOW_RUN_ID.get()
    adopted = bool(run_id)
    if not adopted:
        run = client.create_run(next(iter(exp_ids)), run_name=f"analysis {opts.metric}",
                                tags={mlflow_tags.MLFLOW_SOURCE_TYPE: "LOCAL",
                                      mlflow_tags.MLFLOW_SOURCE_NAME: "labrun analyze"})
        run_id = run.info.run_id
    tags = {**_run_tags(a), mlflow_tags.MLFLOW_RUN_NOTE: (out / "analysis.md").read_text()[:4000]}
    try:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        client.log_artifacts(run_id, str(out))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    if not adopted:
        client.set_terminated(run_id, "FINISHED")
    return run_id


def _run_tags(a: _Analysis) -> dict[str, str]:
    """What was analysed, as tags: the runs list of the UI can then filter analysis runs by it."""
    opts = a.opts
    return {T.ANALYSIS: opts.metric, T.analysis("experiments"): ",".join(opts.experiments),
            T.analysis("group_by"): ",".join(a.keys), T.analysis("value"): opts.value,
            T.analysis("direction"): a.direction, T.analysis("filters"): " & ".join(opts.filters),
            T.analysis("runs"): str(len(a.frame))}
