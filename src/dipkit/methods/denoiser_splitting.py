r"""DIP + denoiser by splitting: half-quadratic splitting (CT paper eqs. 32–33) and ADMM (CT paper
Algorithm 6), one class with and without the dual variable. Denoiser handling and the scaling of
the weights: :mod:`dipkit.methods._denoising`.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..physics.linalg import geometric, sqnorm
from ..priors.denoisers import prox_power
from ._denoising import NetworkDenoiserMethod
from .base import count, data_term, nonneg, positive
from .registry import register

__all__ = ["DIPDenoiserSplitting", "DIPDenoiserHQS", "DIPDenoiserADMM"]


class DIPDenoiserSplitting(NetworkDenoiserMethod):
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
        beta = self.coupling(state, state.outer_step) * state.opnorm_sq()
        return {"data": data_term(state, x),
                "split": 0.5 * beta * sqnorm(x - self.target(state))}

    def outer_update(self, state):
        k = state.outer_step
        x = self.fresh_output(state)
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
                    = prox_{(α/μ_k) J}(f_θ^(k+1)(z))  →  D_{σ_k}(f_θ^(k+1)(z)),      (33)
                      σ_k = (α/μ_k)^{1/p}
        return f_θ(z)

    with an increasing schedule :math:`\mu_k`: geometric from ``mu`` (:math:`\mu_0`) to
    ``mu_max`` (:math:`\mu_{K-1}`) over the :math:`K = \lceil N/N_\mathrm{sub}\rceil` outer
    iterations of the run's :math:`N` steps (as the CT paper's code; constant after that), so the
    denoiser strength decreases. Shared with ADMM: :class:`DIPDenoiserSplitting` without the dual
    variable.

    *Denoiser strength*: line (33) asks for :math:`\mathrm{prox}_{(\alpha/\mu_k) J}`. A denoiser
    is the proximal map :math:`D(\cdot,\sigma) = \mathrm{prox}_{\sigma^p J}` of its regulariser
    :math:`J`, with the prox power ``p`` of :func:`dipkit.priors.denoisers.prox_power` (1 for
    ``tv`` and ``wavelet``, whose weight is linear in σ; 2 for the Gaussian denoisers ``learned``,
    ``shrinkage``, ``bm3d``, ``nlm``, ``drunet``: MAP/MMSE at noise variance σ²). So the denoiser
    gets

    .. math:: \sigma_k = (\alpha/\mu_k)^{1/p},

    the convention DIP-ADMM v1 uses for its σ' (:mod:`dipkit.methods.thesis_admm`). The CT paper
    writes :math:`D_{\alpha/\mu_k}` (and its code sets σ_k ∝ 1/μ_k), which is this rule for its
    TV prox (p = 1). For a Gaussian denoiser σ_k = α/μ_k would take the prox of
    :math:`(\alpha^2/\mu_k^2) J`, i.e. a regulariser weight :math:`\alpha^2/\mu_k` that falls along
    the schedule instead of staying α; with p = 2, :math:`\mu_k = \alpha/\sigma_k^2` as in Zhang
    et al.'s DPIR (HQS with a decreasing σ_k and :math:`\mu_k \propto 1/\sigma_k^2`).

    :param alpha: α, the regulariser weight relative to :math:`\|A\|^2`: the HQS objective is
        :math:`\tfrac12\|Ax-y\|^2 + \alpha\|A\|^2 J(u) + \tfrac{\mu_k\|A\|^2}{2}\|x-u\|^2`
        and the denoiser gets :math:`\sigma_k = (\alpha/\mu_k)^{1/p}` (image units). Its scale
        depends on the denoiser's ``J``. Default (for the default ``learned``, p = 2):
        :math:`4\cdot10^{-5} = \rho\,\sigma^2` of ``dip-denoiser-admm``'s defaults (ρ = 0.1,
        σ = 0.02), the same regulariser weight :math:`\alpha\|A\|^2 \approx 0.07` (64², 30 views;
        module docs); with μ from 0.01 to 0.2 the denoiser gets σ_k from 0.063 down to 0.014
        (σ = 0.02, ADMM's, at μ_k = 0.1 = ADMM's ρ) — inside the learned denoiser's useful range
        [0.01, 0.22] (:class:`dipkit.priors.learned.LearnedDenoiser`). With ``denoiser = tv``
        (p = 1; J = TV) use α ≈ 0.002 (α‖A‖² ≈ 3.6 TV at 64², 30 views; σ_k from 0.2 down to
        0.01 over the default μ range). The CT paper code: α = 60 in its scaling, TV prox
        weight from 0.5 down to 0.01. On 64² CT (shepp-logan, 30 views, 2 % noise; lr 1e-3,
        2000 steps) the default peaks where the former linear rule σ_k = α/μ_k with α = 0.002
        (σ from 0.2 down to 0.01) did: 26.61 vs 26.49 dB (seed 0), 25.88 vs 25.89 dB (seed 1).
    :param mu: :math:`\mu_0`, relative to :math:`\|A\|^2` (module docs).
    :param mu_max: :math:`\mu_{K-1}` (≥ ``mu``), relative to :math:`\|A\|^2`. The CT paper's code
        spans a factor 50 (:math:`\mu_k = 60\|A\|^2/(n\sigma_k)` in our units); defaults
        ``mu = 0.01``, ``mu_max = 0.2`` (a factor 20), chosen on our CT problems.
    :param inner_steps: :math:`N_\mathrm{sub}`; CT paper code: 10.
    :param denoiser: denoiser name (default ``learned``, falling back to ``tv``; module docs).
    :param denoiser_options: keyword options of the denoiser.
    :param lr: Adam learning rate; default: the network preset's (CT paper: 1e-4 for its U-Net).
    :param ema: EMA decay of the output (``None``: last iterate).

    Reference: CT paper, §4.2–4.3, eqs. (22)–(25), (32)–(33); D. Geman, C. Yang, "Nonlinear image
    recovery with half-quadratic regularization", IEEE TIP 1995; K. Zhang et al., "Plug-and-Play
    Image Restoration with Deep Denoiser Prior", IEEE TPAMI 2021.
    """

    name = "dip-denoiser-hqs"
    description = "DIP + denoiser by half-quadratic splitting, u = D_σk(f_θ(z)), σ_k = (α/μ_k)^(1/p), increasing μ_k"
    reference = "CT paper eqs. (32)-(33); Zhang et al., Plug-and-Play Image Restoration with Deep Denoiser Prior, TPAMI 2021"
    algorithm = "CT paper eqs. (32)-(33)"

    dual = False

    def __init__(self, *, alpha: float = 4e-5, mu: float = 0.01, mu_max: float = 0.2, inner_steps: int = 10,
                 denoiser: str = "learned", denoiser_options: dict | None = None, lr: float | None = None,
                 ema: float | None = 0.9):
        super().__init__(lr=lr, ema=ema)
        self.alpha = nonneg("alpha", alpha)
        self.mu = positive("mu", mu)
        self.mu_max = positive("mu_max", mu_max)
        if self.mu_max < self.mu:
            raise ValueError(f"mu_max ({mu_max}) must be ≥ mu ({mu}): the schedule μ_k increases")
        self.inner_steps = count("inner_steps", inner_steps)
        self._init_denoiser(denoiser, denoiser_options)

    def mu_k(self, k: int, outer_iterations: int) -> float:
        r""":math:`\mu_k = \mu_0 (\mu_{\max}/\mu_0)^{k/(K-1)}`, constant for :math:`k \ge K - 1`."""
        return geometric(self.mu, self.mu_max, k, outer_iterations)

    def schedule(self, max_steps: int) -> list[float]:
        """``[μ_0, …, μ_{K−1}]`` for a run of ``max_steps`` steps."""
        K = self._outer_iterations(max_steps)
        return [self.mu_k(k, K) for k in range(K)]

    def _outer_iterations(self, max_steps: int) -> int:
        return max(1, -(-int(max_steps) // self.inner_steps))

    def coupling(self, state, k):
        return self.mu_k(k, self._outer_iterations(state.max_steps))

    def sigma(self, state, k):
        r""":math:`\sigma_k = (\alpha/\mu_k)^{1/p}`, ``p`` the denoiser's prox power (class docs)."""
        return (self.alpha / self.coupling(state, k)) ** (1.0 / prox_power(self.D))


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
    :param lr: Adam learning rate; default: the network preset's (CT paper: 1e-4 for its U-Net).
    :param ema: EMA decay of the output (``None``: last iterate); CT paper §6: splitting methods
        return an EMA.

    Reference: CT paper §4.3 and Algorithm 6; S. Boyd et al., "Distributed Optimization and
    Statistical Learning via the Alternating Direction Method of Multipliers", FnT ML 2011.
    """

    name = "dip-denoiser-admm"
    description = "DIP + denoiser by ADMM: u = D_σ(f_θ(z) + w), w ← w + f_θ(z) − u, EMA output"
    reference = "CT paper Alg. 6; Boyd et al., Distributed Optimization ... via ADMM, FnT ML 2011"
    algorithm = "CT paper Alg. 6"
    #: precision=auto keeps fp32: bf16 autocast cost 0.18 dB of PSNR at 32² CT after 300 steps (CPU, emulated
    #: bf16, one seed; benchmark notes of issue 10)
    bf16_safe = False

    dual = True

    def __init__(self, *, rho: float = 0.1, denoiser_sigma: float = 0.02, inner_steps: int = 10,
                 denoiser: str = "learned", denoiser_options: dict | None = None, lr: float | None = None,
                 ema: float | None = 0.9):
        super().__init__(lr=lr, ema=ema)
        self.rho = positive("rho", rho)
        self.denoiser_sigma = nonneg("denoiser_sigma", denoiser_sigma)
        self.inner_steps = count("inner_steps", inner_steps)
        self._init_denoiser(denoiser, denoiser_options)

    def coupling(self, state, k):
        return self.rho

    def sigma(self, state, k):
        return self.denoiser_sigma
