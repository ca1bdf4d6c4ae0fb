"""The MLflow UI in a real (headless) browser: the link labrun gives opens on the runs table.

MLflow 3.17 chooses between its GenAI pages and the model-training pages by a global
toggle (URL parameter ``workflowType``, else the browser's last choice, else GenAI); labrun
tags its experiments ``mlflow.experimentKind=custom_model_development`` and puts the
parameter in every link it prints. Needs Chromium (``apt-get install chromium``).
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from projects.toy import train as toy
from tracking import store as labrun_store

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(BROWSER is None, reason="no headless Chromium installed "
                                                         "(apt-get install chromium)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ui(store, monkeypatch):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store.uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("mlflow ui did not answer within 120 s")
        monkeypatch.setenv("LABRUN_UI_URL", base)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


def _dom(url: str) -> str:
    out = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                          "--virtual-time-budget=25000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=180)
    return out.stdout


def test_the_experiment_link_opens_on_the_runs_table(store, ui):
    toy.main(["--config", "quick", "--set", "train.steps=5", "--seed", "7", "--experiment", "uitest"])
    exp_id = store.get_experiment_by_name("uitest").experiment_id
    page = _dom(labrun_store.experiment_url(exp_id))
    assert "toy-adam-s7" in page and "Run Name" in page, page[-2000:]
    assert "Detect Issues" not in page
    genai = _dom(f"{ui}/#/experiments/{exp_id}")  # MLflow's own default, for contrast
    assert "toy-adam-s7" not in genai
