"""What the MLflow UI opens on: the links labrun prints and the runs-table view they carry.

What MLflow 3.17.2's UI honours (read in ``mlflow/server/js``; checked in headless Chromium):

- GenAI or model-training pages: the ``workflowType`` URL parameter, else the browser's last
  choice (local storage ``mlflow.workflowType``), else GenAI. The experiment tag
  ``mlflow.experimentKind`` does not decide it. Every link here carries
  ``workflowType=machine_learning``.
- A saved view of the runs page: the experiment tag ``mlflow.sharedViewState.<key>`` holding
  JSON (or ``deflate;`` + base64 of zlib-compressed JSON), opened by ``?viewStateShareKey=<key>``
  (what the UI's "Share" button writes). Of its UI state the reader keeps ``selectedColumns``,
  ``columnOrder``, ``compareRunCharts``/``compareRunSections`` (charts and their order),
  ``runsHiddenMode``, ``hideEmptyCharts``, ``groupBy`` ..., and drops ``runsExpanded``,
  ``runsPinned``, ``runsHidden``, ``runsVisibilityMap``: a view cannot expand a parent.
  Its search facets (``orderByKey``, ``orderByAsc``, ``searchFilter``) are applied unless the
  URL already holds one of them.
- Children: the table nests a run under its parent only while it is sorted by start time
  without a filter; sorted by a metric it is flat, every sweep cell a row. Sorting by the
  objective therefore shows the children.
- Charts: sections come from the part of a metric's name before the last ``/`` (labrun's
  dotted names all land in "Model metrics"), cards alphabetical, unless the view lists the
  cards: then they keep the view's order and metrics the view does not name are appended
  (the section is marked reordered). The experiment tag ``mlflow.experiment.primaryMetric.name``
  only adds a chart, it does not move one.
"""
from __future__ import annotations

import base64
import json
import re
import uuid
import zlib
from typing import Any, Iterable, Sequence

MODEL_TRAINING_VIEW = "workflowType=machine_learning"
SHARE_TAG_PREFIX = "mlflow.sharedViewState."
SHARE_PARAM = "viewStateShareKey"
DEFAULT_VIEW_TAG = "labrun.view"   # experiment tag: the key of the view labrun's links open
MAX_TAG_VALUE = 5000               # MLflow's limit on an experiment tag's value
MODEL_METRICS = "Model metrics"    # the UI's default chart section
SYSTEM_METRICS = "System metrics"
_LARGER_IS_BETTER = re.compile(r"(acc|auroc|auc|f1|miou|iou|r2|precision|recall|score|reward|elbo)",
                               re.IGNORECASE)


# ------------------------------------------------------------------------------ addresses

def ui_base() -> str:
    """The MLflow UI's address, from one place: ``LABRUN_UI_URL``, else the tracking server,
    else the ``labrun ui`` serving this store right now, else ``labrun ui``'s default address."""
    from tracking import env
    from tracking.store import tracking_uri

    uri = tracking_uri()
    base = env.LABRUN_UI_URL.get()
    if not base and uri.startswith(("http://", "https://")):
        base = uri
    if not base:
        from tracking.ui import DEFAULT_PORT, running_ui

        base = running_ui(uri) or f"http://127.0.0.1:{DEFAULT_PORT}"
    return base.rstrip("/")


def _query(view: str | None) -> str:
    return (f"?{SHARE_PARAM}={view}&" if view else "?") + MODEL_TRAINING_VIEW


def experiments_url(base: str | None = None) -> str:
    """The experiment list, in the model-training view (which the browser then remembers)."""
    return f"{(base or ui_base())}/#/experiments?{MODEL_TRAINING_VIEW}"


def experiment_url(experiment_id: str, view: str | None = None, base: str | None = None) -> str:
    """The experiment's runs table, with the saved view ``view`` when given."""
    tab = "/runs" if view else ""
    return f"{(base or ui_base())}/#/experiments/{experiment_id}{tab}{_query(view)}"


