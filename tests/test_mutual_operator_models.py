"""Operator models beyond the basics: the spectral layer on odd grids, resolution transfer of
the FNO on a tiny problem, and the grid conventions the models share."""
from __future__ import annotations

import pytest
import torch


def _ones_conv(cls):
    conv = cls(1, 1, n_modes=(12, 12))
    with torch.no_grad():
        for name, p in conv.named_parameters():
            p.zero_() if "bias" in name else p.fill_(1.0)
    return conv


@pytest.mark.parametrize("size", [22, 43, 44, 85])
def test_centred_spectral_layer_passes_its_kept_modes_on_odd_and_even_grids(size):
    """A weight of ones is the identity on the kept modes: a field made of two of them comes
    back unchanged. neuralop 2.0.0's own layer does so on even grids only (its inverse shift
    moves every mode by one place on an odd grid)."""
    from neuralop.layers.spectral_convolution import SpectralConv

    from projects.mutual.models.operator.spectral import CentredSpectralConv

    x = torch.arange(size) / size
    X, Y = torch.meshgrid(x, x, indexing="ij")
    f = (torch.cos(2 * torch.pi * 2 * X) + torch.sin(2 * torch.pi * 3 * Y))[None, None]
    with torch.no_grad():
        assert torch.allclose(_ones_conv(CentredSpectralConv)(f), f, atol=1e-5)
        library_error = float((_ones_conv(SpectralConv)(f) - f).abs().max())
    assert (library_error < 1e-5) == (size % 2 == 0)


def test_centred_spectral_layer_is_the_library_layer_on_even_grids():
    from neuralop.layers.spectral_convolution import SpectralConv

    from projects.mutual.models.operator.spectral import CentredSpectralConv

    torch.manual_seed(0)
    lib, ours = SpectralConv(3, 4, n_modes=(8, 8)), CentredSpectralConv(3, 4, n_modes=(8, 8))
    ours.load_state_dict(lib.state_dict())
    x = torch.randn(2, 3, 20, 20)
    assert torch.allclose(lib(x), ours(x), atol=1e-6)
    coarse = torch.randn(2, 3, 6, 6)                     # fewer modes than the weight holds
    assert torch.allclose(lib(coarse), ours(coarse), atol=1e-6)
    lib1, ours1 = SpectralConv(3, 4, n_modes=(8,)), CentredSpectralConv(3, 4, n_modes=(8,))
    ours1.load_state_dict(lib1.state_dict())
    line = torch.randn(2, 3, 33)                         # 1-D: nothing is shifted, any parity
    assert torch.allclose(lib1(line), ours1(line), atol=1e-6)


def _darcy_like(size: int) -> torch.Tensor:
    x = torch.linspace(0, 1, size)
    X, Y = torch.meshgrid(x, x, indexing="ij")
    return (torch.sin(torch.pi * X) * torch.sin(2 * torch.pi * Y) + 0.5 * torch.cos(torch.pi * X * Y))[None]


def test_fno_gives_the_same_field_on_a_22_and_a_43_node_grid():
    """Resolution transfer on a tiny problem (the regression for Darcy 22 -> 43): the nodes of
    the 22-grid are every other node of the 43-grid, so a resolution-invariant FNO returns the
    same values there. With neuralop's layer and grid (as shipped) the two differ by ~5 %."""
    from projects.mutual.models.operator.fno import FieldFNO

    def mismatch(**kw) -> float:
        torch.manual_seed(0)
        model = FieldFNO(2, width=8, depth=2, modes=6, periodic=False, **kw).eval()
        with torch.no_grad():
            coarse, fine = model(_darcy_like(22)), model(_darcy_like(43))[:, ::2, ::2]
        return float((coarse - fine).norm() / coarse.norm())

    assert mismatch() < 2e-3
    assert mismatch(conv="library", embedding="library") > 1e-2


def test_grid_conventions_periodic_points_and_bounded_nodes():
    from projects.mutual.models.operator.coords import axis, grid, grid_channels

    assert torch.allclose(axis(4, True), torch.tensor([0, 0.25, 0.5, 0.75]))
    assert torch.allclose(axis(3, False), torch.tensor([0, 0.5, 1.0]))
    assert grid(2, 3, False)[-1].tolist() == [1.0, 1.0] and grid(1, 4, True).shape == (4, 1)
    assert grid_channels((3, 3), False)[0, :, 0].tolist() == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("dim, size", [(1, 32), (2, 17), (2, 85)])
def test_deeponet_cnn_branch_maps_any_grid_and_trains(dim, size):
    """``branch=cnn``: convolutions read the sensor grid (not a flat vector); the output stays
    on the input's grid at any resolution, and one Adam step lowers the loss on a batch."""
    from projects.mutual.models import build_operator
    from projects.mutual.models.operator.deeponet import CNNBranch

    torch.manual_seed(0)
    model = build_operator("deeponet", dim, size, periodic=dim == 1, width=32, depth=3, basis=16, branch="cnn")
    assert isinstance(model.branch, CNNBranch)
    assert any(isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)) for m in model.branch.modules())
    for s in (size, 2 * size - 1):
        assert model(torch.randn(2, *([s] * dim))).shape == (2, *([s] * dim))
    x, y = torch.randn(4, *([size] * dim)), torch.randn(4, *([size] * dim))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(2):
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[1] < losses[0]


