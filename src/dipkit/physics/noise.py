r"""Measurement-noise estimation from the data alone (no ground truth)."""

from __future__ import annotations

import math

import torch

__all__ = ["estimate_noise_sigma", "known_sigma"]


def known_sigma(meta: dict) -> float | None:
    """The measurement's noise std recorded in a problem's metadata (``meta["noise_sigma"]``), or None."""
    s = (meta or {}).get("noise_sigma")
    return None if s is None else float(s)


def estimate_noise_sigma(y: torch.Tensor) -> torch.Tensor:
    r"""Estimate the std of white Gaussian noise in measurements ``y`` ``[B, ...]``, per sample.

    The median absolute deviation of a high-pass of ``y``: the third-order finite difference
    :math:`(y_{j+3} - 3y_{j+2} + 3y_{j+1} - y_j)/\sqrt{20}` (unit-norm filter, so white noise
    keeps its std) along each of the last two axes of ``y`` with at least 4 samples,
    :math:`\hat\sigma = \mathrm{median}|d| / 0.6745`; the smaller of the per-axis estimates is
    returned (signal can only inflate it; for CT sinograms ``[B, C, detectors, angles]`` the
    detector axis wins). Donoho & Johnstone's (1994) MAD estimate with a difference filter
    instead of wavelets. It overestimates when the signal is rough on the sampling grid
    (measured on our 32² CT with 2 % noise: +30 %; at 128²: +4 %): pass the true σ when known.

    :return: ``[B]`` tensor on ``y``'s device (no host synchronisation).
    """
    c = torch.tensor([-1.0, 3.0, -3.0, 1.0], dtype=y.dtype, device=y.device) / math.sqrt(20.0)
    ests = []
    axes = [-1, -2] if y.ndim >= 3 else [-1]
    for ax in axes:
        if y.shape[ax] < 4:
            continue
        v = y.movedim(ax, -1)
        d = (c[0] * v[..., :-3] + c[1] * v[..., 1:-2] + c[2] * v[..., 2:-1] + c[3] * v[..., 3:])
        ests.append(d.abs().flatten(1).median(dim=1).values / 0.6745)
    if not ests:
        raise ValueError(f"cannot estimate the noise level from measurements of shape {tuple(y.shape)}")
    return torch.stack(ests).amin(dim=0)
