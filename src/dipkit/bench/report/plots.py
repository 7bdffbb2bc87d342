"""Bench figures: ``psnr_curves.png`` (PSNR vs iteration per case), ``misfit_curves.png`` (held-out
misfit vs iteration per case) and ``recon_<case>.png`` (reconstruction grids), read from the run
directories alone (see :mod:`dipkit.bench.report`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ...io import save_figure
from ...metrics import display_image, fov_mask, psnr
from ...run.rundir import read_estimates, read_history
from ..grid import load_naive

__all__ = ["plot_misfit_curves", "plot_psnr_curves", "plot_recon_grid"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _read_history(run_dir: str, column: str = "psnr") -> dict[str, np.ndarray] | None:
    """The run's history when it has the column ``column``, else None."""
    cols = read_history(run_dir)
    return cols if cols is not None and "step" in cols and column in cols else None


def plot_psnr_curves(path: Path, rows: list[dict]) -> bool:
    """``psnr_curves.png``; False (nothing written) when no run has a PSNR history."""
    return _plot_curves(path, rows, "psnr", "PSNR [dB]", log=False, legend="lower right")


def plot_misfit_curves(path: Path, rows: list[dict]) -> bool:
    """``misfit_curves.png``: the held-out misfit (the history's ``val`` column: what the ``val`` rule
    picks by, no ground truth needed) on a log scale; False when no run has one."""
    return _plot_curves(path, rows, "val", "held-out misfit", log=True, legend="upper right")


def _plot_curves(path: Path, rows: list[dict], column: str, ylabel: str, *, log: bool, legend: str) -> bool:
    """One panel per case, one line per method of history column ``column`` (mean over the row's runs
    when they share their steps, with a ±1 std band; a direct method's one point as a dashed line)."""
    cases = list(dict.fromkeys(r["case"] for r in rows))
    curves: dict[str, dict[str, list[dict]]] = {c: {} for c in cases}
    any_curve = False
    for r in rows:
        if r["status"] != "ok":
            continue
        h = _read_history(r["run_dir"], column)
        if h is not None and np.isfinite(h[column]).any():
            curves[r["case"]].setdefault(r["method"], []).append(h)
            any_curve = True
    if not any_curve:
        return False
    plt = _plt()
    n = len(cases)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.6 * nrows), dpi=110, squeeze=False)
    for ax, case in zip(axes.flat, cases):
        for k, (method, hs) in enumerate(curves[case].items()):
            color = f"C{k % 10}"
            if all(len(h["step"]) == 1 for h in hs):
                ax.axhline(float(np.nanmean([h[column][0] for h in hs])), color=color, ls="--", lw=1.0,
                           label=method)
                continue
            same = all(len(h["step"]) == len(hs[0]["step"]) and np.array_equal(h["step"], hs[0]["step"])
                       for h in hs)
            if same:
                ps = np.stack([h[column] for h in hs])
                mean = np.nanmean(ps, 0)
                ax.plot(hs[0]["step"], mean, color=color, lw=1.2, label=method + (f" (n={len(hs)})" if len(hs) > 1 else ""))
                if len(hs) > 1:
                    std = np.nanstd(ps, 0, ddof=1)
                    lo = mean - std if not log else np.maximum(mean - std, mean * 0.05)
                    ax.fill_between(hs[0]["step"], lo, mean + std, color=color, alpha=0.15, lw=0)
            else:
                for j, h in enumerate(hs):
                    ax.plot(h["step"], h[column], color=color, lw=0.9, alpha=0.8, label=method if j == 0 else None)
        if log and curves[case]:
            ax.set_yscale("log")
        ax.set_title(case, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if curves[case]:
            ax.legend(fontsize=7, loc=legend)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)
    return True


def _psnr(x: np.ndarray, ref: np.ndarray, mask) -> float | None:
    """PSNR of ``x`` against ``ref`` (``[C, H, W]``) with :func:`dipkit.metrics.psnr` (FoV mask respected)."""
    if x.shape != ref.shape:
        return None
    import torch

    return float(psnr(torch.from_numpy(np.asarray(x, dtype=np.float64))[None],
                      torch.from_numpy(np.asarray(ref, dtype=np.float64))[None], mask=mask))


def plot_recon_grid(path: Path, case: str, rows: list[dict], problems: dict[tuple[str, str], str]) -> bool:
    """The reconstruction grid of ``case`` (see module docs); False when there is nothing to show."""
    from ...problem import Problem

    ok = [r for r in rows if r["case"] == case and r["status"] == "ok"]
    if not ok:
        return False
    inst = ok[0]["instance"]
    chosen: dict[str, dict] = {}
    for r in sorted(ok, key=lambda r: r["seed"]):
        if r["instance"] == inst and r["method"] not in chosen:
            chosen[r["method"]] = r
    problem_path = problems[(case, inst)]
    gt = naive = mask = None
    try:
        problem = Problem.load(problem_path)
        if problem.x_true is not None:
            gt = problem.x_true[0].numpy()
    except Exception:  # noqa: BLE001
        problem = None
    if gt is not None and ok[0].get("fov_mask"):
        mask = fov_mask(gt.shape[-2], gt.shape[-1], dtype=torch.float64)
    naive = load_naive(problem_path)
    vmin, vmax = 0.0, 1.0
    if gt is not None:
        g = display_image(gt)
        vmin, vmax = float(np.min(g)), float(np.max(g))
        if vmax <= vmin:
            vmax = vmin + 1.0
    plt = _plt()
    cols = ["peak", "early_stop", "final"]
    titles = {"peak": "peak", "early_stop": "early stop", "final": "final"}
    n_rows = 1 + len(chosen)
    fig, axes = plt.subplots(n_rows, 3, figsize=(3 * 2.4, n_rows * 2.5), dpi=110, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)

    def show(ax, img, title):
        d = display_image(img)
        kw = {"cmap": "gray"} if d.ndim == 2 else {}
        if d.ndim == 3:
            d = np.clip((d - vmin) / (vmax - vmin), 0, 1)
            ax.imshow(d, **kw)
        else:
            ax.imshow(d, vmin=vmin, vmax=vmax, **kw)
        ax.set_title(title, fontsize=7)

    if gt is not None:
        show(axes[0, 0], gt, "ground truth")
    if naive is not None:
        p = _psnr(naive, gt, mask) if gt is not None else None
        show(axes[0, 1], naive, "naive" + (f" {p:.2f} dB" if p is not None else ""))
    axes[0, 2].text(0.02, 0.5, f"{case}\n{inst}", fontsize=7, va="center", transform=axes[0, 2].transAxes)
    for i, (method, r) in enumerate(chosen.items(), start=1):
        est = read_estimates(r["run_dir"])
        psnrs = {"peak": r["peak_psnr"], "early_stop": r["es_psnr"], "final": r["final_psnr"]}
        iters = {"peak": r["peak_iter"], "early_stop": r["es_iter"], "final": r["iterations"]}
        axes[i, 0].set_ylabel(method, fontsize=8)
        for j, key in enumerate(cols):
            if key not in est:
                axes[i, j].text(0.5, 0.5, "–", ha="center", va="center", transform=axes[i, j].transAxes)
                axes[i, j].set_title(titles[key], fontsize=7)
                continue
            t = titles[key]
            if iters[key] is not None:
                t += f" @{int(iters[key])}"
            if psnrs[key] is not None:
                t += f" {psnrs[key]:.2f} dB"
            show(axes[i, j], est[key], t)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)
    return True
