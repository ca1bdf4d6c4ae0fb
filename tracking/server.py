"""``labrun server``: one MLflow tracking server for a research group, with logins.

``mlflow server --app-name basic-auth`` can do this, but getting it right takes five separate
settings, and each wrong default has a cost: an admin password sitting in a world-readable ini or
on the command line (``ps`` shows it), a server on every interface that accepts any ``Host``
header, a SQLite store that several people's sweeps lock, no Flask secret key, GenAI job workers
nobody asked for. This module makes the safe choices the defaults. It refuses to start without
an admin password, which it reads from ``$LABRUN_ADMIN_PASSWORD`` or ``--admin-password-file``
and writes only into a 0600 ini in a private folder for the server's lifetime. The store is
PostgreSQL (a given URI, else the local server), artifacts are served through the server
(clients need no access to the artifact folder), the server binds 127.0.0.1, and the allowed
``Host`` headers are set.

The app is ``labrun-auth`` (:mod:`tracking.server_app`): MLflow's basic-auth app plus one bulk
read endpoint, behind the same logins and permissions, that ``labrun analyze`` uses instead of
thousands of REST calls. Users and their permissions are MLflow's own (``AuthServiceClient``); :func:`create_user` and
:func:`grant` wrap it for scripts and tests. Nothing heavy is imported at module level:
``labrun --help`` builds this parser.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

from tracking import env

APP_NAME = "labrun-auth"
"""MLflow's basic-auth app plus labrun's bulk read endpoint (:mod:`tracking.server_app`)."""
APP_ENTRY_POINT = "tracking.server_app:create_app"
DEFAULT_BACKEND = "postgresql+psycopg2://127.0.0.1:5432/labrun"
"""The local PostgreSQL server, as libpq's default user ($PGUSER, else the login name)."""
PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
MIN_PASSWORD = 12  # MLflow's own policy (mlflow.utils.validation): checked here, before a server starts
ALL_INTERFACES = ("0.0.0.0", "::", "[::]")
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
# Stripped from the server's environment: the password reaches it through the ini only, and an
# MLFLOW_AUTH_* variable left over in the shell would silently win over the ini.
SECRETS = ("LABRUN_ADMIN_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_AUTH_ADMIN_USERNAME",
           "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME")

SERVER_HELP = f"""\
Start the group's MLflow tracking server with logins (MLflow's basic-auth app, plus a bulk read
endpoint that labrun analyze uses), in the foreground (Ctrl-C stops it).

  store       PostgreSQL: --backend-store-uri, default {DEFAULT_BACKEND}
              (the database is created if it does not exist)
  artifacts   served by the server (clients upload through it) into --artifacts-destination
  logins      admin user --admin-username with the password from ${env.LABRUN_ADMIN_PASSWORD.name}
              or --admin-password-file (at least {MIN_PASSWORD} characters; there is no default);
              other users get --default-permission on experiments they did not create
  network     bound to 127.0.0.1 unless --host says otherwise; only the --allowed-hosts Host
              headers are answered (default: 127.0.0.1 and localhost on --port)

Clients then set MLFLOW_TRACKING_URI=http://HOST:PORT, MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, and every labrun command (run, sweep, optimize, analyze) goes through
the server.

examples:
  LABRUN_ADMIN_PASSWORD=... labrun server
  labrun server --backend-store-uri postgresql://mlflow@db.lab:5432/mlflow \\
      --artifacts-destination /shared/mlartifacts --admin-password-file ~/.labrun-admin \\
      --host 0.0.0.0 --port 5000 --allowed-hosts gpu1.lab.org:5000,10.0.0.7:5000
"""


