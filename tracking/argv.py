"""A task entry point's command line: launch options (``--config``, ``--resume``, ``--tag``,
...) and overrides (``--set key=value``, ``--key.path value``), split before any parsing of
values; the override grammar itself is :mod:`tracking.config`'s."""
from __future__ import annotations

import posixpath
import re
import sys
from pathlib import Path
from typing import Sequence

from tracking import tags as T
from tracking.schema import RESEARCH_STATUSES, ConfigError, LaunchOptions

# MLflow's own limits (mlflow.utils.validation): longer keys fail the run, longer values are cut.
TAG_KEY_MAX, TAG_VALUE_MAX = 250, 8000
RESERVED_PREFIXES = (T.PREFIX, "mlflow.")
_TAG_KEY = re.compile(r"^[/\w.\- :]*$")  # the characters MLflow accepts in a key

USAGE = """usage: {prog} [--config PATH] [--set key.path=value ...] [--key.path value ...]
       [--seed N] [--tag key=value ...] [--status exploratory|keep|baseline|failed]
       [--name NAME] [--description TEXT] [--experiment NAME] [--resume RUN_ID [--trust-checkpoints]]
       [--system-metrics on|off|auto] [--log-model on|off|auto] [--register-model NAME]
       [--nproc N [--nnodes M --node-rank R --rdzv-endpoint HOST:PORT]]

Runs the {task!r} task as one tracked MLflow run.

  --config PATH        base YAML (default: the task's configs/default.yaml; a bare name such
                       as 'quick' means configs/quick.yaml)
  --set key=value      dotted override, checked against the schema (repeatable);
                       '--key.path value' is the same (it is how `mlflow run -P` passes them)
  --seed N             shorthand for --set seed=N
  --tag key=value      extra run tag (repeatable)
  --status S           research status: exploratory (default), keep, baseline, failed
  --name, --description  run name and free-text description for the UI and REPORT.md
  --experiment NAME    MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else the task name)
  --resume RUN_ID      new run that restores RUN_ID's newest valid checkpoint and continues;
                       the base config is RUN_ID's resolved config unless --config is given
  --trust-checkpoints  load checkpoints without the allow-list of globals (files you made
                       yourself: another's file may run their code); also LABRUN_TRUST_CHECKPOINTS=1
  --system-metrics M   CPU/memory/GPU curves (system/*) in the run: on, off, or auto (default:
                       after the run's first 3 s, so second-long test runs pay nothing)
  --log-model M        log the trained model as an MLflow model: on, off, or auto (default:
                       runs that lasted 20 s or more, or that --register-model)
  --register-model NAME  register the model the task logs in MLflow's model registry
  --nproc N            train on N processes of this machine under torchrun and DDP (one run;
                       gloo on CPU, nccl on CUDA); tasks that train in one process refuse it
  --nnodes M, --node-rank R, --rdzv-endpoint HOST:PORT
                       M machines: start the same command on each, with its R (0..M-1) and
                       the address of node 0 (HOST:PORT must be free there)

Valid config keys:
{keys}
"""


def command_name(task: str, argv0: str | None = None) -> str:
    """The command the user typed, named in every error and in ``--help``: the task's module
    when it is the program (``python -m projects.ired.train``, also what ``mlflow run``
    starts), else ``labrun run <task>``. Derived here once for every task."""
    path = Path(sys.argv[0] if argv0 is None else argv0)
    if path.stem == "train" and path.parent.parent.name == "projects":
        return f"python -m projects.{path.parent.name}.train"
    return f"labrun run {task}"


