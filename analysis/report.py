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
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis import query, stats, tables
from tracking.config import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

SEED_TAG = "labrun.seed"
GROUP_TAG = "labrun.group"
METHOD_TAG = "labrun.method"
CONDITION_TAG = "labrun.condition"
FINGERPRINT_TAG = "labrun.fingerprint"
MAX_FIGURE_GROUPS = 30     # beyond this a per-group figure is unreadable
CURVE_GROUPS = 10          # with more groups, the curves show the best ones


@dataclass
class AnalyzeOptions:
    experiments: list[str]
    metric: str
    direction: str | None = None
    group_by: list[str] = field(default_factory=list)
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


# ----------------------------------------------------------------------------- selection

def _select(frame: "pd.DataFrame", value_col: str, metric: str, exps: str) -> tuple["pd.DataFrame", dict[str, int]]:
    """FINISHED runs that logged the metric, one per fingerprint; the rest counted by reason."""
    excluded: dict[str, int] = {}
    if frame.empty:
        raise ConfigError(f"experiment {exps} has no task runs (runs with a labrun.task tag) to analyse")
    for status, count in frame.loc[frame["status"] != "FINISHED", "status"].value_counts().items():
        excluded[f"{str(status).lower()} run{'s' if count != 1 else ''}"] = int(count)
    done = frame[frame["status"] == "FINISHED"]
    if done.empty:
        what = ", ".join(f"{n} {k}" for k, n in excluded.items())
        raise ConfigError(f"experiment {exps} has no FINISHED runs to analyse ({what})")
    if "labrun.status" in done.columns:
        marked = done["labrun.status"] == "failed"
        if marked.any():
            excluded["runs marked labrun.status=failed"] = int(marked.sum())
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
    if FINGERPRINT_TAG in done.columns:
        dup = done.duplicated(FINGERPRINT_TAG, keep="last") & done[FINGERPRINT_TAG].notna()
        if dup.any():  # frames are sorted by start time: the newest repeat of identical work wins
            excluded["older repeats of identical runs (same labrun.fingerprint)"] = int(dup.sum())
            done = done[~dup]
    return done.reset_index(drop=True), excluded


