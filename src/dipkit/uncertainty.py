r"""Uncertainty maps: ensembles of independent reconstructions, SGLD's posterior, and their calibration.

* An **ensemble** (``--ensemble N``) is ``N`` independently seeded reconstructions
  :math:`\hat x_1, \dots, \hat x_N` of one measurement (one batched engine run, see
  :class:`dipkit.nets.ensemble.Ensemble`). The reconstruction is their mean
  :math:`\bar x = \frac1N\sum_b \hat x_b` and the uncertainty the per-pixel sample standard deviation
  :math:`s = \big(\frac{1}{N-1}\sum_b (\hat x_b - \bar x)^2\big)^{1/2}`.
* **SGLD** keeps the running posterior mean and pixel-wise variance :math:`v` of its samples; its
  uncertainty is :math:`\sqrt v` (with an ensemble of chains, the law of total variance:
  :math:`\sqrt{\overline{v_b} + \mathrm{Var}_b(\bar x_b)}`).
* **Calibration** (ground truth known): pixels are binned by predicted standard deviation
  (quantile bins); per bin, the mean predicted std is set against the root-mean-square error
  :math:`\sqrt{\mathrm{mean}(\bar x - x)^2}`. A calibrated map lies on the diagonal; the
  correlation between predicted std and absolute error says whether the map at least ranks the
  errors.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ensemble_mean_std", "posterior_std", "calibration", "plot_calibration"]


def ensemble_mean_std(estimates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean [1, …], std [1, …])`` over the members (the batch dimension) of ``estimates``."""
    mean = estimates.mean(0, keepdim=True)
    if estimates.shape[0] < 2:
        return mean, torch.zeros_like(mean)
    return mean, estimates.std(0, correction=1, keepdim=True)


def posterior_std(var: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """SGLD's predictive std ``[1, …]`` from per-chain variances and means ``[N, …]``."""
    total = var.mean(0, keepdim=True)
    if means.shape[0] > 1:
        total = total + means.var(0, correction=1, keepdim=True)
    return total.clamp_min(0).sqrt()


def calibration(std: np.ndarray, error: np.ndarray, bins: int = 10) -> dict:
    """Predicted std against actual error, binned by quantiles of the std (module docs).

    :returns: ``{"bins": [{"std", "rmse", "pixels"}…], "corr": Pearson correlation of std and
        |error|, "ratio": mean predicted std / RMSE overall}``.
    """
    s = np.asarray(std, dtype=np.float64).ravel()
    e = np.asarray(error, dtype=np.float64).ravel()
    edges = np.unique(np.quantile(s, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, max(len(edges) - 2, 0))
    out = []
    for k in range(max(len(edges) - 1, 1)):
        sel = idx == k
        if sel.any():
            out.append({"std": float(s[sel].mean()), "rmse": float(np.sqrt(np.mean(e[sel] ** 2))),
                        "pixels": int(sel.sum())})
    corr = float(np.corrcoef(s, np.abs(e))[0, 1]) if s.std() > 0 and e.std() > 0 else None
    rmse = float(np.sqrt(np.mean(e**2)))
    return {"bins": out, "corr": corr, "ratio": float(s.mean() / rmse) if rmse > 0 else None}


def plot_calibration(path, calib: dict, title: str = "") -> None:
    """Binned RMSE against predicted std, with the diagonal (``calibration.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import save_figure

    s = [b["std"] for b in calib["bins"]]
    r = [b["rmse"] for b in calib["bins"]]
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=120)
    top = max(s + r + [1e-6]) * 1.05
    ax.plot([0, top], [0, top], "k--", lw=0.8, label="calibrated")
    ax.plot(s, r, "o-", lw=1.2, label=f"binned (corr {calib['corr']:.2f})" if calib.get("corr") is not None
            else "binned")
    ax.set_xlabel("predicted std")
    ax.set_ylabel("RMSE of the reconstruction")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)
