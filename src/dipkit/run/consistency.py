r"""Data consistency of the returned image when the measurement is noiseless.

A network method returns an iterate chosen for its quality, not one that reproduces the data: on a
noiseless inpainting problem (the default ``inpaint`` task has σ = 0) the DIP pick misses the
*observed* pixels by 27 dB, although they are known exactly (``benchmarks/results/data-consistency.md``).
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

With noise the projection would copy the noise into the image, so it is applied only when the run
knows the measurement is noiseless (``data_consistency: auto``, the default: the problem's recorded
noise std is 0, as ``dipkit simulate`` writes it) or the user asks for it (``on``); ``off`` never.
It acts on the returned reconstruction only: the iterates, the ``val`` selection and its held-out
misfit (and ``auto``'s ranking) are those of the run; ``metrics.json`` ``data_consistency`` records
what was done and the image's PSNR before it (with a ground truth).
"""

from __future__ import annotations

import torch

from ..errors import DipkitError

__all__ = ["MODES", "project_onto_data", "data_consistency"]

#: what ``data_consistency`` may be
MODES = ("auto", "on", "off")


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
        norm_y = float(torch.linalg.vector_norm(y.to(torch.float64))) or 1.0
        before = float(torch.linalg.vector_norm(r.to(torch.float64))) / norm_y
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
        after = float(torch.linalg.vector_norm((y - A(out)).to(torch.float64))) / norm_y
    return out, {"iterations": k, "residual_before": before, "residual_after": after}


def data_consistency(problem, recon: torch.Tensor, mode: str, mask=None) -> tuple[torch.Tensor, dict | None]:
    """Apply ``mode`` (:data:`MODES`) to the reconstruction ``recon`` of ``problem`` (all its data).
    Returns ``(image, record)``; ``record`` is None when nothing was done, else ``{mode, applied, reason, …}`` (with ``psnr_before``/``ssim_before``
    when the problem has a ground truth)."""
    from .summary import metric_pair

    if mode not in MODES:
        raise DipkitError(f"unknown data_consistency {mode!r} (choose from {', '.join(MODES)})")
    sigma = problem.noise_sigma
    if mode == "off" or (mode == "auto" and sigma != 0.0):
        return recon, None
    reason = "asked for (data_consistency: on)" if mode == "on" else "the measurement is noiseless (noise σ = 0)"
    y = problem.y
    x = recon.to(device=y.device, dtype=y.dtype)
    out, info = project_onto_data(problem.physics, y, x)
    p, s = metric_pair(x, problem, mask)
    return out.to(recon.dtype), {"mode": mode, "applied": True, "reason": reason, "noise_sigma": sigma, **info,
                                 "psnr_before": p, "ssim_before": s}
