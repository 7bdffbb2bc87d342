r"""Plug-and-play ADMM (thesis Algorithm 3): the network-free denoiser-prior baseline."""

from __future__ import annotations

import torch

from ..core.method import count, nonneg, positive
from ..methods.registry import register
from ..physics.linalg import bview, conjugate_gradient
from ..priors.denoisers import DenoiserPrior
from ..core.baseline import Baseline

__all__ = ["PnPADMM"]


@register
class PnPADMM(DenoiserPrior, Baseline):
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
    methods (:mod:`dipkit.methods.base`) (:math:`\tilde\rho = \rho\|A\|^2`, estimated once by power iteration);
    the CG system has condition number κ ≤ 1 + 1/ρ (11 for ρ = 0.1), and CG is warm-started. With a linear denoiser
    :math:`D(v) = c\,v` the iteration converges to the minimiser of
    :math:`\tfrac12\|Ax-y\|^2 + \tfrac{\tilde\rho}{2}(1/c-1)\|x\|^2`, the fixed point of
    ``dip-denoiser-admm`` with the same ρ and σ.

    :param rho: ρ, relative to :math:`\|A\|^2`; thesis §3.3: 1 (for ‖A‖ = 1); adapted: 0.1
        (:mod:`dipkit.methods._denoising`), as ``dip-denoiser-admm``.
    :param denoiser_sigma: σ of :math:`D_\sigma = \mathrm{prox}_{R/\rho}`; thesis §3.3: TV prox
        weight 0.01 (BM3D: 0.05); adapted: 0.02, as ``dip-denoiser-admm``.
    :param cg_iterations: CG steps per x-step (fixed count).
    :param denoiser: denoiser name (default ``learned``, falling back to ``tv``).
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
        self.rho = positive("rho", rho)
        self.denoiser_sigma = nonneg("denoiser_sigma", denoiser_sigma)
        self.cg_iterations = count("cg_iterations", cg_iterations)
        self._init_denoiser(denoiser, denoiser_options)

    def setup(self, state, resuming=False):
        self.D.to(state.device)
        with torch.no_grad():
            self._aty = state.physics.A_adjoint(state.y)
        self._rho = bview(self.rho * state.opnorm_sq(), self._aty)
        if not (resuming and "x" in state.aux):
            zeros = torch.zeros_like(self._aty)
            state.aux.update(x=zeros, u=zeros.clone(), w=zeros.clone())

    def forward(self, state):
        """One ADMM iteration on ``state.aux`` ``{x, u, w}``; returns ``u``."""
        A, aux, rho = state.physics, state.aux, self._rho
        x0, u, w = aux["x"], aux["u"], aux["w"]
        x = conjugate_gradient(lambda v: A.A_adjoint(A.A(v)) + rho * v, self._aty + rho * (u - w), x0,
                               self.cg_iterations)
        u = self.D(x + w, self.denoiser_sigma)
        aux.update(x=x, u=u, w=w + x - u)
        return u
