"""A server in the foreground (``labrun ui``, ``labrun server``): its port, its log, its end.

MLflow's UI and server are a process tree (the ``mlflow`` command, uvicorn or gunicorn, their
workers, huey job consumers). Stopping only the top process left that tree serving the port,
so the tree runs in a process group of its own and goes as a whole: on Ctrl-C, on SIGTERM,
and (through the kernel's parent-death signal) when labrun itself is SIGKILLed. A port that
is taken is refused before anything starts, instead of a success line over someone else's server.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

STOP_GRACE_S = 10.0
READY_TIMEOUT_S = 180.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (``--port 0``); the server binds it a moment later."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port(host: str, port: int) -> None:
    """A one-line ConfigError when ``host:port`` cannot be listened on, naming the holder
    of a taken port where it can be found."""
    import errno

    from tracking.config import ConfigError

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return
        except OSError as exc:
            err = exc
    if err.errno == errno.EADDRINUSE:
        holder = _holder(port)
        raise ConfigError(f"port {port} on {host} is in use{f' by {holder}' if holder else ''}; stop that "
                          f"server, pick another with --port N, or --port 0 for a free one")
    raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror or err}); use an address of this "
                      f"machine with --host (default 127.0.0.1)")


def _holder(port: int) -> str | None:
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                return f"pid {conn.pid} ({' '.join(proc.cmdline())[:120]})"
    except Exception:  # no permission, or the process just went: the port is enough
        return None
    return None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Foreground:
    """One server command as a process group: started, waited for, stopped as a whole."""

    def __init__(self, cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
                 log: Path | None = None) -> None:
        self.cmd, self.env, self.log_path = list(cmd), env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Foreground":
        out = open(self.log_path, "ab") if self.log_path else None
        try:
            preexec = _die_with_parent if sys.platform.startswith("linux") else None
            self.proc = subprocess.Popen(self.cmd, env=dict(self.env) if self.env is not None else None,
                                         stdout=out, stderr=subprocess.STDOUT if out else None,
                                         preexec_fn=preexec, start_new_session=preexec is None)
        finally:
            if out:
                out.close()
        return self

    def wait_ready(self, url: str, timeout: float = READY_TIMEOUT_S) -> bool:
        """True once ``url`` answers; False if the process ended first (or the time ran out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                urllib.request.urlopen(url, timeout=2).close()
                return True
            except urllib.error.HTTPError:
                return True  # it answers (a login page says 401): up
            except OSError:
                time.sleep(0.3)
        return False

    def wait(self) -> int:
        return self.proc.wait()

    def stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL to what is left after :data:`STOP_GRACE_S`."""
        if self.proc is None:
            return
        members = _tree(self.proc.pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            _signal_all(members, sig)  # any that left the group
            if _gone(self.proc, members, STOP_GRACE_S if sig == signal.SIGTERM else 5.0):
                return

    def tail(self, lines: int = 5) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])


def _tree(pid: int) -> list:
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:
        return []


def _signal_all(members: list, sig: int) -> None:
    for p in members:
        try:
            p.send_signal(sig)
        except Exception:
            pass


def _gone(proc: subprocess.Popen, members: list, timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    try:
        import psutil

        _, alive = psutil.wait_procs(members, timeout=timeout)
        return not alive
    except Exception:
        return True
