r"""The classical TV baseline ``tv``: TV-regularised reconstruction by PDHG, with its weight chosen
without a ground truth.

.. math::

    \min_x \; \tfrac12 \|A x - y\|_2^2 + \alpha\,\mathrm{TV}(x) \; [+\ \iota_{x \ge 0}(x)]

The solver (:class:`dipkit.core.tv.TVSolver`) and the weight search
(:func:`dipkit.core.tv_alpha.choose_alpha`) live in :mod:`dipkit.core`, under both this baseline
and ``dip-tv``; :class:`TV` is the registered method (the solver plus ``alpha="auto"``, one PDHG
iteration per engine step) and :func:`tv_reconstruct` runs it on ``(physics, y)`` directly.

Reference: A. Chambolle and T. Pock, "A first-order primal-dual algorithm for convex problems
with applications to imaging", J. Math. Imaging Vis. 40 (2011) 120-145 (Algorithm 1, theta = 1);
L. Rudin, S. Osher, E. Fatemi, Physica D 60 (1992).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..core.tv import ADAPT_DELTA, ADAPT_ETA, ADAPT_START, CHECK_EVERY, TOL, TVSolver, _as_batch, tv_objective
from ..core.tv_alpha import choose_alpha
from ..errors import DipkitError
from ..methods.registry import register

__all__ = ["TV", "tv_reconstruct", "tv_objective", "TOL", "CHECK_EVERY", "ADAPT_START", "ADAPT_ETA",
           "ADAPT_DELTA"]


@register
class TV(TVSolver):
    r"""Classical TV-regularised reconstruction by PDHG (Chambolle–Pock), the registered method
    ``tv``: :class:`dipkit.core.tv.TVSolver` (the algorithm, the step sizes, the parameters and their
    documentation) with ``alpha="auto"`` chosen by :func:`dipkit.core.tv_alpha.choose_alpha`.

    Reference: A. Chambolle, T. Pock, JMIV 2011; L. Rudin, S. Osher, E. Fatemi, Physica D 1992;
    T. Goldstein, E. Esser, R. Baraniuk, arXiv:1305.0546 (2013); S. Ramani, T. Blu, M. Unser,
    "Monte-Carlo SURE", IEEE TIP 17 (2008).
    """

    def resolve_alpha(self, state, batch: int) -> None:
        """``alpha="auto"``: the weight of least held-out misfit (or SURE), and the validated image
        as the start of the solve (see :func:`~dipkit.core.tv_alpha.choose_alpha`)."""
        chosen, validated = choose_alpha(state.physics, state.y, nonneg=self.positivity(state),
                                         return_estimate=True, sigma=state.meta.get("noise_sigma"),
                                         opnorm_sq=state.opnorm_sq())
        self.alphas = chosen
        if batch == 1:
            self.alpha = float(chosen[0])
        if self.x0 is None:  # continue from the validated image (see choose_alpha)
            self.x0 = validated


@torch.no_grad()
def tv_reconstruct(
    physics,
    y: torch.Tensor,
    alpha="auto",
    *,
    iterations: int = 500,
    x0: torch.Tensor | None = None,
    nonneg: bool = True,
    observer: Callable[[int, torch.Tensor], None] | None = None,
    observe_every: int = 10,
    step_ratio: float = 1.0,
    tol: float = 0.0,
) -> torch.Tensor:
    r"""TV-regularised reconstruction of ``y`` by :class:`TV` (PDHG), without a problem file.

    :param physics: any deepinv ``LinearPhysics`` (``A``, ``A_adjoint``).
    :param y: measurements ``[B, ...]``.
    :param alpha: TV weight ``>= 0``, float or tensor of ``B`` values (see :class:`TV` for its scale),
        or ``"auto"`` (:func:`~dipkit.core.tv_alpha.choose_alpha`).
    :param iterations: number of PDHG iterations (all of them unless ``tol`` > 0).
    :param x0: initial image; default: zeros shaped like ``A^T y``.
    :param nonneg: constrain ``x >= 0``.
    :param observer: ``observer(k, x)`` after iteration ``k`` (1-based) for every ``k`` multiple of
        ``observe_every`` and for the last iteration. ``x`` is the current iterate (do not modify).
    :param step_ratio: initial ``sigma / tau`` (adapted by residual balancing, :meth:`TVSolver._balance`);
        affects the speed only.
    :param tol: stop once converged (:class:`TV`'s ``tol``; one host read every
        :data:`CHECK_EVERY` steps); 0 (default): run all ``iterations``.
    :return: the reconstruction, shaped like ``A^T y``.
    """
    if iterations < 0:
        raise DipkitError(f"iterations must be >= 0, got {iterations}")
    if observe_every < 1:
        raise DipkitError(f"observe_every must be >= 1, got {observe_every}")
    method = TV(nonneg=nonneg, tol=tol)
    if not (isinstance(alpha, str) and alpha == "auto"):
        method.alphas = _as_batch(alpha, y.shape[0], y.real if y.is_complex() else y)
    method.x0, method.step_ratio = x0, float(step_ratio)
    if iterations == 0:
        from ..engine import State

        state = State(physics=physics, y=y, max_steps=0, generator=torch.Generator(device=y.device))
        method.setup(state)
        return state.aux["x"]
    return method.solve(physics, y, iterations=iterations, observer=observer, observe_every=observe_every)
