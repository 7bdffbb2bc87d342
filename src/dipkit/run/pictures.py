"""The pictures of one run, ground truth or not: ``progress.png`` and ``overview.png``.

Both are drawn when the run is over (never inside the optimisation loop), from what the run
directory holds: the history (``history.csv``), the summary (``metrics.json``) and the images
(``reconstruction.npy``, ``direct.npy``, ``uncertainty.npy``). :func:`dipkit.run.rundir.write_pictures`
redraws them from a run directory alone (``dipkit show``); :func:`dipkit.run.rundir.write_run_dir` draws
them from the run's result, which holds the same data. This module draws; it reads no run directory.

* ``progress.png`` — the loss and the held-out misfit (``val``, when the run had a validation
  split) against the iteration on log axes, in two panels (their scales differ); the PSNR on a
  second y-axis when a ground truth is known (with the peak, an oracle). Marked: each stopping
  rule's pick (the ``val`` pick as a solid line), the stop when the run ended before its budget
  (``metrics.json``'s ``stop``: patience, time limit, …), and every self-healing rollback
  (``rollbacks``). Drawn for every run with a history of at least two rows (a direct method such
  as FBP has one row and no progress).
* ``overview.png`` — the problem's direct reconstruction (FBP for CT, the zero-filled magnitude for
  MRI, the degraded input for image tasks, least squares for an outside operator: the ``naive``
  baseline, :func:`dipkit.baselines.naive.naive_reconstruction`), the reconstruction (both on one
  grey scale), the uncertainty map when there is one (ensembles, SGLD) and the difference
  reconstruction − direct (a diverging map, symmetric range), each with a colour bar. Complex (MRI)
  images are shown as their magnitude; RGB images as colour (one value range for the three
  channels), their difference as the mean over the channels and their uncertainty as the RMS over
  the channels. When the reconstruction *is* the direct one (``naive``, ``fbp``) only it is shown.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io import save_figure
from ..metrics import display_image

__all__ = ["direct_label", "plot_overview", "plot_progress", "pyplot"]

#: history columns that are not loss terms
_NOT_TERMS = ("step", "loss", "val", "lr", "psnr", "ssim", "rollbacks")


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def direct_label(task: str | None) -> str:
    """What the direct reconstruction of a task is called (its ``naive`` baseline)."""
    t = str(task or "")
    if t.startswith("ct"):
        return "FBP"
    if t.startswith("mri"):
        return "zero-filled (magnitude)"
    for key, name in (("denois", "noisy input y"), ("inpaint", "masked input"), ("blur", "blurred input Aᵀy"),
                      ("superres", "bicubic up-sampling"), ("downsampling", "bicubic up-sampling")):
        if key in t:
            return name
    return "least squares A†y"


# ---------------------------------------------------------------------- progress.png
def _col(history: dict, name: str) -> np.ndarray | None:
    v = history.get(name)
    if v is None:
        return None
    a = np.asarray(v, dtype=np.float64)
    return a if a.size and np.isfinite(a).any() else None


def _yscale(ax, *series) -> None:
    vals = np.concatenate([s[np.isfinite(s)] for s in series if s is not None])
    if vals.size and (vals > 0).all():
        ax.set_yscale("log")
        span = vals.max() / vals.min()
        _plain_log_ticks(ax.yaxis, minors="all" if span < 12 else "2-5" if span < 1e3 else "none")
    elif vals.size:
        ax.set_yscale("symlog", linthresh=max(float(np.abs(vals[vals != 0]).min()) if (vals != 0).any() else 1.0,
                                              1e-12))


def _plain_log_ticks(axis, *, minors: str) -> None:
    """Plain numbers (``300``, not ``3×10²``) on a log axis: the decades, and the minor ticks
    (``minors``: ``all``, ``2-5`` — those at 2× and 5× a decade — or ``none``)."""
    from matplotlib.ticker import FuncFormatter

    def minor(v, _):
        if v <= 0:
            return ""
        lead = round(v / 10 ** math.floor(math.log10(v) + 1e-9))
        return f"{v:.3g}" if minors == "all" or (minors == "2-5" and lead in (2, 5)) else ""

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_formatter(FuncFormatter(minor))
    axis.set_tick_params(which="minor", labelsize=7)


def _marks(metrics: dict) -> list[tuple[float, dict, str]]:
    """``(iteration, line style, label)`` of the picks, the stop and the rollbacks."""
    out = []
    sel = metrics.get("selections") or {}
    for k, (rule, s) in enumerate(sel.items()):
        if isinstance(s, dict) and s.get("iteration") is not None:
            style = {"color": "tab:green", "ls": "-" if rule == "val" else "--", "lw": 1.3 if rule == "val" else 1.0}
            if rule != "val":
                style["color"] = ("tab:olive", "tab:cyan", "tab:pink")[k % 3]
            label = f"{rule} pick @ {s['iteration']}"
            if s.get("mode") == "record":
                label += " (recorded)"
            out.append((float(s["iteration"]), style, label))
        elif isinstance(s, dict) and k == 0:  # an ensemble: one pick per member
            its = sorted({m.get("iteration") for m in (metrics.get("ensemble") or {}).get("member_metrics") or []
                          if m.get("iteration") is not None})
            for j, it in enumerate(its):
                out.append((float(it), {"color": "tab:green", "ls": "-", "lw": 0.9, "alpha": 0.7},
                            f"members' {rule} picks" if j == 0 else None))
    stop = metrics.get("stop") or {}
    if stop.get("kind") not in (None, "budget", "direct", "cap") and stop.get("step") is not None:
        out.append((float(stop["step"]), {"color": "black", "ls": ":", "lw": 1.3}, f"stop ({stop['kind']}) @ {stop['step']}"))
    rollbacks = [r for r in metrics.get("rollbacks") or [] if isinstance(r, dict) and r.get("phase") != "refit"]
    for j, r in enumerate(rollbacks):
        if r.get("step") is None:
            continue
        label = f"rollback ({r.get('reason', '?')})" + (f" ×{len(rollbacks)}" if len(rollbacks) > 1 else "")
        out.append((float(r["step"]), {"color": "tab:red", "ls": "-.", "lw": 1.0}, label if j == 0 else None))
    return out


def _title(metrics: dict) -> str:
    head = f"{metrics.get('method', '?')} on {metrics.get('task', '?')}"
    stop = metrics.get("stop") or {}
    if stop.get("reason"):
        head += f": {stop['reason']}"
    refit = (metrics.get("validation") or {}).get("refit")
    if refit:
        head += f"; refit on all data for {refit.get('iterations')} steps"
    return head


def plot_progress(path: str | Path, history: dict, metrics: dict) -> bool:
    """Draw ``progress.png`` (module docs) from a history (``{column: values}``) and the run's
    ``metrics.json`` dict; False (nothing written) when the history has fewer than two rows."""
    steps = _col(history, "step")
    if steps is None or steps.size < 2:
        return False
    loss, val, psnr = _col(history, "loss"), _col(history, "val"), _col(history, "psnr")
    terms = {c: a for c in history if c not in _NOT_TERMS and (a := _col(history, c)) is not None}
    if len(terms) == 1 and loss is not None and np.allclose(next(iter(terms.values())), loss, equal_nan=True):
        terms = {}  # the loss is its one term
    if loss is None and val is None and psnr is None:
        return False
    plt = pyplot()
    panels = [p for p in ("loss", "val") if (loss if p == "loss" else val) is not None] or ["psnr"]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.2, 2.0 + 2.3 * len(panels)), dpi=110, sharex=True,
                             squeeze=False)
    axes = list(axes[:, 0])
    handles: dict[int, list] = {i: [] for i in range(len(axes))}
    for i, panel in enumerate(panels):
        ax = axes[i]
        if panel == "loss":
            handles[i] += ax.plot(steps, loss, color="tab:blue", lw=1.3, label="training loss")
            for k, (name, a) in enumerate(terms.items()):
                handles[i] += ax.plot(steps, a, color=f"C{(k + 4) % 10}", lw=0.9, ls="--", label=f"term: {name}")
            _yscale(ax, loss, *terms.values())
            ax.set_ylabel("loss")
        elif panel == "val":
            handles[i] += ax.plot(steps, val, color="tab:orange", lw=1.3, label="held-out misfit (val)")
            pick = ((metrics.get("selections") or {}).get("val") or {})
            if pick.get("iteration") is not None and pick.get("misfit") is not None:
                handles[i] += ax.plot([pick["iteration"]], [pick["misfit"]], "o", color="tab:green", ms=6,
                                      label=f"val minimum {pick['misfit']:.4g}")
            _yscale(ax, val)
            ax.set_ylabel("held-out misfit")
        ax.grid(alpha=0.3, which="both")
        for it, style, label in _marks(metrics):
            line = ax.axvline(it, **style, label=label)
            if i == 0 and label:
                handles[i].append(line)
    if psnr is not None:
        host = len(axes) - 1
        ax2 = axes[host] if panels == ["psnr"] else axes[host].twinx()
        handles[host] += ax2.plot(steps, psnr, color="tab:purple", lw=1.1, alpha=0.85, label="PSNR (ground truth)")
        peak = metrics.get("peak") or {}
        if peak.get("iteration") is not None and peak.get("psnr") is not None:
            handles[host] += ax2.plot([peak["iteration"]], [peak["psnr"]], "*", color="tab:purple", ms=9,
                                      label=f"peak {peak['psnr']:.2f} dB @ {peak['iteration']} (oracle)")
        ax2.set_ylabel("PSNR [dB]", color="tab:purple")
        ax2.tick_params(axis="y", colors="tab:purple")
    if steps.min() > 0 and steps.max() / steps.min() >= 20:
        axes[-1].set_xscale("log")
        _plain_log_ticks(axes[-1].xaxis, minors="2-5")
    axes[-1].set_xlabel("iteration")
    for i, ax in enumerate(axes):
        if handles[i]:
            ax.legend(handles=handles[i], fontsize=7, loc="best", framealpha=0.85)
    fig.suptitle(_wrap(_title(metrics), 95), fontsize=9)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)
    return True


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


# ---------------------------------------------------------------------- overview.png
def _show(a: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` → ``[H, W]`` (gray; magnitude of a complex image) or ``[H, W, 3]`` (RGB)."""
    return display_image(np.asarray(a, dtype=np.float64))