def run_url(experiment_id: str, run_id: str, base: str | None = None) -> str:
    return f"{(base or ui_base())}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING_VIEW}"


def artifact_url(experiment_id: str, run_id: str, path: str, base: str | None = None) -> str:
    """A run's artifact (``REPORT.html``) opened in the run page's artifact viewer."""
    return (f"{(base or ui_base())}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}"
            f"?{MODEL_TRAINING_VIEW}")


def page_link(experiment_id: str, view: str | None = None) -> str:
    """The experiment's page as a link relative to the UI (``#/experiments/...``): for
    descriptions, which the UI renders as Markdown, so the link holds whatever address or port
    the UI is served on."""
    tab = "/runs" if view else ""
    return f"#/experiments/{experiment_id}{tab}{_query(view)}"


def default_view(client: Any, experiment_id: str) -> str | None:
    """The key of the view labrun saved for this experiment, if any (and if it is still there)."""
    try:
        tags = client.get_experiment(experiment_id).tags
    except Exception:
        return None
    key = tags.get(DEFAULT_VIEW_TAG)
    return key if key and SHARE_TAG_PREFIX + key in tags else None


def experiment_link(client: Any, experiment_id: str, base: str | None = None) -> str:
    """The experiment's link as labrun prints it: with its saved view when it has one."""
    return experiment_url(experiment_id, default_view(client, experiment_id), base)


# ------------------------------------------------------------------------------ analysis apart

ANALYSIS_SUFFIX = " · analysis"


def analysis_experiment_name(name: str) -> str:
    """Where the analysis runs of experiment ``name`` go: beside it, never in it, so its runs
    table and charts hold training runs only."""
    return name if is_analysis_experiment(name) else f"{name}{ANALYSIS_SUFFIX}"


def is_analysis_experiment(name: str) -> bool:
    return name.endswith(ANALYSIS_SUFFIX)


# ------------------------------------------------------------------------------ the objective

def larger_is_better(metric: str) -> bool:
    """A guess from the name when nobody said: accuracies and scores up, losses and errors down."""
    return bool(_LARGER_IS_BETTER.search(metric)) and "loss" not in metric


_USUAL_RESULTS = ("rmse", "mse", "accuracy", "acc", "auc", "auroc", "f1", "mae", "r2")


def guess_objective(metric_keys: Iterable[str]) -> str | None:
    """The metric a table of results is read by, when no spec names one: a validation metric
    (``metric.*.val``), else any ``metric.*``, else a name with ``val``, else a usual result
    name (``rmse``, ``accuracy``, ...), else the first one that is neither a loss, a diagnostic
    nor a system metric."""
    keys = sorted(k for k in set(metric_keys) if not k.startswith(("system/", "sweep.")))
    for test in (lambda k: k.startswith("metric.") and k.endswith(".val"),
                 lambda k: k.startswith("metric.") and ".val" in k,
                 lambda k: k.startswith("metric."),
                 lambda k: "val" in k and not k.startswith(("loss.", "diag.")),
                 lambda k: k in _USUAL_RESULTS,
                 lambda k: not k.startswith(("loss.", "diag.", "dynamics.", "time"))):
        found = sorted((k for k in keys if test(k)),
                       key=lambda k: _USUAL_RESULTS.index(k) if k in _USUAL_RESULTS else len(_USUAL_RESULTS))
        if found:
            return found[0]
    return keys[0] if keys else None


def chart_order(metric_keys: Iterable[str], objective: str | None) -> list[str]:
    """The objective, then ``loss.*``, ``metric.*``, the other dotted families, ``diag.*``,
    and the system metrics last; alphabetical within each."""
    def rank(k: str) -> tuple[int, str]:
        if k == objective:
            return (0, k)
        for i, prefix in enumerate(("loss.", "metric.")):
            if k.startswith(prefix):
                return (1 + i, k)
        if k.startswith("system/"):
            return (6, k)
        if k.startswith("diag."):
            return (5, k)
        if k.startswith("sweep."):
            return (7, k)
        return (4, k)
    return sorted(set(metric_keys), key=rank)


