"""Where a number came from: git state, environment, host and device.

``mlflow run`` records the commit but ignores a dirty tree; a result produced from
uncommitted code is only reproducible with the diff, so the diff is kept as an artifact.
Outside a git checkout everything says ``unknown`` rather than failing the run.
"""
from __future__ import annotations

import platform
import socket
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

UNKNOWN = "unknown"
# The platform's own stack; a task adds its libraries through ``TaskConfig.packages``.
_PACKAGES = ("labrun", "mlflow", "torch", "torchvision", "numpy", "optuna", "pandas",
             "scikit-learn", "pydantic")


@dataclass
class GitInfo:
    commit: str = UNKNOWN
    branch: str = UNKNOWN
    dirty: str = UNKNOWN  # "true" | "false" | "unknown"
    remote: str = UNKNOWN
    root: str = UNKNOWN
    diff: str = ""
    untracked: list[str] = field(default_factory=list)
    untracked_diff: str = ""
    """The untracked files as new-file patches (``git apply`` recreates them); files over
    :data:`UNTRACKED_MAX_BYTES` are only named."""

    def diff_text(self) -> str:
        """The ``git.diff`` artifact: one patch that ``git apply`` replays on the commit
        (``labrun reproduce`` does), the untracked files included."""
        text = self.diff
        if text and not text.endswith("\n"):
            text += "\n"
        text += self.untracked_diff
        skipped = [n for n in self.untracked if f" b/{n}\n" not in self.untracked_diff]
        if skipped:
            text += "\n# untracked files not in the patch (too large or unreadable):\n"
            text += "".join(f"#   {name}\n" for name in skipped)
        return text


# Files a run itself writes next to the code: the tracking store and its SQLite journals, the
# artifact root, Optuna storages, labrun's atomic-write temporaries. They change while a run
# runs (another cell writes the store), so counting them would make every run "dirty",
# whatever the user's .gitignore says. Gitignore syntax: also given to ``git ls-files``.
STORE_PATTERNS = ("mlflow.db", "mlflow.db-*", "optuna.db", "optuna.db-*", "*.db-journal",
                  "*.db-wal", "*.db-shm", "mlruns/", "mlartifacts/", ".labrun/",
                  ".*.tmp-*", ".*.tmp")


def _store_paths(root: Path) -> list[str]:
    """The configured stores' own files inside ``root`` (any name a user gave them)."""
    from tracking import env

    out = []
    for var in (env.MLFLOW_TRACKING_URI, env.LABRUN_OPTUNA_STORAGE, env.MLFLOW_ARTIFACT_ROOT):
        uri = var.get() or ""
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else \
            uri[len("file://"):] if uri.startswith("file://") else ""
        if not path:
            continue
        try:
            rel = Path(path).resolve().relative_to(root.resolve()).as_posix()
        except (ValueError, OSError):
            continue
        out += [rel, f"{rel}-*", f"{rel}/"]
    return out


def is_store_file(rel: str, patterns: tuple[str, ...] | list[str] = STORE_PATTERNS) -> bool:
    """True when the repo-relative path ``rel`` is one of the files in :data:`STORE_PATTERNS`."""
    from fnmatch import fnmatch

    parts = rel.split("/")
    for pat in patterns:
        if pat.endswith("/"):
            name = pat[:-1]
            if "/" in name and (rel == name or rel.startswith(name + "/")):
                return True
            if any(fnmatch(p, name) for p in parts[:-1]):
                return True
        elif ("/" in pat and fnmatch(rel, pat)) or fnmatch(parts[-1], pat):
            return True
    return False


def git_info(path: str | Path | None = None) -> GitInfo:
    try:
        import git
    except ImportError:
        return GitInfo()
    try:
        repo = git.Repo(Path(path or Path.cwd()), search_parent_directories=True)
    except Exception:
        return GitInfo()
    info = GitInfo(root=str(repo.working_tree_dir))
    try:
        info.commit = repo.head.commit.hexsha
    except Exception:  # a repository with no commit yet
        info.commit = UNKNOWN
    try:
        info.branch = repo.active_branch.name
    except Exception:
        info.branch = "detached" if info.commit != UNKNOWN else UNKNOWN
    try:
        remote = repo.remotes[0] if repo.remotes else None
        info.remote = next(remote.urls) if remote is not None else "none"
    except Exception:
        info.remote = UNKNOWN
    try:
        _read_changes(repo, info)
    except Exception:
        info.dirty = UNKNOWN
    return info


def _read_changes(repo, info: GitInfo) -> None:
    """The diff and untracked files, the stores' own files left out (see STORE_PATTERNS)."""
    patterns = [*STORE_PATTERNS, *_store_paths(Path(repo.working_tree_dir))]
    excludes = [f"--exclude={p}" for p in patterns]
    listed = repo.git.ls_files("--others", "--exclude-standard", *excludes)
    info.untracked = [f for f in listed.splitlines() if f and not is_store_file(f, patterns)]
    base = ("HEAD",) if info.commit != UNKNOWN else ("--cached",)
    changed = [f for f in repo.git.diff(*base, "--name-only").splitlines()
               if f and not is_store_file(f, patterns)]
    info.diff = repo.git.diff(*base, "--binary", "--", *changed) if changed else ""
    info.untracked_diff = _untracked_patch(repo, info.untracked)
    info.dirty = "true" if (info.diff or info.untracked) else "false"


UNTRACKED_MAX_BYTES = 1 << 20


def _untracked_patch(repo, names: list[str]) -> str:
    """New-file patches of the untracked files a run's code may import (``git diff --no-index``
    exits 1 when the files differ, which is always here)."""
    root = Path(repo.working_tree_dir)
    parts = []
    for name in names:
        path = root / name
        try:
            if not path.is_file() or path.stat().st_size > UNTRACKED_MAX_BYTES:
                continue
        except OSError:
            continue
        patch = repo.git.diff("--no-index", "--binary", "--", "/dev/null", name, with_exceptions=False)
        if patch:
            parts.append(patch if patch.endswith("\n") else patch + "\n")
    return "".join(parts)


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    out = {}
    for name in (*_PACKAGES, *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment(device: str, packages: tuple[str, ...] = ()) -> dict[str, object]:
    env: dict[str, object] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": device,
        "packages": package_versions(packages),
    }
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        env["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return env