@dataclass
class ServerSettings:
    """What ``labrun server`` was told, checked (:func:`settings_from_args` raises ConfigError)."""

    backend_store_uri: str = DEFAULT_BACKEND
    artifacts_destination: str = "mlartifacts"
    host: str = "127.0.0.1"
    port: int = 5000
    allowed_hosts: list[str] = field(default_factory=list)
    admin_username: str = "admin"
    default_permission: str = "READ"
    auth_database_uri: str | None = None
    """Where users and permissions live; default: the tracking store's database."""
    workers: int = 4
    auth_cache_seconds: int = 30
    """How long a worker trusts a checked login (MLflow's ``auth_cache_ttl_seconds``; 0: never)."""

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ALL_INTERFACES else self.host
        return f"http://{host}:{self.port}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``labrun server`` options (labrun/cli.py builds the subparser and calls this)."""
    p.description, p.formatter_class = SERVER_HELP, argparse.RawDescriptionHelpFormatter
    p.add_argument("--backend-store-uri", default=DEFAULT_BACKEND, metavar="URI",
                   help=f"PostgreSQL URI of the tracking store (default: {DEFAULT_BACKEND})")
    p.add_argument("--artifacts-destination", default="mlartifacts", metavar="DIR_OR_URI",
                   help="where the served artifacts are stored (default: ./mlartifacts)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--allowed-hosts", default=None, metavar="H:P,...",
                   help="Host headers the server answers (required with --host 0.0.0.0)")
    p.add_argument("--admin-username", default="admin")
    p.add_argument("--admin-password-file", default=None, metavar="FILE",
                   help=f"file holding the admin password (else ${env.LABRUN_ADMIN_PASSWORD.name})")
    p.add_argument("--default-permission", default="READ", choices=PERMISSIONS,
                   help="what users may do on experiments they did not create (default: READ)")
    p.add_argument("--auth-database-uri", default=None, metavar="URI",
                   help="users and permissions (default: the tracking store's database)")
    p.add_argument("--workers", type=int, default=4, help="server worker processes (default: 4)")
    p.add_argument("--auth-cache-seconds", type=int, default=30, metavar="S",
                   help="a worker trusts a checked login this long (default: 30; 0 checks the password "
                        "hash on every request, ~0.1 s each: a changed password or a deleted user is "
                        "refused by every worker within S seconds)")


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """Check the options; a bad one is a one-line ConfigError naming what is valid."""
    from tracking.config import ConfigError

    if not args.backend_store_uri.startswith(("postgresql://", "postgresql+", "postgres://")):
        raise ConfigError(f"--backend-store-uri must be a PostgreSQL URI (postgresql://USER@HOST:PORT/DB) "
                          f"for a group server, got {args.backend_store_uri!r}")
    if not 0 <= args.port < 65536 or args.workers < 1 or args.auth_cache_seconds < 0:
        raise ConfigError(f"--port must be 0-65535 (0 picks a free one), --workers at least 1 and "
                          f"--auth-cache-seconds at least 0 (got {args.port}, {args.workers}, "
                          f"{args.auth_cache_seconds})")
    if args.port == 0:
        from tracking.serving import free_port

        args.port = free_port(args.host)
    if args.allowed_hosts is not None:
        hosts = [h.strip() for h in args.allowed_hosts.split(",") if h.strip()]
        if not hosts or "*" in hosts:
            raise ConfigError(f"--allowed-hosts must name the hosts clients use (host:port,...), "
                              f"not {args.allowed_hosts!r}")
    elif args.host in ALL_INTERFACES:
        raise ConfigError(f"--host {args.host} listens on every interface: name the host names "
                          f"clients use with --allowed-hosts (e.g. --allowed-hosts myhost.lab.org:{args.port})")
    else:
        hosts = default_allowed_hosts(args.host, args.port)
    dest = args.artifacts_destination
    if "://" not in dest:
        dest = str(Path(dest).expanduser().resolve())
    return ServerSettings(args.backend_store_uri, dest, args.host, args.port, hosts, args.admin_username,
                          args.default_permission, args.auth_database_uri, args.workers,
                          args.auth_cache_seconds)


def default_allowed_hosts(host: str, port: int) -> list[str]:
    """The Host headers of a server on ``host``: itself, plus both loopback names when local."""
    names = ["127.0.0.1", "localhost"] if host in LOOPBACK else [host]
    return [f"{name}:{port}" for name in names]


