r"""Linear algebra shared by methods and baselines: per-sample norms, the operator norm, CG, step
schedules.

Every function works on batches with a leading dimension ``B`` of independent samples, returns one
value per sample where it reduces (shape ``[B]``), handles complex tensors, and never
synchronises host and device (fixed iteration counts, no ``.item()``).

* :func:`opnorm_sq` — **the** estimate of :math:`\|A\|_2^2 = \lambda_{\max}(A^\top A)` used
  everywhere in dipkit (methods read it once per run through
  :meth:`dipkit.engine.State.opnorm_sq`, which caches it); the scaling convention built on it is
  documented once in :mod:`dipkit.methods.base`;
* :func:`conjugate_gradient` — CG on a symmetric positive definite operator;
* :func:`nesterov_t`, :func:`geometric` — Nesterov's momentum sequence and a geometric schedule;
* :func:`normalised_adjoint` — :math:`A^\top y` scaled to a largest magnitude of 1 per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["bview", "sqnorm", "dot", "opnorm_sq", "POWER_ITERATIONS", "conjugate_gradient", "nesterov_t",
           "geometric", "normalised_adjoint"]

#: power iterations of :func:`opnorm_sq`
POWER_ITERATIONS = 30


def bview(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample ``[B]`` tensor shaped to broadcast against ``like`` ``[B, ...]``."""
    return v.view(-1, *[1] * (like.ndim - 1))


def sqnorm(x: torch.Tensor) -> torch.Tensor:
    """Per-sample squared norm ``‖x_b‖²``, shape ``[B]`` (real-valued for complex ``x``)."""
    return (x.conj() * x).real.flatten(1).sum(1) if x.is_complex() else x.pow(2).flatten(1).sum(1)


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample real inner product ``Re⟨a_b, b_b⟩``, shape ``[B]``."""
    return (a.conj() * b).real.flatten(1).sum(1) if a.is_complex() else (a * b).flatten(1).sum(1)


@torch.no_grad()
def opnorm_sq(physics, like: torch.Tensor, iterations: int = POWER_ITERATIONS) -> torch.Tensor:
    r"""Per-sample estimate of :math:`\|A\|_2^2 = \lambda_{\max}(A^\top A)`, shape ``[B]``.

    Power iteration on :math:`A^\top A` from a fixed random start (a CPU generator seeded with 0,
    the same start for every sample of the batch, so the estimate does not depend on the device,
    the call or the batch size), normalising
    before each application and ending with the Rayleigh quotient
    :math:`\lambda = \langle x, A^\top A x\rangle` (:math:`\|x\| = 1`). It approaches
    :math:`\|A\|^2` from below; callers that need a step size below :math:`2/\|A\|^2` add a
    margin. ``like`` is an image-shaped tensor ``[B, ...]`` (shape, dtype and device of the
    start vector), e.g. :math:`A^\top y`.
    """
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn((1, *like.shape[1:]), generator=gen, dtype=like.dtype).to(like.device)
    x = x.expand(like.shape).contiguous()
    real = sqnorm(x).dtype
    tiny = torch.finfo(real).tiny
    lam = torch.zeros(like.shape[0], device=like.device, dtype=real)
    for _ in range(int(iterations)):
        x = x / bview(sqnorm(x).sqrt().clamp_min(tiny), x)
        y = physics.A_adjoint(physics.A(x))
        lam = dot(x, y)
        x = y
    return lam.clamp_min(tiny)


def conjugate_gradient(op: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, x0: torch.Tensor,
                       iterations: int) -> torch.Tensor:
    """``iterations`` CG steps on ``op(x) = b`` (``op`` symmetric positive definite), per sample.

    A fixed count, no host synchronisation; a converged sample (zero residual) stays put.
    """
    x = x0
    r = b - op(x)
    p = r
    rs = sqnorm(r)
    for _ in range(int(iterations)):
        Ap = op(p)
        pAp = dot(p, Ap)
        ok = pAp > 0
        alpha = torch.where(ok, rs / torch.where(ok, pAp, torch.ones_like(pAp)), torch.zeros_like(pAp))
        x = x + bview(alpha, x) * p
        r = r - bview(alpha, r) * Ap
        rs_new = sqnorm(r)
        ok = rs > 0
        beta = torch.where(ok, rs_new / torch.where(ok, rs, torch.ones_like(rs)), torch.zeros_like(rs))
        p = r + bview(beta, p) * p
        rs = rs_new
    return x


def nesterov_t(t: float) -> float:
    r"""Nesterov's (FISTA's) next momentum parameter :math:`t_{k+1} = (1 + \sqrt{1 + 4t_k^2})/2`.

    The extrapolation weight of step :math:`k` is :math:`(t_k - 1)/t_{k+1}`; :math:`t_0 = 1`.
    """
    return (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0


def geometric(first: float, last: float, k: int, count: int) -> float:
    r"""Element ``k`` (0-based) of the geometric sequence of ``count`` values from ``first`` to
    ``last``: :math:`a_k = a_0 (a_{K-1}/a_0)^{k/(K-1)}` (``numpy.geomspace``), constant ``last``
    for :math:`k \ge K - 1` and ``first`` when ``count ≤ 1``."""
    if count <= 1:
        return float(first)
    return float(first) * (float(last) / float(first)) ** (min(max(k, 0), count - 1) / (count - 1))


@torch.no_grad()
def normalised_adjoint(physics, y: torch.Tensor) -> torch.Tensor:
    r""":math:`A^\top y / \max|A^\top y|`, the maximum taken per sample (``[B, ...]``).

    The raw back-projection of an un-normalised operator can be thousands of times larger than the
    image; this puts it on the image's scale (used as a network input).
    """
    aty = physics.A_adjoint(y)
    scale = aty.abs().flatten(1).amax(1).clamp_min(torch.finfo(aty.real.dtype if aty.is_complex() else aty.dtype).tiny)
    return (aty / bview(scale, aty)).detach()
