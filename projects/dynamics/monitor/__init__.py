"""The monitor: signals (volatility, internal entropy, forecaster disagreement), the
uncertainty index that combines them, and the hysteresis trigger on it."""
from projects.dynamics.monitor.index import Monitor, Observation
from projects.dynamics.monitor.signals import InternalEntropy, Volatility, ZScore
from projects.dynamics.monitor.trigger import HysteresisTrigger

__all__ = ["Monitor", "Observation", "Volatility", "InternalEntropy", "ZScore", "HysteresisTrigger"]
