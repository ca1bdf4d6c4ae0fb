"""IRED matrix inversion: an energy-diffusion model (Du, Mao, Tenenbaum, ICML 2024) that
learns to invert matrices, with pluggable negative mining for its energy-landscape loss.

Modules: ``data`` (the matrix generator and fixed evaluation sets), ``model`` (energy MLP
with FiLM time embedding, and the supervised feedforward baseline), ``diffusion`` (noise
schedule, sampling with energy optimisation steps), ``mining`` (negative strategies),
``objective`` (one training step's losses), ``evaluate`` (MSE of predictions),
``diagnostics`` (conditioning, energy gap, false negatives), ``train`` (the entry point).
"""
