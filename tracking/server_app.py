"""The ``labrun-auth`` MLflow server app: MLflow's basic-auth app plus labrun's bulk read endpoint.

``labrun server`` runs ``mlflow server --app-name labrun-auth`` (the ``mlflow.app`` entry point
group). This is MLflow's ``basic-auth`` app with two POST routes mounted beside MLflow's on the
same Flask app (:data:`~tracking.backends.bulk.RUNS_ROUTE`, ``HISTORIES_ROUTE``) which answer
the tables labrun's SQL fast path reads, run on the server's own store, as Arrow
(:mod:`tracking.backends.bulk`). One request replaces thousands of REST calls.

Permissions are MLflow's: basic-auth's ``before_request`` hook authenticates every request and
lets admins through; for everyone else it runs the validator registered for the route, which
here requires READ on every experiment asked for (for histories: on the experiment of every
run), exactly as MLflow's own validators resolve it (the user's grant, else the default
permission). A refusal is MLflow's 403. The check uses private names of ``mlflow.server.auth``;
when they are missing (another MLflow) the routes are not mounted and clients read through the
REST API (the ``bulk_server`` fast path is off, logged in the server's log).
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import Any, Iterator

from tracking import backends
from tracking.backends import bulk

log = logging.getLogger("labrun")


def create_app() -> Any:
    """The app factory ``mlflow server --app-name labrun-auth`` calls in every worker."""
    from mlflow.server import app
    from mlflow.server import auth

    if backends.fast_path_available("bulk_server") and _mount(app, auth):
        app.after_request(_mark)
    with _bootstrap_lock():
        return auth.create_app(app)


def _mount(app: Any, auth: Any) -> bool:
    """Add the two routes and their READ validators; False when MLflow's hooks are not there."""
    validators = getattr(auth, "BEFORE_REQUEST_VALIDATORS", None)
    if not isinstance(validators, dict) or not callable(getattr(auth, "_get_experiment_permission", None)):
        return backends.announce_fallback("bulk_server", "mlflow.server.auth has no "
                                          "BEFORE_REQUEST_VALIDATORS / _get_experiment_permission")
    app.add_url_rule(bulk.RUNS_ROUTE, "labrun_runs_tables", _runs_tables, methods=["POST"])
    app.add_url_rule(bulk.HISTORIES_ROUTE, "labrun_metric_histories", _metric_histories, methods=["POST"])
    validators[(bulk.RUNS_ROUTE, "POST")] = _can_read_experiments
    validators[(bulk.HISTORIES_ROUTE, "POST")] = _can_read_runs
    return True


@contextlib.contextmanager
def _bootstrap_lock() -> Iterator[None]:
    """One worker at a time creates the auth tables and the admin user.

    ``mlflow server`` does that once before it starts the workers only for the app named
    ``basic-auth``; for any other app each worker bootstraps itself, and on a fresh database
    several at once would race on the migrations.
    """
    import fcntl

    path = os.path.join(tempfile.gettempdir(), f"labrun-auth-bootstrap-{os.getuid()}.lock")
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _mark(resp: Any) -> Any:
    """labrun's header on every answer of its routes, refusals included (see bulk.HEADER)."""
    from flask import request

    if request.path in (bulk.RUNS_ROUTE, bulk.HISTORIES_ROUTE):
        resp.headers[bulk.HEADER] = "1"
    return resp


# ----------------------------------------------------------------------------- permissions

def _body() -> dict:
    from flask import request

    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _can_read(experiment_ids: Any) -> bool:
    """READ on each experiment for the authenticated (non-admin) user, as MLflow decides it."""
    from mlflow.server import auth

    if not isinstance(experiment_ids, list) or not all(str(e).isdigit() for e in experiment_ids):
        return False
    username = auth.authenticate_request().username
    return all(auth._get_experiment_permission(str(e), username).can_read for e in set(experiment_ids))


def _can_read_experiments() -> bool:
    return _can_read(_body().get("experiment_ids"))


def _can_read_runs() -> bool:
    run_ids = _body().get("run_ids")
    if not isinstance(run_ids, list):
        return False
    uri = _store_uri()
    if uri is None:
        return True    # the handler answers OFF without reading anything
    return _can_read(sorted(set(backends.run_experiments(uri, [str(r) for r in run_ids]).values())))


# ----------------------------------------------------------------------------- handlers

def _store_uri() -> str | None:
    """The server's tracking store URI when it is a database, else None."""
    from mlflow.server.constants import BACKEND_STORE_URI_ENV_VAR

    from tracking.backends.sql import SQL_SCHEMES, scheme_of

    uri = os.environ.get(BACKEND_STORE_URI_ENV_VAR, "")
    return uri if scheme_of(uri) in SQL_SCHEMES else None


def _reply(tables: dict[str, list[tuple]] | None) -> Any:
    from flask import Response

    if tables is None:
        return Response("the SQL read of the server's store is off (see the server's log) or the "
                        "store is not a database", status=bulk.OFF, mimetype="text/plain")
    return Response(bulk.encode(tables), mimetype=bulk.MEDIA_TYPE)


def _runs_tables() -> Any:
    from flask import Response

    body, uri = _body(), _store_uri()
    ids, metrics = body.get("experiment_ids"), body.get("metric_keys")
    if not isinstance(ids, list) or not all(str(e).isdigit() for e in ids):
        return Response("experiment_ids must be a list of experiment ids", status=400)
    if uri is None:
        return _reply(None)
    tables = backends.read_runs(uri, [str(e) for e in ids], None if metrics is None else list(metrics),
                                tag_prefixes=list(body.get("tag_prefixes") or ("",)),
                                tag_keys=list(body.get("tag_keys") or ()),
                                skip_tags=list(body.get("skip_tags") or ()),
                                exclude_prefixes=list(body.get("exclude_prefixes") or ()))
    return _reply(tables)


def _metric_histories() -> Any:
    from flask import Response

    body, uri = _body(), _store_uri()
    run_ids, keys = body.get("run_ids"), body.get("keys")
    if not isinstance(run_ids, list) or not isinstance(keys, list):
        return Response("run_ids and keys must be lists", status=400)
    rows = None if uri is None else backends.metric_histories(uri, [str(r) for r in run_ids],
                                                               [str(k) for k in keys])
    return _reply(None if rows is None else {"histories": rows})
