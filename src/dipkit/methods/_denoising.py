r"""Shared by the methods that use a denoiser as a prior: DeepRED, DIP + denoiser by HQS and by
ADMM (CT paper), the thesis's DIP-ADMM v1/v2, and the plug-and-play ADMM baseline.

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
keyword options, e.g. ``{"weights": PATH}``), handled by
:class:`dipkit.priors.denoisers.DenoiserPrior`. The default is ``"learned"`` — the CT paper uses a
learned denoiser (DRUNet); ours is dipkit's small DnCNN (falling back to ``"tv"`` with a warning
when it cannot be built). The thesis's DIP-ADMM v1/v2 default to its TV proximal map
(``denoiser="tv"``): they apply the prox at every step, where the learned denoiser's bias at
small σ accumulates (:class:`dipkit.methods.thesis_admm.ThesisADMM`). Denoisers that run on the host (``nlm``, ``wavelet``,
``bm3d``) synchronise at every call: fine at outer updates, slow in ``dip-admm-v1/v2``, which
call the denoiser at every step.

**Scaling of the weights.** Every penalty weight here (``rho``, ``mu``, ``lam``) is a quadratic
coupling weight, relative to :math:`\|A\|^2` (the convention of :mod:`dipkit.methods.base`): the
loss uses :math:`\tilde\rho = \rho\,\|A\|^2`; for :math:`\|A\| = 1` (the thesis's inpainting)
:math:`\tilde\rho = \rho` is the papers' own weight. The CT paper's code scales its losses differently (data term
:math:`\|Ax-y\|^2/\|A\|^4`, penalties divided by the number of pixels ``n``); its values map to
ours as :math:`\rho = 5\|A\|^2/n` (ADMM, ``admm_weight = 10``), :math:`\mu_k = 60\|A\|^2/(n\sigma_k)`
(HQS) and :math:`\lambda = 0.005\|A\|^2/n` (RED), which depend on the walnut operator's scale,
and the thesis's ρ = 1, σ = 0.01 are for inpainting (‖A‖ = 1). The defaults here were chosen on
our parallel-beam CT problems (64², 30 views, 2 % noise): ``rho = lam = 0.1`` and
``denoiser_sigma = 0.02`` for the CT paper's methods and PnP-ADMM (HQS: ``alpha = 4e-5`` = ρσ²,
μ from 0.01 to 0.2, so a Gaussian denoiser's σ_k = (α/μ_k)^{1/2} goes from 0.063 to 0.014); the
thesis's v1/v2 keep its ``rho = 1`` with
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

import torch

from ..priors.denoisers import DenoiserPrior
from .base import Method

__all__ = ["NetworkDenoiserMethod"]


class NetworkDenoiserMethod(DenoiserPrior, Method):
    """Common set-up of the network methods with a denoiser: the denoiser on the device and ‖A‖²."""

    def _setup_common(self, state) -> torch.Tensor:
        """Move the denoiser, estimate ‖A‖² (cached in the state); return zeros shaped like ``f_θ(z)``."""
        self.D.to(state.device)
        state.opnorm_sq()
        return state.image_like()
