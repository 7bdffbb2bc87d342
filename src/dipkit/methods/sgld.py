r"""DIP with stochastic gradient Langevin dynamics (SGLD) on the network weights.

Cheng, Gadelha, Maji & Sheldon, "A Bayesian perspective on the deep image prior", CVPR 2019;
SGLD: Welling & Teh, ICML 2011; thesis §2.3.3 (eq. 14).
"""

from __future__ import annotations

import math

import torch

from ..engine.output import OutputRule
from ..errors import DipkitError
from .base import Method, count, data_term
from .registry import register

__all__ = ["SGLD", "PosteriorMean"]


class PosteriorMean(OutputRule):
    r"""Running posterior mean of the iterates after a burn-in, with a variance map.

    For ``step ≤ burn_in`` the estimate is the last iterate. Afterwards, with
    :math:`n = \mathrm{step} - \mathrm{burn\_in}` samples :math:`x_1, \dots, x_n`:

    .. math::

        \bar x_n = \bar x_{n-1} + (x_n - \bar x_{n-1})/n, \qquad
        v_n = \big((n-1)\,v_{n-1} + (x_n - \bar x_{n-1})\odot(x_n - \bar x_n)\big)/n

    (Welford). ``state.estimate`` is :math:`\bar x_n`; the pixel-wise posterior variance
    :math:`v_n` is ``state.aux["posterior_var"]`` (checkpointed with the state; zeros during
    burn-in). ``n`` comes from ``state.step`` (a Python int), so no host synchronisation.
    """

    def __init__(self, burn_in: int):
        self.burn_in = int(burn_in)

    def update(self, state, x: torch.Tensor) -> None:
        n = state.step - self.burn_in
        var = state.aux.get("posterior_var")
        if n <= 1 or state.estimate is None or var is None or state.estimate.shape != x.shape:
            state.estimate = x.clone()
            state.aux["posterior_var"] = torch.zeros_like(x)
            return
        mean_old = state.estimate
        mean = mean_old + (x - mean_old) / n
        state.aux["posterior_var"] = ((n - 1) * var + (x - mean_old) * (x - mean)) / n
        state.estimate = mean

    def __repr__(self):
        return f"PosteriorMean(burn_in={self.burn_in})"


