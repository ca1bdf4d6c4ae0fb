"""Trials whose worker stopped beating: failed (Optuna queues their retry), their runs KILLED."""
from __future__ import annotations

from typing import Any

from sweeps.study._trial import TrialRunner
from tracking import tags as T


def reap_stale(study: Any, runner: TrialRunner, running: list[Any]) -> None:
    """Fail the trials whose worker stopped beating (Optuna queues their retry) and end their
    MLflow runs KILLED, unless a run's own process is still alive."""
    import optuna
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    now = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for trial in running:
        if trial.number not in now:
            end_stale_runs(runner, trial.number)


def end_stale_runs(runner: TrialRunner, number: int) -> None:
    from tracking.store import is_stale, mark_stale_killed

    client, spec = runner.client, runner.spec
    found = client.search_runs([runner.exp_id], filter_string=(
        f"tags.`{T.OPTUNA_STUDY}` = '{spec.name or ''}' and tags.`{T.OPTUNA_TRIAL}` = '{number}' "
        f"and attributes.status = 'RUNNING'"))
    for run in found:  # the search already holds each run: judge it without fetching it again
        if is_stale(run.info.status, run.data.tags, run.info.start_time, grace_s=2 * spec.heartbeat_s):
            mark_stale_killed(client, run.info.run_id)
            print(f"trial {number}: its worker is gone; run {run.info.run_id} ended KILLED", flush=True)
