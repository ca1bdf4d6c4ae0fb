"""The MLflow UI in a real (headless) browser: what ``labrun ui`` prints opens on the runs.

A store with a finished sweep and an analysis of it; ``labrun ui`` is started as a user starts
it, and the very URLs it printed are opened in headless Chromium (``--dump-dom`` after the
page's scripts ran). The sweep's link must show the runs table with every cell by name and
the objective metric as a column, and not the analysis run (which lives in
``<experiment> · analysis``). Needs Chromium (``apt-get install chromium``).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers import REPO

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(BROWSER is None, reason="no headless Chromium installed "
                                                         "(apt-get install chromium)")]
METRIC = "metric.mse.val"


def _dom(url: str) -> str:
    out = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000",
                          "--virtual-time-budget=30000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=240)
    return out.stdout


@pytest.fixture
def swept(store, tmp_path, capsys):
    """A finished toy sweep (2 optimizers x 2 seeds) and one labrun analyze of it."""
    from labrun.cli import main

    spec = tmp_path / "uisweep.yaml"
    spec.write_text(textwrap.dedent("""
        entry: toy
        name: uisweep
        description: the UI test's sweep
        config: quick
        overrides: {train.steps: 4, train.eval_every: 2, checkpoint.every: 0}
        matrix: {train.optimizer: [adam, sgd]}
        seeds: [0, 1]
        parallel: 2
        experiment: uitoy
    """))
    assert main(["sweep", str(spec)]) == 0
    assert main(["analyze", "-e", "uitoy", "-m", METRIC, "--no-curves", "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    return store, out


@pytest.fixture
def labrun_ui(swept, tmp_path):
    """``labrun ui --port 0`` as a user starts it; yields the lines it printed."""
    store, _ = swept
    env = dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_TRACKING_URI=store.uri)
    env.pop("LABRUN_UI_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "labrun", "ui", "--port", "0"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if any("uitoy" in ln for ln in lines):
                break
        assert any("uitoy" in ln for ln in lines), "\n".join(lines)
        yield lines
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def test_the_link_labrun_ui_prints_opens_the_sweeps_runs_table(swept, labrun_ui):
    store, analysis_out = swept
    (landing,) = [ln.split()[-1] for ln in labrun_ui if ln.strip().startswith("open ")]
    (link,) = [ln.split()[-1] for ln in labrun_ui if ln.strip().startswith("uitoy ")]
    assert landing.endswith("/#/experiments?workflowType=machine_learning")
    assert "workflowType=machine_learning" in link and "viewStateShareKey=uisweep" in link
    assert not [ln for ln in labrun_ui if "· analysis" in ln]   # the analysis experiment is not listed

    page = _dom(link)
    cells = sorted(r.info.run_name for r in store.search_runs(
        [store.get_experiment_by_name("uitoy").experiment_id]) if r.data.tags.get("labrun.task") == "toy")
    assert cells == ["toy-adam-s0", "toy-adam-s1", "toy-sgd-s0", "toy-sgd-s1"]
    assert 'role="grid"' in page and "Run Name" in page, page[-3000:]          # the runs table
    for name in cells:                                                       # every cell a row
        assert name in page, name
    headers = re.findall(r'role="columnheader"[^>]*>.*?</div></div>', page, flags=re.S)
    assert any(METRIC in h for h in headers), "no objective column"           # the objective's column
    assert any("train.optimizer" in h for h in headers)                      # the varied parameter
    assert f"Sort: {METRIC}" in re.sub(r"<[^>]+>", "", page)                  # sorted by it
    analysis = re.search(r"analysis run ([0-9a-f]{32})", analysis_out).group(1)
    assert store.get_run(analysis).info.experiment_id != store.get_experiment_by_name("uitoy").experiment_id
    assert "analysis metric.mse.val" not in page and analysis not in page     # analysis stays apart
    assert "Detect Issues" not in page                                        # not the GenAI pages

    home = _dom(landing)
    assert "uitoy" in home and "Experiments" in home, home[-2000:]           # the experiment list
