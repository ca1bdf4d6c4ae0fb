"""Semi-supervised VAE with a mixture-of-Gaussians prior (GMVAE / M2 family).

The reference task for optional components: every part that can be switched off
(tau-classifier, mixture prior, heteroscedastic decoder, classifier loss, diversity,
Dirichlet prior on pi, figures) reports success, disabled (why, and how to enable it) or
failed (the error) in ``summary.json`` and ``REPORT.md``. Entry point: ``projects.ssvae.train``.
"""
