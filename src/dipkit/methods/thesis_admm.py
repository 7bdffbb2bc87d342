r"""The hybrid DIP-ADMM thesis's two algorithms: DIP-ADMM v1 (ISTA/FISTA x-step, Algorithm 1) and
v2 (one prox per step, Algorithm 2). Denoiser handling and the scaling of the weights:
:mod:`dipkit.methods._denoising`.
"""

from __future__ import annotations

import warnings

import torch

from ..physics.linalg import bview, nesterov_t, sqnorm
from ..priors.denoisers import prox_power
from ._denoising import NetworkDenoiserMethod
from .base import count, data_fidelity, data_term, nonneg, positive
from .registry import register

__all__ = ["ThesisADMM", "DIPADMMv1", "DIPADMMv2"]


class ThesisADMM(NetworkDenoiserMethod):
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

    Parameters shared by v1 and v2: ``denoiser`` (default ``tv``, the TV proximal map, as the
    thesis, §3.3: "shrinkage parameter 0.01 for TV proximal operator"; any name of
    :data:`dipkit.priors.denoisers.DENOISERS`, see :mod:`dipkit.methods._denoising`),
    ``denoiser_options`` (its keyword options), ``lr`` (Adam learning rate β; default: the network preset's, thesis §3.3: 1e-3)
    and ``ema`` (EMA decay of the output; thesis §4.2 smooths with 0.9).

    *Why TV and not the learned denoiser by default*: the boxes apply the prox at every step (v1:
    ``ista_steps`` times per step) with a small σ, where a learned Gaussian denoiser is not the
    identity — the shipped ``learned`` DnCNN changes a clean image by an RMS of 0.004–0.007 at
    σ = 0 (a bias that v1 applied 5 times per step and which made it diverge on 64² CT), while the
    TV prox tends to the identity as σ → 0. v1 on 64² CT (shepp-logan, 30 views, 2 % noise; lr
    1e-3, 1000 steps): learned at σ' = 0.0014 applied as a prox, 20.04 dB at step 470 then
    falling (19.23 at 1000); TV prox (default), 22.96 dB and rising; learned below its floor
    (identity prox, i.e. no prior), 25.90 dB — the prior slows the fit at this budget.

    *σ floor* (:meth:`denoise`): a denoiser may declare ``sigma_floor``, the smallest σ at which it
    is a useful denoiser (``learned``: 0.01, see :class:`dipkit.priors.learned.LearnedDenoiser`).
    When the σ a box asks for (v2: σ; v1: σ') is below it, the prox is taken to be the identity —
    :math:`\mathrm{prox}_{R/\rho}` of a regulariser that weak is the identity up to terms below
    the denoiser's own bias — and the denoiser is not called. (The alternative, a bias correction
    :math:`x + D(x,\sigma) - D(x, 0)`, would still rely on the network in the range where it is
    unreliable and cost a second call.) A :class:`UserWarning` says so once per run.
    """

    inner_steps = 0

    def _init_common(self, rho, denoiser_sigma, denoiser, denoiser_options):
        self.rho = positive("rho", rho)
        self.denoiser_sigma = nonneg("denoiser_sigma", denoiser_sigma)
        self._init_denoiser(denoiser, denoiser_options)

    def setup(self, state, resuming=False):
        zeros = self._setup_common(state)
        if not resuming:
            state.aux["x"] = zeros
            state.aux["u"] = zeros.clone()
        sigma, floor = self.prox_sigma(), self.sigma_floor()
        if sigma < floor:
            warnings.warn(f"{self.name}: the prox's σ = {sigma:.3g} is below the {self.denoiser!r} denoiser's "
                          f"floor σ = {floor:.3g}; using the identity as the prox (raise denoiser_sigma, or "
                          "use denoiser=tv)", UserWarning, stacklevel=2)

    def prox_sigma(self) -> float:
        """The σ of the box's prox calls (v2: ``denoiser_sigma``; v1: :meth:`DIPADMMv1.ista_sigma`)."""
        return self.denoiser_sigma

    def sigma_floor(self) -> float:
        """The denoiser's declared ``sigma_floor`` (0 when it declares none)."""
        return float(getattr(self.D, "sigma_floor", 0.0) or 0.0)

    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        r"""The box's prox :math:`D(x, \sigma)`; the identity when σ is below the denoiser's floor."""
        if sigma < self.sigma_floor():
            return x
        return self.D(x, sigma)

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
        rho = self.rho * state.opnorm_sq()
        return 0.5 * rho * sqnorm(state.aux["x"] - G + state.aux["u"])

    def iterate(self, state):
        """The thesis's result :math:`x_t` (the prior's variable)."""
        return state.aux["x"]


@register
class DIPADMMv1(ThesisADMM):
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

    ``denoiser``, ``denoiser_options``, ``lr``, ``ema``: as :class:`ThesisADMM`.

    Reference: "Hybrid deep image prior and ADMM" thesis, §3.2.1, Algorithm 1, §3.3.
    """

    name = "dip-admm-v1"
    #: the data term is in the classical x-update, not in the network's loss: data.subset does not apply
    stochastic_data = False
    description = "DIP-ADMM-v1: ADMM on ½‖b−Ax‖² + R(x), x = G(θ); x-step by ISTA/FISTA with the denoiser as prox"
    reference = "Hybrid DIP-ADMM thesis, Alg. 1 (§3.2.1)"
    algorithm = "thesis Alg. 1"
    #: precision=auto keeps fp32: bf16 autocast cost 1.55 dB of PSNR at 32² CT after 300 steps (CPU, emulated
    #: bf16, one seed; benchmark notes of issue 10)
    bf16_safe = False

    def __init__(self, *, rho: float = 1.0, denoiser_sigma: float = 0.002, ista_steps: int = 5,
                 fista: bool = False, denoiser: str = "tv", denoiser_options: dict | None = None,
                 lr: float | None = None, ema: float | None = 0.9):
        super().__init__(lr=lr, ema=ema)
        self._init_common(rho, denoiser_sigma, denoiser, denoiser_options)
        self.ista_steps = count("ista_steps", ista_steps)
        self.fista = bool(fista)

    def ista_sigma(self) -> float:
        r""":math:`\sigma' = \sigma\,(\rho/(1+\rho))^{1/p}` (both weights relative to ‖A‖²)."""
        return self.denoiser_sigma * (self.rho / (1.0 + self.rho)) ** (1.0 / prox_power(self.D))

    def prox_sigma(self) -> float:
        return self.ista_sigma()

    def x_step(self, state, G):
        phys, b, u = state.physics, state.y, state.aux["u"]
        L = state.opnorm_sq()
        rho = self.rho * L
        step = bview(1.0 / (L + rho), G)
        rho_b = bview(rho, G)
        sig = self.ista_sigma()
        x = state.aux["x"]
        x_old, t = x, 1.0
        y = x
        for _ in range(self.ista_steps):
            grad = phys.A_adjoint(phys.A(y) - b) + rho_b * (y - G + u)
            x_new = self.denoise(y - step * grad, sig)
            if self.fista:
                t_new = nesterov_t(t)
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
class DIPADMMv2(ThesisADMM):
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

    ``denoiser``, ``denoiser_options``, ``lr``, ``ema``: as :class:`ThesisADMM`.

    Reference: "Hybrid deep image prior and ADMM" thesis, §3.2.2, Algorithm 2, §3.3.
    """

    name = "dip-admm-v2"
    description = "DIP-ADMM-v2: x = D_σ(G(θ) − u), one θ-step on ½‖b−AG(θ)‖² + ρ/2‖x−G(θ)+u‖², u ← u + x − G(θ)"
    reference = "Hybrid DIP-ADMM thesis, Alg. 2 (§3.2.2)"
    algorithm = "thesis Alg. 2"

    def __init__(self, *, rho: float = 1.0, denoiser_sigma: float = 0.002, denoiser: str = "tv",
                 denoiser_options: dict | None = None, lr: float | None = None, ema: float | None = 0.9):
        super().__init__(lr=lr, ema=ema)
        self._init_common(rho, denoiser_sigma, denoiser, denoiser_options)

    def x_step(self, state, G):
        return self.denoise(G - state.aux["u"], self.denoiser_sigma)

    def loss(self, state, x):
        return {"data": data_term(state, x),
                "split": self.coupling_term(state, x)}
