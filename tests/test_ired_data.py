"""The matrix-inversion generator: shapes, symmetry, exact inverses, seeds, OOD hardness."""
from __future__ import annotations

import torch

from projects.ired.data import MatrixInverseData, derived_generator, make_matrices


def test_shapes_symmetry_and_inverse():
    a, inv = make_matrices(6, 50, torch.Generator().manual_seed(0))
    assert a.shape == inv.shape == (50, 6, 6)
    assert torch.allclose(a, a.transpose(-1, -2))
    eye = torch.eye(6).expand(50, 6, 6)
    assert torch.allclose(a.double() @ inv.double(), eye.double(), atol=1e-4)
    # A = 2 R R^T + 0.5 I is positive definite with every eigenvalue >= 0.5.
    assert torch.linalg.eigvalsh(a.double()).min() >= 0.5 - 1e-5


def test_same_seed_same_data_and_different_seed_differs():
    d1 = MatrixInverseData(4, 3, n_val=16, n_test=16, ood_shift=0.1)
    d2 = MatrixInverseData(4, 3, n_val=16, n_test=16, ood_shift=0.1)
    d3 = MatrixInverseData(4, 4, n_val=16, n_test=16, ood_shift=0.1)
    for name in ("val", "test", "test_ood"):
        assert torch.equal(getattr(d1, name).x, getattr(d2, name).x)
        assert torch.equal(getattr(d1, name).y, getattr(d2, name).y)
        assert not torch.equal(getattr(d1, name).x, getattr(d3, name).x)
    assert not torch.equal(d1.val.x, d1.test.x)
    b1 = d1.batch(8, torch.Generator().manual_seed(3))
    b2 = d2.batch(8, torch.Generator().manual_seed(3))
    assert torch.equal(b1[0], b2[0]) and b1[0].shape == (8, 16)


def test_fixed_sets_do_not_consume_the_training_stream():
    g = torch.Generator().manual_seed(0)
    before = g.get_state().clone()
    d = MatrixInverseData(4, 0, n_val=32, n_test=32, ood_shift=0.1)
    d.target_mean(100)
    assert torch.equal(g.get_state(), before)
    # ... and the val set does not depend on how much training data was drawn before it.
    d.batch(100, g)
    assert torch.equal(MatrixInverseData(4, 0, n_val=32, n_test=32, ood_shift=0.1).val.x, d.val.x)


def test_ood_is_worse_conditioned():
    g = derived_generator(0, "test")
    a_in, _ = make_matrices(8, 400, g, shift=0.5)
    a_ood, _ = make_matrices(8, 400, g, shift=0.1)
    assert torch.linalg.cond(a_ood.double()).median() > 2 * torch.linalg.cond(a_in.double()).median()