def _labels(frame: "pd.DataFrame", keys: list[str], default: bool) -> "pd.Series":
    """A readable name per group: method (/condition) for labrun.group, else key=value."""
    import pandas as pd

    def show(col: str, v: Any) -> str:
        text = tables.num(v) if isinstance(v, float) else str(v)
        return f"{col[len('params.'):]}={text}" if col.startswith("params.") else text

    if not default:
        return frame[keys].apply(lambda r: "/".join(show(k, r[k]) for k in keys), axis=1).astype(object)
    parts = [METHOD_TAG] if METHOD_TAG in frame.columns else []
    if CONDITION_TAG in frame.columns and frame[CONDITION_TAG].nunique() > 1:
        parts.append(CONDITION_TAG)
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
    """Run the whole analysis; raises ConfigError (one line) for anything the user can fix."""
    from tracking.metrics import default_direction

    from analysis import ranking as rk

    if opts.value not in ("final", "best"):
        raise ConfigError(f"--value must be final or best, got {opts.value!r}")
    if opts.direction not in (None, "min", "max"):
        raise ConfigError(f"--direction must be min or max, got {opts.direction!r}")
    if not 0 < opts.confidence < 1:
        raise ConfigError(f"--confidence must be between 0 and 1, got {opts.confidence}")
    direction = opts.direction or default_direction(opts.metric)
    exps = ", ".join(opts.experiments)
    frame = query.runs_frame(opts.experiments, metrics=[opts.metric], directions={opts.metric: direction},
                             tracking_uri=opts.tracking_uri)
    if opts.filters:
        before = len(frame)
        frame = query.apply_filters(frame, opts.filters)
        if frame.empty:
            raise ConfigError(f"no runs of {exps} match --filter {' '.join(opts.filters)} "
                              f"({before} runs before filtering)")
    value_col = f"{opts.value}.{opts.metric}"
    runs, excluded = _select(frame, value_col, opts.metric, exps)

    default_group = not opts.group_by
    if default_group:
        keys = [GROUP_TAG if GROUP_TAG in runs.columns else METHOD_TAG]
        if keys[0] not in runs.columns:
            raise ConfigError("these runs have neither labrun.group nor labrun.method; pass --group-by KEY")
    else:
        keys = [query.resolve_column(runs, k, what="group key") for k in opts.group_by]
    runs = runs.copy()
    runs["group"] = _labels(runs, keys, default_group)
    order = list(dict.fromkeys(runs["group"]))

    summary = stats.group_stats(runs, value_col, "group", confidence=opts.confidence, n_boot=opts.n_boot,
                                seed=opts.seed)
    if int(summary["n"].max()) < 2:
        raise ConfigError(f"every group of {exps} has a single run (single seed): mean ± std and CIs need "
                          f"at least 2 seeds per group; run more seeds or group by fewer keys")
    warnings = _small_n_lines(summary)

    # ranking: seeds rank the groups, within each condition when conditions differ
    rankings: dict[str, rk.Ranking] = {}
    strata = [("all", runs)]
    if (default_group and CONDITION_TAG in runs.columns and runs[CONDITION_TAG].nunique() > 1):
        strata = [(str(c), part) for c, part in runs.groupby(CONDITION_TAG, sort=True)]
    if SEED_TAG in runs.columns:
        for name, part in strata:
            if part["group"].nunique() >= 2:
                rankings[name] = rk.rank_methods(part, value_col, item="group", block=SEED_TAG,
                                                 direction=direction)
                warnings += [f"[{name}] {w}" if len(strata) > 1 else w for w in rankings[name].warnings]
    else:
        warnings.append("runs have no labrun.seed tag: no per-seed ranking or paired tests")

    mean_rank: dict[str, float] = {}
    for r in rankings.values():
        mean_rank.update({k: float(v) for k, v in r.mean_rank.items()})
    summary["mean_rank"] = summary["group"].map(mean_rank)
    better = summary["mean"] if direction == "min" else -summary["mean"]
    by = ["_key"]
    if len(strata) > 1:   # conditions apart, best first within each
        first_condition = runs.drop_duplicates("group").set_index("group")[CONDITION_TAG].astype(str)
        summary["_cond"] = summary["group"].map(first_condition)
        by = ["_cond", "_key"]
    summary = summary.assign(_key=better).sort_values(by, kind="stable").drop(columns=by)
    summary = summary.reset_index(drop=True)

    # paired tests: each stratum's winner against every other group, on the seeds both have
    paired: list[stats.Paired] = []
    order_by_mean = list(summary["group"])
    if opts.compare:
        if len(opts.compare) != 2:
            raise ConfigError(f"--compare takes two group labels, got {len(opts.compare)}")
        for label in opts.compare:
            if label not in order_by_mean:
                raise ConfigError(f"--compare: no group {label!r}; groups: {', '.join(order_by_mean[:12])}")
        if SEED_TAG not in runs.columns:
            raise ConfigError("--compare needs runs with a labrun.seed tag to pair them")
        a, b = opts.compare
        table = runs.pivot_table(index=SEED_TAG, columns="group", values=value_col, aggfunc="mean")
        both = table[[a, b]].dropna()
        p = stats.paired_comparison(both[a], both[b], labels=(a, b), confidence=opts.confidence)
        paired.append(p)
        warnings += [w for w in p.warnings if "cannot reach" not in w]
    for name, r in rankings.items():
        if r.winner is None or opts.compare:
            continue
        part = dict(strata)[name]
        table = part.pivot_table(index=SEED_TAG, columns="group", values=value_col, aggfunc="mean")
        others = [g for g in order_by_mean if g != r.winner and g in table.columns]
        if len(others) > MAX_FIGURE_GROUPS - 1:
            warnings.append(f"paired tests against the {MAX_FIGURE_GROUPS - 1} closest of {len(others)} "
                            "other groups only")
            others = others[:MAX_FIGURE_GROUPS - 1]
        for other in others:
            both = table[[r.winner, other]].dropna()
            p = stats.paired_comparison(both[r.winner], both[other], labels=(r.winner, other),
                                        confidence=opts.confidence)
            paired.append(p)
            warnings += [w for w in p.warnings if "cannot reach" not in w]
    few_pairs = sorted({p.n for p in paired if any("cannot reach" in w for w in p.warnings)})
    if few_pairs:
        warnings.append(f"paired tests over {'/'.join(map(str, few_pairs))} shared seeds: a two-sided Wilcoxon "
                        "test cannot reach p < 0.05 below 6 pairs (the paired t-test can)")
    holm_p = stats.holm([p.t_p for p in paired])
    if len(order) > MAX_FIGURE_GROUPS:
        warnings.append(f"{len(order)} groups: the best-vs-final and rank figures are skipped (more than "
                        f"{MAX_FIGURE_GROUPS}) and the curves show the best {CURVE_GROUPS}; narrow with "
                        "--filter or --group-by")

    with tempfile.TemporaryDirectory(prefix="labrun-analysis-") as tmp:
        out = Path(tmp)
        artifacts = _write(out, opts, runs, summary, rankings, paired, holm_p, excluded, warnings,
                           direction, keys, order, value_col)
        text = _render_text(opts, runs, summary, rankings, paired, holm_p, excluded, warnings, direction, keys)
        (out / "analysis.txt").write_text(text + "\n")
        artifacts.append("analysis.txt")
        if opts.out_dir is not None:
            shutil.copytree(out, opts.out_dir, dirs_exist_ok=True)
        run_id = _log_run(out, opts, direction, keys, frame) if opts.log_run else None
    return AnalysisResult(text, summary, rankings, paired, excluded, warnings, run_id, sorted(artifacts), runs)


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


