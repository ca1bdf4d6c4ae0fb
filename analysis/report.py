"""The ``labrun analyze`` pipeline: store -> frame -> sections -> an analysis run.

The pipeline selects the runs and names the groups; the statistics are sections
(:mod:`analysis.sections`: summary, ranks, paired, curves), each computing its numbers and
contributing to every output, which this module only assembles.
Everything is computed and written to a temporary folder *before* the analysis run is
created, so bad input (unknown experiment, metric or group key; a single seed) ends with a
one-line error and nothing half-written in the store. The analysis run (tag
``labrun.analysis``) lives in its own experiment beside the analysed one,
``<experiment> · analysis``, so the training experiment's runs table and charts hold training
runs only; the two experiments name each other (tags ``labrun.analysis.experiment`` /
``labrun.analysis.of`` and their descriptions). ``runs_frame`` leaves analysis runs out of any
later analysis wherever they are. Under ``mlflow run -e analyze`` the run MLflow created
(``MLFLOW_RUN_ID``) is adopted where MLflow put it (MLflow cannot move a run).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis import query, stats
from analysis.sections import CURVE_GROUPS, MAX_FIGURE_GROUPS, SECTIONS, Section
from analysis.sections.base import json_number as _f
from analysis.selection import diverged_line, diverged_mask, labels, select
from tracking import env, runs
from tracking import tags as T
from tracking.config import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from analysis.ranking import Ranking

__all__ = ["AnalyzeOptions", "AnalysisResult", "Analysis", "analyze", "diverged_mask",
           "MAX_FIGURE_GROUPS", "CURVE_GROUPS"]


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
    compare_by: str | None = None
    """The competitors' key (e.g. ``labrun.method``): compared within each block (``within``)."""
    within: list[str] = field(default_factory=list)
    """The keys of a block; default: the axes that vary within a method."""
    control: str | None = None
    """The method Holm's test compares every other one against (default: the best ranked)."""
    all_groups: bool = False
    """Rank every group against every other, as before blocked comparisons were the default."""
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
class Analysis:
    """One analysis as :func:`analyze` builds it: what the sections read and set.

    The pipeline fills in the selection and groups; each section then adds its numbers
    (``summary``, ``rankings``, ``paired``) and warnings, so the text, the Markdown and the
    files all read the same ones.
    """

    opts: AnalyzeOptions
    direction: str
    frame: "pd.DataFrame"                  # the task runs read (after --filter)
    runs: "pd.DataFrame"                   # the analysed ones; _group adds a "group" column
    excluded: dict[str, int]               # reason -> how many runs were left out
    keys: list[str] = field(default_factory=list)            # the group-by columns
    default_group: bool = True
    order: list[str] = field(default_factory=list)           # group labels, first run first
    strata: dict[str, "pd.DataFrame"] = field(default_factory=dict)   # condition -> its runs, or "all"
    within: list[str] = field(default_factory=list)          # block columns: methods compared within each
    note: str = ""                                           # how the groups were formed, when not plainly
    summary: "pd.DataFrame | None" = None  # one row per group, best first (sections.Summary)
    rankings: dict[str, "Ranking"] = field(default_factory=dict)      # sections.Ranks
    paired: list[stats.Paired] = field(default_factory=list)          # sections.Paired
    warnings: list[str] = field(default_factory=list)
    text: str = ""

    @property
    def value_col(self) -> str:
        return f"{self.opts.value}.{self.opts.metric}"

    @property
    def exps(self) -> str:
        return ", ".join(self.opts.experiments)

    @property
    def better(self) -> str:
        return "lower" if self.direction == "min" else "higher"


# ----------------------------------------------------------------------------- pipeline

def analyze(opts: AnalyzeOptions) -> AnalysisResult:
    """Run the whole analysis; raises ConfigError (one line) for anything the user can fix.

    Every step that can refuse the input runs before the first file is written, so a refusal
    leaves nothing behind; the text is rendered once and both printed and logged.
    """
    a = _load(opts, _direction(opts))
    _seed_column(a)
    _group(a)
    sections = [cls() for cls in SECTIONS]
    for section in sections:
        section.compute(a)
    _warn_many_groups(a)
    for section in sections:     # the numbers are final: cells are built once, for every output
        section.tabulate(a)
    a.text = _render_text(a, sections)
    with tempfile.TemporaryDirectory(prefix="labrun-analysis-") as tmp:
        out = Path(tmp)
        artifacts = _write(out, a, sections)
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


def _load(opts: AnalyzeOptions, direction: str) -> Analysis:
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
    runs, excluded = select(frame, f"{opts.value}.{opts.metric}", opts.metric, exps)
    return Analysis(opts, direction, frame, runs, excluded)


def _seed_column(a: Analysis) -> None:
    """``--seed-key params.seed``: another project's seed column plays ``labrun.seed``'s part."""
    if not a.opts.seed_key:
        return
    import pandas as pd

    col = query.resolve_column(a.runs, a.opts.seed_key, what="seed key")
    a.runs = a.runs.copy()
    seeds = pd.to_numeric(a.runs[col], errors="coerce")
    a.runs[T.SEED] = seeds if seeds.notna().all() else a.runs[col]