def parse_argv(argv: Sequence[str]) -> tuple[LaunchOptions, list[str], bool]:
    """Split argv into launch options and overrides; returns (options, overrides, help)."""
    opts = LaunchOptions()
    overrides: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-h", "--help"):
            return opts, overrides, True
        if arg == "--trust-checkpoints":  # the one flag without a value
            opts.trust_checkpoints = True
            i += 1
            continue
        if not arg.startswith("--"):
            raise ConfigError(
                f"unexpected argument {arg!r}: overrides look like --set key.path=value "
                f"or --key.path value"
            )
        name, eq, inline = arg.partition("=")
        if eq:
            value = inline
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"option {name} needs a value (e.g. {name} VALUE)")
            value = args[i + 1]
            i += 2
        if name == "--config":
            opts.base_config = value or None
        elif name == "--set":
            overrides.append(value)
        elif name == "--seed":
            overrides.append(f"seed={value}")
        elif name == "--tag":
            k, v = _tag(value)
            opts.tags[k] = v
        elif name == "--status":
            if value not in RESEARCH_STATUSES:
                raise ConfigError(
                    f"unknown status {value!r}; valid: {', '.join(RESEARCH_STATUSES)}"
                )
            opts.status = value
        elif name == "--name":
            opts.name = value
        elif name == "--description":
            opts.description = value
        elif name == "--resume":
            opts.resume = value or None
        elif name == "--experiment":
            opts.experiment = value or None
        elif name == "--system-metrics":
            if value not in ("on", "off", "auto"):
                raise ConfigError(f"unknown --system-metrics {value!r}; valid: on, off, auto")
            opts.system_metrics = value
        elif name == "--register-model":
            opts.register_model = value or None
        elif name in _TOPOLOGY:
            _topology(opts, name, value)
        elif name == "--log-model":
            if value not in ("on", "off", "auto"):
                raise ConfigError(f"unknown --log-model {value!r}; valid: on, off, auto")
            opts.log_model = value
        else:
            overrides.append(f"{name[2:]}={value}")
    opts.overrides = overrides
    return opts, overrides, False


_TOPOLOGY = ("--nproc", "--nnodes", "--node-rank", "--rdzv-endpoint")


def _topology(opts: LaunchOptions, name: str, value: str) -> None:
    """One of torchrun's options (:mod:`tracking.distributed.launch`), checked here."""
    field = name[2:].replace("-", "_")
    if field == "rdzv_endpoint":
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--rdzv-endpoint {value!r} must be HOST:PORT (node 0's address), "
                              f"e.g. 10.0.0.1:29400")
        opts.topology[field] = value
        return
    try:
        number = int(value)
    except ValueError:
        number = -1
    low = 0 if field == "node_rank" else 1
    if number < low:
        raise ConfigError(f"{name} needs an integer >= {low}, got {value!r}")
    opts.topology[field] = number


def strip_topology(argv: Sequence[str]) -> list[str]:
    """``argv`` without the torchrun options: what each rank is started with."""
    out, args, i = [], list(argv), 0
    while i < len(args):
        name = args[i].partition("=")[0]
        if name in _TOPOLOGY:
            i += 1 if "=" in args[i] else 2
            continue
        out.append(args[i])
        i += 1
    return out


def _tag(value: str) -> tuple[str, str]:
    """One ``--tag key=value``, checked before any run exists.

    ``labrun.*`` and ``mlflow.*`` keys are the platform's bookkeeping (fingerprints, task,
    status, parent links): a user's tag must not overwrite them. The few a sweep launcher
    passes to its cells (:data:`tracking.tags.LAUNCH_TAGS`) are let through.
    """
    if "=" not in value:
        raise ConfigError(f"malformed tag {value!r}: expected --tag key=value")
    k, v = value.split("=", 1)
    k = k.strip()
    if not k:
        raise ConfigError(f"malformed tag {value!r}: the key before '=' is empty (--tag key=value)")
    if k == T.STATUS:
        raise ConfigError(f"tag {k!r} is reserved: set the research status with --status "
                          f"{'|'.join(RESEARCH_STATUSES)}")
    if k.startswith(RESERVED_PREFIXES) and k not in T.LAUNCH_TAGS:
        raise ConfigError(f"tag {k!r} is reserved: keys starting with 'labrun.' or 'mlflow.' are "
                          f"the platform's own; choose another key (e.g. {k.split('.', 1)[1]!r})")
    if not _TAG_KEY.match(k) or posixpath.normpath(k) != k or k.startswith(("/", "..")):
        raise ConfigError(f"tag key {k!r} is not one MLflow accepts: use letters, digits, '_', '-', "
                          f"'.', ' ', ':' and '/' (not at the start, no '..' or '//')")
    if len(k) > TAG_KEY_MAX:
        raise ConfigError(f"tag key of {len(k)} characters is too long: MLflow keeps keys up to "
                          f"{TAG_KEY_MAX} ({k[:40]!r}...)")
    if len(v) > TAG_VALUE_MAX:
        raise ConfigError(f"tag {k!r}: a value of {len(v)} characters is too long: MLflow keeps "
                          f"up to {TAG_VALUE_MAX}; put long text in --description or a file")
    return k, v