# ----------------------------------------------------------------------------- outputs

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


def _rank_cells(r) -> "pd.DataFrame":
    t = r.table()
    t.insert(0, "group", t.index.astype(str))
    t["mean_rank"] = [tables.num(x, 3) for x in t["mean_rank"]]
    for c in t.columns[3:]:
        t[c] = [tables.num(float(x)) for x in t[c]]
    return t.rename(columns={"mean_rank": "mean rank", "wins": "rank-1 seeds"}).reset_index(drop=True).astype(str)


def _paired_cells(paired: list, holm_p: list[float]) -> "pd.DataFrame":
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


def _consistency_line(name: str, r, multi: bool) -> str:
    head = f"[{name}] " if multi else ""
    if r.n_seeds < 2:
        return f"{head}rank consistency: needs 2+ seeds shared by every group (have {r.n_seeds})"
    return (f"{head}rank consistency over {r.n_seeds} seeds x {r.n_methods} groups: Kendall's W = "
            f"{tables.num(r.kendall_w, 3)} (chi2 = {tables.num(r.chi2, 3)}, p = {tables.pvalue(r.p_value)}); "
            f"winner {r.winner} is best on {r.winner_wins}/{r.n_seeds} seeds")


def _excluded_line(excluded: dict[str, int]) -> str:
    return "; ".join(f"{n} {what} excluded" for what, n in excluded.items())


def _header(opts: AnalyzeOptions, runs: "pd.DataFrame", direction: str, keys: list[str]) -> list[str]:
    better = "lower" if direction == "min" else "higher"
    return [f"experiment {', '.join(opts.experiments)}: {len(runs)} FINISHED runs analysed",
            f"{opts.metric} ({opts.value} value, {better} is better), grouped by {', '.join(keys)}"]


