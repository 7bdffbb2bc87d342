r"""Classical TV-regularised reconstruction by Chambolle–Pock (PDHG), as an engine method.

Solves, for each sample of a batch,

.. math::

    \min_x \; \tfrac12 \|A x - y\|_2^2 + \alpha\,\mathrm{TV}(x) \; [+\ \iota_{x \ge 0}(x)]

with the isotropic TV of :func:`dipkit.priors.tv.tv`, for any deepinv ``LinearPhysics`` ``A``.
:class:`TVSolver` is the solver at given weights (one PDHG iteration per engine step); the
registered method ``tv`` (:class:`dipkit.baselines.tv.TV`) is this solver plus the
ground-truth-free choice of the weight (:func:`dipkit.core.tv_alpha.choose_alpha`, which itself runs
:class:`TVSolver`), and :func:`dipkit.baselines.tv.tv_reconstruct` runs it on ``(physics, y)``
directly. The solver lives in :mod:`dipkit.core` so that the weight search under it serves both the
``tv`` baseline and ``dip-tv`` (:mod:`dipkit.methods.tv`).

Reference: A. Chambolle and T. Pock, "A first-order primal-dual algorithm for convex problems
with applications to imaging", J. Math. Imaging Vis. 40 (2011) 120-145 (Algorithm 1, theta = 1);
L. Rudin, S. Osher, E. Fatemi, Physica D 60 (1992).
"""

from __future__ import annotations

import math

import torch

from ..errors import DipkitError
from ..physics.linalg import bview
from ..priors.tv import GRAD_NORM_SQ, div, grad, tv
from .baseline import Baseline
from .method import data_fidelity

__all__ = ["TVSolver", "tv_objective", "TOL", "CHECK_EVERY"]

#: :class:`TVSolver`: a solve stops when the relative change over :data:`CHECK_EVERY` steps is at most this
TOL = 5e-4
#: how often (steps) :class:`TVSolver` reads its convergence (one host synchronisation each time) and
#: balances its step sizes
CHECK_EVERY = 10
#: residual balancing of the step sizes (Goldstein, Esser & Baraniuk 2013): start, decay, band
ADAPT_START, ADAPT_ETA, ADAPT_DELTA = 0.5, 0.95, 1.5


