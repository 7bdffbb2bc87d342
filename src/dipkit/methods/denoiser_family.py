r"""Denoisers as priors: DeepRED, DIP + denoiser by HQS and by ADMM, the thesis's DIP-ADMM v1/v2,
and the network-free plug-and-play ADMM baseline.

=====================  ===================================================  ============================
name                   what                                                 box
=====================  ===================================================  ============================
``deepred``            DIP + RED, Nesterov accelerated proximal gradient    CT paper Alg. 5
``dip-denoiser-hqs``   DIP + denoiser, half-quadratic splitting (no dual)   CT paper eqs. (32)–(33)
``dip-denoiser-admm``  DIP + denoiser, ADMM (scaled dual ``w``)             CT paper Alg. 6
``dip-admm-v1``        DIP + prior, ADMM with an ISTA/FISTA ``x``-step      thesis Alg. 1
``dip-admm-v2``        DIP + prior, ADMM with one prox/denoiser call/step   thesis Alg. 2
``pnp-admm``           plug-and-play ADMM, no network (CG ``x``-step)       thesis Alg. 3
=====================  ===================================================  ============================

HQS and ADMM are one class (:class:`DIPDenoiserSplitting`) with and without the dual variable.

**Denoiser.** Every method takes ``denoiser`` (a name from
:data:`dipkit.priors.denoisers.DENOISERS`, called as ``D(x, σ)``) and ``denoiser_options`` (its
keyword options, e.g. ``{"weights": PATH}``). The default is ``"learned"`` — the CT paper uses a
learned denoiser (DRUNet); ours is dipkit's small DnCNN. When ``learned`` cannot be built (not
registered, or its weights file is missing) the method falls back to ``"tv"`` (the TV proximal
map) with a :class:`UserWarning`, and records ``denoiser="tv"`` in its configuration, so a run
always says which denoiser it used. Denoisers that run on the host (``nlm``, ``wavelet``,
``bm3d``) synchronise at every call: fine at outer updates, slow in ``dip-admm-v1/v2``, which
call the denoiser at every step.

**Scaling of the weights (all methods in this module).** dipkit's data term is the sum
:math:`\tfrac12\|Ax-y\|_2^2` with un-normalised operators (for our CT, :math:`\|A\|^2\approx 500`
at 32², 16 views and :math:`\approx 3.7\cdot10^3` at 128², 30 views). Every penalty weight here
(``rho``, ``mu``, ``lam``) is therefore *relative to* :math:`\|A\|^2`: the method estimates
:math:`\|A\|^2` once in ``setup`` (30 power iterations on :math:`A^\top A`, per sample, kept on the
device in ``state.aux["opnorm_sq"]``) and uses :math:`\tilde\rho = \rho\,\|A\|^2` in the loss.
``rho = 1`` thus gives the coupling term the curvature of the data term's largest eigenvalue, and
for :math:`\|A\| = 1` (the thesis's inpainting) :math:`\tilde\rho = \rho` is the papers' own
weight. The CT paper's code scales its losses differently (data term
:math:`\|Ax-y\|^2/\|A\|^4`, penalties divided by the number of pixels ``n``); its values map to
ours as :math:`\rho = 5\|A\|^2/n` (ADMM, ``admm_weight = 10``), :math:`\mu_k = 60\|A\|^2/(n\sigma_k)`
(HQS) and :math:`\lambda = 0.005\|A\|^2/n` (RED), which depend on the walnut operator's scale,
and the thesis's ρ = 1, σ = 0.01 are for inpainting (‖A‖ = 1). The defaults here were chosen on
our parallel-beam CT problems (64², 30 views, 2 % noise): ``rho = lam = 0.1`` and
``denoiser_sigma = 0.02`` for the CT paper's methods and PnP-ADMM (HQS: ``alpha = 0.002``, μ from
0.01 to 0.2, so σ_k goes from 0.2 to 0.01); the thesis's v1/v2 keep its ``rho = 1`` with
``denoiser_sigma = 0.002`` (same product ρσ; v1 does markedly better with the stronger coupling).
With the TV proximal map (prox weight ∝ σ) the implied regulariser is
:math:`\tilde\rho\sigma\,\mathrm{TV} = \rho\sigma\|A\|^2\,\mathrm{TV}` ≈ 3.7 TV at 64², 30 views
(classical TV is best near α ≈ 3 there); with a Gaussian denoiser (prox weight ∝ σ²) it is
:math:`\rho\sigma^2\|A\|^2\,\varphi` ≈ 0.07 φ for ρ = 0.1, σ = 0.02, of the order of the
measurement-noise variance (≈ 0.14) that a MAP weighting asks for (v1/v2's σ = 0.002 is weak for a
Gaussian denoiser: raise it when using ``learned``). As ‖A‖² grows with the image size (× 2 from 64² to 128²
at 30 views), scale ``rho``/``lam``/``alpha`` down accordingly on larger images. Denoiser
strengths ``σ`` are in image units (images nominally in [0, 1]).

**Output.** The CT paper (§6) returns an exponential moving average of the iterates for the
methods that use a denoiser, and the thesis (§4.2) smooths with
:math:`r_{t+1} = 0.9\,r_t + 0.1\,x_t`; so every network method here defaults to ``ema = 0.9``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, ClassVar

import torch

from ..errors import DipkitError
from .base import Method, data_fidelity
from .baselines import Baseline
from .registry import register

__all__ = ["DeepRED", "DIPDenoiserSplitting", "DIPDenoiserHQS", "DIPDenoiserADMM", "DIPADMMv1",
           "DIPADMMv2", "PnPADMM", "operator_norm_sq"]

#: power iterations used to estimate ‖A‖² in ``setup``
POWER_ITERATIONS = 30


# ---------------------------------------------------------------------------------------- helpers
def _build_denoiser(name: str, options: dict | None):
    """``(name actually used, denoiser)``; ``learned`` falls back to ``tv`` when unavailable."""
    from ..priors.denoisers import make_denoiser

    opts = dict(options or {})
    if name == "learned":
        try:
            return name, make_denoiser(name, **opts)
        except DipkitError as exc:
            warnings.warn(f"denoiser 'learned' is not available ({exc}); using the TV proximal map "
                          "(denoiser='tv') instead", UserWarning, stacklevel=4)
            return "tv", make_denoiser("tv")
    return name, make_denoiser(name, **opts)


def _bview(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample ``[B]`` tensor shaped to broadcast against ``like`` ``[B, ...]``."""
    return v.view(-1, *[1] * (like.ndim - 1))