def _render_text(opts, runs, summary, rankings, paired, holm_p, excluded, warnings, direction, keys) -> str:
    lines = _header(opts, runs, direction, keys)
    if excluded:
        lines.append(_excluded_line(excluded))
    lines += ["", tables.to_text(_summary_cells(summary, opts.confidence)), ""]
    for name, r in rankings.items():
        lines.append(_consistency_line(name, r, len(rankings) > 1))
        if r.n_seeds:
            lines += [tables.to_text(_rank_cells(r)), ""]
    if paired:
        what = "A − B" if opts.compare else "winner − other"
        lines += [f"paired comparisons ({what}, over shared seeds):",
                  tables.to_text(_paired_cells(paired, holm_p)), ""]
    if warnings:
        lines += ["warnings:"] + [f"  - {w}" for w in dict.fromkeys(warnings)]
    return "\n".join(lines).rstrip()


def _write(out: Path, opts, runs, summary, rankings, paired, holm_p, excluded, warnings, direction,
           keys, order, value_col) -> list[str]:
    """All artifacts into ``out``; returns their relative paths."""
    written: list[str] = []
    cells = _summary_cells(summary, opts.confidence)
    caption = (f"{opts.metric} ({opts.value}; {'lower' if direction == 'min' else 'higher'} is better): "
               f"mean ± std over seeds, {opts.confidence * 100:g}% CIs")
    md = ["# Analysis: " + opts.metric, "", *(_header(opts, runs, direction, keys))]
    if excluded:
        md.append(_excluded_line(excluded))
    md += ["", tables.to_markdown(cells)]
    (out / "table.md").write_text(tables.to_markdown(cells))
    (out / "table.tex").write_text(tables.to_latex(cells, caption=caption, label="tab:" + opts.metric.replace(".", "-"),
                                                   bold_row=0))
    written += ["table.md", "table.tex"]
    rank_md, rank_tex = [], []
    for name, r in rankings.items():
        md.append(_consistency_line(name, r, len(rankings) > 1))
        rank_md.append(_consistency_line(name, r, len(rankings) > 1) + "\n")
        if r.n_seeds:
            rc = _rank_cells(r)
            rank_md.append(tables.to_markdown(rc))
            md += ["", tables.to_markdown(rc)]
            rank_tex.append(tables.to_latex(rc, caption=f"Per-seed ranks on {opts.metric} ({name}); "
                                            f"Kendall's W = {tables.num(r.kendall_w, 3)}"))
    if rankings:
        (out / "ranks.md").write_text("\n".join(rank_md))
        (out / "ranks.tex").write_text("\n".join(rank_tex))
        written += ["ranks.md", "ranks.tex"]
    if paired:
        pc = _paired_cells(paired, holm_p)
        (out / "paired.md").write_text(tables.to_markdown(pc))
        (out / "paired.tex").write_text(tables.to_latex(pc, caption=f"Paired comparisons on {opts.metric}"))
        md += ["", "## Paired comparisons", "", tables.to_markdown(pc)]
        written += ["paired.md", "paired.tex"]
    if warnings:
        md += ["", "## Warnings", ""] + [f"- {w}" for w in dict.fromkeys(warnings)]
    runs.to_csv(out / "runs.csv", index=False)
    written.append("runs.csv")
    doc = {
        "experiments": opts.experiments, "metric": opts.metric, "value": opts.value, "direction": direction,
        "group_by": keys, "excluded": excluded, "warnings": list(dict.fromkeys(warnings)),
        "groups": json.loads(summary.to_json(orient="records")),
        "rankings": {name: {"kendall_w": _f(r.kendall_w), "chi2": _f(r.chi2), "p_value": _f(r.p_value),
                            "winner": r.winner, "winner_wins": r.winner_wins, "n_seeds": r.n_seeds,
                            "mean_rank": {k: _f(v) for k, v in r.mean_rank.items()},
                            "pairwise_win_rate": json.loads(r.pairwise.to_json())}
                     for name, r in rankings.items()},
        "paired": [{**p.as_dict(), "holm_p": _f(h)} for p, h in zip(paired, holm_p)],
    }
    (out / "stats.json").write_text(json.dumps(doc, indent=2, default=_f))
    written.append("stats.json")
    written += _figures(out, opts, runs, summary, rankings, order, md)
    (out / "analysis.md").write_text("\n".join(md) + "\n")
    written.append("analysis.md")
    return written


