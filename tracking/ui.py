"""``labrun ui``: one person's MLflow UI over the labrun store, quiet, and stopped as a whole.

The user sees the address to open and how to stop it; MLflow's start-up noise (deprecation
warnings, executor discovery) goes to a log file that ``--verbose`` shows instead. The address
is printed only once the UI answers, so a server that fails to start says why instead of
sending the user to a dead (or someone else's) port.
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
    try:
        server.start()
        if not server.wait_ready(url + "/health"):
            failed = True
            print(f"labrun ui: error: the MLflow UI did not start on {url}; the end of its log "
                  f"({server.log_path}):\n{server.tail()}", file=sys.stderr)
            return 1
        print(f"MLflow UI on {uri}\n  open {url}   (Ctrl-C stops it"
              f"{'' if server.log_path is None else '; --verbose shows MLflow log'})", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
        if server.log_path is not None and not failed:
            shutil.rmtree(server.log_path.parent, ignore_errors=True)
