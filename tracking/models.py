"""The trained model as an MLflow model: loadable with ``mlflow.pytorch.load_model`` and
registrable, with a signature and an input example so a user sees what it takes.

Requirements are given (torch's version) rather than inferred: MLflow's inference starts
a subprocess that imports the model, which costs seconds per run for nothing new.
"""
from __future__ import annotations

from typing import Any

# --log-model auto: a run shorter than this (a test, a toy smoke run) keeps no model. Importing
# mlflow.pytorch and logging a small model cost ~2 s on a quiet 2-core machine (4.4 s + 3.0 s at
# load 6, measured 2026-12-07): from 20 s on, that is at most ~10% of the run.
AUTO_AFTER_S = 20.0


def _as_numpy(value: Any) -> Any:
    """Tensors to arrays; a tuple of outputs (a VAE's reconstruction, mean, ...) becomes
    named outputs, which a signature can describe."""
    if isinstance(value, (tuple, list)):
        return {f"output_{i}": _as_numpy(v) for i, v in enumerate(value) if hasattr(v, "detach")}
    if isinstance(value, dict):
        return {str(k): _as_numpy(v) for k, v in value.items() if hasattr(v, "detach")}
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value


def single_input_reason(model: Any) -> str | None:
    """Why MLflow's pytorch flavour cannot serve ``model`` (its ``forward`` needs several
    inputs), or None when it takes one."""
    import inspect

    try:
        params = [p for p in inspect.signature(model.forward).parameters.values()
                  if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return None
    if len(params) > 1:
        names = ", ".join(p.name for p in params)
        return f"its forward takes {len(params)} inputs ({names}); MLflow's pytorch models take one"
    return None


def log_torch_model(model: Any, input_example: Any, *, name: str = "model",
                    registered_model_name: str | None = None, step: int = 0) -> Any:
    """Log ``model`` (a ``torch.nn.Module``) to the active run; returns MLflow's ModelInfo.

    The signature is inferred from one forward pass on ``input_example`` (a tensor or
    array of a few rows), in eval mode and without gradients; the mode is restored after.
    """
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    example = input_example if torch.is_tensor(input_example) else torch.as_tensor(input_example)
    device = next(iter(model.parameters()), torch.empty(0)).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(example.to(device))
    finally:
        model.train(was_training)
    x = _as_numpy(example)
    signature = infer_signature(x, _as_numpy(output))
    # Exported (pt2) with gradients off, as it will be used: a ``torch.no_grad()`` block inside
    # ``forward`` traced with gradients on becomes a ``wrap_with_set_grad_enabled`` node that
    # torch.export.load then rejects ("missing val field"), so the model would log but never load.
    with torch.no_grad():
        return mlflow.pytorch.log_model(model, name=name, signature=signature, input_example=x,
                                        registered_model_name=registered_model_name, step=step,
                                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])


def log_model_status(model: Any, input_example: Any, *, name: str, mode: str, register: str | None,
                     elapsed_s: float) -> Any:
    """``--log-model`` / ``--register-model`` applied to one model, as a component status:
    success with where it is, disabled with how to enable it, or failed with the error."""
    from tracking.components import ComponentResult, evaluate

    def provide() -> ComponentResult:
        if mode == "off" or (mode == "auto" and not register and elapsed_s < AUTO_AFTER_S):
            why = "--log-model off" if mode == "off" else \
                f"the run took {elapsed_s:.0f} s < {AUTO_AFTER_S:.0f} s (--log-model auto)"
            return ComponentResult.disabled(why, "--log-model on")
        several = single_input_reason(model)
        if several:
            return ComponentResult.disabled(several, "wrap it in a module whose forward takes one tensor")
        info = log_torch_model(model, input_example, name=name, registered_model_name=register)
        return ComponentResult.success({
            "model_uri": info.model_uri, "model_id": getattr(info, "model_id", None),
            "registered_as": register, "load_with": f"mlflow.pytorch.load_model({info.model_uri!r})"})
    return evaluate(provide)
