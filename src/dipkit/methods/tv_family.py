r"""DIP with an explicit total-variation regulariser (CT paper §4.2).

Four ways to add :math:`\mathcal J = \mathrm{TV}` (or a weighted TV) to the DIP objective:

* ``dip-tv``          — TV in the loss, minimised by autograd + Adam (Algorithm 3);
* ``dip-tv-hqs``      — half-quadratic splitting ``u = f_θ(z)``, ``u``-step = TV prox (Algorithm 4);
* ``dip-wtv-admm``    — ADMM on ``D f_θ(z) = u`` with a (weighted) TV, closed-form ``u``-step
  (Cascarano et al. 2021; eqs. 26–30);
* ``dip-constrained`` — Morozov-constrained DIP, ``min TV(f_θ(z))`` s.t. the discrepancy is at
  most ``τσ²m``, by alternating descent on θ and ascent on the multiplier (Cascarano et al. 2023;
  eq. 31).

Scale of the weights (see :mod:`dipkit.methods.base`): the data term is the *sum*
:math:`\tfrac12\|Af_\theta(z)-y\|_2^2` with the operator as deepinv builds it — our CT operators are
not normalised (:math:`\|A\|^2\approx 600` at 32²/16 views, :math:`\approx 3.7\cdot10^3` at
128²/30 views) — and the TV is the plain sum over pixels of :math:`\|(Dx)_i\|_2` in image units.
The TV weights here (``alpha``, ``lam``) therefore live on the same scale as the classical TV
baseline's ``alpha`` (:mod:`dipkit.baselines.tv`); the CT paper's code divides the data term by an
operator-norm estimate instead, so its numbers (``tv_strength = 1e-5``, ``splitting_strength = 60``)
do not carry over and the defaults below were re-tuned on our operator (documented per class).
The prox weights ``α_k`` of the HQS and the ADMM thresholds act on images and do not depend on the
operator's scale.
"""

from __future__ import annotations

import math

import torch

from ..priors.tv import grad, prox_tv, tv
from ..priors.wtv import adaptive_weights, prox_wtv_split
from .base import Method, data_fidelity
from .registry import register

__all__ = ["DIPTV", "DIPTVHQS", "DIPWTVADMM", "DIPConstrained", "estimate_noise_sigma",
           "hqs_alpha_schedule"]


def _image_like(state) -> torch.Tensor:
    """A zero image shaped like the reconstruction ``[B, C, H, W]`` (``A^T y``'s shape)."""
    with torch.no_grad():
        return torch.zeros_like(state.physics.A_adjoint(state.y))


def _unperturbed_output(method, state) -> torch.Tensor:
    r""":math:`f_\theta(z)` for the current θ (after the inner steps), without input perturbation."""
    return method.network(state, state.z).detach()


# ---------------------------------------------------------------------------------- DIP + TV
@register
class DIPTV(Method):
    r"""DIP + TV, gradient-based (CT paper Algorithm 3; Baguer et al. 2020, Liu et al. 2019).

    .. math:: \min_\theta\ \tfrac12\|A f_\theta(z) - y^\delta\|_2^2 + \alpha\,\mathrm{TV}(f_\theta(z))
       \qquad\text{(eq. 21)}

    Algorithm 3::

        Require: A, y^δ, N_max, input z, architecture f_θ, regularisation parameter α
        for k = 1 … N_max:
            x̃ = f_θ(z)
            L(θ) = ½‖A x̃ − y^δ‖² + α TV(x̃)
            take a gradient step w.r.t. θ using ∇L(θ)              (Adam, learning rate lr)
        return f_θ(z)

    TV is the isotropic TV of :func:`dipkit.priors.tv.tv`. Its gradient is undefined where
    :math:`(Dx)_i = 0`, so autograd differentiates the smooth surrogate
    :math:`\mathrm{TV}_\epsilon(x) = \sum_i\sqrt{\|(Dx)_i\|^2 + \epsilon^2}` (``eps``, image units;
    it differs from TV by at most ``eps·n`` and ``eps = 1e-3`` is the CT paper code's
    ``isotropic_tv_loss``). Loss terms: ``data`` = ½‖Ax̃ − y‖², ``tv`` = α·TV_ε(x̃).

    :param lr: Adam learning rate (CT paper code: 1e-4).
    :param alpha: TV weight α on dipkit's un-normalised operator scale (see the module docs).
        The code's ``tv_strength = 1e-5`` belongs to the walnut's normalised operator; ``alpha``
        was re-tuned on our CT operator (parallel beam, 2 % noise): PSNR-best values are about
        ``0.05 – 0.2`` at 64²/30 views and grow with the image size, the number of views and the
        noise level roughly like the classical TV baseline's (:mod:`dipkit.baselines.tv`), about
        a quarter of its optimum. Default 0.1.
    :param eps: smoothing ε of the TV (image units).
    :param ema: optional EMA decay of the returned estimate (``None``: last iterate, as the box).

    Reference: D. O. Baguer, J. Leuschner, M. Schmidt, "Computed tomography reconstruction using
    deep image prior and learned reconstruction methods", Inverse Problems 36 (2020); J. Liu,
    Y. Sun, X. Xu, U. S. Kamilov, "Image restoration using total variation regularized deep image
    prior", ICASSP 2019.
    """

    name = "dip-tv"
    description = "DIP + isotropic TV in the loss, ½‖A f_θ(z) − y‖² + α TV_ε(f_θ(z)), autograd + Adam"
    reference = "Baguer, Leuschner & Schmidt, Inverse Problems 2020; Liu et al., ICASSP 2019"
    algorithm = "CT paper Alg. 3"

    def __init__(self, *, lr: float = 1e-4, alpha: float = 0.1, eps: float = 1e-3,
                 ema: float | None = None):
        super().__init__(lr=lr, ema=ema)
        if not alpha >= 0:
            raise ValueError(f"alpha must be ≥ 0, got {alpha}")
        if not eps >= 0:
            raise ValueError(f"eps must be ≥ 0, got {eps}")
        self.alpha, self.eps = float(alpha), float(eps)

    def loss(self, state, x):
        return {"data": data_fidelity(state.physics, x, state.y),
                "tv": self.alpha * tv(x, eps=self.eps)}


