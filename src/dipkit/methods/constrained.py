r"""Morozov-constrained DIP (Cascarano et al. 2023; CT paper eq. 31): min TV(f_θ(z)) subject to the
discrepancy principle, by alternating descent on θ and ascent on the multiplier.
"""

from __future__ import annotations

import torch

from ..physics.noise import estimate_noise_sigma, known_sigma
from ..priors.tv import tv
from .base import Method, data_term
from .registry import register

__all__ = ["DIPConstrained", "estimate_noise_sigma"]


@register
class DIPConstrained(Method):
    r"""Morozov-constrained DIP (Cascarano et al. 2023; CT paper eq. 31).

    .. math:: \min_\theta\ \mathrm{TV}(f_\theta(z)) \quad\text{s.t.}\quad
       \|Af_\theta(z) - y\|_2^2 \le \tau\sigma^2 m \qquad\text{(eq. 31)}

    (σ the noise std, m the number of measurements, τ > 0), by alternating descent–ascent on the
    Lagrangian :math:`\mathcal L(\theta,\lambda) = \mathrm{TV}(f_\theta(z)) +
    \tfrac{\lambda}{2}(\|Af_\theta(z) - y\|^2 - \tau\sigma^2 m)`, :math:`\lambda \ge 0`::

        λ = lam0;  σ = sigma, or estimated from y;  c = τ σ² m
        for k = 1 … N_max:
            x̃ = f_θ(z)
            L(θ) = ½‖A x̃ − y‖² + (1/λ) TV_ε(x̃)                 (= 𝓛(θ, λ)/λ + const)
            take a gradient step w.r.t. θ using ∇_θ L(θ)         (descent; Adam, lr)
            every inner_steps steps:
                λ ← λ · (‖A x̃ − y‖² / c)^η                       (ascent on log λ)
        return f_θ(z)

    The θ-step minimises the Lagrangian divided by λ > 0 (the same minimisers in θ; it keeps the
    gradient scale of vanilla DIP for Adam). The ascent step is a projected-gradient step on
    :math:`\log\lambda` with the log of the normalised constraint
    :math:`\log(\|Ax̃-y\|^2/c)` as ascent direction: λ grows while the constraint is violated,
    shrinks while it holds with slack, is stationary exactly at :math:`\|Ax̃-y\|^2 = c`
    (complementary slackness for an active constraint), and stays positive; the additive step
    :math:`\lambda + \eta(\|Ax̃-y\|^2 - c)` would depend on the operator's scale, and early on
    (residual ≫ c) would drive λ to values it takes thousands of steps to leave. The ratio is
    clamped to [1e-3, 1e3] per step. The discrepancy is the one of the step's forward pass
    (before the θ-update; no extra forward). Cascarano et al.'s code instead projects the residual
    onto the ball of radius :math:`\tau\sigma\sqrt{m}` inside an ADMM; this class follows the
    CT paper's description (alternating proximal gradient descent–ascent).

    σ: ``sigma`` when given; else the problem's known noise level (``meta['noise_sigma']``, which
    simulated problems store; ``state.meta``); else
    :func:`~dipkit.physics.noise.estimate_noise_sigma` of ``y`` (MAD of a high-pass; it tends to
    overestimate σ on coarse sinograms, i.e. to over-regularise). ``state.aux``: ``lam`` (λ, ``[B]``), ``bound``
    (c = τσ²m, ``[B]``). Loss terms: ``data`` = ½‖Ax̃ − y‖², ``tv`` = TV_ε(x̃)/λ.

    Defaults: τ = 1 (Cascarano et al.'s code: "keep it at 1 if you trust the noise level");
    λ_0 = 10 (= 1/α with α = 0.1, ``dip-tv``'s default weight); η = 0.05; lr: the network preset's;
    TV smoothing ε = 1e-3 as ``dip-tv``.

    :param lr: Adam learning rate; default: the network preset's.
    :param sigma: noise std σ of ``y`` (``None``: the problem's known σ, else estimated from ``y``).
    :param tau: τ, the discrepancy factor.
    :param lam0: initial multiplier λ_0 > 0.
    :param eta: ascent step η on log λ.
    :param inner_steps: θ-steps between multiplier updates.
    :param eps: smoothing ε of the TV (image units).
    :param ema: optional EMA decay of the returned estimate.

    Reference: P. Cascarano, G. Franchini, E. Kobler, F. Porta, A. Sebastiani, "Constrained and
    unconstrained deep image prior optimization models with automatic regularization",
    Computational Optimization and Applications 84 (2023) 125–149.
    """

    name = "dip-constrained"
    description = "Morozov-constrained DIP: min TV(f_θ(z)) s.t. ‖A f_θ(z) − y‖² ≤ τσ²m, descent on θ / ascent on λ"
    reference = "Cascarano, Franchini, Kobler, Porta & Sebastiani, Comput. Optim. Appl. 2023"
    algorithm = "CT paper eq. 31 (alternating PGDA)"

    def __init__(self, *, lr: float | None = None, sigma: float | None = None, tau: float = 1.0,
                 lam0: float = 10.0, eta: float = 0.05, inner_steps: int = 1, eps: float = 1e-3,
                 ema: float | None = None):
        super().__init__(lr=lr, ema=ema)
        if sigma is not None and not sigma > 0:
            raise ValueError(f"sigma must be > 0 (or None to estimate it), got {sigma}")
        if not tau > 0 or not lam0 > 0 or not eta >= 0:
            raise ValueError("need tau > 0, lam0 > 0 and eta ≥ 0")
        if int(inner_steps) < 1:
            raise ValueError("inner_steps must be ≥ 1")
        self.sigma = None if sigma is None else float(sigma)
        self.tau, self.lam0, self.eta = float(tau), float(lam0), float(eta)
        self.inner_steps, self.eps = int(inner_steps), float(eps)

    def setup(self, state, resuming=False):
        if resuming and "lam" in state.aux:
            return
        y = state.y
        B = y.shape[0]
        known = self.sigma if self.sigma is not None else known_sigma(state.meta)
        if known is None:
            sigma = estimate_noise_sigma(y)
        else:
            sigma = torch.full((B,), known, dtype=y.dtype, device=y.device)
        m = y[0].numel()
        state.aux["bound"] = self.tau * sigma.pow(2) * m
        state.aux["lam"] = torch.full((B,), self.lam0, dtype=y.dtype, device=y.device)

    def loss(self, state, x):
        return {"data": data_term(state, x),
                "tv": tv(x, eps=self.eps) / state.aux["lam"]}

    def outer_update(self, state):
        res = 2.0 * state.terms["data"]
        ratio = (res / state.aux["bound"]).clamp(1e-3, 1e3)
        state.aux["lam"] = state.aux["lam"] * ratio.pow(self.eta)
