r"""Weighted total variation: value, the closed-form proximal map of its splitting, adaptive weights.

The weighted TV (Cascarano et al. 2021; CT paper §4.2) of an image ``x`` ``[B, C, H, W]`` is

.. math:: \mathrm{WTV}_\alpha(x) = \sum_i \alpha_i\,\|(Dx)_i\|_2 ,

with ``D`` the forward-difference gradient of :func:`dipkit.priors.tv.grad` (``[B, C, 2, H, W]``,
Neumann boundary), ``i`` running over pixels and channels, and one weight ``α_i ≥ 0`` per pixel
and channel (shape ``[B, C, 1, H, W]``, or anything broadcastable to it: a float, a ``[B]``
tensor). Constant weights ``α_i = α`` give ``α·TV``.

Splitting ``Dx = u`` (ADMM, CT paper eqs. 27–30) leaves the sub-problem

.. math:: \min_u \sum_i \alpha_i\|u_i\|_2 + \tfrac{\gamma}{2}\|u - v\|_2^2 ,

which separates into one problem per pixel in :math:`\mathbb R^2` and is solved exactly by the
vector (group) soft-thresholding :func:`vector_soft_threshold` with thresholds ``α_i/γ``.

Everything here runs on the device without host synchronisation.
"""

from __future__ import annotations

import torch

from .tv import grad

__all__ = ["wtv", "vector_soft_threshold", "prox_wtv_split", "adaptive_weights", "as_weights"]


def as_weights(alpha, like: torch.Tensor) -> torch.Tensor | float:
    """``alpha`` (float, ``[B]`` or ``[B, C, 1, H, W]`` tensor) broadcastable against a gradient
    field ``like`` ``[B, C, 2, H, W]``."""
    if not isinstance(alpha, torch.Tensor):
        return float(alpha)
    a = alpha.to(device=like.device, dtype=like.dtype)
    if a.ndim == 0 or a.ndim == like.ndim:
        return a
    if a.ndim == 1:
        return a.reshape(-1, *([1] * (like.ndim - 1)))
    raise ValueError(f"weights of shape {tuple(a.shape)} do not fit a gradient field of shape {tuple(like.shape)}")


def _magnitude(g: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Per-pixel Euclidean norm over the gradient axis (``-3``), kept: ``[B, C, 1, H, W]``."""
    g2 = g.pow(2).sum(dim=-3, keepdim=True)
    return torch.sqrt(g2 + eps * eps) if eps else torch.sqrt(g2)


def wtv(x: torch.Tensor, alpha, eps: float = 0.0) -> torch.Tensor:
    r"""Weighted TV per sample, ``[B]``: :math:`\sum_i \alpha_i \sqrt{\|(Dx)_i\|^2 + \epsilon^2}`.

    ``eps = 0`` is the exact WTV; ``eps > 0`` a smooth surrogate for autograd (as in
    :func:`dipkit.priors.tv.tv`).
    """
    g = grad(x)
    return (as_weights(alpha, g) * _magnitude(g, eps)).flatten(1).sum(dim=1)


def vector_soft_threshold(v: torch.Tensor, thresh) -> torch.Tensor:
    r"""Per-pixel vector soft-thresholding of a gradient field ``v`` ``[B, C, 2, H, W]``:

    .. math:: u_i = \max\Bigl(0,\ 1 - \frac{t_i}{\|v_i\|_2}\Bigr)\, v_i
              = \arg\min_{u_i\in\mathbb R^2} t_i\|u_i\|_2 + \tfrac12\|u_i - v_i\|_2^2 ,

    the proximal map of :math:`\sum_i t_i\|\cdot\|_2` (``t_i = thresh``, ``≥ 0``, broadcastable to
    ``[B, C, 1, H, W]``). ``v_i = 0`` maps to ``0``.
    """
    t = as_weights(thresh, v)
    norm = _magnitude(v)
    tiny = torch.finfo(v.dtype).tiny
    scale = torch.clamp(1.0 - t / norm.clamp_min(tiny), min=0.0)
    return scale * v


def prox_wtv_split(v: torch.Tensor, alpha, gamma: float) -> torch.Tensor:
    r"""Exact minimiser of :math:`\sum_i \alpha_i\|u_i\|_2 + \tfrac{\gamma}{2}\|u - v\|_2^2`
    (the ADMM ``u``-step, CT paper eq. 29): vector soft-thresholding with thresholds ``α_i/γ``."""
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    a = as_weights(alpha, v)
    return vector_soft_threshold(v, a / gamma)


def adaptive_weights(residual_sq: torch.Tensor, x: torch.Tensor, delta: float = 1e-3,
                     bounds: tuple[float, float] | None = None) -> torch.Tensor:
    r"""The adaptive weights of the CT paper §4.2 (after Cascarano et al. 2021/2023):

    .. math:: \alpha_i = \frac{1}{n}\,\frac{\|A f_\theta(z) - y\|_2^2}{\|(D f_\theta(z))_i\|_2 + \delta},

    with ``n`` the number of pixels (times channels) of ``x`` and a floor ``δ > 0`` (flat regions,
    where :math:`(Dx)_i = 0`, would otherwise get infinite weight).

    :param residual_sq: :math:`\|Ax - y\|_2^2` per sample, ``[B]``.
    :param x: the image ``[B, C, H, W]``.
    :param delta: the floor ``δ`` of the gradient magnitude (image units).
    :param bounds: optional ``(low, high)`` clamp of the weights.
    :return: weights ``[B, C, 1, H, W]``.
    """
    n = x[0].numel()
    mag = _magnitude(grad(x))
    r = residual_sq.to(x.dtype).reshape(-1, *([1] * (mag.ndim - 1)))
    w = (r / n) / (mag + delta)
    if bounds is not None:
        w = w.clamp(float(bounds[0]), float(bounds[1]))
    return w