# ---------------------------------------------------------------------------------- HQS
def hqs_alpha_schedule(alpha_max: float, alpha_min: float, K: int) -> list[float]:
    r"""The prox weights :math:`\alpha_1 \ge \dots \ge \alpha_K` of Algorithm 4: geometric from
    ``alpha_max`` to ``alpha_min`` (``numpy.logspace`` as in the CT paper's code)."""
    K = max(int(K), 1)
    if K == 1:
        return [float(alpha_max)]
    r = math.log(alpha_min / alpha_max) / (K - 1)
    return [float(alpha_max * math.exp(r * k)) for k in range(K)]


@register
class DIPTVHQS(Method):
    r"""DIP + TV by half-quadratic splitting (CT paper Algorithm 4, "this work").

    Splitting :math:`u = f_\theta(z)` in eq. (21) gives eq. (22)
    :math:`\min_{\theta,u} \tfrac12\|Af_\theta(z) - y^\delta\|^2 + \lambda\,\mathrm{TV}(u)
    + \tfrac{\mu}{2}\|f_\theta(z) - u\|^2`, solved by alternating minimisation with an increasing
    coupling :math:`\mu_k` (eqs. 23–25). Algorithm 4::

        Require: A, y^δ, splitting strength λ > 0, outer iterations K, inner iterations N_sub,
                 input z, decreasing regularisation parameters {α_k}_{k=1..K}
        u^(0) = 0
        for k = 1 … K:
            μ_k = λ / α_k
            for i = 1 … N_sub:
                x̃ = f_θ(z)
                L(θ) = ½‖A x̃ − y^δ‖² + μ_k/2 ‖x̃ − u^(k−1)‖²
                take a gradient step w.r.t. θ using ∇_θ L(θ)       (Adam, learning rate lr)
            u^(k) = prox_{α_k TV}(f_θ(z))
        return f_θ(z)

    Since :math:`\alpha_k = \lambda/\mu_k`, line 9 is eq. (25), :math:`u = \mathrm{prox}_{(\lambda/\mu_k)
    \mathrm{TV}}(f_\theta(z))`: the splitting strength λ is the TV weight of the underlying problem
    (21) (the α of ``dip-tv``) and :math:`\mu_k \to \lambda/\alpha_{\min}` enforces
    :math:`u \approx f_\theta(z)` at the end. ``K = ⌈N_max / N_sub⌉`` (the run's step budget);
    :math:`\alpha_k` falls geometrically from ``alpha_max`` to ``alpha_min``, so :math:`\mu_k` rises.
    The prox is Beck–Teboulle's FGP (:func:`dipkit.priors.tv.prox_tv`, ``prox_iter`` iterations);
    line 9's :math:`f_\theta(z)` is recomputed after the inner steps (without input perturbation),
    one extra forward pass per outer iteration. Loss terms: ``data``, ``coupling`` =
    μ_k/2‖x̃ − u‖². ``state.aux``: ``u``.

    Defaults: N_sub = 20 and lr = 1e-4 as the CT paper's code (``inner_steps = 20``); its
    ``tv_min = 1e-2``, ``tv_max = 0.5`` are the range of the prox weights α_k (image units, so
    they carry over; the code's ordering of the sequence contradicts the paper — we follow the
    paper: α_k decreasing, μ_k increasing). Its ``splitting_strength = 60`` multiplies a data
    term divided by the operator norm and a *mean* coupling term; on our un-normalised sum
    convention it corresponds to λ of the order of ``dip-tv``'s α. Default λ = 0.1.

    :param lr: Adam learning rate.
    :param lam: splitting strength λ (the TV weight of eq. 21 on our operator scale).
    :param alpha_max: first prox weight α_1 (CT code ``tv_max``).
    :param alpha_min: last prox weight α_K (CT code ``tv_min``).
    :param inner_steps: N_sub, θ-steps per outer iteration.
    :param prox_iter: FGP iterations of the TV prox.
    :param ema: optional EMA decay of the returned estimate.

    Reference: S. Arridge, R. Barbano, A. Denker, Ž. Kereta, "Deep Image Prior for Computed
    Tomography Reconstruction" (2026), §4.2, Algorithm 4 (the CT paper; new there).
    """

    name = "dip-tv-hqs"
    description = "DIP + TV by half-quadratic splitting: θ-steps on ½‖Af_θ(z)−y‖²+μ_k/2‖f_θ(z)−u‖², u = prox_{α_k TV}"
    reference = "Arridge, Barbano, Denker & Kereta, Deep Image Prior for Computed Tomography Reconstruction, 2026"
    algorithm = "CT paper Alg. 4"

    def __init__(self, *, lr: float = 1e-4, lam: float = 0.1, alpha_max: float = 0.5,
                 alpha_min: float = 1e-2, inner_steps: int = 20, prox_iter: int = 100,
                 ema: float | None = None):
        super().__init__(lr=lr, ema=ema)
        if not lam > 0:
            raise ValueError(f"lam must be > 0, got {lam}")
        if not 0 < alpha_min <= alpha_max:
            raise ValueError(f"need 0 < alpha_min ≤ alpha_max, got {alpha_min}, {alpha_max}")
        if int(inner_steps) < 1 or int(prox_iter) < 1:
            raise ValueError("inner_steps and prox_iter must be ≥ 1")
        self.lam, self.alpha_max, self.alpha_min = float(lam), float(alpha_max), float(alpha_min)
        self.inner_steps, self.prox_iter = int(inner_steps), int(prox_iter)
        self._alphas = [self.alpha_max]

    def setup(self, state, resuming=False):
        K = max(1, math.ceil(state.max_steps / self.inner_steps))
        self._alphas = hqs_alpha_schedule(self.alpha_max, self.alpha_min, K)
        if not resuming or "u" not in state.aux:
            state.aux["u"] = _image_like(state)

    def alpha_k(self, k: int) -> float:
        """α_k for outer iteration ``k`` (1-based; α_K after the last scheduled one)."""
        return self._alphas[min(max(k, 1), len(self._alphas)) - 1]

    def mu_k(self, k: int) -> float:
        """μ_k = λ / α_k."""
        return self.lam / self.alpha_k(k)

    def loss(self, state, x):
        mu = self.mu_k(state.outer_step + 1)
        u = state.aux["u"]
        return {"data": data_fidelity(state.physics, x, state.y),
                "coupling": 0.5 * mu * (x - u).pow(2).flatten(1).sum(1)}

    def outer_update(self, state):
        x = _unperturbed_output(self, state)
        state.aux["u"] = prox_tv(x, self.alpha_k(state.outer_step + 1), n_iter=self.prox_iter)


