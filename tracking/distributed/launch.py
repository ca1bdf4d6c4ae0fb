"""``--nproc N`` (and ``--nnodes``, ``--node-rank``, ``--rdzv-endpoint``): start the task's
entry module under torchrun, in this process, and exit as labrun's exits say.

``labrun run TASK --nproc N``, ``mlflow run . -e TASK -P nproc=N`` and ``python -m
projects.TASK.train --nproc N`` all reach :func:`relaunch` from ``load_config``, after the
config is checked (a bad key is one line here, not one per rank). The agent is PyTorch's
(:func:`torch.distributed.run.run`); what this adds is the mapping of its exits: a rank's own
exit code when rank 0 ended (143 KILLED, 1 FAILED, 2 a refused input), 128+signal when the
launcher itself was signalled, and one line instead of the agent's traceback.
"""
from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from typing import NoReturn, Sequence

from tracking.exits import EXIT_FAILED

ENV_LAUNCHED = "LABRUN_TORCHRUN"
"""Set in the ranks' environment: they are the launched processes, not launchers."""


@dataclass
class Topology:
    """What the command line asked for: processes per node and the nodes."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None

    @property
    def wants_launch(self) -> bool:
        return (self.nproc > 1 or self.nnodes > 1) and not inside_torchrun()


def refusal(cfg: object) -> str | None:
    """Why ``cfg`` cannot run on many processes, or None."""
    if not cfg.supports_distributed:
        return (f"task {cfg.task!r} trains in one process; --nproc/--nnodes > 1 is for the tasks "
                f"that run under DDP ({', '.join(distributed_tasks()) or 'none'})")
    return cfg.distributed_refusal()


def maybe_relaunch(cfg: object, opts: object, argv: Sequence[str]) -> None:
    """From ``load_config``: refuse what cannot run, else hand the command to torchrun."""
    from tracking.argv import strip_topology
    from tracking.schema import ConfigError

    top = Topology(**getattr(opts, "topology"))
    why = refusal(cfg) if top.nproc * top.nnodes > 1 else None
    if why:
        raise ConfigError(why)
    if top.nnodes > 1 and not top.rdzv_endpoint:
        raise ConfigError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (node 0's address) and --node-rank")
    if top.node_rank >= top.nnodes:
        raise ConfigError(f"--node-rank {top.node_rank} must be below --nnodes {top.nnodes}")
    if top.wants_launch:
        relaunch(top, entry_module(type(cfg)), strip_topology(argv), cfg.execution.num_threads)


def entry_module(schema: type) -> str:
    """The task's entry point module: ``train`` beside its config schema (the layout every
    task keeps), or the schema's own module when it defines ``main``."""
    import importlib.util

    own = schema.__module__
    sibling = own.rpartition(".")[0] + ".train"
    if own.endswith(".train") or importlib.util.find_spec(sibling) is None:
        return own
    return sibling


def distributed_tasks() -> list[str]:
    """The tasks of this checkout that opt in (for the refusal's line), read from their
    torch-free ``config`` modules."""
    import importlib

    from tracking.tasks import entry_points

    names = []
    for name, ep in entry_points().items():
        try:
            config = importlib.import_module(ep.module.rpartition(".")[0] + ".config")
        except Exception:  # not a labrun task, or no config module: not listed
            continue
        if any(getattr(c, "supports_distributed", False) is True for c in vars(config).values()
               if isinstance(c, type)):
            names.append(name)
    return sorted(names)


def inside_torchrun() -> bool:
    """This process is already a rank (torchrun's own, or a user's ``torchrun ...``)."""
    return bool(os.environ.get(ENV_LAUNCHED) or os.environ.get("TORCHELASTIC_RUN_ID"))


def torchrun_args(top: Topology, module: str, argv: Sequence[str]) -> list[str]:
    """The torchrun command line for ``python -m module argv`` on ``top``."""
    args = [f"--nproc-per-node={top.nproc}", f"--nnodes={top.nnodes}", "--max-restarts=0",
            "--monitor-interval=0.5"]
    if top.nnodes == 1 and not top.rdzv_endpoint:
        args.append("--standalone")
    else:  # static: node ranks as given, rank 0's machine hosts the store at the endpoint
        args += ["--rdzv-backend=static", f"--rdzv-endpoint={top.rdzv_endpoint}",
                 f"--node-rank={top.node_rank}"]
    return [*args, "--module", module, *argv]


def relaunch(top: Topology, module: str, argv: Sequence[str], threads: int | None) -> NoReturn:
    """Run ``module`` under torchrun with ``argv`` (the launch options already removed)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ[ENV_LAUNCHED] = "1"
    os.environ.setdefault("OMP_NUM_THREADS", str(threads or max(1, (os.cpu_count() or 1) // top.nproc)))
    args = get_args_parser().parse_args(torchrun_args(top, module, argv))
    try:
        run(args)
    except ChildFailedError as exc:
        raise SystemExit(exit_code(exc.failures, top)) from None
    except SignalException as exc:
        print(f"labrun: launcher stopped by {exc.sigval.name}; every rank was stopped with it",
              file=sys.stderr)
        raise SystemExit(128 + int(exc.sigval)) from None
    raise SystemExit(0)


def exit_code(failures: dict, top: Topology) -> int:
    """Rank 0's exit when it failed (it recorded the run's end), else the first failure's;
    one line names each rank that did not finish."""
    for rank, failure in sorted(failures.items()):
        code = failure.exitcode
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
        print(f"labrun: rank {rank} ended with {how}", file=sys.stderr)
    chosen = failures.get(0) or failures[min(failures)]
    code = chosen.exitcode
    return 128 - code if code < 0 else (code or EXIT_FAILED)


__all__ = ["ENV_LAUNCHED", "Topology", "entry_module", "exit_code", "inside_torchrun", "maybe_relaunch", "refusal",
           "relaunch", "torchrun_args"]
