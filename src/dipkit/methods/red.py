r"""DeepRED: DIP + regularisation by denoising, by Nesterov's accelerated proximal gradient
(CT paper Algorithm 5). Denoiser handling and the scaling of the weights:
:mod:`dipkit.methods._denoising`.
"""

from __future__ import annotations

import math

import torch

from ..physics.linalg import nesterov_t, sqnorm
from ._denoising import NetworkDenoiserMethod
from .base import count, data_term, nonneg
from .registry import register

__all__ = ["DeepRED"]


@register
class DeepRED(NetworkDenoiserMethod):
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
    :param lr: Adam learning rate; default: the network preset's (CT paper: 1e-4 for its U-Net).
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
    #: precision=auto keeps fp32: bf16 autocast cost 0.17 dB of PSNR at 32² CT after 300 steps (CPU, emulated
    #: bf16, one seed; benchmark notes of issue 10)
    bf16_safe = False

    def __init__(self, *, lam: float = 0.1, L: float = 1.2, denoiser_sigma: float = 0.02,
                 inner_steps: int = 10, denoiser: str = "learned", denoiser_options: dict | None = None,
                 lr: float | None = None, ema: float | None = 0.9):
        super().__init__(lr=lr, ema=ema)
        self.lam = nonneg("lam", lam)
        self.L = float(L)
        if not self.L > 1 or not math.isfinite(self.L):
            raise ValueError(f"L must be > 1, got {L}")
        self.denoiser_sigma = nonneg("denoiser_sigma", denoiser_sigma)
        self.inner_steps = count("inner_steps", inner_steps)
        self._init_denoiser(denoiser, denoiser_options)

    @staticmethod
    def t(k: int) -> float:
        """Nesterov's :math:`t_k` (:math:`t_0 = 1`)."""
        t = 1.0
        for _ in range(int(k)):
            t = nesterov_t(t)
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
        w = self.lam * self.L * state.opnorm_sq()
        return {"data": data_term(state, x),
                "red": 0.5 * w * sqnorm(x - state.aux["u"])}

    def outer_update(self, state):
        k = state.outer_step + 1
        t_prev, t_k = self.t(k - 1), self.t(k)
        x_k = self.fresh_output(state)
        v = x_k + ((t_prev - 1.0) / t_k) * (x_k - state.aux["x_prev"])
        state.aux["u"] = self.red_step(v)
        state.aux["x_prev"] = x_k