# ---------------------------------------------------------------------------------- WTV ADMM
@register
class DIPWTVADMM(Method):
    r"""DIP + weighted TV by ADMM on :math:`Df_\theta(z) = u` (Cascarano et al. 2021; CT paper
    eqs. 26–30).

    .. math:: \min_\theta\ \tfrac12\|Af_\theta(z) - y\|_2^2 + \sum_i \alpha_i\|(Df_\theta(z))_i\|_2
       \qquad\text{(eq. 26)}

    with the augmented Lagrangian (27) of the constraint :math:`Df_\theta(z) = u` (penalty γ,
    multiplier :math:`\boldsymbol\lambda = \gamma w`, i.e. in scaled form with ``w``)::

        u^(0) = 0, w^(0) = 0, α_i = alpha
        for k = 0, 1, …:
            θ^(k+1) ≈ argmin_θ ½‖A f_θ(z) − y‖² + γ/2 ‖D f_θ(z) − u^(k) + w^(k)‖²      (28)
                      (inner_steps Adam steps, learning rate lr)
            x = f_θ^(k+1)(z)
            [adaptive] α_i = (1/n) ‖A x − y‖² / (‖(D x)_i‖ + δ), clamped to [α/100, 100α]   (§4.2)
            u^(k+1) = argmin_u Σ_i α_i‖u_i‖ + γ/2 ‖u − (D x + w^(k))‖²                 (29)
                    = per-pixel vector soft-thresholding of D x + w^(k) at α_i/γ
            w^(k+1) = w^(k) + D x − u^(k+1)                                             (30)
        return f_θ(z)

    (eq. 30 in the paper's unscaled form is :math:`\lambda \leftarrow \lambda + \gamma(Dx - u)`.)
    ``D`` is the forward-difference gradient of :func:`dipkit.priors.tv.grad`; ``u``, ``w`` are
    gradient fields ``[B, C, 2, H, W]`` in ``state.aux`` with the weights ``alpha`` ``[B, C, 1, H,
    W]``. Loss terms: ``data``, ``admm`` = γ/2‖Dx̃ − u + w‖². With ``adaptive`` the weights are
    recomputed from the current network output at every outer iteration (:func:`adaptive_weights`
    with floor ``delta``), as the CT paper's formula, and clamped to ``[alpha/100, 100·alpha]`` as
    in the CT paper's code (early on, when the residual is still large, the formula alone would
    flatten everything); otherwise α_i = ``alpha``.

    Defaults: ``alpha`` on our operator scale as ``dip-tv``'s α (0.1); the penalty γ sets the
    threshold α/γ of the ``u``-step in image units (γ = 1: gradients below 0.1 are set to zero
    in u) — the CT paper's code uses ``admm_weight = 10`` with a data term divided by the
    operator norm, which does not carry over. ``inner_steps = 10`` θ-steps per ADMM iteration
    (the code's ``num_inner_steps`` is not fixed by the paper); lr = 1e-4 as the CT paper's code.

    :param lr: Adam learning rate.
    :param alpha: constant weight α_i (and the initial weights when ``adaptive``).
    :param gamma: ADMM penalty γ > 0.
    :param inner_steps: θ-steps per ADMM iteration.
    :param adaptive: recompute the weights α_i from the residual and the gradient magnitude.
    :param delta: floor δ of ‖(Dx)_i‖ in the adaptive weights (image units).
    :param ema: optional EMA decay of the returned estimate.

    Reference: P. Cascarano, A. Sebastiani, M. C. Comes, G. Franchini, F. Porta, "Combining
    weighted total variation and deep image prior for natural and medical image restoration via
    ADMM", ICCSA 2021.
    """

    name = "dip-wtv-admm"
    description = "DIP + (adaptive) weighted TV by ADMM on D f_θ(z) = u: θ-steps, vector soft-thresholding, dual update"
    reference = "Cascarano, Sebastiani, Comes, Franchini & Porta, ICCSA 2021"
    algorithm = "CT paper eqs. 26–30"

    def __init__(self, *, lr: float = 1e-4, alpha: float = 0.1, gamma: float = 1.0,
                 inner_steps: int = 10, adaptive: bool = False, delta: float = 1e-2,
                 ema: float | None = None):
        super().__init__(lr=lr, ema=ema)
        if not alpha >= 0:
            raise ValueError(f"alpha must be ≥ 0, got {alpha}")
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if int(inner_steps) < 1:
            raise ValueError("inner_steps must be ≥ 1")
        if not delta > 0:
            raise ValueError(f"delta must be > 0, got {delta}")
        self.alpha, self.gamma, self.inner_steps = float(alpha), float(gamma), int(inner_steps)
        self.adaptive, self.delta = bool(adaptive), float(delta)

    @property
    def weight_bounds(self) -> tuple[float, float]:
        """Clamp of the adaptive weights: ``[alpha/100, 100·alpha]`` (as the CT paper's code)."""
        return (self.alpha * 1e-2, self.alpha * 1e2)

    def setup(self, state, resuming=False):
        if resuming and "u" in state.aux:
            return
        g = grad(_image_like(state))
        state.aux["u"] = torch.zeros_like(g)
        state.aux["w"] = torch.zeros_like(g)
        state.aux["alpha"] = torch.full_like(g[..., :1, :, :], self.alpha)

    def loss(self, state, x):
        d = grad(x) - state.aux["u"] + state.aux["w"]
        return {"data": data_fidelity(state.physics, x, state.y),
                "admm": 0.5 * self.gamma * d.pow(2).flatten(1).sum(1)}

    def outer_update(self, state):
        x = _unperturbed_output(self, state)
        dx = grad(x)
        if self.adaptive:
            res = 2.0 * data_fidelity(state.physics, x, state.y)
            state.aux["alpha"] = adaptive_weights(res, x, delta=self.delta, bounds=self.weight_bounds)
        w = state.aux["w"]
        u = prox_wtv_split(dx + w, state.aux["alpha"], self.gamma)
        state.aux["u"] = u
        state.aux["w"] = w + dx - u