# ------------------------------------------------------------------------------ the view

def _col(kind: str, key: str) -> str:
    """The UI's canonical column key: ``metrics.`metric.mse.val```, ``params.`seed```."""
    return f"{kind}.`{key}`"


def _line_card(metric: str, section: str) -> dict[str, Any]:
    card = {"uuid": uuid.uuid4().hex, "type": "LINE", "runsCountToCompare": 10,
            "metricSectionId": section, "deleted": False, "isGenerated": True,
            "displayName": metric.rsplit("/", 1)[-1], "metricKey": metric, "lineSmoothness": 0,
            "xAxisScaleType": "linear", "scaleType": "linear", "range": {}, "xAxisKey": "step",
            "selectedXAxisMetricKey": "", "yAxisKey": "metric", "yAxisExpressions": [],
            "ignoreOutliers": False, "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True}
    if metric.startswith("system/"):
        card.update(xAxisKey="time", useGlobalXaxisKey=False)
    return card


def runs_table_state(objective: str | None, *, ascending: bool = True, params: Sequence[str] = (),
                     metrics: Sequence[str] = (), search_filter: str = "") -> dict[str, Any]:
    """A saved runs-table view: the objective and the varied parameters as columns, sorted by
    the objective (which also shows every child run: a sorted table is flat), charts ordered
    by :func:`chart_order` with a parallel-coordinates chart of the parameters first."""
    # Run Name and Created always show; Dataset, Source and Models (MLflow's defaults) are
    # wide and on the run page anyway: the columns a reader compares come first.
    columns = []
    if objective:
        columns.append(_col("metrics", objective))
    columns += [_col("params", p) for p in params]
    columns.append(_col("attributes", "Duration"))  # other metrics: the charts (the grid sorts a
    # group's columns alphabetically, so more metrics would push the parameters off screen)
    model, system = uuid.uuid4().hex, uuid.uuid4().hex
    charts: list[dict[str, Any]] = []
    if objective and params:
        charts.append({"uuid": uuid.uuid4().hex, "type": "PARALLEL", "runsCountToCompare": 100,
                       "metricSectionId": model, "deleted": False, "isGenerated": False,
                       "displayName": f"{objective} by parameters",
                       "selectedParams": list(params), "selectedMetrics": [objective],
                       "showAllRuns": True})
    keys = chart_order([*metrics, *([objective] if objective else [])], objective)
    charts += [_line_card(k, system if k.startswith("system/") else model) for k in keys]
    sections = [{"uuid": model, "name": MODEL_METRICS, "display": True, "isReordered": True,
                 "deleted": False, "isGenerated": True},
                {"uuid": system, "name": SYSTEM_METRICS, "display": True, "isReordered": False,
                 "deleted": False, "isGenerated": True}]
    state: dict[str, Any] = {
        "searchFilter": search_filter,
        "orderByKey": _col("metrics", objective) if objective else "attributes.start_time",
        "orderByAsc": bool(ascending) if objective else False,
        "startTime": "ALL", "lifecycleFilter": "Active", "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": list(dict.fromkeys(columns)), "columnOrder": [], "columnWidths": {},
        "runsHiddenMode": "SHOW_ALL", "compareRunCharts": charts, "compareRunSections": sections,
        "isAccordionReordered": False, "viewMaximized": False, "runListHidden": False,
        "groupBy": None, "groupsExpanded": {}, "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }
    return state


def encode(state: dict[str, Any]) -> str:
    """JSON as the UI reads it; compressed the UI's way when too long for an experiment tag."""
    text = json.dumps(state, separators=(",", ":"))
    if len(text) <= MAX_TAG_VALUE:
        return text
    packed = "deflate;" + base64.b64encode(zlib.compress(text.encode(), 9)).decode()
    if len(packed) > MAX_TAG_VALUE:  # too many charts: keep the first ones (the rest are appended by the UI)
        return encode({**state, "compareRunCharts": state["compareRunCharts"][:max(1, len(state["compareRunCharts"]) // 2)]})
    return packed


def decode(value: str) -> dict[str, Any]:
    if value.startswith("deflate;"):
        value = zlib.decompress(base64.b64decode(value[len("deflate;"):])).decode()
    return json.loads(value)


def view_key(name: str) -> str:
    """A URL-safe key from a sweep's or study's name."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:60] or "labrun"


def save_view(client: Any, experiment_id: str, key: str, state: dict[str, Any],
              default: bool = True) -> str:
    """Write the view as the experiment tag the UI reads; returns its key. ``default``: the
    experiment's links (``experiment_link``) open on it from now on."""
    key = view_key(key)
    client.set_experiment_tag(experiment_id, SHARE_TAG_PREFIX + key, encode(state))
    if default:
        client.set_experiment_tag(experiment_id, DEFAULT_VIEW_TAG, key)
    return key


def varied_params(values: Iterable[dict[str, Any]]) -> list[str]:
    """The keys whose value differs between cells (in first-seen order), seed last."""
    seen: dict[str, set[str]] = {}
    for v in values:
        for k, x in v.items():
            seen.setdefault(k, set()).add(str(x))
    keys = [k for k, xs in seen.items() if len(xs) > 1]
    return sorted(keys, key=lambda k: k == "seed")


def metric_keys(client: Any, run_ids: Iterable[str], sample: int = 12) -> list[str]:
    """The metric names the runs logged, read from a few of them (the cells of one sweep log
    the same names; a thousand-cell sweep should not cost a thousand requests)."""
    keys: set[str] = set()
    for rid in list(dict.fromkeys(run_ids))[:sample]:
        try:
            keys.update(client.get_run(rid).data.metrics)
        except Exception:
            continue
    return sorted(keys)


def save_sweep_view(client: Any, experiment_id: str, name: str, *, objective: str | None = None,
                    ascending: bool | None = None, params: Sequence[str] = (),
                    run_ids: Iterable[str] = ()) -> str | None:
    """The view a sweep's or study's links open on; best effort (None when it cannot be written).

    ``objective``: the metric to sort by (a study's), else guessed from the cells' metrics."""
    try:
        metrics = metric_keys(client, run_ids)
        objective = objective or guess_objective(metrics)
        asc = (not larger_is_better(objective)) if ascending is None and objective else bool(ascending)
        state = runs_table_state(objective, ascending=asc, params=params, metrics=metrics)
        return save_view(client, experiment_id, name, state)
    except Exception:
        return None


# ------------------------------------------------------------------------------ Optuna

def name_objectives(study: Any, metrics: Sequence[str]) -> None:
    """optuna-dashboard labels the objective with the metric's name, not "Objective 0"."""
    import warnings

    try:
        if list(study.metric_names or []) != list(metrics):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # set_metric_names is "experimental" in Optuna 4/5
                study.set_metric_names(list(metrics))
    except Exception:
        pass


def trial_links(trial: Any, experiment_id: str, run_ids: Sequence[str]) -> None:
    """A trial's MLflow runs: ids and URLs as user attributes (data for scripts), and a trial
    note in Markdown, which optuna-dashboard renders with clickable links (user attributes are
    shown as plain text there)."""
    urls = [run_url(experiment_id, r) for r in run_ids]
    trial.set_user_attr("mlflow_run_ids", list(run_ids))
    trial.set_user_attr("mlflow_run_urls", urls)
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return
    lines = [f"- MLflow run [{r[:8]}]({u})" for r, u in zip(run_ids, urls)]
    try:
        save_note(trial, "\n".join(lines))
    except Exception:
        pass
