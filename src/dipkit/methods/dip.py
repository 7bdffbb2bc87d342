r"""Vanilla Deep Image Prior.

Algorithm 1 (CT paper; Ulyanov, Vedaldi & Lempitsky 2018)::

    Require: A, y^δ, N_max, input z, architecture f_θ
    for k = 1 … N_max:
        x̃ = f_θ(z)
        L(θ) = ½ ‖A x̃ − y^δ‖²
        take a gradient step w.r.t. θ using ∇L(θ)          (Adam, learning rate lr)
    return f_θ(z)

Options: an exponential moving average of the outputs (``ema``, decay β) as the returned
estimate, and input perturbation ``z + σ_p ε_k`` (``input.perturb``, Ulyanov et al.'s
``reg_noise_std``). Adam with the network preset's learning rate (the CT paper's code uses 1e-4
for its 6×128 U-Net, the ``unet-paper`` preset; the small default ``unet`` needs 1e-3).
"""

from __future__ import annotations

from .base import Method
from .registry import register

__all__ = ["DIP"]


@register
class DIP(Method):
    r"""Vanilla DIP: :math:`\min_\theta \tfrac12\|A f_\theta(z) - y^\delta\|_2^2` (Algorithm 1).

    :param lr: Adam learning rate; default: the network preset's (CT paper code: 1e-4 for its U-Net).
    :param ema: EMA decay β of the output (``None``: last iterate). Default 0.99, as Ulyanov et al.'s
        code (``exp_weight``) and Self-Guided DIP: with the ``val`` pick it changed the result by −0.2 to
        +0.8 dB against the last iterate on six CT/MRI/denoising tuning problems at 64² (release notes
        E5), and it damps the Adam spikes that the last iterate shows at lr 3e-3.

    Reference: D. Ulyanov, A. Vedaldi, V. Lempitsky, "Deep Image Prior", CVPR 2018 / IJCV 2020.
    """

    name = "dip"
    description = "vanilla Deep Image Prior: Adam on ½‖A f_θ(z) − y‖² (optional EMA output)"
    reference = "Ulyanov, Vedaldi & Lempitsky, Deep Image Prior, CVPR 2018"
    algorithm = "CT paper Alg. 1"

    def __init__(self, *, lr: float | None = None, ema: float | None = 0.99):
        super().__init__(lr=lr, ema=ema)
