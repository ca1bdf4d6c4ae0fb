"""PDE data for operator learning, generated offline and cached on disk.

==========  ===================================================================================
dataset     what (the FNO paper's setups, Li et al. 2021)
==========  ===================================================================================
burgers     u_t + u u_x = nu u_xx on the periodic unit interval, u0 ~ GRF with covariance
            625 (-Laplacian + 25 I)^-2; map u(., 0) -> u(., 1). Pseudo-spectral on
            ``pde.burgers.fine_resolution`` points, ETDRK4 in time (stiff-stable: the
            diffusion is integrated exactly), subsampled to the training resolution.
darcy       -div(a grad u) = 1 on the unit square, u = 0 on the boundary, a = 12 / 3 where a
            GRF with covariance (-Laplacian + 9 I)^-2 is >= 0 / < 0; map a -> u. Five-point
            finite differences (harmonic means of a on the faces) on
            ``pde.darcy.fine_resolution`` nodes, SciPy sparse LU, subsampled.
==========  ===================================================================================

:mod:`.cache` keys every generated array by its generator config; :mod:`.loader` builds the
run's splits and applies the operator conditions.
"""
