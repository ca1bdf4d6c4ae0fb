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
navier_     w_t + u . grad w = nu Lap w + f on the periodic unit square (vorticity form),
stokes      f = 0.1 (sin 2 pi (x + y) + cos 2 pi (x + y)), w0 ~ GRF 7^3 (-Lap + 49 I)^-2.5;
            map w(., 0) -> w(., T). Pseudo-spectral (2/3 rule) on
            ``pde.navier_stokes.fine_resolution`` points, Crank-Nicolson for the viscous
            term, Heun for advection and forcing, subsampled.
==========  ===================================================================================

:mod:`.cache` keys every generated array by its generator config; :mod:`.loader` builds the
run's splits and applies the operator conditions.
"""
