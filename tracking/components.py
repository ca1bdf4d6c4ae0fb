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


# --------------------------------------------------------------------------- providers

@dataclass(frozen=True)
class Gate:
    """A reason a component cannot run in this config, with the override that lifts it.

    ``applies(cfg)`` is true when the component must report ``disabled``; the IRED
    feedforward baseline, which has no energy landscape, is one gate shared by four
    components instead of four hand-written ``disabled`` results.
    """

    applies: Callable[[Any], bool]
    reason: str
    enable: str = ""

    @classmethod
    def off(cls, key: str, *, enable_value: Any = True, why: str = "") -> "Gate":
        """Disabled while the dotted config key ``key`` is false, 0, None or empty."""
        shown = str(enable_value).lower() if isinstance(enable_value, bool) else enable_value
        return cls(lambda cfg: not _dotted(cfg, key), _off_reason(key, why),
                   f"--set {key}={shown}")

    def check(self, cfg: Any) -> ComponentResult | None:
        return ComponentResult.disabled(self.reason, enable=self.enable) if self.applies(cfg) else None


def _dotted(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _off_reason(key: str, why: str) -> str:
    return f"{key} is false" + (f" ({why})" if why else "")


def disabled_by(key: str, value: Any, *, enable_value: Any, why: str = "") -> ComponentResult:
    """``disabled`` because config key ``key`` has ``value``: the reason and the ``--set`` to enable."""
    shown = str(value).lower() if isinstance(value, bool) else value
    on = str(enable_value).lower() if isinstance(enable_value, bool) else enable_value
    reason = f"{key} is {shown}" + (f" ({why})" if why else "")
    return ComponentResult.disabled(reason, enable=f"--set {key}={on}")


@dataclass
class _Entry:
    fn: Callable[[Any], ComponentResult]
    gates: tuple[Gate, ...]


class Components:
    """A task's optional parts, in report order: ``@components.provider(name, ...)``.

    A provider takes the task's context object (whatever it passes to ``report``) and
    returns a :class:`ComponentResult`. Gates are checked first, so a provider body only
    ever handles the enabled case; ``enabled_by="diag.x.enabled"`` is the common gate.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def provider(self, name: str, *, enabled_by: str | None = None, why: str = "",
                 gates: tuple[Gate, ...] | list[Gate] = ()) -> Callable:
        def register(fn: Callable[[Any], ComponentResult]) -> Callable[[Any], ComponentResult]:
            own = (Gate.off(enabled_by, why=why),) if enabled_by else ()
            self._entries[name] = _Entry(fn, tuple(gates) + own)
            return fn
        return register

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def disabled(self, name: str, cfg: Any) -> ComponentResult | None:
        """The first gate that holds for ``cfg``, as a ``disabled`` result (training code
        asks this too, so a loss term and its component are switched by one rule)."""
        for gate in self._entries[name].gates:
            result = gate.check(cfg)
            if result is not None:
                return result
        return None

    def resolve(self, name: str, cfg: Any, ctx: Any) -> Provider:
        """The provider for ``run.component``: a gate's ``disabled`` result, else the call."""
        entry = self._entries[name]
        return self.disabled(name, cfg) or (lambda: entry.fn(ctx))
