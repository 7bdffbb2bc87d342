r"""``dipkit import --task denoise|inpaint|deblur|superres``: a restoration problem from a
degraded image.

The measurement ``--image FILE`` is an image file (PNG, JPEG, TIFF, NPY, DICOM: read as
:func:`dipkit.io.read_image` reads images -- 8/16-bit data divided by the dtype maximum, floats
as they are, gray or RGB) or an array in a container (``FILE:KEY`` or ``--key``: NPZ, MAT, HDF5;
``[H, W]``, ``[C, H, W]`` or ``[H, W, C]`` with ``C`` in {1, 3}, taken as they are).

========  =======================================================  =================================
task      operator                                                 needs
========  =======================================================  =================================
denoise   identity                                                 --
inpaint   ``y = m ⊙ x``, kind ``inpainting-mask``                   ``--mask FILE`` (1 = observed,
                                                                   ``[H, W]`` or ``[C, H, W]``;
                                                                   any non-zero counts as 1)
deblur    ``y = h * x``, circular boundary, kind ``blur-kernel``    ``--kernel FILE`` (2-D, odd
                                                                   sizes, used as given)
superres  ``y = S (g * x)`` by ``--factor F``, kind ``downsampling``  ``--factor F`` (``--filter``:
          (the unknown is ``F`` times larger than ``y``)             bicubic (default), bilinear,
                                                                   gaussian, sinc, none)
========  =======================================================  =================================

Missing pixels of an inpainting measurement are set to zero. The noise level, unless
``--noise-std`` gives it, is estimated from the measured pixels
(:func:`dipkit.importers.common.masked_noise_sigma`). ``--scale`` defaults to ``none`` here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import DipkitError
from .arrays import parse_source, pick_slice, read_array

__all__ = ["import_image_task", "read_measured_image"]

_CONTAINERS = (".npz", ".mat", ".h5", ".hdf5", ".hdf")


def read_measured_image(arg: str, key: str | None, slice_index: int | None) -> tuple[np.ndarray, str]:
    """The degraded image ``[C, H, W]`` (float64) and a description of where it came from."""
    src = parse_source(arg, "image", key)
    if src.key is not None or src.path.suffix.lower() in _CONTAINERS:
        arr = read_array(src, defaults=("image", "y", "measurement"))
        if arr.ndim == 3 and arr.shape[-1] in (1, 3) and arr.shape[0] not in (1, 3):
            arr = np.moveaxis(arr, -1, 0)
        if arr.ndim == 2:
            arr = arr[None]
        elif arr.ndim == 3 and arr.shape[0] not in (1, 3):
            arr = pick_slice(arr, 2, slice_index, "image")[0][None]
        if arr.ndim != 3 or arr.shape[0] not in (1, 3):
            raise DipkitError(f"the image in {src} has shape {list(arr.shape)}; expected [H, W], "
                              "[C, H, W] or [H, W, C] with C = 1 or 3")
        return arr, str(src)
    from ..io import read_image

    return read_image(src.path).astype(np.float64), str(src)


def import_image_task(*, task: str, image: str, key: str | None = None, slice_index: int | None = None,
                      mask: str | None = None, kernel: str | None = None, factor: int | None = None,
                      filter: str | None = None, ground_truth: str | None = None,
                      noise_std: float | None = None, scale: Any = "none", dtype=torch.float32):
    """Build a restoration :class:`~dipkit.problem.Problem` (module docstring)."""
    from ..physics.custom import KernelBlurOp, MaskInpaintingOp
    from ..physics.restoration import DownsamplingOp, IdentityOp
    from ..problem import Problem
    from .common import finish_meta, masked_noise_sigma, parse_scale, read_ground_truth, resolve_scale

    needs = {"inpaint": ("mask", mask), "deblur": ("kernel", kernel), "superres": ("factor", factor)}
    for t, (flag, val) in needs.items():
        if task == t and val is None:
            raise DipkitError(f"--task {t} needs --{flag}")
    y_img, where = read_measured_image(image, key, slice_index)
    c, h, w = y_img.shape
    scale = parse_scale(scale)
    measured = None
    meta: dict[str, Any] = {}
    if task == "denoise":
        physics = IdentityOp([c, h, w], dtype=dtype)
        img_shape = (c, h, w)
    elif task == "inpaint":
        m = read_array(parse_source(mask, "mask"), defaults=("mask",))
        m = (np.squeeze(m) != 0).astype(np.float64) if m.ndim > 3 else (m != 0).astype(np.float64)
        physics = MaskInpaintingOp([c, h, w], m, dtype=dtype)
        measured = physics.mask.detach().cpu().numpy().astype(bool).reshape(c, h, w)
        y_img = y_img * measured
        img_shape = (c, h, w)
        meta = {"missing_fraction": physics.missing_fraction, "mask": mask}
    elif task == "deblur":
        k = read_array(parse_source(kernel, "kernel"), defaults=("kernel", "psf", "filter"))
        physics = KernelBlurOp([c, h, w], np.squeeze(k), dtype=dtype)
        img_shape = (c, h, w)
        meta = {"kernel": kernel, "kernel_sum": float(np.sum(k))}
    elif task == "superres":
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
            raise DipkitError(f"--factor must be an integer >= 2, got {factor!r}")
        physics = DownsamplingOp([c, h * factor, w * factor], factor=factor,
                                 filter=filter or "bicubic", dtype=dtype)
        img_shape = (c, h * factor, w * factor)
        meta = {"factor": factor, "filter": filter or "bicubic"}
    else:  # pragma: no cover - the CLI offers known tasks only
        raise DipkitError(f"unknown image task {task!r}")
    if filter is not None and task != "superres":
        raise DipkitError("--filter is for --task superres")

    gt = read_ground_truth(ground_truth, None, img_shape, channels="rgb" if c == 3 else "gray")
    s = resolve_scale(scale, gt, y_img)
    y = torch.as_tensor(y_img / s, dtype=dtype)[None]
    x_true = None if gt is None else torch.as_tensor(gt / s, dtype=dtype)[None]
    meta = finish_meta({"img_shape": list(img_shape), **meta,
                        "source": {"image": where, "ground_truth": ground_truth}},
                       task=task, y=y, scale=s, noise_std=noise_std,
                       estimate=lambda: masked_noise_sigma(y[0].numpy(), measured))
    return Problem(physics=physics, y=y, spec=dict(physics.spec), x_true=x_true, meta=meta)
