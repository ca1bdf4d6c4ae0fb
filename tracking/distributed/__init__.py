"""One task across many processes and machines: PyTorch's launcher (torchrun) and DDP under
the run contract.

The launcher is PyTorch's own (:mod:`torch.distributed.run`, its elastic agent):
:mod:`~tracking.distributed.launch` only turns ``--nproc N [--nnodes M --node-rank R
--rdzv-endpoint HOST:PORT]`` into its arguments and its exits into labrun's. Inside, each
process learns its place from torchrun's environment (:class:`World`): rank 0 owns the one
MLflow run; the other ranks get a :class:`~tracking.distributed.follower.FollowerRun`, the
same handle whose writes to the store are dropped, and join rank 0 in the collectives a run
needs (the run id, checkpoint RNG states, a failure's traceback).

Nothing here names a task: a task opts in with ``supports_distributed = True`` on its
config and wraps its model with ``run.distribute(model)``.
"""
from __future__ import annotations

from tracking.distributed.world import World, current

__all__ = ["World", "current"]