def test_deeponet_branch_is_a_config_key_for_deeponet_only():
    from projects.mutual.config import Config
    from tracking import ConfigError, resolve_config

    cfg = resolve_config(Config, "operator_quick", ["model_b.branch=cnn"])
    assert cfg.model_b.sizes()["branch"] == "cnn"
    with pytest.raises(ConfigError, match="does not take model_a.branch"):
        resolve_config(Config, "operator_quick", ["model_a.branch=cnn"])
    with pytest.raises(ConfigError):
        resolve_config(Config, "operator_quick", ["model_b.branch=rnn"])


@pytest.mark.parametrize("dim, sizes", [(1, (32, 64, 47)), (2, (9, 17, 22))])
def test_gnot_maps_a_field_on_any_grid_to_the_same_grid(dim, sizes):
    """The transformer operator has no parameter tied to a grid size: built for one resolution
    it evaluates on any other, the output on the input's grid. Its attention sums are
    normalised (quadratures of integrals), so it discretises one continuous operator: on a
    smooth input, the values at the points a grid shares with one twice as fine differ less
    and less as both refine (first order here: the coordinate x jumps at the periodic seam)."""
    from projects.mutual.models import build_operator

    torch.manual_seed(0)
    model = build_operator("gnot", dim, sizes[0], periodic=True, width=16, depth=2).eval()

    def on(size: int) -> torch.Tensor:
        x = torch.arange(size) / size
        mesh = torch.meshgrid(*([x] * dim), indexing="ij")
        with torch.no_grad():
            return model(torch.sin(2 * torch.pi * sum(mesh))[None])

    def mismatch(size: int) -> float:
        coarse, fine = on(size), on(2 * size)[(slice(None),) + (slice(None, None, 2),) * dim]
        return float((coarse - fine).norm() / coarse.norm())

    for s in sizes:
        assert model(torch.randn(3, *([s] * dim))).shape == (3, *([s] * dim))
    first, second = mismatch(sizes[0]), mismatch(2 * sizes[0])
    assert first < 0.1 and second < 0.6 * first


def test_gnot_is_an_operator_model_with_width_and_depth():
    from projects.mutual.config import Config
    from tracking import ConfigError, resolve_config

    cfg = resolve_config(Config, "operator_quick", ["model_b.name=gnot", "model_b.basis=null", "model_b.width=32"])
    assert cfg.model_b.name == "gnot"
    with pytest.raises(ConfigError, match="does not take model_b.modes"):
        resolve_config(Config, "operator_quick", ["model_b.name=gnot", "model_b.basis=null", "model_b.modes=4"])


@pytest.mark.parametrize("model_a, model_b", [("fno", "gnot"), ("deeponet", "gnot")])
def test_transformer_pairs_run_through_the_method_layer_on_navier_stokes(tmp_path, model_a, model_b):
    """The heterogeneous pairs with the transformer take one joint ssmo-soft step on tiny
    Navier-Stokes data (periodic grid given to both models) and are evaluated at another grid."""
    from projects.mutual.config import Config
    from projects.mutual.joint import evaluate, joint_step, make_optimizer
    from projects.mutual.methods import build_method
    from projects.mutual.tasks import get_task
    from tracking import resolve_config

    sizes = {"fno": [], "deeponet": ["model_a.modes=null", "model_a.width=32"], "gnot": []}
    cfg = resolve_config(Config, "operator_quick", [
        f"pde.cache_dir={tmp_path}", "pde.n_train=8", "pde.n_val=4", "pde.n_test=4", "data.dataset=navier_stokes",
        "pde.resolution=16", "pde.shift_resolution=8", "pde.navier_stokes.fine_resolution=16",
        "pde.navier_stokes.time=0.5", "condition=resolution_shift", "method.name=ssmo-soft",
        f"model_a.name={model_a}", *sizes[model_a], f"model_b.name={model_b}", "model_b.basis=null",
        "model_b.width=16", "model_b.depth=1"])
    task = get_task("operator")(cfg)
    data = task.load_data()
    a, b = task.build_models(data)
    assert a.periodic and b.periodic
    step = joint_step(task, build_method(cfg.method), a, b, make_optimizer(a, cfg.train), make_optimizer(b, cfg.train),
                      (data.train.x, data.train.y))
    assert all(v == v for v in step.metrics().values())                     # finite, no NaN
    out = evaluate(task, {"a": a, "b": b}, data.test)                       # trained at 8, tested at 16
    assert out["metric.a.rel_l2.test"] > 0 and out["metric.b.rel_l2.test"] > 0
