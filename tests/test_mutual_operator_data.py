"""Operator-learning data: the solvers against known answers, the random fields' statistics,
the on-disk cache (hit, corruption -> regeneration, key logged) and the operator conditions."""
from __future__ import annotations

import json

import numpy as np
import pytest

from projects.mutual.data.pde import cache
from projects.mutual.data.pde.burgers import solve_burgers
from projects.mutual.data.pde.darcy import solve_darcy
from projects.mutual.data.pde.grf import neumann_grf_2d, periodic_grf_1d


def _cole_hopf(x: np.ndarray, t: float, nu: float, a: float = 2.0, b: float = 1.0) -> np.ndarray:
    """An exact Burgers solution: u = -2 nu phi_x / phi with phi = a + b e^{-4 pi^2 nu t} cos(2 pi x),
    a solution of the heat equation (Cole-Hopf)."""
    decay = b * np.exp(-4 * np.pi ** 2 * nu * t)
    return 2 * nu * decay * 2 * np.pi * np.sin(2 * np.pi * x) / (a + decay * np.cos(2 * np.pi * x))


@pytest.mark.parametrize("nu", [0.1, 0.02])
def test_burgers_solver_matches_the_cole_hopf_exact_solution(nu):
    x = np.arange(256) / 256
    u1 = solve_burgers(_cole_hopf(x, 0.0, nu)[None], viscosity=nu, time=1.0, dt=5e-3)[0]
    assert np.abs(u1 - _cole_hopf(x, 1.0, nu)).max() < 1e-8 * max(1.0, np.abs(u1).max() * 1e3)


def test_burgers_conserves_the_mean_and_dissipates_energy():
    rng = np.random.default_rng(0)
    u0 = periodic_grf_1d(rng, 4, 512) + 0.3
    energies = [np.mean(u0 ** 2, axis=1)]
    u = u0
    for _ in range(4):
        u = solve_burgers(u, viscosity=0.05, time=0.25)
        energies.append(np.mean(u ** 2, axis=1))
    assert np.allclose(u.mean(axis=1), u0.mean(axis=1), atol=1e-12)
    assert np.all(np.diff(np.stack(energies), axis=0) < 0)


def test_burgers_fine_grid_is_resolved_subsampling_agrees():
    """A band-limited initial condition solved on 2048 and on 512 points: the same solution
    (the spectrum decays fast at nu = 0.1, so the fine grid only adds resolution margin)."""
    coarse0 = periodic_grf_1d(np.random.default_rng(1), 2, 512)
    fine0 = np.fft.irfft(np.fft.rfft(coarse0), n=2048) * 4
    fine, coarse = solve_burgers(fine0, viscosity=0.1), solve_burgers(coarse0, viscosity=0.1)
    assert np.abs(fine[:, ::4] - coarse).max() < 1e-9 * np.abs(fine).max()


def test_darcy_solver_converges_on_a_manufactured_solution_at_second_order():
    errors = []
    for size in (17, 33, 65):
        x = np.linspace(0, 1, size)
        X, Y = np.meshgrid(x, x, indexing="ij")
        a = 1 + X * Y
        exact = np.sin(np.pi * X) * np.sin(np.pi * Y)
        ux, uy = np.pi * np.cos(np.pi * X) * np.sin(np.pi * Y), np.pi * np.sin(np.pi * X) * np.cos(np.pi * Y)
        f = -(Y * ux + X * uy - a * 2 * np.pi ** 2 * exact)   # -div(a grad u)
        errors.append(np.abs(solve_darcy(a, f) - exact).max())
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > 1.8), (errors, rates)


def test_darcy_constant_coefficient_scales_the_solution():
    """-div(a grad u) = 1 with constant a: u = u_1 / a exactly, and the piecewise solver
    reduces to it; u = 0 on the boundary."""
    one = solve_darcy(np.ones((21, 21)))
    assert np.allclose(solve_darcy(np.full((21, 21), 4.0)), one / 4, atol=1e-14)
    assert one[0].max() == 0 and one[:, -1].max() == 0 and 0.07 < one.max() < 0.075  # ~0.0737 (series)


def test_random_fields_have_the_covariance_asked_for():
    rng = np.random.default_rng(2)
    u = periodic_grf_1d(rng, 4000, 64)
    k = np.arange(1, 4)
    want = 625 * ((2 * np.pi * k) ** 2 + 25) ** -2.0   # eigenvalue of the covariance operator
    # u = sum_k sqrt(2) s_k (a cos + b sin), a, b ~ N(0, 1): E |rfft(u)_k / N|^2 = s_k^2
    got = np.mean(np.abs(np.fft.rfft(u, axis=1)[:, 1:4] / 64) ** 2, axis=0)
    assert np.allclose(got, want, rtol=0.1) and abs(u.mean()) < 0.05
    field = neumann_grf_2d(rng, 2, 33)
    assert field.shape == (2, 33, 33) and 0.2 < (field >= 0).mean() < 0.8


