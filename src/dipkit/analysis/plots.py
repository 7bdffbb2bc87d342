"""Figures of the Jacobian analysis: the singular value spectrum and grids of eigen-images.

Eigen-images are signed and of unit norm; each panel is shown on its own symmetric range
``[-max|u|, max|u|]`` (gray for one channel, mid-gray = 0; RGB as ``0.5 + 0.5 u / max|u|``; other channel
counts, e.g. MRI's (real, imaginary), as the magnitude over channels). Images (the initial output, the
ground truth) are shown on their own min–max range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.write import save_figure

__all__ = ["display", "save_spectrum_plot", "save_image_grid"]


def display(a: np.ndarray, signed: bool = True) -> tuple[np.ndarray, dict]:
    """``[C, H, W]`` → what ``imshow`` shows and its keyword arguments (see the module docs)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.shape[0] == 3:
        if signed:
            m = max(np.abs(a).max(), 1e-300)
            return np.clip(0.5 + 0.5 * np.moveaxis(a, 0, -1) / m, 0, 1), {}
        lo, hi = a.min(), a.max()
        return np.clip((np.moveaxis(a, 0, -1) - lo) / max(hi - lo, 1e-300), 0, 1), {}
    if a.shape[0] == 1:
        img = a[0]
    else:
        img, signed = np.sqrt((a ** 2).sum(0)), False
    if signed:
        m = max(np.abs(img).max(), 1e-300)
        return img, {"cmap": "gray", "vmin": -m, "vmax": m}
    return img, {"cmap": "gray", "vmin": img.min(), "vmax": max(img.max(), img.min() + 1e-12)}


def save_spectrum_plot(path: str | Path, values, *, title: str = "", labels=None) -> Path:
    """σ_i against i on a log scale; ``values`` one array, or a list of arrays with ``labels``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [np.asarray(values)] if labels is None else [np.asarray(v) for v in values]
    labels = labels or [None]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for v, lab in zip(series, labels):
        ax.semilogy(np.arange(1, len(v) + 1), v, "o-", ms=3, label=lab)
    ax.set_xlabel("index i")
    ax.set_ylabel("singular value σ_i")
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    if labels[0] is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig, dpi=120)
    plt.close(fig)
    return Path(path)


def save_image_grid(path: str | Path, rows: list[list[tuple[str, np.ndarray, bool]]], *, row_labels=None,
                    title: str = "", size: float = 1.9) -> Path:
    """A grid of panels; ``rows`` is a list of rows of ``(title, array [C, H, W], signed)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(size * ncol, (size + 0.3) * len(rows) + (0.3 if title else 0)),
                             squeeze=False)
    for i, row in enumerate(rows):
        for j in range(ncol):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            name, arr, signed = row[j]
            img, kw = display(arr, signed)
            ax.imshow(img, interpolation="nearest", **kw)
            ax.set_title(name, fontsize=8)
        if row_labels:
            axes[i][0].set_ylabel(row_labels[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(path, fig, dpi=120)
    plt.close(fig)
    return Path(path)