# ---------------------------------------------------------------------------------- constrained
def estimate_noise_sigma(y: torch.Tensor) -> torch.Tensor:
    r"""Estimate the std of white Gaussian noise in measurements ``y`` ``[B, ...]``, per sample.

    The median absolute deviation of a high-pass of ``y``: the third-order finite difference
    :math:`(y_{j+3} - 3y_{j+2} + 3y_{j+1} - y_j)/\sqrt{20}` (unit-norm filter, so white noise
    keeps its std) along each of the last two axes of ``y`` with at least 4 samples,
    :math:`\hat\sigma = \mathrm{median}|d| / 0.6745`; the smaller of the per-axis estimates is
    returned (signal can only inflate it; for CT sinograms ``[B, C, detectors, angles]`` the
    detector axis wins). Donoho & Johnstone's (1994) MAD estimate with a difference filter
    instead of wavelets. It overestimates when the signal is rough on the sampling grid
    (measured on our 32² CT with 2 % noise: +30 %; at 128²: +4 %): pass the true σ when known.

    :return: ``[B]`` tensor on ``y``'s device (no host synchronisation).
    """
    c = torch.tensor([-1.0, 3.0, -3.0, 1.0], dtype=y.dtype, device=y.device) / math.sqrt(20.0)
    ests = []
    axes = [-1, -2] if y.ndim >= 3 else [-1]
    for ax in axes:
        if y.shape[ax] < 4:
            continue
        v = y.movedim(ax, -1)
        d = (c[0] * v[..., :-3] + c[1] * v[..., 1:-2] + c[2] * v[..., 2:-1] + c[3] * v[..., 3:])
        ests.append(d.abs().flatten(1).median(dim=1).values / 0.6745)
    if not ests:
        raise ValueError(f"cannot estimate the noise level from measurements of shape {tuple(y.shape)}")
    return torch.stack(ests).amin(dim=0)


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

    σ: ``sigma`` when given (the simulated problems store it as ``meta['noise_sigma']``),
    else :func:`estimate_noise_sigma` of ``y`` (MAD of a high-pass; it tends to overestimate σ on
    coarse sinograms, i.e. to over-regularise). ``state.aux``: ``lam`` (λ, ``[B]``), ``bound``
    (c = τσ²m, ``[B]``). Loss terms: ``data`` = ½‖Ax̃ − y‖², ``tv`` = TV_ε(x̃)/λ.

    Defaults: τ = 1 (Cascarano et al.'s code: "keep it at 1 if you trust the noise level");
    λ_0 = 10 (= 1/α with α = 0.1, ``dip-tv``'s default weight); η = 0.05; lr = 1e-4 as the CT
    paper's code; TV smoothing ε = 1e-3 as ``dip-tv``.

    :param lr: Adam learning rate.
    :param sigma: noise std σ of ``y`` (``None``: estimated from ``y``).
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

    def __init__(self, *, lr: float = 1e-4, sigma: float | None = None, tau: float = 1.0,
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
        if self.sigma is None:
            sigma = estimate_noise_sigma(y)
        else:
            sigma = torch.full((B,), self.sigma, dtype=y.dtype, device=y.device)
        m = y[0].numel()
        state.aux["bound"] = self.tau * sigma.pow(2) * m
        state.aux["lam"] = torch.full((B,), self.lam0, dtype=y.dtype, device=y.device)

    def loss(self, state, x):
        return {"data": data_fidelity(state.physics, x, state.y),
                "tv": tv(x, eps=self.eps) / state.aux["lam"]}

    def outer_update(self, state):
        res = 2.0 * state.terms["data"]
        ratio = (res / state.aux["bound"]).clamp(1e-3, 1e3)
        state.aux["lam"] = state.aux["lam"] * ratio.pow(self.eta)
