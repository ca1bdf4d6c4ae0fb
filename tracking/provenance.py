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

    def diff_text(self) -> str:
        """The ``git.diff`` artifact: ``git diff HEAD`` plus the untracked files' names."""
        text = self.diff
        if self.untracked:
            text += "\n# untracked files (not in the diff above):\n"
            text += "".join(f"#   {name}\n" for name in self.untracked)
        return text


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
        info.untracked = list(repo.untracked_files)
        if info.commit != UNKNOWN:
            info.diff = repo.git.diff("HEAD")
        else:
            info.diff = repo.git.diff("--cached")
        info.dirty = "true" if (info.diff or info.untracked) else "false"
    except Exception:
        info.dirty = UNKNOWN
    return info


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
