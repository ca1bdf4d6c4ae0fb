"""``labrun server``'s bulk read endpoint: its wire format and its client.

Over HTTP the public API reads a study one run page and one metric history at a time (61 s
for 1,000 runs). ``labrun server`` (:mod:`tracking.server_app`) answers one POST instead with
the long tables the SQL fast path reads (:func:`~tracking.backends.sql_reads.read_runs`,
:func:`~tracking.backends.sql_reads.metric_histories`) run on the server's own store, behind
the same logins and experiment permissions as MLflow's routes. The body is named Arrow IPC
streams, so the client rebuilds exactly the tuples the local SQL path returns and analysis
assembles an identical frame.

The client returns None (the caller takes the public path, one log line per process) when
the server has no such endpoint (a plain ``mlflow server``: 404, or a fail-closed 403 without
labrun's header), or when the endpoint reports its SQL read off; a login the server refuses
(401) or a READ permission it denies (403 from labrun's endpoint) is a one-line ConfigError.
"""
from __future__ import annotations

import json
import struct
from typing import Any, Sequence

from tracking.backends import announce_fallback, describe_error, fast_path_available

RUNS_ROUTE = "/labrun/api/1.0/runs-tables"
HISTORIES_ROUTE = "/labrun/api/1.0/metric-histories"
HEADER = "X-Labrun-Bulk"
"""Set on every answer of labrun's endpoint, refusals included: a 403 without it comes from a
plain basic-auth server that fails closed on a route it does not know."""
MEDIA_TYPE = "application/vnd.labrun.tables"
OFF = 501
"""The endpoint's answer when its SQL read is off on the server (schema, version, non-SQL store)."""

SCHEMAS: dict[str, tuple[tuple[str, str], ...]] = {
    "runs": (("run_id", "string"), ("experiment_id", "int64"), ("name", "string"), ("status", "string"),
             ("start_time", "int64"), ("end_time", "int64")),
    "tags": (("run_id", "string"), ("key", "string"), ("value", "string")),
    "params": (("run_id", "string"), ("key", "string"), ("value", "string")),
    "latest": (("run_id", "string"), ("key", "string"), ("value", "float64"), ("step", "int64"),
               ("is_nan", "bool")),
    "extrema": (("run_id", "string"), ("key", "string"), ("min", "float64"), ("max", "float64")),
    "histories": (("run_id", "string"), ("key", "string"), ("step", "int64"), ("value", "float64"),
                  ("timestamp", "int64")),
}
"""The column types of each table: the tuples of :mod:`~tracking.backends.sql_reads`."""


# ----------------------------------------------------------------------------- wire format

_OPTIONS: Any = None

def _arrow_table(name: str, rows: list[tuple]) -> Any:
    import pyarrow as pa

    schema = SCHEMAS[name]
    arrays = []
    for j, (col, kind) in enumerate(schema):
        # a comprehension per column, not zip(*rows): that builds 3-6 tuples of 100,000s of
        # items, which sets the garbage collector scanning them (10x slower at 10k runs)
        if kind == "bool":   # SQLite gives 0/1, PostgreSQL True/False
            values = [None if r[j] is None else bool(r[j]) for r in rows]
        else:
            values = [r[j] for r in rows]
        arrays.append(pa.array(values, type=pa.bool_() if kind == "bool" else getattr(pa, kind)()))
    return pa.Table.from_arrays(arrays, names=[c for c, _ in schema])


def encode(tables: dict[str, list[tuple]]) -> bytes:
    """``{name: rows}`` as frames of (name length, name, payload length, Arrow IPC stream).

    zstd-compressed buffers: a 10,000-run study is 5 MB instead of 24 (run ids repeat in
    every row), and compressing costs less than writing the bigger stream.
    """
    import pyarrow as pa

    global _OPTIONS
    _OPTIONS = _OPTIONS or pa.ipc.IpcWriteOptions(compression="zstd")
    out = bytearray()
    for name, rows in tables.items():
        sink = pa.BufferOutputStream()
        table = _arrow_table(name, rows)
        with pa.ipc.new_stream(sink, table.schema, options=_OPTIONS) as writer:
            writer.write_table(table)
        payload, key = sink.getvalue().to_pybytes(), name.encode()
        out += struct.pack(">I", len(key)) + key + struct.pack(">Q", len(payload)) + payload
    return bytes(out)


