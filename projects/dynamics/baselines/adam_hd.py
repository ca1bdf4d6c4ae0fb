"""Adam-HD: Adam whose learning rate learns itself by hypergradient descent.

Baydin et al. 2018, "Online Learning Rate Adaptation with Hypergradient Descent", Alg. 3.
The Adam update is u_t = -eta_t * d_t with d_t = m_hat / (sqrt(v_hat) + eps); the paper
learns eta by eta_t = eta_{t-1} + beta * <g_t, d_{t-1}> (since d u_{t-1} / d eta = -d_{t-1}):
the LR grows while successive steps agree and shrinks when they oppose each other. Here
eta = alpha * s, where s = ``group['lr']`` is what the LR scheduler (and an injected spike)
sets and alpha the learned multiplier, kept in ``group['hd_alpha']`` so the state dict
carries it. The paper's step on eta is then alpha_t = alpha_{t-1} + beta * <g_t, d_{t-1}> / s_{t-1},
so ``hypergrad_lr`` is the paper's beta (1e-7 for Adam in its experiments, our default).
"""
from __future__ import annotations

import torch


class AdamHD(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, hypergrad_lr: float = 1e-7) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        hypergrad_lr=hypergrad_lr, hd_alpha=1.0, hd_prev_scale=0.0)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            h = sum(float((p.grad * self.state[p]["direction"]).sum()) for p in params
                    if "direction" in self.state[p])
            prev = group["hd_prev_scale"]
            alpha = max(0.0, group["hd_alpha"] + (group["hypergrad_lr"] * h / prev if prev > 0 else 0.0))
            group["hd_alpha"] = alpha
            group["hd_prev_scale"] = group["lr"]
            b1, b2 = group["betas"]
            for p in params:
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"], st["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
                st["step"] += 1
                st["exp_avg"].lerp_(p.grad, 1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                m_hat = st["exp_avg"] / (1 - b1 ** st["step"])
                v_hat = st["exp_avg_sq"] / (1 - b2 ** st["step"])
                st["direction"] = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    p.mul_(1 - alpha * group["lr"] * group["weight_decay"])
                p.add_(st["direction"], alpha=-alpha * group["lr"])
        return loss