def _std_map(std: np.ndarray) -> np.ndarray:
    """The per-pixel std as one map: itself (one channel), the magnitude (complex), the RMS over channels (RGB)."""
    std = np.asarray(std, dtype=np.float64)
    if std.ndim == 2:
        return std
    if std.shape[0] == 2:
        return np.sqrt((std ** 2).sum(0))
    return np.sqrt((std ** 2).mean(0))


def _range(*imgs) -> tuple[float, float]:
    """One grey scale for images: the 0.5–99.5 percentiles of their values together."""
    vals = np.concatenate([i[np.isfinite(i)].ravel() for i in imgs if i is not None])
    if not vals.size:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(vals, [0.5, 99.5]))
    if not hi > lo:
        lo, hi = float(vals.min()), float(vals.max())
    return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)


def plot_overview(path: str | Path, recon, *, direct=None, uncertainty=None, metrics: dict | None = None) -> bool:
    """Draw ``overview.png`` (module docs): ``recon``, ``direct`` and ``uncertainty`` are ``[C, H, W]``
    arrays (``direct``/``uncertainty`` may be None)."""
    metrics = metrics or {}
    plt = pyplot()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    r = _show(recon)
    d = None if direct is None else _show(direct)
    if d is not None and d.shape != r.shape:
        d = None
    same = d is not None and np.allclose(r, d, rtol=1e-5, atol=1e-6 * max(float(np.abs(r).max()), 1e-12))
    rgb = r.ndim == 3
    lo, hi = _range(r, None if d is None or same else d)
    if rgb:  # data in dipkit's range (judged on the direct image, the data): shown on [0, 1], clipped
        dlo, dhi = _range(d if d is not None else r)
        if dlo >= -0.5 and dhi <= 1.5:
            lo, hi = 0.0, 1.0
    name = direct_label(metrics.get("task"))
    panels = []  # (kind, title, image)
    if d is not None and not same:
        panels.append(("grey", f"direct: {name}", d))
    title = "reconstruction" + (f" (= the direct one: {name})" if same else "")
    p = metrics.get("psnr")
    if p is not None:
        title += f"\nPSNR {p:.2f} dB" + (f", SSIM {metrics['ssim']:.3f}" if metrics.get("ssim") is not None else "")
    elif not same:
        title += "\n(no ground truth: PSNR unknown)"
    panels.append(("grey", title, r))
    if uncertainty is not None:
        u = _std_map(uncertainty)
        if u.shape == r.shape[:2]:
            members = (metrics.get("ensemble") or {}).get("members")
            panels.append(("std", "uncertainty: per-pixel std" + (f"\n({members} members)" if members else ""), u))
    if d is not None and not same:
        diff = r - d
        if rgb:
            diff = diff.mean(-1)
        panels.append(("diff", "difference: reconstruction − direct" + ("\n(mean over channels)" if rgb else ""), diff))
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n + 0.3, 3.7), dpi=110, squeeze=False)
    for ax, (kind, t, img) in zip(axes[0], panels):
        ax.set_xticks([])
        ax.set_yticks([])
        if kind == "grey":
            if img.ndim == 3:  # RGB: one value range for the three channels, the bar shows it
                ax.imshow(np.clip((img - lo) / (hi - lo), 0, 1), interpolation="nearest")
                mappable = ScalarMappable(norm=Normalize(lo, hi), cmap="gray")
                label = "value (each channel; clipped)"
            else:
                mappable = ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
                label = "value"
        elif kind == "std":
            top = float(np.nanpercentile(img, 99.5)) if np.isfinite(img).any() else 1.0
            mappable = ax.imshow(img, cmap="magma", vmin=0.0, vmax=max(top, 1e-12), interpolation="nearest")
            label = "std"
        else:
            m = float(np.nanpercentile(np.abs(img), 99.5)) if np.isfinite(img).any() else 1.0
            m = m if m > 0 else 1.0
            mappable = ax.imshow(img, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
            label = "difference"
        cb = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
        cb.ax.tick_params(labelsize=7)
        cb.set_label(label, fontsize=7)
        ax.set_title(t, fontsize=8)
    head = f"{metrics.get('method', '?')} on {metrics.get('task', '?')}"
    if metrics.get("iterations"):
        head += f", {metrics['iterations']} iterations"
    pick = metrics.get("early_stop") or {}
    if pick.get("iteration") is not None:
        head += f"; the reconstruction is the {pick.get('rule')} pick @ {pick['iteration']}"
    refit = (metrics.get("validation") or {}).get("refit")
    if refit:
        head += f", refit on all data for {refit.get('iterations')} steps"
    if str(metrics.get("task", "")).startswith("mri"):
        head += " (magnitude images)"
    fig.suptitle(head, fontsize=9)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)
    return True
