r"""``dipkit import --task mri|mri-multicoil``: an MRI problem from measured k-space.

k-space
-------
* **Values**: complex (NumPy/HDF5 complex, HDF5/MAT ``{real, imag}`` compounds, or a real array
  whose last axis has length 2 = (real, imaginary)).
* **Shape**: ``[H, W]`` single coil, ``[coils, H, W]`` multi-coil, with an optional leading
  slice axis (``[slices, coils, H, W]`` as in fastMRI's ``kspace`` dataset; ``--slice I``,
  default the middle slice). Phase encoding runs along the last axis ``W``, as in fastMRI.
* **Layout** (``--convention``):

  - ``centred`` (default; aliases ``fastmri``, ``deepinv``, ``dipkit``): zero frequency at index
    ``(H // 2, W // 2)``, ``k = fftshift(fft2(ifftshift(x), norm="ortho"))`` -- fastMRI's
    ``fft2c`` and deepinv's ``MRI`` operator, so such data imports unchanged;
  - ``numpy``: ``k = numpy.fft.fft2(x)`` (zero frequency at index ``(0, 0)``, no normalisation);
    converted to the centred orthonormal layout (shift, ``(-1)``-type phase ramp, ``1/sqrt(HW)``).

* **Mask** (``--mask FILE``): ``[W]`` (sampled columns, fastMRI's ``mask`` dataset) or ``[H, W]``,
  non-zero = sampled, in the k-space file's layout. Without ``--mask``: the dataset ``mask`` of an
  HDF5/NPZ/MAT k-space file if it has one, else the entries that are non-zero in every coil
  (undersampled data stored zero-filled). Entries outside the mask are zeroed.

Coil maps (multi-coil)
----------------------
``--coil-maps FILE`` (``[coils, H, W]`` complex, optional slice axis; stored in the problem as
given) or ``--estimate-coil-maps``: the low-resolution (sum-of-squares) method
(:func:`dipkit.physics.mri.lowres_coil_maps`) from the fully sampled centre -- the contiguous run
of sampled columns around ``W // 2`` (at least 3) times four times as many central rows in
proportion ``H / W`` -- Hann-windowed, inverse-transformed, divided by the root-sum-of-squares.
Not ESPIRiT.

Noise and scale
---------------
``--noise-std S``: the std of each real component of the k-space noise, in the file's units.
Without it, the noise level is estimated from the outer k-space: the sampled entries with
``max(|k_y| / (H/2), |k_x| / (W/2)) > 0.75`` (at least 64, else the outermost 10 %),
``sigma = median|k| / sqrt(2 ln 2)`` (the median of a complex Gaussian's modulus), pooled over coils;
``meta["noise_sigma_estimated"] = true``. ``--scale auto`` (default) divides k-space (and a
ground truth) by the ground truth's maximum, else by the 99.5th percentile of the zero-filled
(coil-combined) magnitude image, recorded in ``meta["intensity_scale"]``.

A ground truth (``--ground-truth``) must be ``H x W`` (real: the imaginary channel is zero;
complex: both), e.g. a reconstruction of the same fully sampled data; fastMRI's cropped
``reconstruction_rss`` targets (320 x 320) do not match the k-space size and are refused.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import DipkitError
from .arrays import parse_source, pick_slice, read_array, read_slice

__all__ = ["import_mri", "KSPACE_CONVENTIONS", "to_centred", "calibration_block",
           "kspace_noise_sigma"]

KSPACE_CONVENTIONS = {"centred": "centred", "centered": "centred", "fastmri": "centred",
                      "deepinv": "centred", "dipkit": "centred", "numpy": "numpy"}


def _complex(arr: np.ndarray, what: str) -> np.ndarray:
    if np.iscomplexobj(arr):
        return arr
    if arr.shape[-1] == 2:
        return arr[..., 0] + 1j * arr[..., 1]
    raise DipkitError(f"the {what} must be complex (or real with a last axis of 2 = real, imag), "
                      f"got real data of shape {list(arr.shape)}")


def to_centred(k: np.ndarray, convention: str, *, is_mask: bool = False) -> np.ndarray:
    """k-space (or a mask) ``[..., H, W]`` in ``convention`` -> the centred orthonormal layout."""
    if convention == "centred":
        return k
    h, w = k.shape[-2:]
    shifted = np.fft.fftshift(k, axes=(-2, -1))
    if is_mask:
        return shifted
    # fft2(ifftshift(x))[k] = fft2(x)[k] exp(2 pi i (k_h (H//2) / H + k_w (W//2) / W)), then shift
    kh = np.arange(h).reshape(-1, 1)
    kw = np.arange(w).reshape(1, -1)
    ramp = np.exp(2j * np.pi * (kh * (h // 2) / h + kw * (w // 2) / w))
    return np.fft.fftshift(k * ramp, axes=(-2, -1)) / math.sqrt(h * w)


def _mask_2d(m: np.ndarray, h: int, w: int, what: str) -> np.ndarray:
    m = np.squeeze(np.asarray(m))
    if m.ndim == 1 and m.size == w:
        m = np.broadcast_to(m.reshape(1, w), (h, w))
    if m.shape != (h, w):
        raise DipkitError(f"the {what} has shape {list(np.shape(m))}; expected [{w}] (columns) or "
                          f"[{h}, {w}] for {h}×{w} k-space")
    return (m != 0).astype(np.float64)


def calibration_block(k: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The fully sampled centre of ``k`` ``[coils, H, W]`` (centred layout): the contiguous run of
    fully sampled columns around ``W // 2`` times ``round(4 n_cols H / W)`` central rows (measured
    on 64^2 / 8 coils / 5 columns: the maps' model error falls from 0.20 with an isotropic block to
    0.10 with 4x the rows, and no further with all rows)."""
    h, w = mask.shape
    full = mask.all(axis=0)
    c = w // 2
    if not full[c]:
        raise DipkitError("cannot estimate coil maps: the k-space centre column is not sampled "
                          "(give --coil-maps)")
    lo, hi = c, c
    while lo > 0 and full[lo - 1]:
        lo -= 1
    while hi < w - 1 and full[hi + 1]:
        hi += 1
    ncol = hi - lo + 1
    # lowres_coil_maps puts the block at columns W//2 - ncol//2 ...: keep within the run
    while ncol >= 3 and (ncol // 2 > c - lo or ncol - 1 - ncol // 2 > hi - c):
        ncol -= 1
    if ncol < 3:
        raise DipkitError(f"cannot estimate coil maps: only {hi - lo + 1} fully sampled centre "
                          "columns around the k-space centre (at least 3 needed; give --coil-maps)")
    nrow = max(3, min(h, int(round(4 * ncol * h / w))))
    r0, c0 = h // 2 - nrow // 2, c - ncol // 2
    return k[:, r0:r0 + nrow, c0:c0 + ncol]


def kspace_noise_sigma(k: np.ndarray, mask: np.ndarray) -> float:
    """Per-component noise std from the outer sampled k-space (module docstring)."""
    h, w = mask.shape
    ry = np.abs(np.arange(h) - h // 2) / (h / 2)
    rx = np.abs(np.arange(w) - w // 2) / (w / 2)
    radius = np.maximum(ry.reshape(-1, 1), rx.reshape(1, -1))
    kk = k.reshape(-1, h, w)
    sampled = mask > 0
    outer = sampled & (radius > 0.75)
    if outer.sum() * kk.shape[0] < 64:
        cut = np.quantile(radius[sampled], 0.9)
        outer = sampled & (radius >= cut)
    vals = np.abs(kk[:, outer]).reshape(-1)
    if vals.size == 0:
        raise DipkitError("cannot estimate the noise level from this k-space; give --noise-std")
    return float(np.median(vals)) / math.sqrt(2.0 * math.log(2.0))


def import_mri(*, task: str, kspace: str, key: str | None = None, slice_index: int | None = None,
               mask: str | None = None, coil_maps: str | None = None,
               estimate_coil_maps: bool = False, convention: str | None = None,
               ground_truth: str | None = None, noise_std: float | None = None,
               scale: Any = "auto", dtype=torch.float32):
    """Build an MRI :class:`~dipkit.problem.Problem` from a k-space file (module docstring)."""
    from ..physics.mri import CartesianMRI, MultiCoilCartesianMRI
    from ..problem import Problem
    from .common import finish_meta, parse_scale, read_ground_truth, resolve_scale

    multi = task == "mri-multicoil"
    name = (convention or "centred").lower()
    if name not in KSPACE_CONVENTIONS:
        raise DipkitError(f"unknown k-space convention {convention!r} "
                          f"(choose from {', '.join(sorted(set(KSPACE_CONVENTIONS)))})")
    conv = KSPACE_CONVENTIONS[name]
    scale = parse_scale(scale)
    if multi and (coil_maps is None) == (not estimate_coil_maps):
        raise DipkitError("multi-coil MRI needs exactly one of --coil-maps FILE and --estimate-coil-maps")
    if not multi and (coil_maps is not None or estimate_coil_maps):
        raise DipkitError("--coil-maps / --estimate-coil-maps are for --task mri-multicoil")

    src = parse_source(kspace, "k-space", key)
    k, slice_used = read_slice(src, 3 if multi else 2, slice_index, complex_ok=True,
                               defaults=("kspace", "k_space", "kdata", "y"),
                               transform=lambda a: _complex(a, "k-space"))
    if not multi and k.ndim != 2:
        raise DipkitError(f"single-coil k-space must be [H, W], got {list(k.shape)}")
    k = k if multi else k[None]
    n_coils, h, w = k.shape
    if h < 2 or w < 2:
        raise DipkitError(f"k-space must be at least 2×2, got {h}×{w}")
    k = to_centred(k, conv)

    mask_src, m = mask, None
    if mask is not None:
        m = read_array(parse_source(mask, "mask"), defaults=("mask", "sampling_mask"))
    elif src.path.suffix.lower() in (".h5", ".hdf5", ".hdf", ".npz", ".mat"):
        try:  # fastMRI files carry their mask next to the k-space
            m = read_array(parse_source(f"{src.path}:mask", "mask"))
            mask_src = f"{src.path}:mask"
        except DipkitError as exc:
            if "has no" not in str(exc):
                raise
    if m is not None:
        m = np.squeeze(m)
        if m.ndim == 3:
            m = pick_slice(m, 2, slice_index, "mask")[0]
        m = to_centred(_mask_2d(m, h, w, "mask"), conv, is_mask=True)
    else:
        m = np.all(k != 0, axis=0).astype(np.float64)
        mask_src = "non-zero k-space entries"
    if not m.any():
        raise DipkitError("the sampling mask samples nothing")
    k = k * m

    gt = read_ground_truth(ground_truth, None, (2, h, w), complex_ok=True)
    if gt is not None:
        if np.iscomplexobj(gt):
            gt = np.stack([gt[0].real, gt[0].imag]) if gt.shape[0] == 1 else None
        elif gt.shape[0] == 1:
            gt = np.concatenate([gt, np.zeros_like(gt)])
        if gt is None or gt.shape != (2, h, w):
            raise DipkitError(f"an MRI ground truth must be one {h}×{w} image (real or complex)")

    lines = None
    col = m.any(axis=0)
    if np.array_equal(m, np.broadcast_to(col, m.shape).astype(np.float64)):
        lines = [int(j) for j in np.flatnonzero(col)]
    sampling = {"lines": lines} if lines is not None else {"mask": m}
    if multi:
        if estimate_coil_maps:
            physics = MultiCoilCartesianMRI([h, w], mask=sampling.get("mask"), lines=lines,
                                            calibration=calibration_block(k, m), dtype=dtype)
        else:
            cm = _complex(read_array(parse_source(coil_maps, "coil maps"),
                                     defaults=("coil_maps", "sens_maps", "maps", "sensitivities"),
                                     complex_ok=True), "coil maps")
            cm, _ = pick_slice(cm, 3, slice_index, "coil maps")
            if cm.shape != (n_coils, h, w):
                raise DipkitError(f"the coil maps have shape {list(cm.shape)}; the k-space needs "
                                  f"[{n_coils}, {h}, {w}]")
            physics = MultiCoilCartesianMRI([h, w], lines=lines, mask=sampling.get("mask"),
                                            coil_maps=cm, dtype=dtype)
        y = torch.from_numpy(np.stack([k.real, k.imag]))[None].to(dtype)  # [1, 2, N, H, W]
    else:
        physics = CartesianMRI([h, w], lines=lines, mask=sampling.get("mask"), dtype=dtype)
        y = torch.from_numpy(np.stack([k[0].real, k[0].imag]))[None].to(dtype)  # [1, 2, H, W]

    naive = None
    if scale == "auto" and gt is None:
        with torch.no_grad():
            z = physics.A_adjoint(y)[0]
        naive = torch.sqrt(z[0] ** 2 + z[1] ** 2).numpy()
    s = resolve_scale(scale, gt, naive)
    y = y / s
    x_true = None if gt is None else torch.as_tensor(gt / s, dtype=dtype)[None]
    meta = finish_meta(
        {"img_shape": [2, h, w], "acceleration": float(physics.acceleration), "lines": len(lines or []),
         "kspace_convention": conv, "complex": "2 channels (real, imaginary)",
         "source": {"kspace": str(src), "slice": slice_used, "mask": mask_src,
                    "coil_maps": coil_maps if coil_maps else ("estimated (lowres)" if multi else None),
                    "ground_truth": ground_truth}},
        task=task, y=y, scale=s, noise_std=noise_std,
        estimate=lambda: kspace_noise_sigma(k / s, m))
    if multi:
        meta["coils"] = int(n_coils)
    return Problem(physics=physics, y=y, spec=dict(physics.spec), x_true=x_true, meta=meta)
