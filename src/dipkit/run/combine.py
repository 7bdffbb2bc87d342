r"""What ``--method auto`` returns when it is more than one candidate's pick (:mod:`dipkit.run.auto`):
stacking weights over the candidates' fit-view images (:func:`stack_weights`), the stacking guard
(:func:`stack`), and the refit of a returned network candidate on all the data (:func:`refit`)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch

from ..errors import DipkitError
from .rundir import REFIT

__all__ = ["stack_weights", "stack", "refit", "fit_estimate", "fmt_weights"]


def _project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto the probability simplex (Duchi et al., ICML 2008)."""
    u, _ = torch.sort(v, descending=True)
    css = torch.cumsum(u, 0) - 1.0
    k = torch.arange(1, v.numel() + 1, dtype=v.dtype)
    rho = int(torch.nonzero(u - css / k > 0).max())
    return torch.clamp(v - css[rho] / (rho + 1), min=0.0)


def stack_weights(residuals: torch.Tensor, iterations: int = 3000) -> torch.Tensor:
    r"""Stacking weights (Breiman, *Stacked regressions*, Machine Learning 1996; Wolpert 1992): the
    convex combination of candidate images whose held-out residual is least,

    .. math:: \hat w = \arg\min_{w \ge 0,\ \sum_c w_c = 1} \Big\|\sum_c w_c\, r_c\Big\|^2,
              \qquad r_c = \text{held-out residual of } \hat x^{(c)}
              \ (:meth:`~dipkit.physics.split.ValidationSplit.residual`),

    which is the held-out misfit of :math:`\sum_c w_c \hat x^{(c)}` (the residual is linear in the image and
    the weights sum to one). ``residuals``: ``[n, M]``. Solved on the host in float64 by accelerated
    projected gradient on the simplex, then polished on the support found (the equality-constrained
    solution :math:`w_S \propto G_S^{-1}\mathbf 1` with :math:`G = R R^\top`, kept when it is feasible
    and no worse). Returns ``[n]`` (float64, on the CPU)."""
    R = residuals.detach().to("cpu", torch.float64).flatten(1)
    n = R.shape[0]
    if n == 1:
        return torch.ones(1, dtype=torch.float64)
    G = R @ R.T
    G = G / max(float(torch.trace(G)) / n, 1e-300)  # scale-free (misfits are often ~1e-3)

    def f(w):
        return float(w @ G @ w)

    L = 2.0 * float(torch.linalg.eigvalsh(G).max())
    w = torch.full((n,), 1.0 / n, dtype=torch.float64)
    v, t = w.clone(), 1.0
    for _ in range(int(iterations)):
        w_next = _project_simplex(v - (2.0 * (G @ v)) / L)
        t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        v = w_next + ((t - 1.0) / t_next) * (w_next - w)
        w, t = w_next, t_next
    support = torch.nonzero(w > 1e-8).flatten()
    try:
        ws = torch.linalg.solve(G[support][:, support], torch.ones(len(support), dtype=torch.float64))
        ws = ws / ws.sum()
        if bool((ws >= 0).all()):
            polished = torch.zeros_like(w)
            polished[support] = ws
            if f(polished) <= f(w) + 1e-12:
                w = polished
    except RuntimeError:  # a singular G_S (two identical candidates): keep the projected-gradient solution
        pass
    return w


def fit_estimate(c: Any) -> torch.Tensor:
    """The candidate's image fitted without the held-out entries (a network: its ``val`` pick; a
    baseline: its fit-view solve, not the refit on all data, which has seen the held-out entries)."""
    return c.extra["fit_estimate"] if "fit_estimate" in c.extra else c.result.reconstruction