def _sqnorm(x: torch.Tensor) -> torch.Tensor:
    """Per-sample squared norm ``[B]``."""
    return (x.conj() * x).real.flatten(1).sum(1) if x.is_complex() else x.pow(2).flatten(1).sum(1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample real inner product ``[B]``."""
    return (a.conj() * b).real.flatten(1).sum(1) if a.is_complex() else (a * b).flatten(1).sum(1)


def operator_norm_sq(physics, like: torch.Tensor, iterations: int = POWER_ITERATIONS) -> torch.Tensor:
    r"""Per-sample estimate of :math:`\|A\|^2 = \lambda_{\max}(A^\top A)`, shape ``[B]``.

    A fixed number of power iterations on :math:`A^\top A` from a fixed random start (seed 0, so
    the result is deterministic), ending with the Rayleigh quotient; no host synchronisation.
    ``like`` is an image-shaped tensor ``[B, ...]`` (shape, dtype and device of the start).
    """
    gen = torch.Generator(device=like.device).manual_seed(0)
    x = torch.randn(like.shape, generator=gen, device=like.device, dtype=like.dtype)
    lam = torch.zeros(like.shape[0], device=like.device, dtype=_sqnorm(x).dtype)
    with torch.no_grad():
        for _ in range(int(iterations)):
            x = x / _bview(_sqnorm(x).sqrt().clamp_min(torch.finfo(lam.dtype).tiny), x)
            y = physics.A_adjoint(physics.A(x))
            lam = _dot(x, y)
            x = y
    return lam.clamp_min(torch.finfo(lam.dtype).tiny)


def _prox_power(denoiser) -> int:
    r"""How a denoiser's proximal weight grows with ``σ``: ``D(·, σ) = prox_{c σ^p φ}``.

    ``p = 1`` for the TV proximal map (``λ = strength·σ``) and wavelet thresholding; ``p = 2`` for
    the Gaussian denoisers (shrinkage, learned, BM3D, NLM: MMSE/MAP at noise level σ). A denoiser
    class may declare it as ``prox_power``.
    """
    return int(getattr(denoiser, "prox_power", 1 if getattr(denoiser, "name", "") in ("tv", "wavelet") else 2))


class _DenoiserMixin:
    """Shared handling of ``denoiser`` / ``denoiser_options`` (with the ``learned`` → ``tv`` fallback)."""

    denoiser: str
    denoiser_options: dict | None

    def _init_denoiser(self, denoiser: str, denoiser_options: dict | None) -> None:
        if denoiser_options is not None and not isinstance(denoiser_options, dict):
            raise ValueError(f"denoiser_options must be a mapping, got {denoiser_options!r}")
        self.denoiser_options = None if denoiser_options is None else dict(denoiser_options)
        self.denoiser, self.D = _build_denoiser(str(denoiser), self.denoiser_options)


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive number, got {value}")
    return value


def _nonneg(name: str, value: float) -> float:
    value = float(value)
    if not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be ≥ 0, got {value}")
    return value


def _count(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


class _NetworkDenoiserMethod(_DenoiserMixin, Method):
    """Common set-up of the network methods: denoiser on the device, ‖A‖², image-shaped zeros."""

    def _setup_common(self, state) -> torch.Tensor:
        """Move the denoiser, estimate ‖A‖²; return zeros shaped like ``f_θ(z)`` (like ``Aᵀy``)."""
        self.D.to(state.device)
        with torch.no_grad():
            x0 = state.physics.A_adjoint(state.y).detach()   # image-shaped, like f_θ(z)
        state.aux["opnorm_sq"] = operator_norm_sq(state.physics, x0)
        return torch.zeros_like(x0)

    def _fresh_output(self, state) -> torch.Tensor:
        """``f_θ(z)`` at the current θ, without input perturbation (the boxes' ``x^{(k)}``)."""
        with torch.no_grad():
            return self.network(state, state.z).detach()


# ---------------------------------------------------------------------------------------- DeepRED
@register
class DeepRED(_NetworkDenoiserMethod):
    r"""DIP + RED by Nesterov's accelerated proximal gradient (DeepRED; CT paper Algorithm 5).

    Regularisation by denoising, :math:`\mathcal J(x) = \tfrac12 x^\top(x - D_\sigma(x))` with
    :math:`\nabla\mathcal J(x) = x - D_\sigma(x)`, is applied through an auxiliary image
    :math:`u` (Reehorst & Schniter's accelerated proximal-gradient form):

    .. code-block:: text

        Require: A, y^δ, K outer and N_sub inner iterations, input z, λ > 0, t_0 = 1, L > 1, D_σ
        1: u^(0) = 0
        2: for k = 1 … K:
        3:   for i = 1 … N_sub:
        4:     x̃ = f_θ(z)
        5:     L(θ) = ½‖A x̃ − y^δ‖² + (λL/2)‖x̃ − u^(k−1)‖²
        6:     gradient step w.r.t. θ                                  (Adam, lr)
        8:   t_k = (1 + √(1 + 4 t_{k−1}²)) / 2
        9:   v^(k) = x^(k) + ((t_{k−1} − 1)/t_k)(x^(k) − x^(k−1))          (x^(k) = f_θ(z))
       10:   u^(k) = (1/L) D_σ(v^(k)) − ((1 − L)/L) v^(k)
                   = v^(k) − (1/L)(v^(k) − D_σ(v^(k)))                 (a RED gradient step)
       12: return f_θ(z)

    The box's extrapolated point :math:`z^{(k)}` is called :math:`v^{(k)}` here (``z`` is the
    network input); :math:`x^{(0)} = 0` (it is multiplied by :math:`t_0 - 1 = 0`). Auxiliary
    variables: ``state.aux["u"]``, ``["x_prev"]`` (:math:`x^{(k-1)}`); :math:`t_k` follows from
    the outer-step counter.

    :param lam: splitting strength λ, relative to :math:`\|A\|^2` (module docs): the loss uses
        :math:`\lambda\|A\|^2`. The CT paper's code uses :math:`\lambda = 0.005\|A\|^2/n` in these
        units (0.002 at 64², 30 views), a nearly vanishing pull; adapted: default 0.1 (module docs).
    :param L: the step parameter :math:`L > 1` (the RED step is :math:`1/L`); CT paper code: 1.2.
    :param denoiser_sigma: σ given to :math:`D_\sigma`; CT paper code: 0.01; adapted: 0.02.
    :param inner_steps: :math:`N_\mathrm{sub}`; CT paper code: 10.
    :param denoiser: denoiser name (default ``learned``, falling back to ``tv``; module docs).
    :param denoiser_options: keyword options of the denoiser.
    :param lr: Adam learning rate (CT paper: 1e-4).
    :param ema: EMA decay of the output (``None``: last iterate); module docs.

    Reference: G. Mataev, M. Elad, P. Milanfar, "DeepRED: Deep Image Prior Powered by RED",
    ICCV Workshops 2019; E. T. Reehorst, P. Schniter, "Regularization by Denoising: Clarifications
    and New Interpretations", IEEE TCI 2019; CT paper (Deep Image Prior for CT reconstruction), §4.3.
    """

    name = "deepred"
    description = "DIP + RED (DeepRED) by Nesterov accelerated proximal gradient, RED step x − D_σ(x)"
    reference = ("Mataev, Elad & Milanfar, DeepRED, ICCV-W 2019; Reehorst & Schniter, IEEE TCI 2019 "
                 "(CT paper Alg. 5)")
    algorithm = "CT paper Alg. 5"

    def __init__(self, *, lam: float = 0.1, L: float = 1.2, denoiser_sigma: float = 0.02,
                 inner_steps: int = 10, denoiser: str = "learned", denoiser_options: dict | None = None,
                 lr: float = 1e-4, ema: float | None = 0.9):
        super().__init__(lr=lr, ema=ema)
        self.lam = _nonneg("lam", lam)
        self.L = float(L)
        if not self.L > 1 or not math.isfinite(self.L):
            raise ValueError(f"L must be > 1, got {L}")
        self.denoiser_sigma = _nonneg("denoiser_sigma", denoiser_sigma)
        self.inner_steps = _count("inner_steps", inner_steps)
        self._init_denoiser(denoiser, denoiser_options)

    @staticmethod
    def t(k: int) -> float:
        """Nesterov's :math:`t_k` (:math:`t_0 = 1`)."""
        t = 1.0
        for _ in range(int(k)):
            t = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        return t

    def red_step(self, v: torch.Tensor) -> torch.Tensor:
        r"""Line 10: :math:`v - \tfrac1L\,(v - D_\sigma(v))`, a gradient step of size 1/L on RED."""
        return v - (v - self.D(v, self.denoiser_sigma)) / self.L

    def setup(self, state, resuming=False):
        zeros = self._setup_common(state)
        if not resuming:
            state.aux["u"] = zeros
            state.aux["x_prev"] = zeros.clone()

    def loss(self, state, x):
        w = self.lam * self.L * state.aux["opnorm_sq"]
        return {"data": data_fidelity(state.physics, x, state.y),
                "red": 0.5 * w * _sqnorm(x - state.aux["u"])}

    def outer_update(self, state):
        k = state.outer_step + 1
        t_prev, t_k = self.t(k - 1), self.t(k)
        x_k = self._fresh_output(state)
        v = x_k + ((t_prev - 1.0) / t_k) * (x_k - state.aux["x_prev"])
        state.aux["u"] = self.red_step(v)
        state.aux["x_prev"] = x_k


# ---------------------------------------------------------------------------------- HQS / ADMM
class DIPDenoiserSplitting(_NetworkDenoiserMethod):
    r"""DIP + denoiser by splitting: HQS (``dual = False``) and ADMM (``dual = True``) in one class.

    With a coupling weight :math:`\beta_k` (HQS: :math:`\mu_k`; ADMM: ρ) and, for ADMM, the scaled
    dual :math:`w`:

    .. code-block:: text

        inner (θ) steps:  L(θ) = ½‖A f_θ(z) − y‖² + (β_k‖A‖²/2)‖f_θ(z) − u + w‖²     (w ≡ 0 for HQS)
        outer update:     x = f_θ(z);  u = D_σk(x + w);  w ← w + x − u                 (ADMM)
                          x = f_θ(z);  u = D_σk(x)                                     (HQS)

    Subclasses give :meth:`coupling` (β_k) and :meth:`sigma` (σ_k) for outer iteration ``k``.
    """

    dual: ClassVar[bool] = False

    def coupling(self, state, k: int) -> float:
        raise NotImplementedError  # abstract

    def sigma(self, state, k: int) -> float:
        raise NotImplementedError  # abstract

    def setup(self, state, resuming=False):
        zeros = self._setup_common(state)
        if not resuming:
            state.aux["u"] = zeros
            if self.dual:
                state.aux["w"] = zeros.clone()

    def target(self, state) -> torch.Tensor:
        """What the network is pulled to: ``u − w`` (ADMM) or ``u`` (HQS)."""
        return state.aux["u"] - state.aux["w"] if self.dual else state.aux["u"]

    def loss(self, state, x):
        beta = self.coupling(state, state.outer_step) * state.aux["opnorm_sq"]
        return {"data": data_fidelity(state.physics, x, state.y),
                "split": 0.5 * beta * _sqnorm(x - self.target(state))}

    def outer_update(self, state):
        k = state.outer_step
        x = self._fresh_output(state)
        if self.dual:
            w = state.aux["w"]
            u = self.D(x + w, self.sigma(state, k))
            state.aux["u"] = u
            state.aux["w"] = w + x - u
        else:
            state.aux["u"] = self.D(x, self.sigma(state, k))


@register
class DIPDenoiserHQS(DIPDenoiserSplitting):
    r"""DIP + denoiser by half-quadratic splitting (CT paper eqs. (32)–(33), after Algorithm 4).

    .. code-block:: text

        u^(0) = 0
        for k = 0 … K − 1:
            θ^(k+1) ≈ argmin_θ ½‖A f_θ(z) − y^δ‖² + (μ_k/2)‖f_θ(z) − u^(k)‖²        (32)
                      (N_sub = inner_steps Adam steps, warm-started)
            u^(k+1) = argmin_u J(u) + (μ_k/(2α))‖f_θ^(k+1)(z) − u‖²
                    = prox_{(α/μ_k) J}(f_θ^(k+1)(z))  →  D_{α/μ_k}(f_θ^(k+1)(z))      (33)
        return f_θ(z)

    with an increasing schedule :math:`\mu_k`: geometric from ``mu`` (:math:`\mu_0`) to
    ``mu_max`` (:math:`\mu_{K-1}`) over the :math:`K = \lceil N/N_\mathrm{sub}\rceil` outer
    iterations of the run's :math:`N` steps (as the CT paper's code; constant after that), so the
    denoiser strength :math:`\sigma_k = \alpha/\mu_k` decreases. Shared with ADMM:
    :class:`DIPDenoiserSplitting` without the dual variable.

    :param alpha: α, the regularisation weight: the denoiser gets :math:`\sigma_k = \alpha/\mu_k`
        (image units), i.e. the regulariser weight α‖A‖² in the HQS objective
        :math:`\tfrac12\|Ax-y\|^2 + \alpha\|A\|^2 J(u) + \tfrac{\mu_k\|A\|^2}{2}\|x-u\|^2`.
        CT paper code: α = 60 in its scaling (σ from 0.5 down to 0.01); adapted: 0.002 (module
        docs), so that σ goes from 0.2 to 0.01.
    :param mu: :math:`\mu_0`, relative to :math:`\|A\|^2` (module docs).
    :param mu_max: :math:`\mu_{K-1}` (≥ ``mu``), relative to :math:`\|A\|^2`. The CT paper's code
        spans a factor 50 (:math:`\mu_k = 60\|A\|^2/(n\sigma_k)` in our units); defaults
        ``mu = 0.01``, ``mu_max = 0.2`` (a factor 20), chosen on our CT problems.
    :param inner_steps: :math:`N_\mathrm{sub}`; CT paper code: 10.
    :param denoiser: denoiser name (default ``learned``, falling back to ``tv``; module docs).
    :param denoiser_options: keyword options of the denoiser.
    :param lr: Adam learning rate (CT paper: 1e-4).
    :param ema: EMA decay of the output (``None``: last iterate).

    Reference: CT paper, §4.2–4.3, eqs. (22)–(25), (32)–(33); D. Geman, C. Yang, "Nonlinear image
    recovery with half-quadratic regularization", IEEE TIP 1995; K. Zhang et al., "Plug-and-Play
    Image Restoration with Deep Denoiser Prior", IEEE TPAMI 2021.
    """

    name = "dip-denoiser-hqs"
    description = "DIP + denoiser by half-quadratic splitting, u = D_{α/μ_k}(f_θ(z)), increasing μ_k"
    reference = "CT paper eqs. (32)-(33); Zhang et al., Plug-and-Play Image Restoration with Deep Denoiser Prior, TPAMI 2021"
    algorithm = "CT paper eqs. (32)-(33)"

    dual = False

    def __init__(self, *, alpha: float = 0.002, mu: float = 0.01, mu_max: float = 0.2, inner_steps: int = 10,
                 denoiser: str = "learned", denoiser_options: dict | None = None, lr: float = 1e-4,
                 ema: float | None = 0.9):
        super().__init__(lr=lr, ema=ema)
        self.alpha = _nonneg("alpha", alpha)
        self.mu = _positive("mu", mu)
        self.mu_max = _positive("mu_max", mu_max)
        if self.mu_max < self.mu:
            raise ValueError(f"mu_max ({mu_max}) must be ≥ mu ({mu}): the schedule μ_k increases")
        self.inner_steps = _count("inner_steps", inner_steps)
        self._init_denoiser(denoiser, denoiser_options)

    def mu_k(self, k: int, outer_iterations: int) -> float:
        r""":math:`\mu_k = \mu_0 (\mu_{\max}/\mu_0)^{k/(K-1)}`, constant for :math:`k \ge K - 1`."""
        if outer_iterations <= 1:
            return self.mu
        return self.mu * (self.mu_max / self.mu) ** (min(k, outer_iterations - 1) / (outer_iterations - 1))

    def schedule(self, max_steps: int) -> list[float]:
        """``[μ_0, …, μ_{K−1}]`` for a run of ``max_steps`` steps."""
        K = self._outer_iterations(max_steps)
        return [self.mu_k(k, K) for k in range(K)]

    def _outer_iterations(self, max_steps: int) -> int:
        return max(1, -(-int(max_steps) // self.inner_steps))

    def coupling(self, state, k):
        return self.mu_k(k, self._outer_iterations(state.max_steps))

    def sigma(self, state, k):
        return self.alpha / self.coupling(state, k)


@register
class DIPDenoiserADMM(DIPDenoiserSplitting):
    r"""DIP + denoiser by ADMM (CT paper Algorithm 6).

    .. code-block:: text

        Require: A, y^δ, coupling penalty ρ > 0, K outer and N_sub inner iterations, input z, D_σ
        1: u^(0) = 0,  w^(0) = 0
        2: for k = 1 … K:
        3:   for i = 1 … N_sub:
        4:     x̃ = f_θ(z)
        5:     L(θ) = ½‖A x̃ − y^δ‖² + (ρ/2)‖x̃ − u^(k−1) + w^(k−1)‖²
        6:     gradient step w.r.t. θ                                  (Adam, lr)
        8:   x^(k) = f_θ(z)
        9:   u^(k) = D_σ(x^(k) + w^(k−1))
       10:   w^(k) = w^(k−1) + (x^(k) − u^(k))
       12: return f_θ(z)   (here: its EMA, CT paper §6)

    The box calls the penalty β and the scaled dual μ; here they are ρ and ``w`` (μ is HQS's
    weight). Shared with HQS: :class:`DIPDenoiserSplitting` with the dual variable. With a linear
    denoiser :math:`D(v) = c\,v` and exact θ-steps, the fixed point is the minimiser of
    :math:`\tfrac12\|Ax - y\|^2 + \tfrac{\tilde\rho}{2}(1/c - 1)\|x\|^2`
    (:math:`\tilde\rho = \rho\|A\|^2`), as for any ADMM with :math:`D = \mathrm{prox}_{R/\tilde\rho}`.

    :param rho: ρ, relative to :math:`\|A\|^2` (module docs). The CT paper's code uses
        ``admm_weight = 10``, i.e. :math:`\rho = 5\|A\|^2/n` in our units (≈ 2.9 at 32², 16
        views; ≈ 1.1 at 128², 30 views) with σ = 0.01; the thesis uses ρ = 1 (§3.3). Adapted:
        default 0.1 (module docs).
    :param denoiser_sigma: σ given to :math:`D_\sigma`; CT paper code: 0.01 (the TV prox weight
        for ``denoiser = tv``). Adapted: 0.02 (module docs).
    :param inner_steps: :math:`N_\mathrm{sub}`; CT paper code: 10.
    :param denoiser: denoiser name (default ``learned``, falling back to ``tv``; module docs).
    :param denoiser_options: keyword options of the denoiser.
    :param lr: Adam learning rate (CT paper: 1e-4).
    :param ema: EMA decay of the output (``None``: last iterate); CT paper §6: splitting methods
        return an EMA.

    Reference: CT paper §4.3 and Algorithm 6; S. Boyd et al., "Distributed Optimization and
    Statistical Learning via the Alternating Direction Method of Multipliers", FnT ML 2011.
    """

    name = "dip-denoiser-admm"
    description = "DIP + denoiser by ADMM: u = D_σ(f_θ(z) + w), w ← w + f_θ(z) − u, EMA output"
    reference = "CT paper Alg. 6; Boyd et al., Distributed Optimization ... via ADMM, FnT ML 2011"
    algorithm = "CT paper Alg. 6"

    dual = True

    def __init__(self, *, rho: float = 0.1, denoiser_sigma: float = 0.02, inner_steps: int = 10,
                 denoiser: str = "learned", denoiser_options: dict | None = None, lr: float = 1e-4,
                 ema: float | None = 0.9):
        super().__init__(lr=lr, ema=ema)
        self.rho = _positive("rho", rho)
        self.denoiser_sigma = _nonneg("denoiser_sigma", denoiser_sigma)
        self.inner_steps = _count("inner_steps", inner_steps)
        self._init_denoiser(denoiser, denoiser_options)

    def coupling(self, state, k):
        return self.rho

    def sigma(self, state, k):
        return self.denoiser_sigma


# ------------------------------------------------------------------------------ thesis v1 / v2
class _ThesisADMM(_NetworkDenoiserMethod):
    r"""Shared by DIP-ADMM v1/v2 (thesis Algorithms 1–2), in the thesis's names.

    ``G(θ) = f_θ(z)``; ``state.aux["x"]`` is the thesis's :math:`x` (the prior's variable, the
    output of the prox/denoiser), ``state.aux["u"]`` its scaled dual; the prox is the denoiser,
    :math:`\mathrm{prox}_{R/\rho}(v) = D(v, \sigma)`, which defines :math:`R`.

    One engine step is one ADMM iteration :math:`t`. Its dual update
    :math:`u_{t+1} = u_t + x_{t+1} - G(\theta_{t+1})` needs the network output *after* the
    θ-step, which the next step's forward pass computes anyway: so ``forward`` first applies the
    pending dual update of iteration :math:`t-1` with :math:`G(\theta_t)`, then the
    :math:`x`-step of iteration :math:`t`, and the θ-step follows. The sequence of operations is
    exactly the box's; only the last dual update (which does not change the output) is not made.
    """

    inner_steps = 0

    def _init_common(self, rho, denoiser_sigma, denoiser, denoiser_options):
        self.rho = _positive("rho", rho)
        self.denoiser_sigma = _nonneg("denoiser_sigma", denoiser_sigma)
        self._init_denoiser(denoiser, denoiser_options)

    def setup(self, state, resuming=False):
        zeros = self._setup_common(state)
        if not resuming:
            state.aux["x"] = zeros
            state.aux["u"] = zeros.clone()

    def x_step(self, state, G: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # abstract

    def forward(self, state):
        G = super().forward(state)
        with torch.no_grad():
            Gd = G.detach()
            if state.step > 0:  # pending dual update u_t = u_{t−1} + x_t − G(θ_t)
                state.aux["u"] = state.aux["u"] + state.aux["x"] - Gd
            state.aux["x"] = self.x_step(state, Gd)
        return G

    def coupling_term(self, state, G):
        r"""Per-sample :math:`\tfrac{\tilde\rho}{2}\|x_{t+1} - G(\theta) + u_t\|^2`."""
        rho = self.rho * state.aux["opnorm_sq"]
        return 0.5 * rho * _sqnorm(state.aux["x"] - G + state.aux["u"])

    def iterate(self, state):
        """The thesis's result :math:`x_t` (the prior's variable)."""
        return state.aux["x"]


@register
class DIPADMMv1(_ThesisADMM):
    r"""DIP-ADMM-v1 (thesis Algorithm 1): the data term on :math:`x`, an ISTA/FISTA :math:`x`-step.

    Problem (24): :math:`\min_{\theta,x} \tfrac12\|b - Ax\|^2 + R(x)` s.t. :math:`x = G(\theta)`,
    augmented Lagrangian
    :math:`L^{(1)}_\rho = \tfrac12\|b-Ax\|^2 + R(x) + \tfrac\rho2\|x - G(\theta) + u\|^2 - \tfrac\rho2\|u\|^2`:

    .. code-block:: text

        for t = 0 … T − 1:
          2: x_{t+1} = ISTA(x_t, N, L^(1)_ρ, R)
          3: θ_{t+1} = θ_t − β ∇_θ L^(1)_ρ(x_{t+1}, θ, u_t)     = ∇_θ (ρ/2)‖x_{t+1} − G(θ) + u_t‖²
          4: u_{t+1} = u_t + (x_{t+1} − G(θ_{t+1}))
        ISTA, N iterations from x_t:
          9: x ← prox_{R/(‖AᵀA‖+ρ)}( x − (1/(‖AᵀA‖+ρ)) [Aᵀ(Ax − b) + ρ(x − G(θ_t) + u_t)] )

    The θ-step (Adam, lr β) sees only the coupling term; the loss terms reported are ``data``
    (:math:`\tfrac12\|b - Ax_{t+1}\|^2`, constant in θ) and ``split``. The prox of
    :math:`R/(\|A\|^2+\tilde\rho)` is the denoiser at
    :math:`\sigma' = \sigma\,(\tilde\rho/(\|A\|^2+\tilde\rho))^{1/p}`, where
    :math:`D(\cdot,\sigma) = \mathrm{prox}_{R/\tilde\rho}` defines :math:`R` and ``p`` is how the
    denoiser's prox weight grows with σ (1 for ``tv``, 2 for Gaussian denoisers). ``fista = True``
    uses FISTA momentum within the N iterations. Initialisation :math:`x_0 = 0`, :math:`u_0 = 0`.

    :param rho: ρ, relative to :math:`\|A\|^2` (module docs); thesis §3.3: 1.
    :param denoiser_sigma: σ of :math:`\mathrm{prox}_{R/\rho} = D_\sigma`; thesis §3.3: TV prox
        weight 0.01 (for ‖A‖ = 1); adapted: 0.002 (module docs).
    :param ista_steps: N, ISTA iterations per x-step (the thesis leaves N open and reports it
        "does not have much influence"); default 5.
    :param fista: FISTA instead of ISTA in the x-step.
    :param denoiser: denoiser name (default ``learned``, falling back to ``tv``; module docs).
    :param denoiser_options: keyword options of the denoiser.
    :param lr: Adam learning rate β (thesis §3.3: 1e-3).
    :param ema: EMA decay of the output (thesis §4.2 smooths with 0.9).

    Reference: "Hybrid deep image prior and ADMM" thesis, §3.2.1, Algorithm 1, §3.3.
    """

    name = "dip-admm-v1"
    description = "DIP-ADMM-v1: ADMM on ½‖b−Ax‖² + R(x), x = G(θ); x-step by ISTA/FISTA with the denoiser as prox"
    reference = "Hybrid DIP-ADMM thesis, Alg. 1 (§3.2.1)"
    algorithm = "thesis Alg. 1"

    def __init__(self, *, rho: float = 1.0, denoiser_sigma: float = 0.002, ista_steps: int = 5,
                 fista: bool = False, denoiser: str = "learned", denoiser_options: dict | None = None,
                 lr: float = 1e-3, ema: float | None = 0.9):
        super().__init__(lr=lr, ema=ema)
        self._init_common(rho, denoiser_sigma, denoiser, denoiser_options)
        self.ista_steps = _count("ista_steps", ista_steps)
        self.fista = bool(fista)

    def ista_sigma(self) -> float:
        r""":math:`\sigma' = \sigma\,(\rho/(1+\rho))^{1/p}` (both weights relative to ‖A‖²)."""
        return self.denoiser_sigma * (self.rho / (1.0 + self.rho)) ** (1.0 / _prox_power(self.D))

    def x_step(self, state, G):
        phys, b, u = state.physics, state.y, state.aux["u"]
        L = state.aux["opnorm_sq"]
        rho = self.rho * L
        step = _bview(1.0 / (L + rho), G)
        rho_b = _bview(rho, G)
        sig = self.ista_sigma()
        x = state.aux["x"]
        x_old, t = x, 1.0
        y = x
        for _ in range(self.ista_steps):
            grad = phys.A_adjoint(phys.A(y) - b) + rho_b * (y - G + u)
            x_new = self.D(y - step * grad, sig)
            if self.fista:
                t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
                y = x_new + ((t - 1.0) / t_new) * (x_new - x_old)
                t = t_new
            else:
                y = x_new
            x_old = x_new
        return x_old

    def loss(self, state, x):
        return {"data": data_fidelity(state.physics, state.aux["x"], state.y),
                "split": self.coupling_term(state, x)}


@register
class DIPADMMv2(_ThesisADMM):
    r"""DIP-ADMM-v2 (thesis Algorithm 2): the data term on :math:`G(\theta)`, one prox per step.

    Problem (25): :math:`\min_{\theta,x} \tfrac12\|b - AG(\theta)\|^2 + R(x)` s.t.
    :math:`x = G(\theta)`, augmented Lagrangian
    :math:`L^{(2)}_\rho = \tfrac12\|b-AG(\theta)\|^2 + R(x) + \tfrac\rho2\|x - G(\theta) + u\|^2 - \tfrac\rho2\|u\|^2`:

    .. code-block:: text

        for t = 0 … T − 1:
          2: x_{t+1} = prox_{R/ρ}(G(θ_t) − u_t)  =  D_σ(G(θ_t) − u_t)
          3: θ_{t+1} = θ_t − β ∇_θ [½‖b − AG(θ)‖² + (ρ/2)‖x_{t+1} − G(θ) + u_t‖²]
          4: u_{t+1} = u_t + (x_{t+1} − G(θ_{t+1}))

    One θ-step (Adam, lr β) and one denoiser call per iteration; :math:`x_0 = 0`, :math:`u_0 = 0`.
    It is ADMM on the same splitting as CT paper Algorithm 6 with one inner step, but in the
    thesis's order (prox first, and the dual update uses the network output after the θ-step);
    its dual is :math:`u = -w`.

    :param rho: ρ, relative to :math:`\|A\|^2` (module docs); thesis §3.3: 1.
    :param denoiser_sigma: σ of :math:`\mathrm{prox}_{R/\rho} = D_\sigma`; thesis §3.3: TV prox
        weight 0.01 (BM3D: 0.05, NLM: 0.01; for ‖A‖ = 1); adapted: 0.002 (module docs).
    :param denoiser: denoiser name (default ``learned``, falling back to ``tv``; module docs).
    :param denoiser_options: keyword options of the denoiser.
    :param lr: Adam learning rate β (thesis §3.3: 1e-3).
    :param ema: EMA decay of the output (thesis §4.2 smooths with 0.9).

    Reference: "Hybrid deep image prior and ADMM" thesis, §3.2.2, Algorithm 2, §3.3.
    """

    name = "dip-admm-v2"
    description = "DIP-ADMM-v2: x = D_σ(G(θ) − u), one θ-step on ½‖b−AG(θ)‖² + ρ/2‖x−G(θ)+u‖², u ← u + x − G(θ)"
    reference = "Hybrid DIP-ADMM thesis, Alg. 2 (§3.2.2)"
    algorithm = "thesis Alg. 2"

    def __init__(self, *, rho: float = 1.0, denoiser_sigma: float = 0.002, denoiser: str = "learned",
                 denoiser_options: dict | None = None, lr: float = 1e-3, ema: float | None = 0.9):
        super().__init__(lr=lr, ema=ema)
        self._init_common(rho, denoiser_sigma, denoiser, denoiser_options)

    def x_step(self, state, G):
        return self.D(G - state.aux["u"], self.denoiser_sigma)

    def loss(self, state, x):
        return {"data": data_fidelity(state.physics, x, state.y),
                "split": self.coupling_term(state, x)}


# ---------------------------------------------------------------------------------- PnP-ADMM
def conjugate_gradient(op: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, x0: torch.Tensor,
                       iterations: int) -> torch.Tensor:
    """``iterations`` CG steps on ``op(x) = b`` (``op`` symmetric positive definite), per sample.

    A fixed count, no host synchronisation; a converged sample (zero residual) stays put.
    """
    x = x0
    r = b - op(x)
    p = r
    rs = _sqnorm(r)
    for _ in range(int(iterations)):
        Ap = op(p)
        pAp = _dot(p, Ap)
        ok = pAp > 0
        alpha = torch.where(ok, rs / torch.where(ok, pAp, torch.ones_like(pAp)), torch.zeros_like(pAp))
        x = x + _bview(alpha, x) * p
        r = r - _bview(alpha, r) * Ap
        rs_new = _sqnorm(r)
        ok = rs > 0
        beta = torch.where(ok, rs_new / torch.where(ok, rs, torch.ones_like(rs)), torch.zeros_like(rs))
        p = r + _bview(beta, p) * p
        rs = rs_new
    return x


@register
class PnPADMM(_DenoiserMixin, Baseline):
    r"""Plug-and-play ADMM (thesis Algorithm 3), no network.

    Problem (32): :math:`\min_{x,u} \tfrac12\|Ax - y\|^2 + R(u)` s.t. :math:`x = u`, with
    :math:`\mathrm{prox}_{R/\rho}` replaced by a denoiser :math:`D_\sigma`:

    .. code-block:: text

        u^(0) = 0, w^(0) = 0, x^(0) = 0
        for t = 1 … T:
            x^(t) = (AᵀA + ρI)⁻¹ (Aᵀy + ρ(u^(t−1) − w^(t−1)))      (cg_iterations CG steps,
                                                                    warm-started at x^(t−1))
            u^(t) = D_σ(x^(t) + w^(t−1))
            w^(t) = w^(t−1) + x^(t) − u^(t)
        return u^(T)

    This is the thesis's Algorithm 3 with its :math:`(x, y, u)` renamed :math:`(u, x, -w)` (the
    names of CT paper Algorithm 6) and started at the least-squares step (the thesis's first
    prox, of :math:`y_0 - u_0 = 0`, gives :math:`u \approx 0` too). The returned image is the
    denoiser's output (the thesis's :math:`x_t`). ρ is relative to :math:`\|A\|^2` as in the DIP
    methods of this module (:math:`\tilde\rho = \rho\|A\|^2`, estimated once by power iteration);
    the CG system has condition number κ ≤ 1 + 1/ρ (11 for ρ = 0.1), and CG is warm-started. With a linear denoiser
    :math:`D(v) = c\,v` the iteration converges to the minimiser of
    :math:`\tfrac12\|Ax-y\|^2 + \tfrac{\tilde\rho}{2}(1/c-1)\|x\|^2`, the fixed point of
    ``dip-denoiser-admm`` with the same ρ and σ.

    :param rho: ρ, relative to :math:`\|A\|^2`; thesis §3.3: 1 (for ‖A‖ = 1); adapted: 0.1
        (module docs), as ``dip-denoiser-admm``.
    :param denoiser_sigma: σ of :math:`D_\sigma = \mathrm{prox}_{R/\rho}`; thesis §3.3: TV prox
        weight 0.01 (BM3D: 0.05); adapted: 0.02, as ``dip-denoiser-admm``.
    :param cg_iterations: CG steps per x-step (fixed count).
    :param denoiser: denoiser name (default ``learned``, falling back to ``tv``; module docs).
    :param denoiser_options: keyword options of the denoiser.

    Reference: S. V. Venkatakrishnan, C. A. Bouman, B. Wohlberg, "Plug-and-Play Priors for Model
    Based Reconstruction", GlobalSIP 2013; "Hybrid deep image prior and ADMM" thesis, Algorithm 3.
    """

    name = "pnp-admm"
    description = "plug-and-play ADMM (no network): x by CG on (AᵀA+ρI)x = Aᵀy + ρ(u−w), u = D_σ(x+w), w ← w+x−u"
    reference = "Venkatakrishnan, Bouman & Wohlberg, Plug-and-Play Priors, GlobalSIP 2013 (thesis Alg. 3)"
    algorithm = "thesis Alg. 3"

    default_iterations = 100

    def __init__(self, *, rho: float = 0.1, denoiser_sigma: float = 0.02, cg_iterations: int = 10,
                 denoiser: str = "learned", denoiser_options: dict | None = None):
        super().__init__()
        self.rho = _positive("rho", rho)
        self.denoiser_sigma = _nonneg("denoiser_sigma", denoiser_sigma)
        self.cg_iterations = _count("cg_iterations", cg_iterations)
        self._init_denoiser(denoiser, denoiser_options)

    def admm_step(self, physics, y, state: dict[str, Any], rho: torch.Tensor) -> dict[str, torch.Tensor]:
        """One ADMM iteration on ``state = {"x", "u", "w"}``; returns the new state."""
        x0, u, w = state["x"], state["u"], state["w"]
        rb = _bview(rho, x0)
        rhs = physics.A_adjoint(y) + rb * (u - w)
        x = conjugate_gradient(lambda v: physics.A_adjoint(physics.A(v)) + rb * v, rhs, x0,
                               self.cg_iterations)
        u = self.D(x + w, self.denoiser_sigma)
        return {"x": x, "u": u, "w": w + x - u}

    def reconstruct(self, problem, *, iterations=None, observer=None, observe_every=10):
        physics, y = problem.physics, problem.y
        T = int(iterations or self.default_iterations)
        with torch.no_grad():
            self.D.to(y.device)
            like = physics.A_adjoint(y)
            rho = self.rho * operator_norm_sq(physics, like)
            st = {"x": torch.zeros_like(like), "u": torch.zeros_like(like), "w": torch.zeros_like(like)}
            for t in range(1, T + 1):
                st = self.admm_step(physics, y, st, rho)
                if observer is not None and (t % observe_every == 0 or t == T):
                    observer(t, st["u"])
            return st["u"]
