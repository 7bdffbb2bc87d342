"""The summary of a finished run for ``metrics.json``: PSNR/SSIM of an estimate, each stopping
rule's selection, an ensemble's per-member metrics, and the uncertainty map's calibration."""

from __future__ import annotations

import math

from .metrics import psnr, ssim
from .uncertainty import calibration

__all__ = ["metric_pair", "finite", "selection", "ensemble_info", "uncertainty_info"]


def metric_pair(x, problem, mask):
    """``(PSNR, SSIM)`` of ``x`` (mean over the batch), or ``(None, None)`` without a ground truth."""
    if problem.x_true is None or x is None:
        return None, None
    return (finite(float(psnr(x, problem.x_true, mask=mask).mean())),
            finite(float(ssim(x, problem.x_true, mask=mask).mean())))


def finite(v):
    """``v``, or None when it is not a finite number (JSON has no NaN)."""
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def selection(cb, problem, mask) -> dict:
    """A stopping rule's selection: ``{rule, mode, iteration, psnr, ssim[, misfit]}``."""
    p, s = metric_pair(cb.estimate, problem, mask)
    out = {"rule": cb.rule, "mode": cb.mode, "iteration": cb.iteration if cb.estimate is not None else None,
           "psnr": p, "ssim": s}
    if getattr(cb, "value", None) is not None:
        out["misfit"] = cb.value
    return out


def ensemble_info(cfg, run, chosen, problem, mask) -> dict:
    """Per-member metrics of an ensemble run."""
    rule = run.rules[0] if run.rules else None
    its = getattr(rule, "iterations", None) or [None] * chosen.shape[0]
    out = []
    for b in range(chosen.shape[0]):
        p, s = metric_pair(chosen[b:b + 1], problem, mask)
        fp, _ = metric_pair(run.state.estimate[b:b + 1], problem, mask)
        out.append({"seed": int(cfg.seed) + b, "psnr": p, "ssim": s, "iteration": its[b], "final_psnr": fp})
    return {"members": chosen.shape[0], "member_metrics": out}


def uncertainty_info(std, recon, problem) -> dict | None:
    """Summary of the uncertainty map, with its calibration when the ground truth is known."""
    if std is None:
        return None
    info = {"mean_std": float(std.mean())}
    if problem.x_true is not None:
        err = (recon - problem.x_true).detach().cpu().numpy()
        info["calibration"] = calibration(std.detach().cpu().numpy(), err)
    return info
