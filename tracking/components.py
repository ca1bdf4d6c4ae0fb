"""Component status: every optional part of a task says success, disabled or failed.

The point is that nothing disappears silently: a metric missing from a run is explained
by its component's status and reason in ``summary.json`` and ``REPORT.md``.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Union

Status = Literal["success", "disabled", "failed"]


@dataclass
class ComponentResult:
    status: Status
    reason: str = ""
    """Why it is disabled or how it failed (empty on success)."""
    enable: str = ""
    """For a disabled component: what to pass to switch it on (e.g. ``--set diag.x.enabled=true``)."""
    data: dict[str, Any] = field(default_factory=dict)
    """JSON-friendly results shown in the report (numbers, short lists, strings)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Scalar results also logged as MLflow metrics (hierarchical names)."""
    figures: list[str] = field(default_factory=list)
    """Artifact paths of the component's figures (as returned by ``run.log_figure``)."""

    @classmethod
    def success(cls, data: dict[str, Any] | None = None, *, metrics: dict[str, float] | None = None,
                figures: list[str] | None = None) -> "ComponentResult":
        return cls("success", data=dict(data or {}), metrics=dict(metrics or {}),
                   figures=list(figures or []))

    @classmethod
    def disabled(cls, reason: str, enable: str = "") -> "ComponentResult":
        return cls("disabled", reason=reason, enable=enable)

    @classmethod
    def failed(cls, error: BaseException | str) -> "ComponentResult":
        if isinstance(error, BaseException):
            reason = f"{type(error).__name__}: {error}"
            tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            return cls("failed", reason=reason, data={"traceback": tb[-4000:]})
        return cls("failed", reason=str(error))

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "enable": self.enable,
                "data": self.data, "metrics": self.metrics, "figures": self.figures}


Provider = Union[ComponentResult, Callable[[], ComponentResult]]


def evaluate(provider: Provider) -> ComponentResult:
    """Run a provider; an exception becomes ``failed`` so the run goes on."""
    if isinstance(provider, ComponentResult):
        return provider
    try:
        result = provider()
    except Exception as exc:  # a diagnostic must never take the training run down
        return ComponentResult.failed(exc)
    if not isinstance(result, ComponentResult):
        return ComponentResult.failed(
            f"provider returned {type(result).__name__}, expected ComponentResult"
        )
    return result
