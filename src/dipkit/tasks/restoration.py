r"""Image-restoration tasks: ``denoise``, ``inpaint``, ``deblur``, ``superres``.

``y = A x + σ ε`` (``ε ~ N(0, I)`` from a generator seeded with ``seed``) with the operators of
:mod:`dipkit.physics.restoration`, for gray or RGB images (``Task.channels = "auto"`` keeps RGB).

**Noise** (every task, uniform flags; give at most one):

* ``noise_std`` — ``σ`` in measurement units, which here are image units (e.g. ``25/255``);
* ``noise_level`` — relative: ``σ = level × mean|A x|`` over the measured entries.

Entries that are not measured (missing pixels in inpainting) stay exactly zero in ``y``. The
absolute ``σ`` is stored in ``meta["noise_sigma"]``.

==========  =====================================================  ===============================
task        operator and options (defaults)                         default noise
==========  =====================================================  ===============================
denoise     identity                                                ``noise_std = 25/255``
inpaint     central box, ``box_ratio = 0.25`` (aSeqDIP HIAR), or    none
            random pixels, ``missing`` ∈ [0, 1)
deblur      Gaussian blur, ``kernel_std = 1.6``, ``kernel_size =    ``noise_std = 0.01``
            2⌈3 σ_k⌉ + 1`` (odd), circular boundary
superres    ``factor = 4`` (must divide H and W), ``filter =        none
            bicubic`` (bilinear, gaussian, sinc, none)
==========  =====================================================  ===============================

aSeqDIP (§4.1, Table 1) uses σ_d ∈ {15, 30}/255 (and 25/255 in its figures) for denoising and
HIAR ∈ {0.1, 0.25} for box inpainting; its deblurring is non-linear (BKSE), for which this
linear Gaussian blur stands in.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import DipkitError
from ..problem import Problem
from .base import add_gaussian_noise, register_task

__all__ = ["simulate_denoise", "simulate_inpaint", "simulate_deblur", "simulate_superres",
           "image_tensor", "simulate_measurement"]

NOISE = ("noise_std", "noise_level")


def image_tensor(image: np.ndarray, *, dtype=torch.float32, device="cpu", channels: int | None = None,
                 task: str = "") -> torch.Tensor:
    """Check a ``[C, H, W]`` image and return it as a ``[1, C, H, W]`` tensor."""
    image = np.asarray(image)
    if image.ndim != 3 or min(image.shape) < 1:
        raise DipkitError(f"{task}: expected an image [C, H, W], got shape {tuple(image.shape)}")
    if channels is not None and image.shape[0] != channels:
        raise DipkitError(f"{task} needs a {channels}-channel image, got {image.shape[0]} channels")
    if not (np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer)):
        raise DipkitError(f"{task}: the image must be real numbers, got dtype {image.dtype}")
    if not np.all(np.isfinite(image)):
        raise DipkitError(f"{task}: the image contains NaN or Inf")
    return torch.as_tensor(np.ascontiguousarray(image), dtype=dtype, device=device)[None]


def simulate_measurement(physics, x: torch.Tensor, *, seed: int, noise_std: float | None,
                         noise_level: float | None, support: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, float]:
    r"""``y = s ⊙ (A x + σ ε)`` and ``σ``; ``s`` (``support``, 0/1, broadcastable) marks the measured
    entries (default: all). ``σ = noise_std``, or ``noise_level × mean|A x|`` over the support."""
    if noise_std is not None and noise_level is not None:
        raise DipkitError("give either --noise-std or --noise-level, not both")
    with torch.no_grad():
        clean = physics.A(x)
    if noise_level is not None:
        level = float(noise_level)
        if not (math.isfinite(level) and level >= 0):
            raise DipkitError(f"noise level must be ≥ 0, got {noise_level}")
        if support is None:
            scale = float(clean.abs().mean())
        else:
            s = support.expand_as(clean)
            scale = float((clean.abs() * s).sum() / s.sum().clamp_min(1))
        noise_std = level * scale
    y, sigma = add_gaussian_noise(clean, seed=seed, noise_std=float(noise_std or 0.0))
    if support is not None:
        y = y * support
    return y, sigma


def _noise(noise_std, noise_level, default_std):
    """Apply the task's default when neither noise option is given."""
    if noise_std is None and noise_level is None:
        return default_std, None
    return noise_std, noise_level