def _group(a: Analysis) -> None:
    """By default a group is a cell (the seeds of one config), which is what a paper compares.

    Conditions are strata: with the default groups and several conditions, each condition's
    groups are ranked and tested among themselves (a method may win under one and lose
    under another; pooled, that would be hidden).
    """
    a.default_group = not a.opts.group_by
    a.runs = a.runs.copy()
    a.strata = {"all": a.runs}
    blocked = _block(a)
    if not blocked:
        if a.default_group:
            a.keys = [T.GROUP if T.GROUP in a.runs.columns else T.METHOD]
            if a.keys[0] not in a.runs.columns:
                raise ConfigError(f"these runs have neither {T.GROUP} nor {T.METHOD}; pass --group-by KEY")
        else:
            a.keys = [query.resolve_column(a.runs, k, what="group key") for k in a.opts.group_by]
        a.runs["group"] = labels(a.runs, a.keys, a.default_group)
        a.order = list(dict.fromkeys(a.runs["group"]))
    line = diverged_line(a.frame, a.keys, a.default_group and not blocked)
    if line:
        a.warnings.append(line)
    if not blocked and a.default_group and T.CONDITION in a.runs.columns and a.runs[T.CONDITION].nunique() > 1:
        a.strata = {str(c): part for c, part in a.runs.groupby(T.CONDITION, sort=True)}


def _block(a: Analysis) -> bool:
    """Methods compared within each setting of the other axes (Demšar's blocks), when asked
    (``--compare-by``/``--within``) or when the default groups differ by more than the method.

    Ranking every (method, setting) group against every other asks which *setting* is best;
    a study asks which method wins within each, and whether that holds across them.
    """
    from analysis import blocked

    opts = a.opts
    asked = bool(opts.compare_by or opts.within)
    if opts.all_groups or not (asked or a.default_group):
        return False
    method = query.resolve_column(a.runs, opts.compare_by or T.METHOD, what="--compare-by key") \
        if asked or T.METHOD in a.runs.columns else None
    if method is None or a.runs[method].nunique() < 2:
        if asked:
            raise ConfigError(f"--compare-by {method}: every run has the same value, nothing to compare; "
                              f"name the key that tells the methods apart (e.g. {T.METHOD})")
        return False
    seed_cols = [T.SEED] + ([query.resolve_column(a.runs, opts.seed_key, what="seed key")] if opts.seed_key else [])
    within = [query.resolve_column(a.runs, k, what="--within key") for k in opts.within] or \
        blocked.other_axes(a.runs, method, seed_cols)
    if not within:
        if asked:
            raise ConfigError(f"--compare-by {method}: nothing else varies between these runs to compare "
                              f"within; drop --compare-by, or name the blocks with --within KEY")
        return False
    a.keys, a.within = [method], within
    a.runs["group"] = a.runs[method].astype(str).astype(object)
    a.runs["block"] = blocked.block_labels(a.runs, within)
    a.order = list(dict.fromkeys(a.runs["group"]))
    how = "as asked" if asked else "the groups differ by more than the method; --all-groups ranks every group"
    a.note = f"comparing {method} within each {', '.join(within)} ({a.runs['block'].nunique()} blocks; {how})"
    return True


def _warn_many_groups(a: Analysis) -> None:
    """Say what the figures leave out, so a missing figure is not taken for a failure."""
    if len(a.order) > MAX_FIGURE_GROUPS:
        a.warnings.append(f"{len(a.order)} groups: the best-vs-final and rank figures are skipped (more than "
                          f"{MAX_FIGURE_GROUPS}) and the curves show the best {CURVE_GROUPS}; narrow with "
                          "--filter or --group-by")


# ----------------------------------------------------------------------------- outputs

def _header(a: Analysis) -> list[str]:
    lines = [f"experiment {a.exps}: {len(a.runs)} FINISHED runs analysed",
             f"{a.opts.metric} ({a.opts.value} value, {a.better} is better), grouped by {', '.join(a.keys)}"]
    if a.excluded:
        lines.append("; ".join(f"{n} {what} excluded" for what, n in a.excluded.items()))
    if a.note:
        lines.append(a.note)
    return lines


def _render_text(a: Analysis, sections: list[Section]) -> str:
    """What ``labrun analyze`` prints (and logs as ``analysis.txt``)."""
    lines = _header(a)
    for section in sections:
        lines += section.text(a)
    if a.warnings:
        lines += ["warnings:"] + [f"  - {w}" for w in dict.fromkeys(a.warnings)]
    return "\n".join(lines).rstrip()