def test_cache_hits_detects_corruption_and_regenerates(tmp_path, caplog):
    calls = []

    def generate(names):
        calls.append(list(names))
        return {n: {"x": np.arange(6.0).reshape(2, 3) + len(calls), "y": np.ones((2, 3))} for n in names}

    specs = {"train": {"dataset": "burgers", "n": 2, "viscosity": 0.1}}
    first, info = cache.cached(tmp_path, specs, generate)
    again, info2 = cache.cached(tmp_path, specs, generate)
    assert calls == [["train"]] and not info["train"]["hit"] and info2["train"]["hit"]
    assert info["train"]["key"] == info2["train"]["key"] and np.array_equal(first["train"]["x"], again["train"]["x"])
    other = cache.cache_key({**specs["train"], "viscosity": 0.05})
    assert other != info["train"]["key"]                                 # keyed by the generator config
    path = tmp_path / f"{info['train']['key']}.npz"
    raw = bytearray(path.read_bytes())
    raw[-40:-30] = b"\x00" * 10                                          # flip bytes in the archive
    path.write_bytes(bytes(raw))
    with caplog.at_level("WARNING"):
        regenerated, info3 = cache.cached(tmp_path, specs, generate)
    assert calls == [["train"], ["train"]] and not info3["train"]["hit"]
    assert "corrupted" in caplog.text and cache.read_entry(tmp_path, info["train"]["key"]) is not None
    meta = json.loads((tmp_path / f"{info['train']['key']}.json").read_text())
    assert meta["spec"]["viscosity"] == 0.1 and meta["shapes"]["x"] == [2, 3]
    path.write_bytes(b"not an npz")                                      # truncated / garbage
    assert cache.read_entry(tmp_path, info["train"]["key"]) is None


def _cfg(tmp_path, *overrides):
    from projects.mutual.config import Config
    from tracking import resolve_config

    return resolve_config(Config, "operator_quick", [f"pde.cache_dir={tmp_path}", "pde.n_train=16",
                                                     "pde.n_val=8", "pde.n_test=8", *overrides])


def test_operator_splits_conditions_and_cache_key_in_the_data_info(tmp_path):
    from projects.mutual.tasks import get_task

    clean = get_task("operator")(_cfg(tmp_path)).load_data()
    assert clean.train.x.shape == (16, 128) and clean.test.x.shape == (8, 128) and not clean.extra
    assert abs(float(clean.train.y.mean())) < 1e-5 and abs(float(clean.train.y.std()) - 1) < 0.05
    info = clean.describe()
    assert set(info["cache"]) == {"train", "val", "test"} and info["cache_hit"] is False
    assert get_task("operator")(_cfg(tmp_path)).load_data().describe()["cache_hit"] is True
    shift = get_task("operator")(_cfg(tmp_path, "condition=resolution_shift")).load_data()
    assert shift.train.x.shape == (16, 64) and shift.test.x.shape == (8, 128)
    assert shift.extra["test_clean"].x.shape == (8, 64) and shift.resolution == 64
    # the same samples, subsampled: test_clean is the test set on the training grid
    back = shift.extra["test_clean"].x * shift.scale["x_std"] + shift.scale["x_mean"]
    full = shift.test.x * shift.scale["x_std"] + shift.scale["x_mean"]
    assert np.allclose(back.numpy(), full[:, ::2].numpy(), atol=1e-5)
    visc = get_task("operator")(_cfg(tmp_path, "condition=viscosity_shift")).load_data()
    assert np.allclose(visc.extra["test_clean"].y.numpy(), clean.test.y.numpy(), atol=1e-6)
    assert not np.allclose(visc.test.y.numpy(), visc.extra["test_clean"].y.numpy(), atol=1e-3)
    assert np.allclose(visc.test.x.numpy(), clean.test.x.numpy(), atol=1e-6)  # same u0, other nu


def test_darcy_splits_and_coefficient_shift(tmp_path):
    from projects.mutual.tasks import get_task

    cfg = _cfg(tmp_path, "data.dataset=darcy", "pde.resolution=17", "pde.shift_resolution=9",
               "condition=coefficient_shift")
    data = get_task("operator")(cfg).load_data()
    assert data.train.x.shape == (16, 17, 17) and data.dim == 2
    x = data.train.x * data.scale["x_std"] + data.scale["x_mean"]
    assert set(np.unique(np.round(x.numpy(), 3))) <= {3.0, 12.0}
    x_test = data.test.x * data.scale["x_std"] + data.scale["x_mean"]
    assert 24.0 in set(np.unique(np.round(x_test.numpy(), 3)))


