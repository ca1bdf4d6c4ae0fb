"""The study's parent MLflow run: one per study, shared by every worker; closed with the counts,
the best trial and the optimization history."""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sweeps.spec import StudySpec
from sweeps.study._storage import safe_url
from tracking import env, runs
from tracking import tags as T


def open_study_parent(study: Any, client: Any, exp_id: str, spec: StudySpec) -> str:
    """One parent run per study, shared by all workers through a study user attribute."""
    from sweeps.parent import open_parent

    tags = {T.OPTUNA_STUDY: spec.name or "", T.OPTUNA_STORAGE: safe_url(spec.storage),
            T.SWEEP_ENTRY: spec.entry,
            **({"mlflow.note.content": spec.description} if spec.description else {})}
    known = study.user_attrs.get("mlflow_parent_run_id")
    if env.MLFLOW_RUN_ID.is_set():
        run_id, _ = open_parent(client, exp_id, kind="study", name=spec.name or "", extra_tags=tags)
        if not known:
            study.set_user_attr("mlflow_parent_run_id", run_id)
        return run_id
    if known:
        try:
            client.get_run(known)
            runs.reopen(client, known)
            return known
        except Exception:
            pass
    run_id, _ = open_parent(client, exp_id, kind="study", name=spec.name or "", extra_tags=tags,
                            reuse=False)
    if study.user_attrs.get("mlflow_parent_run_id") in (None, known):
        study.set_user_attr("mlflow_parent_run_id", run_id)
    time.sleep(0.05)
    winner = optuna_attr(study, "mlflow_parent_run_id") or run_id
    if winner != run_id:  # another worker created the parent at the same moment
        runs.withdraw(client, run_id, winner)
    return winner


def optuna_attr(study: Any, key: str) -> Any:
    """A fresh read from the storage: the public ``Study.user_attrs`` asks it on every access."""
    return study.user_attrs.get(key)


def close_study_parent(study: Any, client: Any, parent_id: str, spec: StudySpec, interrupted: bool) -> None:
    from optuna.trial import TrialState

    from sweeps.parent import close_parent

    trials = study.get_trials(deepcopy=False)
    count = lambda s: sum(t.state == s and not t.user_attrs.get(T.SURPLUS) for t in trials)  # noqa: E731
    metrics = {"study.trials.complete": count(TrialState.COMPLETE),
               "study.trials.pruned": count(TrialState.PRUNED),
               "study.trials.failed": count(TrialState.FAIL)}
    best: dict[str, Any] = {}
    if len(spec.objectives) == 1 and metrics["study.trials.complete"]:
        bt = study.best_trial
        metrics["study.best_value"] = float(bt.value)
        best = {"number": bt.number, "value": bt.value, "params": bt.params,
                "mlflow_run_ids": bt.user_attrs.get("mlflow_run_ids", [])}
        client.log_text(parent_id, json.dumps(best, indent=2, default=str), "best_trial.json")
        print(f"best trial {bt.number}: {spec.objectives[0].metric}={bt.value:.6g} params={bt.params}",
              flush=True)
        _figure(study, client, parent_id)
    running = count(TrialState.RUNNING)
    status = "KILLED" if interrupted else ("RUNNING" if running else "FINISHED")
    if status == "RUNNING":  # other workers still at it: they close it
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        client.log_batch(parent_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    else:
        close_parent(client, parent_id, status, metrics)


def _figure(study: Any, client: Any, parent_id: str) -> None:
    """Optimization history as a PNG on the parent run (people look, rather than read)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import optuna.visualization.matplotlib as ovm

        ax = ovm.plot_optimization_history(study)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "optimization_history.png"
            ax.figure.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(ax.figure)
            client.log_artifact(parent_id, str(path), "figures")
    except Exception as exc:  # a figure is never worth failing the study for
        print(f"(no optimization history figure: {exc})", file=sys.stderr)