def _simulate(task, physics, x, *, default_std, seed, noise_std, noise_level, support=None, **meta) -> Problem:
    """Measure ``x`` with ``physics`` plus the task's noise (its default when none is given)."""
    noise_std, noise_level = _noise(noise_std, noise_level, default_std)
    y, sigma = simulate_measurement(physics, x, seed=seed, noise_std=noise_std, noise_level=noise_level,
                                    support=support)
    full = {"task": task, "noise_std": noise_std, "noise_level": noise_level, "noise_sigma": sigma,
            "seed": int(seed), "img_shape": [int(s) for s in x.shape[1:]], **meta}
    return Problem(physics=physics, y=y, spec=dict(physics.spec), x_true=x, meta=full)


# ---------------------------------------------------------------------- denoise
def simulate_denoise(image, *, noise_std=None, noise_level=None, seed=0, device="cpu",
                     dtype=torch.float32) -> Problem:
    """Denoising ``y = x + σ ε``; default ``σ = 25/255``."""
    from ..physics.restoration import IdentityOp

    x = image_tensor(image, dtype=dtype, device=device, task="denoise")
    physics = IdentityOp(list(x.shape[1:]), device=device, dtype=dtype)
    return _simulate("denoise", physics, x, default_std=25 / 255, seed=seed, noise_std=noise_std,
                     noise_level=noise_level)


# ---------------------------------------------------------------------- inpaint
def simulate_inpaint(image, *, missing=None, box_ratio=None, noise_std=None, noise_level=None, seed=0,
                     device="cpu", dtype=torch.float32) -> Problem:
    """Inpainting ``y = m ⊙ (x + σ ε)``: a central box hole (``box_ratio``, default 0.25) or
    ``missing`` random pixels (seeded); noise-free by default."""
    from ..physics.restoration import InpaintingOp

    if missing is not None and box_ratio is not None:
        raise DipkitError("give either --missing (random pixels) or --box-ratio (central box), not both")
    x = image_tensor(image, dtype=dtype, device=device, task="inpaint")
    if missing is not None:
        physics = InpaintingOp(list(x.shape[1:]), mask="random", missing=missing, seed=int(seed),
                               device=device, dtype=dtype)
    else:
        physics = InpaintingOp(list(x.shape[1:]), mask="box", box_ratio=0.25 if box_ratio is None else box_ratio,
                               device=device, dtype=dtype)
    return _simulate("inpaint", physics, x, default_std=0.0, seed=seed, noise_std=noise_std, noise_level=noise_level,
                     support=physics.mask, mask=physics.spec["mask"], missing_fraction=physics.missing_fraction)


# ---------------------------------------------------------------------- deblur
def simulate_deblur(image, *, kernel_std=1.6, kernel_size=None, noise_std=None, noise_level=None, seed=0,
                    device="cpu", dtype=torch.float32) -> Problem:
    """Gaussian deblurring ``y = h * x + σ ε`` (circular boundary); default ``σ = 0.01``."""
    from ..physics.restoration import BlurOp

    x = image_tensor(image, dtype=dtype, device=device, task="deblur")
    physics = BlurOp(list(x.shape[1:]), kernel_std=kernel_std, kernel_size=kernel_size, device=device, dtype=dtype)
    return _simulate("deblur", physics, x, default_std=0.01, seed=seed, noise_std=noise_std, noise_level=noise_level,
                     kernel_std=physics.spec["kernel_std"], kernel_size=physics.spec["kernel_size"])


# ---------------------------------------------------------------------- superres
def simulate_superres(image, *, factor=4, filter="bicubic", noise_std=None, noise_level=None, seed=0,
                      device="cpu", dtype=torch.float32) -> Problem:
    """Super-resolution ``y = S (h * x) + σ ε`` by ``factor`` (bicubic anti-aliasing by default);
    noise-free by default."""
    from ..physics.restoration import DownsamplingOp

    x = image_tensor(image, dtype=dtype, device=device, task="superres")
    physics = DownsamplingOp(list(x.shape[1:]), factor=factor, filter=filter, device=device, dtype=dtype)
    return _simulate("superres", physics, x, default_std=0.0, seed=seed, noise_std=noise_std,
                     noise_level=noise_level, factor=physics.spec["factor"], filter=physics.spec["filter"])


# ---------------------------------------------------------------------- registration
register_task("denoise", "denoising: y = x + σε (default σ = 25/255), gray or RGB", NOISE)(simulate_denoise)
register_task("inpaint", "inpainting: central box (--box-ratio, default 0.25) or random pixels (--missing)",
              ("missing", "box_ratio") + NOISE)(simulate_inpaint)
register_task("deblur", "Gaussian deblurring (--kernel-std 1.6, --kernel-size, default noise σ = 0.01)",
              ("kernel_std", "kernel_size") + NOISE)(simulate_deblur)
register_task("superres", "super-resolution: --factor (default 4) down-sampling with --filter (default bicubic)",
              ("factor", "filter") + NOISE)(simulate_superres)
