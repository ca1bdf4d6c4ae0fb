"""The quick config end to end through ``mlflow run -e ssvae`` in a real subprocess."""
from __future__ import annotations

import pytest

import json

from tests.helpers import PYTHON, REPO, all_runs, run_cli

COMPONENTS = ["tau_classifier", "classifier", "mixture_prior", "heteroscedastic_decoder", "diversity",
              "dirichlet", "figures.latent_space", "figures.reconstructions", "figures.component_samples"]


@pytest.mark.slow
def test_mlflow_run_quick_config_explains_every_component(store):
    proc = run_cli([PYTHON, "-m", "mlflow", "run", str(REPO), "-e", "ssvae", "--env-manager", "local",
                    "-P", "config=quick", "--experiment-name", "ssvae-e2e"],
                   cwd=store.root, timeout=600, check=True)
    runs = all_runs(store, ["ssvae-e2e"])
    assert len(runs) == 1, proc.stderr[-2000:]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["config"] == "quick" and run.data.tags["labrun.task"] == "ssvae"
    assert run.data.metrics["metric.accuracy.val"] > 0.3  # 8 epochs are enough to be well above chance
    dest = store.root / "dl"
    summary = json.loads(open(store.download_artifacts(run.info.run_id, "summary.json", str(dest))).read())
    report = open(store.download_artifacts(run.info.run_id, "REPORT.md", str(dest))).read()
    assert list(summary["components"]) == COMPONENTS
    assert summary["outcome"] == "FINISHED" and summary["base_config"].endswith("quick.yaml")
    for name, c in summary["components"].items():
        assert c["status"] in ("success", "disabled"), (name, c)
        assert f"### {name} — {c['status']}" in report
        if c["status"] == "disabled":
            assert c["reason"] and c["enable"] and c["enable"] in report
    assert summary["components"]["diversity"]["status"] == "disabled"  # quick leaves it off
    assert summary["components"]["heteroscedastic_decoder"]["status"] == "success"
    assert {"figures/latent_space.png", "figures/mixture_weights.png"} <= set(summary["figures"])
