"""What every importer shares: the intensity scale, noise levels, ground truths, metadata."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import DipkitError

__all__ = ["parse_scale", "resolve_scale", "masked_noise_sigma", "read_ground_truth", "finish_meta"]


def parse_scale(text: Any) -> str | float:
    """``--scale``: ``"auto"``, ``"none"`` or a positive number."""
    if text is None:
        return "auto"
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        val = float(text)
    else:
        t = str(text).strip().lower()
        if t in ("auto", "none"):
            return t
        try:
            val = float(t)
        except ValueError:
            raise DipkitError(f"--scale must be auto, none or a positive number, got {text!r}") from None
    if not (math.isfinite(val) and val > 0):
        raise DipkitError(f"--scale must be a positive number, got {text!r}")
    return val


def resolve_scale(scale: str | float, ground_truth: np.ndarray | None, naive: np.ndarray | None) -> float:
    """The factor ``S`` the measurement (and a ground truth) are divided by.

    ``auto``: with a ground truth, 1 when it already lies in [0, 1] with a maximum of at least
    0.5 (an image in dipkit's range), else its largest absolute value; without one, the 99.5th percentile of the naive reconstruction's magnitude
    (FBP, zero-filled inverse FFT ...), so that images come out roughly in [0, 1] -- the range
    dipkit's PSNR (data range 1), networks and default step sizes assume. ``none``: 1.
    """
    if scale == "none":
        return 1.0
    if scale != "auto":
        return float(scale)
    if ground_truth is not None:
        g = np.asarray(ground_truth)
        inside = not np.iscomplexobj(g) and float(g.min()) >= 0.0 and 0.5 <= float(g.max()) <= 1.0
        s = 1.0 if inside else float(np.abs(g).max())
    elif naive is not None:
        s = float(np.percentile(np.abs(naive), 99.5))
    else:
        s = 1.0
    return s if math.isfinite(s) and s > 0 else 1.0


def masked_noise_sigma(img: np.ndarray, mask: np.ndarray | None = None) -> float:
    r"""Noise std of an image ``[C, H, W]`` (or ``[H, W]``) from its measured pixels: the median
    absolute third-order difference :math:`(y_{j+3} - 3y_{j+2} + 3y_{j+1} - y_j)/\sqrt{20}` over
    the positions whose four taps are all measured, divided by 0.6745, the smaller of the rows and
    columns estimates (as :func:`dipkit.physics.noise.estimate_noise_sigma`, with a mask)."""
    y = np.asarray(img, dtype=np.float64)
    y = y[None] if y.ndim == 2 else y
    m = np.ones(y.shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask) != 0, y.shape)
    c = np.array([-1.0, 3.0, -3.0, 1.0]) / math.sqrt(20.0)
    ests = []
    for ax in (-1, -2):
        n = y.shape[ax]
        if n < 4:
            continue
        v, mv = np.moveaxis(y, ax, -1), np.moveaxis(m, ax, -1)
        d = sum(c[k] * v[..., k:n - 3 + k] for k in range(4))
        ok = mv[..., :n - 3] & mv[..., 1:n - 2] & mv[..., 2:n - 1] & mv[..., 3:]
        if ok.sum() >= 16:
            ests.append(float(np.median(np.abs(d[ok]))) / 0.6745)
    if not ests:
        raise DipkitError(f"cannot estimate the noise level from a measurement of shape {list(y.shape)}; "
                          "give --noise-std")
    return min(ests)


def read_ground_truth(arg: str | None, key: str | None, shape: tuple[int, ...] | None, *,
                      channels: str = "gray", complex_ok: bool = False) -> np.ndarray | None:
    """A ground truth ``[C, H, W]``: an image file (PNG, TIFF, NPY, DICOM ... via
    :func:`dipkit.io.read_image`) or an array in a container (``PATH:KEY``); checked against the
    expected ``shape`` (``None``: any)."""
    if arg is None:
        return None
    from .arrays import parse_source, read_array

    src = parse_source(arg, "ground truth", key)
    ext = src.path.suffix.lower()
    image_exts = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".pgm", ".ppm", ".pnm", ".dcm",
                  ".dicom", ".ima"}
    if src.key is not None or ext in (".npz", ".mat", ".h5", ".hdf5", ".hdf") or (
            complex_ok and ext not in image_exts):
        arr = read_array(src, defaults=("ground_truth", "x_true", "target", "reconstruction_rss",
                                        "image"), complex_ok=complex_ok)
        arr = arr[None] if arr.ndim == 2 else arr
        if arr.ndim != 3:
            raise DipkitError(f"the ground truth in {src} has shape {list(arr.shape)}; expected [H, W] "
                              "or [C, H, W]")
    else:
        from ..io import read_image

        arr = read_image(src.path, channels=channels).astype(np.float64)
    if shape is not None and tuple(arr.shape[-2:]) != tuple(shape[-2:]):
        raise DipkitError(f"the ground truth is {arr.shape[-2]}×{arr.shape[-1]} but the image to "
                          f"reconstruct is {shape[-2]}×{shape[-1]}")
    if shape is not None and len(shape) == 3 and arr.shape[0] != shape[0] and not complex_ok:
        raise DipkitError(f"the ground truth has {arr.shape[0]} channels, the problem {shape[0]}")
    return arr


def finish_meta(meta: dict, *, task: str, y: torch.Tensor, scale: float, noise_std: float | None,
                estimate) -> dict:
    """Common metadata: task, scale, and the noise level -- ``noise_std`` (file units) divided
    by the scale, else ``estimate()`` (already in problem units), flagged as estimated."""
    meta = {"task": task, "imported": True, **meta, "intensity_scale": scale}
    if noise_std is not None:
        meta["noise_sigma"] = float(noise_std) / scale
        meta["noise_sigma_estimated"] = False
    else:
        meta["noise_sigma"] = float(estimate())
        meta["noise_sigma_estimated"] = True
    return meta