def stack(ranked: list, chosen, fit_x: dict, split, se: float) -> tuple[dict, dict]:
    """``auto.combine=stack``: the stacking weights of every candidate (:func:`stack_weights`, weights
    under 1 % dropped and the rest renormalised), used when the combination's held-out misfit is below
    the chosen candidate's by more than ``se`` standard errors of the paired difference (the same
    guard as :func:`one_se_choice`: the weights are fitted on the entries that score them).
    Returns ``(weights by label, record)``."""
    ranked = [c for c in ranked if c is chosen or bool(torch.isfinite(fit_x[c.label]).all())]  # no diverged image
    with torch.no_grad():
        R = torch.cat([split.residual(fit_x[c.label]) for c in ranked])
        w = stack_weights(R)
        w = torch.where(w < 0.01, torch.zeros_like(w), w)
        w = w / w.sum()
        x = sum(float(wi) * fit_x[c.label] for wi, c in zip(w, ranked) if wi > 0)
        d = (split.entry_scores(x) - split.entry_scores(fit_x[chosen.label])).to(torch.float64)
        misfit = float(split.misfit(x).mean())
    n = d.numel()
    sd, mean = (float(d.std()) if n > 1 else 0.0), float(d.mean())
    z = mean / (sd / math.sqrt(n)) if sd > 0 else (-math.inf if mean < 0 else (math.inf if mean > 0 else 0.0))
    used = z < -se if se > 0 else mean < 0
    stacked = {c.label: float(wi) for wi, c in zip(w, ranked) if wi > 0}
    record = {"kind": "stack", "weights": stacked, "misfit": misfit, "versus": chosen.label,
              "difference": mean, "z": z, "se": se, "used": bool(used and len(stacked) > 1)}
    return (stacked if record["used"] else {chosen.label: 1.0}), record


def refit(c: Any, problem, device, mask, console, with_deadline, say, *, mode: str = "mean",
           out: Path | None = None) -> None:
    """Rerun network candidate ``c`` on all the data for its pick's number of steps, with its rate
    reductions at the same steps (:class:`dipkit.engine.schedule.Replay`). ``mode``: what the
    candidate then returns — ``mean``: the mean of its pick (fitted without the held-out entries) and
    the refit; ``replace``: the refit. ``c.extra["refit"]``: steps, time, and with a ground truth the
    PSNR/SSIM of the refit and of the mean. ``out``: the candidate's directory (``refit.npy``)."""
    from ..io import save_npy
    from .runner import _advance, _build_run
    from .summary import metric_pair

    k = (c.result.get("validation") or {}).get("iteration")
    if not k:
        return
    again = copy.deepcopy(c.extra.get("resolved", c.resolved))
    again.iterations = int(k)
    method = again.validate()
    say(f"auto: refitting {c.label} on all the data for {k} steps")
    try:
        run_ = _build_run(method, problem, again, device, split=None, rules=[], mask=mask, quiet=True,
                          console=console, replay=None if c.run.schedule is None else list(c.run.schedule.changes))
        with_deadline(run_)
        _advance(method, run_)
    except (DipkitError, RuntimeError, ValueError) as exc:
        c.extra["refit"] = {"failed": " ".join(str(exc).split())}
        say(f"auto: the refit of {c.label} failed ({c.extra['refit']['failed']}); keeping its pick")
        return
    pick = c.result.reconstruction
    x_refit = run_.state.estimate.reshape(pick.shape).to(pick.dtype)
    mean = 0.5 * (pick.to(x_refit.device) + x_refit)
    c.result.reconstruction = mean if mode == "mean" else x_refit
    p, s = metric_pair(x_refit, problem, mask)
    pm, sm = metric_pair(mean, problem, mask)
    c.extra["refit"] = {"mode": mode, "iterations": int(run_.state.step), "psnr": p, "ssim": s, "mean_psnr": pm,
                        "mean_ssim": sm, "wall_s": float(run_.wall)}
    if out is not None:
        save_npy(out / REFIT, x_refit.detach().cpu().numpy())


def fmt_weights(weights: dict) -> str:
    return " + ".join(f"{w:.2f}·{lab}" for lab, w in sorted(weights.items(), key=lambda kv: -kv[1]))