def _render_markdown(a: Analysis, sections: list[Section], figures: list[str]) -> str:
    """``analysis.md``: the whole analysis on one page, also the analysis run's MLflow description."""
    md = ["# Analysis: " + a.opts.metric, "", *_header(a)]
    for section in sections:
        md += section.markdown(a)
    if a.warnings:
        md += ["", "## Warnings", ""] + [f"- {w}" for w in dict.fromkeys(a.warnings)]
    md += ["", "## Figures", ""] + [f"![{p}]({p})" for p in figures if p.endswith(".png")]
    return "\n".join(md) + "\n"


def _write(out: Path, a: Analysis, sections: list[Section]) -> list[str]:
    """All artifacts into ``out``; returns their relative paths."""
    written = [path for section in sections for path in section.write(out, a)]
    a.runs[_runs_columns(a)].to_csv(out / "runs.csv", index=False)
    (out / "stats.json").write_text(json.dumps(_stats_doc(a, sections), separators=(",", ":"), default=_f))
    figures = [path for section in sections for path in section.figures(out, a)]
    (out / "analysis.md").write_text(_render_markdown(a, sections, figures))
    (out / "analysis.txt").write_text(a.text + "\n")
    return written + ["runs.csv", "stats.json", *figures, "analysis.md", "analysis.txt"]


def _runs_columns(a: Analysis) -> list[str]:
    """runs.csv: the analysed runs as the analysis saw them (who, which group and block, which
    seed, which value); every other column is one ``labrun export`` away, and at 10,000 runs
    all of them made a 5 MB artifact per analysis."""
    wanted = ["run_id", "run_name", "status", "group", "block", T.SEED, T.METHOD, T.CONDITION, T.GROUP,
              *a.keys, *a.within, a.value_col]
    return [c for c in dict.fromkeys(wanted) if c in a.runs.columns]


def _stats_doc(a: Analysis, sections: list[Section]) -> dict[str, Any]:
    """``stats.json``: every number of the analysis, for scripts rather than readers."""
    opts = a.opts
    doc = {"experiments": opts.experiments, "metric": opts.metric, "value": opts.value, "direction": a.direction,
           "group_by": a.keys, "excluded": a.excluded, "warnings": list(dict.fromkeys(a.warnings))}
    for section in sections:
        doc.update(section.document(a))
    return doc


def _log_run(out: Path, a: Analysis) -> str:
    """Create (or adopt) the analysis run and log the folder; FINISHED only when all landed."""
    from mlflow.entities import RunTag
    from mlflow.utils import mlflow_tags

    opts = a.opts
    client, _ = query._client(opts.tracking_uri)
    exp_ids = query.resolve_experiments(client, opts.experiments)
    run_id = env.MLFLOW_RUN_ID.get()
    adopted = bool(run_id)
    if not adopted:
        run_id = runs.create(client, analysis_experiment(client, exp_ids), name=f"analysis {opts.metric}",
                             source="labrun analyze")
    tags = {**_run_tags(a), mlflow_tags.MLFLOW_RUN_NOTE: (out / "analysis.md").read_text()[:4000]}
    try:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        client.log_artifacts(run_id, str(out))
    except BaseException as exc:
        runs.end(client, run_id, "FAILED", reason=f"{type(exc).__name__}: {exc}", quiet=True)
        raise
    if not adopted:
        runs.end(client, run_id, "FINISHED")
    return run_id


def analysis_experiment(client: Any, analysed: dict[str, str]) -> str:
    """The id of ``<first analysed experiment> · analysis``, created (and linked both ways) on
    first use."""
    from tracking import store, views

    (first_id, first), *_ = analysed.items()
    name = views.analysis_experiment_name(first)
    if name == first:  # analysing analysis runs' own experiment: stay there
        return first_id
    of = ", ".join(f"`{n}`" for n in analysed.values())
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = client.create_experiment(name, tags={
                **store.experiment_tags(name, f"labrun analyze results of {of}: tables, figures and "
                                              f"stats.json of each analysis. The runs themselves: "
                                              f"[{first}]({views.page_link(first_id)})"),
                T.analysis("of"): ",".join(analysed.values())})
        except Exception:  # another process created it first
            exp_id = client.get_experiment_by_name(name).experiment_id
    else:
        exp_id = exp.experiment_id
    try:
        tags = client.get_experiment(first_id).tags
        if tags.get(T.analysis("experiment")) != name:
            client.set_experiment_tag(first_id, T.analysis("experiment"), name)
            note = tags.get(store.NOTE, "")
            line = f"Analyses of these runs: [{name}]({views.page_link(exp_id)})."
            if name not in note:
                client.set_experiment_tag(first_id, store.NOTE, f"{note}\n\n{line}".strip())
    except Exception:
        pass
    return exp_id


def _run_tags(a: Analysis) -> dict[str, str]:
    """What was analysed, as tags: the runs list of the UI can then filter analysis runs by it."""
    opts = a.opts
    return {T.ANALYSIS: opts.metric, T.analysis("experiments"): ",".join(opts.experiments),
            T.analysis("group_by"): ",".join(a.keys), T.analysis("value"): opts.value,
            T.analysis("direction"): a.direction, T.analysis("filters"): " & ".join(opts.filters),
            T.analysis("runs"): str(len(a.frame))}