# ---------------------------------------------------------------------------------- Navier-Stokes
def _modes(size: int, rng, shell):
    x = np.arange(size) / size
    X, Y = np.meshgrid(x, x, indexing="ij")
    return sum(rng.normal() * np.cos(2 * np.pi * (a * X + b * Y)) + rng.normal() * np.sin(2 * np.pi * (a * X + b * Y))
               for a, b in shell)


def test_navier_stokes_modes_of_one_shell_decay_as_the_heat_equation_says():
    """Modes with the same |k| (here |k|^2 = 25: (3, 4), (5, 0), ...) make a Taylor-Green-like
    field: w is proportional to its stream function, so u . grad w = 0 although each product
    is not, and without forcing w(t) = w(0) exp(-nu (2 pi |k|)^2 t). The solver matches the
    exact decay to Crank-Nicolson's O(dt^3) per step, and that step's own factor to round-off."""
    from projects.mutual.data.pde.navier_stokes import solve_navier_stokes

    nu, t, dt = 1e-3, 2.0, 1e-2
    w0 = _modes(32, np.random.default_rng(0), [(3, 4), (4, 3), (5, 0), (0, 5), (-3, 4), (4, -3)])
    w = solve_navier_stokes(w0[None], viscosity=nu, time=t, dt=dt, force=0.0)[0]
    a = nu * (2 * np.pi) ** 2 * 25 * dt
    exact = w0 * np.exp(-nu * (2 * np.pi) ** 2 * 25 * t)
    assert np.abs(w - exact).max() < 1e-4 * np.abs(exact).max()
    crank_nicolson = w0 * ((1 - a / 2) / (1 + a / 2)) ** round(t / dt)
    assert np.abs(w - crank_nicolson).max() < 1e-10 * np.abs(exact).max()


def test_navier_stokes_forced_from_rest_approaches_the_exact_steady_state():
    """The paper's forcing is one |k|^2 = 2 shell: from w = 0 the flow stays in it, and
    w(t) = f / L (1 - exp(-L t)) with L = nu (2 pi)^2 2."""
    from projects.mutual.data.pde.navier_stokes import forcing, solve_navier_stokes

    nu, t = 1e-3, 5.0
    w = solve_navier_stokes(np.zeros((1, 16, 16)), viscosity=nu, time=t, dt=1e-2)[0]
    rate = nu * (2 * np.pi) ** 2 * 2
    exact = forcing(16) / rate * (1 - np.exp(-rate * t))
    assert np.abs(w - exact).max() < 1e-6 * np.abs(exact).max()


def test_navier_stokes_conserves_mean_vorticity_and_converges_in_time():
    from projects.mutual.data.pde.grf import periodic_grf_2d
    from projects.mutual.data.pde.navier_stokes import solve_navier_stokes

    w0 = periodic_grf_2d(np.random.default_rng(1), 2, 32)
    assert abs(w0.mean()) < 1e-12 and 0.1 < w0.std() < 0.5          # tau = 7, alpha = 2.5: std ~0.27
    coarse = solve_navier_stokes(w0, viscosity=1e-3, time=2.0, dt=2e-2)
    fine = solve_navier_stokes(w0, viscosity=1e-3, time=2.0, dt=1e-2)
    assert np.abs(fine.mean(axis=(1, 2))).max() < 1e-12
    assert np.linalg.norm(coarse - fine) < 1e-5 * np.linalg.norm(fine)
    assert np.linalg.norm(fine - w0) > 0.1 * np.linalg.norm(w0)       # the map is not the identity


def test_navier_stokes_splits_resolution_and_viscosity_shift(tmp_path):
    from projects.mutual.tasks import get_task

    base = ["data.dataset=navier_stokes", "pde.resolution=16", "pde.shift_resolution=8",
            "pde.navier_stokes.fine_resolution=16", "pde.navier_stokes.time=1.0"]
    shift = get_task("operator")(_cfg(tmp_path, *base, "condition=resolution_shift")).load_data()
    assert shift.train.x.shape == (16, 8, 8) and shift.test.x.shape == (8, 16, 16) and shift.periodic
    assert shift.dim == 2 and shift.extra["test_clean"].x.shape == (8, 8, 8)
    visc = get_task("operator")(_cfg(tmp_path, *base, "condition=viscosity_shift")).load_data()
    assert np.allclose(visc.test.x.numpy(), visc.extra["test_clean"].x.numpy(), atol=1e-6)  # same w0
    assert not np.allclose(visc.test.y.numpy(), visc.extra["test_clean"].y.numpy(), atol=1e-4)
    assert visc.describe()["generator"]["viscosity"] == 1e-3