def _f(x: Any) -> Any:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return None if math.isnan(x) else x


def _figures(out: Path, opts, runs, summary, rankings, order, md: list[str]) -> list[str]:
    from analysis import curves as cv

    written: list[str] = []
    fig_dir = out / "figures"
    slug = opts.metric.replace(".", "_")
    final = stats.group_stats(runs, f"final.{opts.metric}", "group", n_boot=0)
    best = stats.group_stats(runs, f"best.{opts.metric}", "group", n_boot=0)
    ordered = list(summary["group"])
    few = len(ordered) <= MAX_FIGURE_GROUPS
    final = final.set_index("group").reindex(ordered).reset_index()
    best = best.set_index("group").reindex(ordered).reset_index()
    if few:
        cv.plot_best_vs_final(final, best, opts.metric, fig_dir / f"best_vs_final_{slug}.png")
        written.append(f"figures/best_vs_final_{slug}.png")
    for name, r in rankings.items():
        if r.n_seeds and r.n_methods <= MAX_FIGURE_GROUPS and r.n_seeds <= 60:
            suffix = "" if len(rankings) == 1 else "_" + "".join(ch if ch.isalnum() else "_" for ch in name)
            cv.plot_rank_heatmap(r.ranks[list(r.mean_rank.sort_values(kind="stable").index)], opts.metric,
                                 fig_dir / f"ranks_{slug}{suffix}.png")
            written.append(f"figures/ranks_{slug}{suffix}.png")
    if opts.curves:
        shown = runs if few else runs[runs["group"].isin(ordered[:CURVE_GROUPS])]
        curves = query.curves_frame(shown["run_id"], [opts.metric], tracking_uri=opts.tracking_uri)
        bands = cv.band_frame(curves, dict(zip(shown["run_id"], shown["group"])), opts.metric)
        if bands["step"].nunique() > 1:
            title = None if few else f"{opts.metric}: best {CURVE_GROUPS} of {len(ordered)} groups, mean ± std"
            cv.plot_bands(bands, opts.metric, fig_dir / f"curves_{slug}.png", order=ordered[:len(ordered) if few else CURVE_GROUPS],
                          title=title)
            bands.to_csv(out / f"curves_{slug}.csv", index=False)
            written += [f"figures/curves_{slug}.png", f"curves_{slug}.csv"]
    md += ["", "## Figures", ""] + [f"![{p}]({p})" for p in written if p.endswith(".png")]
    return written


def _log_run(out: Path, opts: AnalyzeOptions, direction: str, keys: list[str], frame: "pd.DataFrame") -> str:
    """Create (or adopt) the analysis run and log the folder; FINISHED only when all landed."""
    from mlflow.entities import RunTag

    client, _ = query._client(opts.tracking_uri)
    exp_ids = query.resolve_experiments(client, opts.experiments)
    run_id = os.environ.get("MLFLOW_RUN_ID")
    adopted = bool(run_id)
    if not adopted:
        run = client.create_run(next(iter(exp_ids)), run_name=f"analysis {opts.metric}",
                                tags={"mlflow.source.type": "LOCAL", "mlflow.source.name": "labrun analyze"})
        run_id = run.info.run_id
    tags = {"labrun.analysis": opts.metric, "labrun.analysis.experiments": ",".join(opts.experiments),
            "labrun.analysis.group_by": ",".join(keys), "labrun.analysis.value": opts.value,
            "labrun.analysis.direction": direction, "labrun.analysis.filters": " & ".join(opts.filters),
            "labrun.analysis.runs": str(len(frame)),
            "mlflow.note.content": (out / "analysis.md").read_text()[:4000]}
    try:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        client.log_artifacts(run_id, str(out))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    if not adopted:
        client.set_terminated(run_id, "FINISHED")
    return run_id