def admin_password(password_file: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The admin password from ``--admin-password-file`` (first line) or ``$LABRUN_ADMIN_PASSWORD``.

    There is deliberately no default: a server with a guessable admin password is worse than
    none (MLflow itself shipped one until a security advisory).
    """
    from tracking.config import ConfigError

    var = env.LABRUN_ADMIN_PASSWORD.name
    if password_file:
        path = Path(password_file).expanduser()
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"--admin-password-file {password_file}: cannot read it ({exc.strerror})") from None
        password, source = (lines[0].strip() if lines else ""), f"--admin-password-file {password_file}"
    else:
        password, source = (env.LABRUN_ADMIN_PASSWORD.get(environ) or "").strip(), f"${var}"
    if not password:
        raise ConfigError(f"no admin password: set ${var} or give --admin-password-file FILE "
                          f"(at least {MIN_PASSWORD} characters; labrun server has no default password)")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the admin password from {source} has {len(password)} characters; "
                          f"it needs at least {MIN_PASSWORD} (MLflow's policy)")
    return password


def auth_ini(settings: ServerSettings, password: str) -> str:
    """The basic-auth app's configuration (``MLFLOW_AUTH_CONFIG_PATH``), password included.

    MLflow checks the password hash (scrypt, ~0.1 s) up to three times a request without its
    login cache, so an analysis's thirty requests took 11 s; the cache is on for
    ``auth_cache_seconds``, MLflow's own trade-off (a revoked login lives that long on the
    other workers).
    """
    import configparser
    import io

    cfg = configparser.ConfigParser(interpolation=None)
    cfg["mlflow"] = {
        "default_permission": settings.default_permission,
        "database_uri": settings.auth_database_uri or settings.backend_store_uri,
        "admin_username": settings.admin_username,
        "admin_password": password,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
        "auth_cache_ttl_seconds": str(settings.auth_cache_seconds),
    }
    out = io.StringIO()
    cfg.write(out)
    return out.getvalue()


def write_private(folder: Path, name: str, text: str) -> Path:
    """``text`` into ``folder/name`` readable by this user only (0600 from creation, not chmod after)."""
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def server_command(settings: ServerSettings) -> list[str]:
    """The ``mlflow server`` command line: never a secret in it (``ps`` shows argv)."""
    return [sys.executable, "-m", "mlflow", "server", "--app-name", APP_NAME,
            "--backend-store-uri", settings.backend_store_uri, "--serve-artifacts",
            "--artifacts-destination", settings.artifacts_destination,
            "--host", settings.host, "--port", str(settings.port), "--workers", str(settings.workers),
            "--allowed-hosts", ",".join(settings.allowed_hosts)]


def register_app(folder: Path) -> Path:
    """A one-entry-point distribution in ``folder/site`` naming :data:`APP_NAME` for the server.

    ``mlflow server --app-name`` looks the app up among installed ``mlflow.app`` entry points.
    pyproject.toml declares it, but an install made before it (an editable checkout) has no
    such metadata; this folder on the server's ``PYTHONPATH`` makes the lookup work from any
    checkout without reinstalling. Returns the folder to put on the path.
    """
    site = folder / "site"
    info = site / "labrun_server_app-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: labrun-server-app\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[mlflow.app]\n{APP_NAME} = {APP_ENTRY_POINT}\n")
    return site


def server_environment(ini_path: Path, environ: Mapping[str, str] | None = None,
                       site: Path | None = None) -> dict[str, str]:
    """The server's environment: quiet, the auth ini, a Flask secret key, no stray secrets, and
    (``site``, from :func:`register_app`) the app's entry point and this labrun's code first
    on ``PYTHONPATH``, so the server runs the same labrun as the command that started it.

    MLflow's GenAI job runner (a handful of extra processes) is off unless asked for: labrun
    runs no server-side jobs.
    """
    child = dict(os.environ if environ is None else environ)
    if site is not None:
        code = str(Path(__file__).resolve().parent.parent)
        child["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), code, child.get("PYTHONPATH")) if p)
    for name in SECRETS:
        child.pop(name, None)
    env.quiet(child)
    child["MLFLOW_AUTH_CONFIG_PATH"] = str(ini_path)
    child.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))
    child.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return child


def ensure_database(uri: str) -> bool:
    """Create the PostgreSQL database ``uri`` names if it does not exist; True if created.

    A server that cannot be reached is a one-line ConfigError naming the URI.
    """
    import psycopg2
    from sqlalchemy.engine import make_url

    from tracking.config import ConfigError

    url = make_url(uri)
    connect = {k: v for k, v in dict(host=url.host, port=url.port, user=url.username,
                                     password=url.password).items() if v is not None}
    try:
        conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **connect)
    except psycopg2.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot reach PostgreSQL for {url.render_as_string(hide_password=True)}: "
                          f"{reason}") from None
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,))
            if cur.fetchone():
                return False
            from psycopg2 import sql

            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
            return True
    finally:
        conn.close()


def serve(settings: ServerSettings, password: str) -> int:
    """Run the server in the foreground until it exits or this process is interrupted."""
    from tracking.serving import Foreground
    from tracking.signals import sigterm_as_exception

    created = ensure_database(settings.backend_store_uri)
    folder = Path(tempfile.mkdtemp(prefix="labrun-server-"))  # 0700
    from tracking.leftovers import claim

    claim(folder, kind="server")  # holds the admin password: gc removes it if this process is SIGKILLed
    server = None
    with sigterm_as_exception():
        try:
            ini = write_private(folder, "basic_auth.ini", auth_ini(settings, password))
            print(_banner(settings, created), flush=True)
            child = server_environment(ini, site=register_app(folder))
            server = Foreground(server_command(settings), env=child).start()
            return server.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            if server is not None:
                server.stop()  # the whole tree: gunicorn/uvicorn workers and job consumers too
            shutil.rmtree(folder, ignore_errors=True)


def _banner(settings: ServerSettings, created: bool) -> str:
    from sqlalchemy.engine import make_url

    store = make_url(settings.backend_store_uri).render_as_string(hide_password=True)
    return (f"labrun server: MLflow tracking server with logins on {settings.url}\n"
            f"  store {store}{' (database created)' if created else ''}; artifacts served from "
            f"{settings.artifacts_destination}\n"
            f"  admin user {settings.admin_username!r}; others get {settings.default_permission} on "
            f"experiments they did not create; Host headers allowed: {', '.join(settings.allowed_hosts)}\n"
            f"  clients: export MLFLOW_TRACKING_URI={settings.url} MLFLOW_TRACKING_USERNAME=... "
            f"MLFLOW_TRACKING_PASSWORD=...   (Ctrl-C stops the server)")


def main(args: argparse.Namespace) -> int:
    """``labrun server``: check everything first (exit 2 with one line), then serve."""
    from tracking.serving import check_port

    settings = settings_from_args(args)
    password = admin_password(args.admin_password_file)
    check_port(settings.host, settings.port)
    env.quiet()
    return serve(settings, password)


# --------------------------------------------------------------------------- users (admin side)

@contextlib.contextmanager
def credentials(username: str, password: str) -> Iterator[None]:
    """MLflow's clients read the login from the environment: set it for a block, then restore."""
    names = (env.MLFLOW_TRACKING_USERNAME.name, env.MLFLOW_TRACKING_PASSWORD.name)
    saved = {n: os.environ.get(n) for n in names}
    os.environ.update(dict(zip(names, (username, password))))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def create_user(tracking_uri: str, username: str, password: str, *, admin: tuple[str, str]) -> None:
    """Add a login to the server at ``tracking_uri`` (as the admin ``(name, password)``)."""
    from mlflow.server import get_app_client

    with credentials(*admin):
        get_app_client("basic-auth", tracking_uri=tracking_uri).create_user(username, password)


def grant(tracking_uri: str, experiment_id: str, username: str, permission: str, *,
          admin: tuple[str, str]) -> None:
    """Give ``username`` READ | EDIT | MANAGE | DENY on one experiment (MLflow 3.17 refuses
    NO_PERMISSIONS as a per-experiment grant; DENY takes even the default permission away)."""
    from mlflow.server import get_app_client

    with credentials(*admin):
        get_app_client("basic-auth", tracking_uri=tracking_uri).grant_user_permission(
            username, "experiment", str(experiment_id), permission)
