r"""Data consistency of the returned image: a step towards the data, where that is safe.

A network method returns an iterate chosen for its quality, not one that reproduces the data: on a
noiseless inpainting problem (the default ``inpaint`` task has σ = 0) the DIP pick reproduces the
*observed* pixels only to 27 dB PSNR, although they are known exactly (``benchmarks/results/data-consistency.md``).
When ``y = A x_true`` holds exactly, the affine set :math:`\mathcal D = \{x : A x = y\}` contains
the truth, and the orthogonal projection onto it can only bring an image closer to the truth:

.. math:: P_{\mathcal D}(x) = x + A^{+}(y - A x), \qquad
          \|P_{\mathcal D}(x) - x_{\rm true}\|^2 = \|P_{\mathcal N(A)}(x - x_{\rm true})\|^2
          \le \|x - x_{\rm true}\|^2 .

:math:`A^{+}r` is the minimum-norm least-squares solution of :math:`A v = r`, computed by CGLS
(conjugate gradients on the normal equations from :math:`v_0 = 0`, Hestenes & Stiefel 1952;
Björck, *Numerical Methods for Least Squares Problems*, 1996, §7.4). CGLS iterates stay in the row
space of :math:`A` and their error :math:`\|v_k - A^{+}r\|` decreases monotonically, so the bound
above holds after *every* iteration, not only at convergence: a capped solve (``iterations``) is
safe. For a mask (inpainting) or a sampling mask on an orthonormal Fourier transform (single-coil
MRI), :math:`AA^\top = I` and one iteration is exact — it replaces the measured entries by ``y``.
(Written here rather than with deepinv's ``A_dagger``: dipkit's CT operators return the FBP there,
which is not a pseudo-inverse, and the bound needs one.)

With noise :math:`\eta` the step :math:`v = A^{+}(y - Ax)` carries :math:`A^{+}\eta` too: with
:math:`e = x - x_{\rm true}`, :math:`v = -P_{\mathcal R(A^\top)}e + A^{+}\eta` and, for noise
independent of the image, :math:`\mathbb E\|v\|^2 = \|P e\|^2 + N` with
:math:`N = \mathbb E\|A^{+}\eta\|^2`. The step :math:`x + \lambda v` that loses least in expectation
takes :math:`\lambda^\star = \|Pe\|^2 / \|v\|^2 \approx 1 - N/\|v\|^2` (a James–Stein-type
shrinkage of the projection). :math:`N` is estimated from the known noise std σ by applying the
same CGLS solve to ``draws`` seeded noise vectors (one by default: in the thousands of
measured entries of an image, :math:`\|A^{+}\eta\|^2` varies little from draw to draw). On a well-conditioned operator (super-resolution)
:math:`N/\|v\|^2` is small and the step pays; on CT or deblurring :math:`A^{+}` amplifies the noise,
:math:`N/\|v\|^2 \approx 1`, and the estimate of :math:`\lambda^\star` is too uncertain to use (a
step of 0.06 still cost 0.55 dB on TV's deblurring image,
``benchmarks/results/data-consistency.md``). So with noise the step is taken only when the estimated
noise share :math:`N/\|v\|^2` is at most ``max_share`` (½: the step is at least as much signal as
noise), shrunk by :math:`\lambda^\star`; measured in ``benchmarks/results/data-consistency.md``.

``data_consistency``: ``auto`` (the default) — the full projection when the problem's recorded
noise std is 0 (as ``dipkit simulate`` writes it), nothing otherwise; ``shrink`` — the same, and
the shrunk step when the noise std is known and positive and the noise share is small enough;
``on`` — the full projection whatever the noise (measured data you know to be noise-free);
``off`` — never. ``--method auto`` takes ``shrink`` for ``auto``: its returned image is its own
combination of candidates anyway, while a single method's run returns the method's image unless
asked (the shrunk step depends on the image, so an ensemble's mean would no longer be the mean of
its members' runs, as it is with the other modes).
It acts on the returned reconstruction only: the iterates, the ``val`` selection and its held-out
misfit (and ``auto``'s ranking) are those of the run; ``metrics.json`` ``data_consistency`` records
what was done and the image's PSNR before it (with a ground truth).
"""

from __future__ import annotations

import math

import torch

from ..errors import DipkitError

__all__ = ["MODES", "check_mode", "project_onto_data", "noise_share", "data_consistency"]

#: what ``data_consistency`` may be
MODES = ("auto", "shrink", "on", "off")


def check_mode(value) -> str:
    """``value`` as a :data:`MODES` entry (YAML reads ``on``/``off`` as booleans); else a DipkitError."""
    if isinstance(value, bool):
        value = "on" if value else "off"
    if value not in MODES:
        raise DipkitError(f"data_consistency must be {', '.join(MODES[:-1])} or {MODES[-1]}, got {value!r}")
    return value


def _relative_residual(physics, y: torch.Tensor, x: torch.Tensor) -> float:
    r""":math:`\|y - A x\| / \|y\|` (float64, read on the host)."""
    norm_y = float(torch.linalg.vector_norm(y.to(torch.float64))) or 1.0
    return float(torch.linalg.vector_norm((y - physics.A(x)).to(torch.float64))) / norm_y


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sum(a.to(torch.float64) * b.to(torch.float64))


