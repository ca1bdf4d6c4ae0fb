"""Each branch episode as a nested MLflow run ``branch.<t>`` under the run that branched.

Its artifacts: ``candidate_<id>.json`` per distinct proposal (action, proxy forecast,
interval, score and, for the verified ones, the real outcome), ``verification_<id>.log``
per real rollout (one line a step), ``decision.json`` (the chosen action and why) and
``seed_manifest.json`` (what a replay needs). Written through the public ``MlflowClient``
of the parent run: one ``log_artifacts`` call per episode.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from projects.dynamics.branch.orchestrator import Plan


def write_episode(plan: Plan, folder: str | Path) -> Path:
    """The episode's files in ``folder`` (also what a store-less caller keeps)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for c in plan.candidates or [{"id": plan.chosen.key(), "action": plan.chosen, "rule": True}]:
        body = {k: (v.to_dict() if k == "action" else v) for k, v in c.items()}
        (folder / f"candidate_{c['id']}.json").write_text(json.dumps(body, indent=1, default=float))
    for key, r in plan.rollouts.items():
        head = f"# action {json.dumps(r.action.to_dict())} from step {plan.branch_point}, {r.steps} steps, " \
               f"{r.cpu_s:.3f} CPU s\n"
        (folder / f"verification_{key}.log").write_text(head + "\n".join(r.log) + "\n")
    (folder / "decision.json").write_text(json.dumps(plan.decision(), indent=1, default=float))
    (folder / "seed_manifest.json").write_text(json.dumps(plan.manifest, indent=1))
    return folder


class MlflowEpisodes:
    """The sink a run's :class:`~.orchestrator.Brancher` calls after every episode."""

    def __init__(self, client: Any, parent_run_id: str, experiment_id: str) -> None:
        self.client, self.parent, self.experiment_id = client, parent_run_id, experiment_id
        self.run_ids: list[str] = []

    def __call__(self, plan: Plan) -> None:
        from tracking import runs

        tags = {"labrun.branch.trigger_step": str(plan.trigger),
                "labrun.branch.no_change": str(plan.chosen.is_null).lower()}
        with runs.recorded(self.client, self.experiment_id, name=f"branch.{plan.trigger}", tags=tags,
                           parent=self.parent) as rid:
            with tempfile.TemporaryDirectory() as tmp:
                self.client.log_artifacts(rid, str(write_episode(plan, tmp)))
            self.client.log_metric(rid, "perf.branch.proxy_ms", 1e3 * plan.proxy_cpu_s, step=plan.trigger)
            self.client.log_metric(rid, "perf.branch.verify_s", plan.verify_cpu_s, step=plan.trigger)
        self.run_ids.append(rid)


__all__ = ["MlflowEpisodes", "write_episode"]