def _as_batch(value, n: int, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(n)
    t = t.reshape(-1)
    if t.shape[0] != n:
        raise DipkitError(f"alpha has {t.shape[0]} values for a batch of {n}")
    return t


def tv_objective(physics, x: torch.Tensor, y: torch.Tensor, alpha) -> torch.Tensor:
    """``1/2 ||A x - y||^2 + alpha TV(x)`` per sample, shape ``[B]``."""
    return data_fidelity(physics, x, y) + _as_batch(alpha, x.shape[0], x) * tv(x)


class TVSolver(Baseline):
    r"""Classical TV-regularised reconstruction by PDHG (Chambolle–Pock); registered (with the choice
    of ``alpha="auto"``) as the method ``tv``, :class:`dipkit.baselines.tv.TV`.

    .. math:: \hat x = \arg\min_{x \ge 0} \tfrac12\|Ax - y\|_2^2 + \alpha\,\mathrm{TV}(x)

    written as :math:`\min_x F(Kx) + G(x)` with :math:`Kx = (Ax, \mu\nabla x)`,
    :math:`F(z_1, z_2) = \tfrac12\|z_1 - y\|^2 + (\alpha/\mu)\|z_2\|_{2,1}`,
    :math:`G = \iota_{\ge 0}` (or 0). :math:`\mu = \|A\|/\sqrt 8` balances the two blocks of
    :math:`K` (a diagonal preconditioning; the minimiser does not depend on it). One engine step
    is one iteration (Chambolle & Pock 2011, Alg. 1, θ = 1)::

        z1 ← (z1 + σ (A x̄ − y)) / (1 + σ)                 # prox of σF₁*
        z2 ← P_{α/μ}(z2 + σ μ ∇x̄)                          # pixel-wise ball projection
        x⁺ ← max(0, x − τ (Aᵀ z1 − μ div z2))             # prox of τG
        x̄ ← 2x⁺ − x

    with initially :math:`\sigma = r/L`, :math:`\tau = 1/(rL)` (``r`` the step ratio, 1),
    :math:`L = 1.02\,\|K\|` and :math:`\|K\|^2 \le \|A\|^2 + 8\mu^2 = 2\|A\|^2` (:math:`\|A\|^2`
    per sample from :meth:`dipkit.engine.State.opnorm_sq`), so :math:`\tau\sigma\|K\|^2 < 1`; every
    :data:`CHECK_EVERY` steps the ratio :math:`\sigma/\tau` is adapted by residual balancing with
    :math:`\tau\sigma` kept (:meth:`_balance`; Goldstein, Esser & Baraniuk 2013): the best fixed
    ratio differs by operator (measured at 128²: 10 for CT, ≤ 1 for MRI and denoising). Start:
    :math:`x = 0` (or ``x0``). The run stops after its iterations, or earlier once the relative
    change :math:`\|x_k - x_{k-10}\| / \|x_k\|` is at most ``tol`` (read every :data:`CHECK_EVERY`
    steps). Loss terms (observed): ``data`` = ½‖Ax − y‖², ``tv`` = α TV(x).

    :param alpha: TV weight α, absolute (on the data term's scale, see :mod:`dipkit.methods.base`),
        or ``"auto"`` (default): chosen without a ground truth by :func:`~dipkit.core.tv_alpha.choose_alpha`
        (in :class:`dipkit.baselines.tv.TV`: the solver alone takes weights), so the
        weight follows the operator, the image size and the noise level; the chosen value is
        recorded in the run's parameters. The best α varies over six decades (oracle values at
        128²: ≈ 5 for CT with 30 views, 1.3–1.8 on the head CT, 0.002–0.006 for 4× MRI, 0.06
        for denoising at σ = 25/255, 2–6·10⁻⁴ for deblurring and 4× super-resolution) — no single
        number suits them all. How it is chosen: a warm-started path over the half decades
        :data:`AUTO_ALPHAS` from the largest down, each weight solved on 95 % of the measured
        entries and scored by the misfit on the held-out 5 % (for denoising with a known noise
        level: by SURE instead), stopped once the score rose twice in a row; the best weight and
        its neighbours continued to convergence; the weight refined between grid points by a
        parabola in log α; the final solve on all data starts from the validated image.
        Measured (``benchmarks/results/tv-choice.md``, 128², 8 tasks × 2 images): PSNR 0.02 dB
        below the oracle α on average on the project's images and 0.03 dB on held-out images
        (worst 0.12 / 0.09 dB; before: 0.31 / 0.25, worst 1.45 / 1.08 dB on denoising); CT with
        30 views ≈ 3–4 s of one CPU thread for the whole run (before: 7–9 s).
    :param nonneg: enforce :math:`x \ge 0`; ``None`` (default) = on, except for complex images
        (MRI, stored as real/imaginary channels), whose imaginary part has no sign.
    :param tol: stop once the relative change over :data:`CHECK_EVERY` steps is at most this
        (default :data:`TOL`; measured at 128² from the validated image: within 0.01 dB of 600
        steps on CT and MRI, 0.1 dB short on 50 % inpainting, whose holes fill slowly; 0 runs every
        iteration).

    Reference: A. Chambolle, T. Pock, "A first-order primal-dual algorithm for convex problems with
    applications to imaging", JMIV 2011; L. Rudin, S. Osher, E. Fatemi, Physica D 1992; T. Goldstein,
    E. Esser, R. Baraniuk, "Adaptive primal-dual hybrid gradient methods for saddle-point problems",
    arXiv:1305.0546 (2013); S. Ramani, T. Blu, M. Unser, "Monte-Carlo SURE", IEEE TIP 17 (2008).
    """

    name = "tv"
    description = "classical TV-regularised reconstruction, min ½‖Ax−y‖² + α TV(x), x ≥ 0, by PDHG"
    reference = "Rudin, Osher & Fatemi 1992; Chambolle & Pock, JMIV 2011"
    algorithm = "PDHG"

    default_iterations = 500

    def __init__(self, *, alpha: float | str = "auto", nonneg: bool | None = None, tol: float = TOL):
        super().__init__()
        if alpha != "auto" and not float(alpha) >= 0:
            raise ValueError(f"alpha must be ≥ 0 or 'auto', got {alpha}")
        if not float(tol) >= 0:
            raise ValueError(f"tol must be ≥ 0, got {tol}")
        self.alpha = "auto" if alpha == "auto" else float(alpha)
        self.nonneg = None if nonneg is None else bool(nonneg)
        self.tol = float(tol)
        #: adapt the ratio of the step sizes by residual balancing (:meth:`_balance`)
        self.adaptive = True
        #: per-sample weights (a ``[B]`` tensor) instead of ``alpha``; set by :func:`tv_reconstruct`
        self.alphas: torch.Tensor | None = None
        #: start image instead of zeros; set by :func:`tv_reconstruct`
        self.x0: torch.Tensor | None = None
        self.step_ratio = 1.0

    def resolve_alpha(self, state, batch: int) -> None:
        """``alpha="auto"``: set the weights (``alphas``, and ``alpha`` for one sample) and, optionally,
        the start image ``x0`` before the solve. The solver has no weight search (it is what the
        search runs): :class:`dipkit.baselines.tv.TV` has."""
        raise DipkitError("the TV solver needs a weight: alpha='auto' is the 'tv' method's "
                          "(dipkit.baselines.tv.TV)")

    def positivity(self, state) -> bool:
        """``nonneg`` as given, else True unless the image is complex (MRI: 2 channels)."""
        if self.nonneg is not None:
            return self.nonneg
        return not str(state.meta.get("task", "")).startswith("mri")

    def setup(self, state, resuming=False):
        like = state.image_like()
        if like.ndim != 4:
            raise DipkitError(f"tv expects images [B, C, H, W], got A^T y of shape {tuple(like.shape)}")
        B = like.shape[0]
        if self.alpha == "auto" and self.alphas is None:
            self.resolve_alpha(state, B)
        self._a = _as_batch(self.alpha if self.alphas is None else self.alphas, B, like)
        if bool((self._a < 0).any()):
            raise DipkitError("alpha must be >= 0")
        norm_a = state.opnorm_sq().to(like.dtype).sqrt()
        if not bool((norm_a > 0).all()):
            raise DipkitError("the operator's norm is zero: nothing to reconstruct")
        if not self.step_ratio > 0:
            raise DipkitError(f"step_ratio must be > 0, got {self.step_ratio}")
        self._mu = norm_a / math.sqrt(GRAD_NORM_SQ)
        L = 1.02 * torch.sqrt(norm_a**2 + GRAD_NORM_SQ * self._mu**2)
        self._radius = (self._a / self._mu).reshape(B, 1, 1, 1, 1)
        self._nonneg = self.positivity(state)
        if not (resuming and "sigma" in state.aux):
            state.aux.update(sigma=self.step_ratio / L, tau=1.0 / (self.step_ratio * L),
                             adapt=torch.full_like(L, ADAPT_START))
        if resuming and "x" in state.aux:
            return
        if self.x0 is None:
            x = like
        else:
            if self.x0.shape != like.shape:
                raise DipkitError(f"x0 has shape {tuple(self.x0.shape)}, expected {tuple(like.shape)}")
            x = self.x0.detach().to(dtype=like.dtype, device=like.device).clone()
            if self._nonneg:
                x = x.clamp_min(0.0)
        state.aux.update(x=x, xbar=x, z1=torch.zeros_like(state.y),
                         z2=torch.zeros(*x.shape[:2], 2, *x.shape[2:], dtype=x.dtype, device=x.device))

    def forward(self, state):
        A, y, aux = state.physics, state.y, state.aux
        x, xbar, z1_old, z2_old = aux["x"], aux["xbar"], aux["z1"], aux["z2"]
        s, t, mu = aux["sigma"], aux["tau"], bview(self._mu, x)
        axbar = A.A(xbar)
        z1 = (z1_old + bview(s, y) * (axbar - y)) / (1.0 + bview(s, y))
        z2 = z2_old + bview(s * self._mu, z2_old) * grad(xbar)
        nrm = z2.pow(2).sum(dim=-3, keepdim=True).sqrt()
        z2 = z2 * (self._radius / torch.maximum(nrm, self._radius).clamp_min(torch.finfo(x.dtype).tiny))
        x_new = x - bview(t, x) * (A.A_adjoint(z1) - mu * div(z2))
        if self._nonneg:
            x_new = x_new.clamp_min(0.0)
        aux.update(x=x_new, xbar=2.0 * x_new - x, z1=z1, z2=z2)
        if (state.step + 1) % CHECK_EVERY == 0:
            if self.adaptive:
                self._balance(state, x, x_new, xbar, axbar, z1_old, z1, z2_old, z2)
            if self.tol > 0:
                self._check_converged(state, x_new)
        return x_new

    def _balance(self, state, x, x_new, xbar, axbar, z1_old, z1, z2_old, z2) -> None:
        r"""Residual balancing (Goldstein, Esser & Baraniuk 2013), every :data:`CHECK_EVERY` steps,
        per sample, on the device: with the primal and dual residuals of the pair
        :math:`(x^+, z^+)`,

        .. math:: p = \|x - x^+\|/	au, \qquad
                  d = \|(z - z^+)/\sigma + K(ar x - x^+)\|,

        :math:`p > \Delta d` ⇒ :math:`	au \leftarrow 	au/(1-a),\ \sigma \leftarrow \sigma(1-a)`;
        :math:`d > \Delta p` ⇒ the reverse; then :math:`a \leftarrow \eta a` (:math:`	au\sigma` and
        so convergence are kept; :math:`a 	o 0` freezes the ratio). :math:`\Delta` = 1.5,
        :math:`\eta` = 0.95, :math:`a_0` = 0.5 as in the paper."""
        aux, A = state.aux, state.physics
        s, t, a = aux["sigma"], aux["tau"], aux["adapt"]
        dx = xbar - x_new
        p = (x - x_new).flatten(1).norm(dim=1) / t
        d1 = (z1_old - z1) / bview(s, z1) + (axbar - A.A(x_new))
        d2 = (z2_old - z2) / bview(s, z2) + bview(self._mu, z2) * grad(dx)
        d = torch.sqrt(d1.abs().pow(2).flatten(1).sum(1) + d2.pow(2).flatten(1).sum(1))
        up, down = p > ADAPT_DELTA * d, d > ADAPT_DELTA * p  # up: a larger primal step
        factor = torch.where(up, 1.0 / (1.0 - a), torch.where(down, 1.0 - a, torch.ones_like(a)))
        aux.update(tau=t * factor, sigma=s / factor, adapt=torch.where(up | down, a * ADAPT_ETA, a))

    def _check_converged(self, state, x: torch.Tensor) -> None:
        """Every :data:`CHECK_EVERY` steps (one host read): stop once every sample's relative change
        since the last check, ``‖x − x_prev‖ / ‖x‖``, is at most ``tol``."""
        ref = state.aux.get("x_check")
        state.aux["x_check"] = x
        if ref is None or ref.shape != x.shape:
            return
        change = (x - ref).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny)
        if bool((change <= self.tol).all()):
            state.request_stop(f"converged (relative change ≤ {self.tol:g} over {CHECK_EVERY} steps)")

    def loss(self, state, x):
        return {"data": data_fidelity(state.physics, x, state.y), "tv": self._a * tv(x)}