def project_onto_data(physics, y: torch.Tensor, x: torch.Tensor, *, iterations: int = 100,
                      tol: float = 1e-6) -> tuple[torch.Tensor, dict]:
    r"""``x + v`` with ``v`` the CGLS approximation (from 0, at most ``iterations`` steps, stopped when
    :math:`\|A^\top r_k\| \le` ``tol`` :math:`\cdot \|A^\top r_0\|`) of the minimum-norm solution of
    :math:`A v = y - A x` (module docs). Returns the image and ``{iterations, residual_before,
    residual_after}`` (relative data residuals :math:`\|y - A x\| / \|y\|`). Post-processing, once
    per run: it reads scalars on the host each iteration (not in an optimisation loop)."""
    A, At = physics.A, physics.A_adjoint
    with torch.no_grad():
        r = y - A(x)
        before = _relative_residual(physics, y, x)
        v = torch.zeros_like(x)
        s = At(r)
        p = s.clone()
        gamma = gamma0 = float(_dot(s, s))
        k = 0
        while k < int(iterations) and gamma > (float(tol) ** 2) * gamma0 and gamma0 > 0:
            q = A(p)
            qq = float(_dot(q, q))
            if qq <= 0.0:
                break
            alpha = gamma / qq
            v = v + alpha * p
            r = r - alpha * q
            s = At(r)
            gamma_new = float(_dot(s, s))
            p = s + (gamma_new / gamma) * p
            gamma = gamma_new
            k += 1
        out = x + v
        after = _relative_residual(physics, y, out)
    return out, {"iterations": k, "residual_before": before, "residual_after": after}


@torch.no_grad()
def noise_share(physics, y: torch.Tensor, x: torch.Tensor, v: torch.Tensor, sigma: float, *, draws: int = 1,
                seed: int = 0) -> float:
    r""":math:`N/\|v\|^2` with :math:`N = \mathbb E\|A^{+}\eta\|^2`, :math:`\eta \sim \mathcal N(0, \sigma^2 I)`,
    estimated by the CGLS solve of :func:`project_onto_data` on ``draws`` noise vectors from a
    generator seeded with ``seed`` (so a run is reproducible). ``inf`` when :math:`v = 0`."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    vv = float(_dot(v, v))
    if vv <= 0.0:
        return math.inf
    total = 0.0
    for _ in range(int(draws)):
        eta = float(sigma) * torch.randn(y.shape, generator=g, dtype=y.real.dtype if y.is_complex() else y.dtype)
        out, _ = project_onto_data(physics, eta.to(y.device), torch.zeros_like(x))
        total += float(_dot(out, out))
    return total / int(draws) / vv


@torch.no_grad()
def data_consistency(problem, recon: torch.Tensor, mode: str, mask=None, *,
                     max_share: float = 0.5) -> tuple[torch.Tensor, dict | None]:
    """Apply ``mode`` (:data:`MODES`) to the reconstruction ``recon`` of ``problem`` (all its data).
    Returns ``(image, record)``; ``record`` is None when nothing was tried (``off``, or the noise level
    is unknown), else ``{mode, applied, reason, noise_sigma, …}``: with noise, ``noise_share`` and
    ``step``; when applied, the CGLS ``iterations``, the relative data residual before and after, and
    ``psnr_before``/``ssim_before`` when the problem has a ground truth. ``max_share``: the largest
    estimated noise share of the step that is still taken (module docs)."""
    from .summary import metric_pair

    if mode not in MODES:
        raise DipkitError(f"unknown data_consistency {mode!r} (choose from {', '.join(MODES)})")
    sigma = problem.noise_sigma
    if mode == "off" or (mode in ("auto", "shrink") and (sigma is None or sigma < 0)) or (
            mode == "auto" and sigma != 0.0):
        return recon, None
    y = problem.y
    x = recon.to(device=y.device, dtype=y.dtype)
    out, info = project_onto_data(problem.physics, y, x)
    step, share = 1.0, None
    if mode == "on":
        reason = "asked for (data_consistency: on)"
    elif sigma == 0.0:
        reason = "the measurement is noiseless (noise σ = 0)"
    else:
        share = noise_share(problem.physics, y, x, out - x, sigma)
        if not share <= max_share:
            return recon, {"mode": mode, "applied": False, "noise_sigma": sigma, "noise_share": share,
                           "reason": f"the step would be mostly noise (estimated share {share:.2f} > {max_share:g})"}
        step = 1.0 - share
        reason = f"noise σ = {sigma:.3g}: the projection step shrunk to {step:.2f} (estimated noise share {share:.2f})"
        out = x + step * (out - x)
        info["residual_after"] = _relative_residual(problem.physics, y, out)
    p, s = metric_pair(x, problem, mask)
    return out.to(recon.dtype), {"mode": mode, "applied": True, "reason": reason, "noise_sigma": sigma, "step": step,
                                 "noise_share": share, **info, "psnr_before": p, "ssim_before": s}
