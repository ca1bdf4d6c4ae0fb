"""``labrun ui``: one person's MLflow UI over the labrun store, quiet, and stopped as a whole.

The user sees the address to open and how to stop it; MLflow's start-up noise (deprecation
warnings, executor discovery) goes to a log file that ``--verbose`` shows instead. The address
is printed only once the UI answers, so a server that fails to start says why instead of
sending the user to a dead (or someone else's) port.

The address printed opens the experiment list in MLflow's model-training view (MLflow 3.17
opens its GenAI home otherwise, see :mod:`tracking.views`), followed by a link per recent
experiment that opens its runs table. While it serves, the address is recorded per store
(:func:`running_ui`), so the links runs and sweeps print open this UI, not a fixed port.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tracking import env
from tracking import serving
from tracking import views

DEFAULT_PORT = 5000          # ``labrun ui``'s default port (the address links use when no UI runs)
RECENT_EXPERIMENTS = 8       # links printed under the landing address


def main(args: argparse.Namespace) -> int:
    from tracking.config import ConfigError
    from tracking.store import tracking_uri

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {args.workers})")
    if not 0 <= args.port < 65536:
        raise ConfigError(f"--port must be 0-65535 (got {args.port}); 0 picks a free one")
    port = args.port or serving.free_port(args.host)
    serving.check_port(args.host, port)
    env.quiet()
    uri = args.backend_store_uri or tracking_uri()
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{port}"
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--host", args.host, "--port", str(port), "--workers", str(args.workers)]
    child = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", PYTHONWARNINGS="ignore")
    log = None if args.verbose else _log_file()
    return _serve(serving.Foreground(cmd, env=child, log=log), uri, url)


# ------------------------------------------------------------------ the address, per store

def _store_key(uri: str) -> str:
    """One key per store: a relative SQLite path is made absolute (it is one per folder)."""
    import hashlib

    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return hashlib.sha1(uri.encode()).hexdigest()[:16]


def _registry() -> Path:
    return Path(tempfile.gettempdir()) / f"labrun_ui_addresses.{os.getuid()}"  # not a labrun-* leftover


def register(uri: str, url: str) -> Path:
    """Record that this process serves ``uri``'s UI at ``url`` (read by :func:`running_ui`)."""
    import json

    folder = _registry()
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{_store_key(uri)}.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "uri": uri}))
    os.replace(tmp, path)
    return path


def unregister(path: Path) -> None:
    import json

    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def running_ui(uri: str) -> str | None:
    """The address of the ``labrun ui`` serving ``uri`` now (on this machine), else None."""
    import json

    from tracking.store import process_alive

    try:
        doc = json.loads((_registry() / f"{_store_key(uri)}.json").read_text())
    except (OSError, ValueError):
        return None
    pid = doc.get("pid")
    return doc.get("url") if isinstance(pid, int) and process_alive(pid) else None


def recent(uri: str, url: str) -> list[str]:
    """The lines ``labrun ui`` prints under the landing address: the runs table of each recent
    experiment (its saved view when labrun wrote one); analysis experiments are left out."""
    lines: list[str] = []
    try:
        from mlflow.tracking import MlflowClient

        c = MlflowClient(tracking_uri=uri)
        exps = [e for e in c.search_experiments(max_results=200)
                if not views.is_analysis_experiment(e.name) and (e.name != "Default" or _has_runs(c, e))]
        exps = sorted(exps, key=lambda e: e.last_update_time or 0, reverse=True)[:RECENT_EXPERIMENTS]
        if exps:
            lines.append("  runs of the most recent experiments:")
        width = max((len(e.name) for e in exps), default=0)
        for e in exps:
            lines.append(f"    {e.name:<{width}}  {views.experiment_link(c, e.experiment_id, url)}")
    except Exception:  # the store is the UI's business; the landing address is enough
        pass
    return lines


def _has_runs(c, exp) -> bool:
    try:
        return bool(c.search_runs([exp.experiment_id], max_results=1))
    except Exception:
        return False


def _log_file() -> Path:
    from tracking.leftovers import claim

    folder = Path(tempfile.mkdtemp(prefix="labrun-ui-"))
    claim(folder, kind="ui")
    return folder / "mlflow.log"


def _serve(server: serving.Foreground, uri: str, url: str) -> int:
    from tracking.signals import sigterm_as_exception

    with sigterm_as_exception():
        return _foreground(server, uri, url)


def _foreground(server: serving.Foreground, uri: str, url: str) -> int:
    failed = False
    mark = None
    try:
        server.start()
        if not server.wait_ready(url + "/health"):
            failed = True
            print(f"labrun ui: error: the MLflow UI did not start on {url}; the end of its log "
                  f"({server.log_path}):\n{server.tail()}", file=sys.stderr)
            return 1
        mark = register(uri, url)
        print(f"MLflow UI on {uri}   (Ctrl-C stops it"
              f"{'' if server.log_path is None else '; --verbose shows MLflow log'})\n"
              f"  open {views.experiments_url(url)}", flush=True)
        more = recent(uri, url)  # after the server made (or migrated) the store, never beside it
        if more:
            print("\n".join(more), flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if mark is not None:
            unregister(mark)
        server.stop()
        if server.log_path is not None and not failed:
            shutil.rmtree(server.log_path.parent, ignore_errors=True)