@register
class SGLD(Method):
    r"""DIP posterior sampling by stochastic gradient Langevin dynamics (SGLD-DIP).

    Potential (negative log posterior of the weights; operator normalised by :math:`\|A\|`,
    residual averaged over the :math:`n` pixels of an image):

    .. math::

        U(\theta) = \frac{1}{2\,n\,\|A\|^2}\,\|A f_\theta(z) - y\|_2^2 + \lambda\,\|\theta\|_2^2

    and the SGLD chain (plain SGD plus Gaussian noise) at temperature :math:`T`, sampling
    :math:`p(\theta) \propto \exp(-U(\theta)/T)`:

    .. math::

        \theta_{t+1} = \theta_t - \mathrm{lr}\,\nabla U(\theta_t)
                       + \sqrt{2\,\mathrm{lr}\,T}\;\varepsilon_t,\qquad
        \varepsilon_t \sim \mathcal N(0, I)

    Algorithm (thesis eq. 14 with ε/2 = lr and a temperature; Welling & Teh 2011)::

        for t = 1 … N_max:
            x_t = f_θ(z)
            U(θ) = ½‖A x_t − y‖²/(n‖A‖²) + λ‖θ‖²     (λ‖θ‖² as SGD weight decay 2λ)
            θ ← θ − lr ∇U(θ)                           (optimizer.step: plain SGD, no momentum)
            θ ← θ + √(2·lr·T) ε,  ε ~ N(0, I)          (after_update; all weights; run's generator)
            if t > burn_in: x̄ ← running mean of x_t; v ← running variance    (PosteriorMean)
        return x̄  (posterior mean);  state.aux["posterior_var"] = v   (pixel-wise variance map)

    *Scaling*: dividing the data term by :math:`n\|A\|^2` (:math:`\|A\|^2` by power iteration,
    once in ``setup``) makes the step size mean the same for any operator and image size (an
    MSE-type loss). In the original units, sampling :math:`\exp(-U/T)` is the posterior for
    Gaussian measurement noise of variance :math:`\sigma^2 = T\,n\,\|A\|^2` and a Gaussian weight
    prior of variance :math:`T/(2\lambda)`. So :math:`T = \sigma^2/(n\|A\|^2)` is the untempered
    posterior for noise std σ — about 7e-8 (32², 16 views) and 2e-8 (64², 30 views) for our CT
    test problems at 2 % noise; a larger T samples a tempered, more strongly smoothed posterior
    (and slows the fit: on 32² CT, T = 1e-6 cost ≈ 0.8 dB after 8000 steps).
    The reported loss term ``data`` has the value ½‖A x − y‖² (comparable with other methods)
    and the gradient of the normalised term; the weight prior enters as SGD weight decay and is
    not reported.

    *Why SGD and not Adam*: SGLD's noise √(2·lr·T) matches a plain gradient step of size lr;
    under Adam the gradient is preconditioned per coordinate (by roughly 1/√v), so the injected
    noise would have to be preconditioned too (pSGLD, Li et al. 2016) for the chain to target
    the stated posterior. Common SGLD-DIP implementations following Cheng et al. use Adam with
    un-preconditioned noise of std 2·lr on the convolution weights only (weight decay 5e-8,
    burn-in 7000, a sample every 50 steps) — a heuristic; this class implements SGLD proper.
    The price is speed: plain SGD fits more slowly than Adam (on 64² CT, SGD at lr = 0.3 was a
    little slower than Adam at lr = 1e-3: 19.0 vs 20.9 dB after 300 steps), and lr must stay below
    a network-dependent stability limit (default U-Net at 32²–64²: lr = 0.3 stable, 1 diverged).

    *Defaults* (adapted — the papers give Adam settings, which do not carry over to SGD):
    ``lr = 0.1`` (a factor ≈ 3 below the observed stability limit), ``T = 1e-7`` (about the
    untempered posterior of our CT problems), ``lam = 5e-8`` (Cheng et al.'s weight decay),
    10 000 steps (CT paper §6) with a burn-in of half the run (5000 steps).

    *Burn-in and the step budget*: the posterior mean needs samples after the burn-in, so the
    burn-in is tied to the run's step budget ``N_max`` (``state.max_steps``, known in ``setup``):
    ``burn_in = None`` (default) uses ``N_max // 2`` — the first half of any run is burn-in, the
    second half is averaged; an explicit ``burn_in`` (steps) is used as given, and a run whose
    budget it does not leave a step to average (``burn_in ≥ N_max``) is refused with an error
    rather than silently returning the last iterate of plain noisy SGD. The burn-in in effect is
    :attr:`PosteriorMean.burn_in` (``method.output.burn_in``) after ``setup``.

    :param lr: SGD step size (= ε/2 in Welling & Teh's notation).
    :param T: temperature; the Langevin noise std per step is √(2·lr·T). ``T = 0`` gives
        plain SGD (no sampling).
    :param lam: Gaussian weight-prior strength λ in λ‖θ‖² (SGD weight decay 2λ).
    :param burn_in: steps before the posterior mean starts (before: the last iterate); ``None``:
        half the run's step budget. Must be below the run's step budget.

    Reference: Z. Cheng, M. Gadelha, S. Maji, D. Sheldon, "A Bayesian perspective on the deep image
    prior", CVPR 2019; M. Welling, Y. W. Teh, "Bayesian learning via stochastic gradient Langevin
    dynamics", ICML 2011.
    """

    name = "sgld"
    description = "DIP with SGLD on θ (SGD + √(2·lr·T) noise, Gaussian weight prior), posterior-mean output"
    reference = "Cheng, Gadelha, Maji & Sheldon, A Bayesian perspective on the deep image prior, CVPR 2019"
    algorithm = "SGLD (Welling & Teh 2011); thesis §2.3.3 eq. 14"
    default_iterations = 10000
    max_iterations = None  # the posterior mean needs its burn-in and sampling phases: a fixed budget
    schedulable = False  # lr also sets the Langevin noise √(2·lr·T)
    # the Langevin noise is drawn parameter by parameter from each member's own generator
    # (member_parameters(b)); kept on the loop Ensemble, whose members are separate leaves
    stack_members = False

    def __init__(self, *, lr: float = 0.1, T: float = 1e-7, lam: float = 5e-8, burn_in: int | None = None):
        if float(lr) <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if float(T) < 0 or float(lam) < 0:
            raise ValueError("T and lam must be non-negative")
        super().__init__(lr=lr, ema=None)
        self.T, self.lam = float(T), float(lam)
        self.burn_in = None if burn_in is None else count("burn_in", burn_in, minimum=0)
        self.output = PosteriorMean(self.default_iterations // 2 if self.burn_in is None else self.burn_in)

    def burn_in_for(self, max_steps: int) -> int:
        """The burn-in of a run of ``max_steps`` steps: ``burn_in``, or ``max_steps // 2`` when unset;
        a DipkitError when no step would be left for the posterior mean."""
        if self.burn_in is None:
            return int(max_steps) // 2
        if self.burn_in >= int(max_steps):
            raise DipkitError(f"sgld: burn_in = {self.burn_in} leaves no step of the run's {max_steps} for the "
                              f"posterior mean (it would return the last iterate of noisy SGD); use burn_in < "
                              f"{max_steps}, or leave burn_in unset for half the run")
        return self.burn_in

    @property
    def noise_std(self) -> float:
        """Standard deviation √(2·lr·T) of the Langevin noise added to every weight per step."""
        return math.sqrt(2.0 * self.lr * self.T)

    # ------------------------------------------------------------------ hooks
    def setup(self, state, resuming: bool = False) -> None:
        self.output.burn_in = self.burn_in_for(state.max_steps)
        state.opnorm_sq()

    def make_optimizer(self, groups) -> torch.optim.Optimizer:
        return torch.optim.SGD(groups, lr=self.lr, momentum=0.0, weight_decay=2.0 * self.lam)

    def loss(self, state, x):
        data = data_term(state, x)
        # the value is ½‖Ax − y‖² (comparable with other methods); the gradient that of ½‖Ax − y‖²/(n‖A‖²)
        scaled = data / (state.opnorm_sq() * x[0].numel())
        return {"data": data.detach() + (scaled - scaled.detach())}

    @torch.no_grad()
    def after_update(self, state) -> None:
        std = self.noise_std
        if std == 0.0:
            return
        if state.generators is None:
            draws = [(state.generator, [p for g in state.optimizer.param_groups for p in g["params"]])]
        else:  # an ensemble: each member's weights from its own generator, as in its own run
            draws = [(gen, list(state.net.member_parameters(b))) for b, gen in enumerate(state.generators)]
        for gen, params in draws:
            for p in params:
                p.add_(torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype), alpha=std)