def decode(body: bytes) -> dict[str, list[tuple]]:
    """:func:`encode` undone: ``{name: rows}`` with Python values (None for nulls)."""
    import pyarrow as pa

    tables: dict[str, list[tuple]] = {}
    view, at = memoryview(body), 0
    while at < len(body):
        (n,) = struct.unpack_from(">I", body, at)
        name = bytes(view[at + 4:at + 4 + n]).decode()
        (size,) = struct.unpack_from(">Q", body, at + 4 + n)
        start = at + 12 + n
        table = pa.ipc.open_stream(pa.py_buffer(view[start:start + size])).read_all()
        tables[name] = list(zip(*(c.to_pylist() for c in table.columns)))
        at = start + size
    return tables


# ----------------------------------------------------------------------------- client

def is_server(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in ("http", "https")


def read_runs(uri: str, experiment_ids: Sequence[str], metric_keys: Sequence[str] | None, *,
              tag_prefixes: Sequence[str], tag_keys: Sequence[str] = (), skip_tags: Sequence[str] = (),
              exclude_prefixes: Sequence[str] = (), label: str | None = None) -> dict[str, list[tuple]] | None:
    """:func:`~tracking.backends.sql_reads.read_runs`'s tables, read by the server at ``uri``
    in one request; None: use ``search_runs`` (logged once). ``label`` names the experiments
    in a refusal (default: their ids)."""
    body = {"experiment_ids": [str(e) for e in experiment_ids],
            "metric_keys": None if metric_keys is None else list(metric_keys),
            "tag_prefixes": list(tag_prefixes), "tag_keys": list(tag_keys),
            "skip_tags": sorted(skip_tags), "exclude_prefixes": list(exclude_prefixes)}
    what = label or f"experiment{'s' if len(experiment_ids) != 1 else ''} {', '.join(map(str, experiment_ids))}"
    return _post("bulk", uri, RUNS_ROUTE, body, what)


def metric_histories(uri: str, run_ids: Sequence[str], keys: Sequence[str]) -> list[tuple] | None:
    """``(run_id, key, step, value, timestamp)`` of the runs, read by the server in one
    request; None: use ``get_metric_history`` per run and key (logged once)."""
    found = _post("bulk", uri, HISTORIES_ROUTE, {"run_ids": list(run_ids), "keys": list(keys)},
                  "the experiments of these runs")
    return None if found is None else found["histories"]


def _post(kind: str, uri: str, route: str, body: dict, what: str) -> dict[str, list[tuple]] | None:
    """One POST with MLflow's own credentials (its environment variables and files); no retries:
    a failure falls back to the public API, which retries as MLflow does."""
    if not is_server(uri) or not fast_path_available(kind):
        return None
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        resp = http_request(get_default_host_creds(uri), route, "POST", max_retries=0,
                            data=json.dumps(body), extra_headers={"Content-Type": "application/json"})
    except Exception as exc:
        return announce_fallback(kind, f"{uri}{route} failed ({describe_error(exc)})") or None
    return _answer(kind, uri, resp, what)


def _answer(kind: str, uri: str, resp: Any, what: str) -> dict[str, list[tuple]] | None:
    """The decoded tables, an error for a refused login or permission, else None (logged once)."""
    from tracking.config import ConfigError

    ours = resp.headers.get(HEADER) is not None
    if resp.status_code == 200 and ours:
        return decode(resp.content)
    if resp.status_code == 401:
        raise ConfigError(f"the tracking server at {uri} refused the login (HTTP 401): set "
                          f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user it knows")
    if resp.status_code == 403 and ours:
        raise ConfigError(f"the tracking server at {uri} says this user may not READ {what} (HTTP 403): "
                          f"ask its admin for READ permission on the experiment")
    if resp.status_code == OFF and ours:
        reason = f"the server's own SQL read is off ({resp.text.strip()[:200]})"
    else:
        reason = f"{uri} has no labrun bulk endpoint (HTTP {resp.status_code}: not a labrun server)"
    return announce_fallback(kind, reason) or None
