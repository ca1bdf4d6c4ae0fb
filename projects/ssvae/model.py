"""The SSVAE network: q(c|x), q(z|x,c), p(z|c) and p(x|z).

c is a discrete latent over K mixture components, z a continuous one. Every component's
branch is computed in parallel (no sampling of c), so the ELBO sums over c exactly, weighted
by q(c|x). With ``prior="mixture"`` p(z|c) is a learnable Gaussian per component and the
decoder sees only z (GMVAE); with ``prior="normal"`` p(z|c) = N(0, I) for every c, so the
decoder also sees c (M2), otherwise c would carry no information at all.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class Encoder(nn.Module):
    """x -> features h; an MLP, or a small conv net that keeps the image layout."""

    def __init__(self, num_features: int, image_shape: tuple[int, int], hidden: int, kind: str) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        if kind == "mlp":
            self.body = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(),
                                      nn.Linear(hidden, hidden), nn.ReLU())
        elif kind == "conv":
            h, w = self.image_shape
            flat = 32 * math.ceil(h / 2) * math.ceil(w / 2)
            self.body = nn.Sequential(nn.Unflatten(1, (1, h, w)),
                                      nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU())
        else:
            raise ValueError(f"unknown encoder {kind!r}; valid: mlp, conv")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SSVAE(nn.Module):
    def __init__(self, num_features: int, image_shape: tuple[int, int], *, num_components: int = 10,
                 latent_dim: int = 8, hidden: int = 256, encoder: str = "mlp", prior: str = "mixture",
                 learn_pi: bool = False, decoder: str = "bernoulli", sigma_min: float = 0.05,
                 sigma_max: float = 1.0, prior_spread: float = 1.0) -> None:
        super().__init__()
        if prior not in ("mixture", "normal"):
            raise ValueError(f"unknown prior {prior!r}; valid: mixture, normal")
        if decoder not in ("bernoulli", "gaussian"):
            raise ValueError(f"unknown decoder {decoder!r}; valid: bernoulli, gaussian")
        k, d = num_components, latent_dim
        self.num_components, self.latent_dim = k, d
        self.prior_kind, self.decoder_kind = prior, decoder
        self.log_sigma_min, self.log_sigma_max = math.log(sigma_min), math.log(sigma_max)
        self.encoder = Encoder(num_features, image_shape, hidden, encoder)
        self.cat_head = nn.Linear(hidden, k)
        # q(z|x,c) = Linear([h, onehot(c)]) split into a shared part and a per-component offset.
        self.z_head = nn.Linear(hidden, 2 * d)
        self.z_offset = nn.Parameter(torch.zeros(k, 2 * d))
        dec_in = d + (k if prior == "normal" else 0)
        self.decoder = nn.Sequential(nn.Linear(dec_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.dec_mean = nn.Linear(hidden, num_features)
        self.dec_log_sigma = nn.Linear(hidden, num_features) if decoder == "gaussian" else None
        if prior == "mixture":
            self.prior_mean = nn.Parameter(prior_spread * torch.randn(k, d))  # seeded by the run
            self.prior_logvar = nn.Parameter(torch.zeros(k, d))
        else:
            self.register_buffer("prior_mean", torch.zeros(k, d))
            self.register_buffer("prior_logvar", torch.zeros(k, d))
        if learn_pi:
            self.pi_logits = nn.Parameter(torch.zeros(k))
        else:
            self.register_buffer("pi_logits", torch.zeros(k))

    # ------------------------------------------------------------------ pieces
    def log_pi(self) -> torch.Tensor:
        return F.log_softmax(self.pi_logits, dim=0)

    def pi(self) -> torch.Tensor:
        return self.log_pi().exp()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> logits of q(c|x) [B,K], mean and log-variance of q(z|x,c) [B,K,D]."""
        h = self.encoder(x)
        zp = self.z_head(h)[:, None, :] + self.z_offset[None]
        mu, logvar = zp.chunk(2, dim=-1)
        return self.cat_head(h), mu, logvar.clamp(-10.0, 10.0)

    def decode(self, z: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z [N,D] (and component index c [N] for the normal prior) -> mean logits, log sigma."""
        if self.prior_kind == "normal":
            if c is None:
                raise ValueError("the normal-prior decoder needs the component index c")
            z = torch.cat([z, F.one_hot(c, self.num_components).to(z.dtype)], dim=-1)
        h = self.decoder(z)
        mean_logits = self.dec_mean(h)
        if self.dec_log_sigma is None:
            return mean_logits, None
        log_sigma = self.dec_log_sigma(h).clamp(self.log_sigma_min, self.log_sigma_max)
        return mean_logits, log_sigma

    def forward(self, x: torch.Tensor, sample: bool = True) -> dict[str, torch.Tensor]:
        logits_c, mu, logvar = self.encode(x)
        b, k, d = mu.shape
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        comp = torch.arange(k, device=x.device).repeat(b)
        mean_logits, log_sigma = self.decode(z.reshape(b * k, d), comp)
        out = {"logits_c": logits_c, "q_c": logits_c.softmax(-1), "mu": mu, "logvar": logvar, "z": z,
               "mean_logits": mean_logits.view(b, k, -1)}
        if log_sigma is not None:
            out["log_sigma"] = log_sigma.view(b, k, -1)
        return out

    @torch.no_grad()
    def sample(self, component: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images drawn from p(z|c=component), decoded to their mean in [0, 1]."""
        dev = self.prior_mean.device
        eps = torch.randn(n, self.latent_dim, generator=generator).to(dev)
        z = self.prior_mean[component] + eps * (0.5 * self.prior_logvar[component]).exp()
        c = torch.full((n,), component, dtype=torch.long, device=dev)
        return torch.sigmoid(self.decode(z, c)[0])
