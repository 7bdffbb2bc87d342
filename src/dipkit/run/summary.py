"""The summary of a finished run for ``metrics.json``: PSNR/SSIM of an estimate, each stopping
rule's selection, an ensemble's per-member metrics, and the uncertainty map's calibration."""

from __future__ import annotations

import math

from ..metrics import psnr, ssim
from ..uncertainty import calibration

__all__ = ["metric_pair", "finite", "selection", "ensemble_info", "uncertainty_info", "stop_info"]


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


def stop_info(state, budget: str, rules, time_limit=None) -> dict:
    """Why a run stopped, for ``metrics.json`` (``stop``):

    ``{kind, step, reason, budget, max_iterations, time_limit, still_improving}`` with ``kind`` one
    of ``patience`` (a stopping rule's window passed without a new selection), ``time_limit``,
    ``cap`` (a run that decides its own length reached ``max_iterations``), ``budget`` (a fixed or
    default step budget was spent), ``direct`` (FBP), ``rule``/``members`` (other stops);
    ``still_improving`` — whether the ``val`` rule's best step lies within its patience window of
    the end (the held-out misfit was still finding new minima when the run ended, so more steps
    might have helped; null without a ``val`` rule)."""
    step, max_steps = int(state.step), int(getattr(state, "max_steps", state.step))
    kind = getattr(state, "stop_kind", None) if getattr(state, "stop_reason", None) else None
    reason = getattr(state, "stop_reason", None)
    if kind is None:
        kind = {"direct": "direct", "auto": "cap"}.get(budget, "budget")
        reason = reason or {"direct": "a direct method (one step)",
                            "cap": f"reached max_iterations = {max_steps}",
                            "budget": f"ran its budget of {max_steps} steps"}[kind]
    val = next((cb for cb in rules if getattr(cb, "rule", None) == "val"), None)
    improving = None
    if val is not None and val.iterations:
        improving = bool(any(b >= 0 and b + val.window(b) > step for b in val.iterations))
    return {"kind": kind, "step": step, "reason": reason, "budget": budget,
            "max_iterations": max_steps if budget in ("auto", "fixed", "default") else None,
            "time_limit": None if not time_limit else float(time_limit), "still_improving": improving}
