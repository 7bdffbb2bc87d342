r"""Image-restoration operators (deepinv), rebuilt exactly from JSON specs.

=================  ==========================================  ======================================
kind               operator                                    spec (besides ``img_size: [C, H, W]``)
=================  ==========================================  ======================================
``denoising``      identity (:class:`deepinv.physics.Denoising`)  —
``inpainting``     pixel mask ``y = m ⊙ x``                     ``mask: "box", box_ratio`` or
                   (:class:`deepinv.physics.Inpainting`)        ``mask: "random", missing, seed``
``blur``           Gaussian blur ``y = h * x``                  ``kernel_std, kernel_size, padding``
                   (:class:`deepinv.physics.Blur`)
``downsampling``   ``y = S (h * x)``, ``S`` keeps every ``f``-th ``factor, filter, padding``
                   pixel (:class:`deepinv.physics.Downsampling`)
=================  ==========================================  ======================================

Conventions: images ``[B, C, H, W]`` with any ``C`` (gray or RGB; masks and kernels are the same
for every channel); measurements of denoising, inpainting and blur are image-sized (missing pixels
are zero in ``y``); downsampling gives ``[B, C, H/f, W/f]``. ``padding="circular"`` (the default)
makes blur and downsampling periodic, so their ``A_adjoint`` is exact and ``A`` keeps the image
size. All operators are float32 by default (``dtype`` casts every buffer; complex FFT buffers to
the matching complex dtype).

Random inpainting masks are regenerated from ``seed`` with ``numpy.random.RandomState`` (a frozen
stream): exactly ``round(missing · H · W)`` pixels, the same in every channel, are removed. The
central box of ``box_ratio`` (aSeqDIP's hole-to-image area ratio, HIAR) is
``round(H √r) × round(W √r)`` pixels, centred.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from deepinv.physics import Blur, Denoising, Downsampling, Inpainting
from deepinv.physics.noise import ZeroNoise

from ..errors import DipkitError
from . import check_spec_keys, register_physics

__all__ = [
    "IdentityOp",
    "InpaintingOp",
    "BlurOp",
    "DownsamplingOp",
    "inpainting_mask",
    "box_mask",
    "gaussian_kernel_size",
    "DOWNSAMPLING_FILTERS",
    "PADDINGS",
]

#: filters of :class:`DownsamplingOp` (``"none"``: plain decimation)
DOWNSAMPLING_FILTERS = ("bicubic", "bilinear", "gaussian", "sinc", "none")
#: boundary conditions for blur and downsampling
PADDINGS = ("circular", "reflect", "replicate")


# ---------------------------------------------------------------------- helpers
def _check_img_size(img_size: Any) -> tuple[int, int, int]:
    try:
        c, h, w = (int(s) for s in img_size)
    except (TypeError, ValueError):
        raise DipkitError(f"img_size must be [C, H, W], got {img_size!r}") from None
    if c < 1 or h < 1 or w < 1:
        raise DipkitError(f"img_size must be positive, got {[c, h, w]}")
    return c, h, w


def _cast_buffers(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast every floating buffer to ``dtype`` and every complex one to the matching complex dtype."""
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    for mod in module.modules():
        for name, buf in list(mod._buffers.items()):
            if buf is None:
                continue
            if buf.is_complex():
                mod._buffers[name] = buf.to(cdtype)
            elif buf.is_floating_point():
                mod._buffers[name] = buf.to(dtype)


def _check_padding(padding: Any) -> str:
    if padding not in PADDINGS:
        raise DipkitError(f"unknown padding {padding!r} (choose from {', '.join(PADDINGS)})")
    return str(padding)


# ---------------------------------------------------------------------- denoising
class IdentityOp(Denoising):
    """Denoising: ``A = I`` (deepinv :class:`~deepinv.physics.Denoising`, noise simulated by the task)."""

    def __init__(self, img_size, *, device="cpu", dtype=torch.float32):
        c, h, w = _check_img_size(img_size)
        super().__init__(noise_model=ZeroNoise(), device=device)
        _cast_buffers(self, dtype)
        self.img_size = (c, h, w)
        self.spec = {"kind": "denoising", "img_size": [c, h, w]}

    def A_dagger(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        return y


# ---------------------------------------------------------------------- inpainting
def box_mask(height: int, width: int, box_ratio: float) -> np.ndarray:
    """Kept-pixel mask ``[H, W]`` (1 = observed) with a centred hole of area ratio ``box_ratio``."""
    try:
        r = float(box_ratio)
    except (TypeError, ValueError):
        raise DipkitError(f"box ratio must be a number in (0, 1), got {box_ratio!r}") from None
    if not (0 < r < 1):
        raise DipkitError(f"box ratio (hole-to-image area) must be in (0, 1), got {box_ratio}")
    bh, bw = int(round(height * math.sqrt(r))), int(round(width * math.sqrt(r)))
    if bh < 1 or bw < 1:
        raise DipkitError(f"box ratio {r:g} gives an empty hole in a {height}×{width} image")
    if bh >= height and bw >= width:
        raise DipkitError(f"box ratio {r:g} removes the whole {height}×{width} image")
    top, left = (height - bh) // 2, (width - bw) // 2
    mask = np.ones((height, width), dtype=np.float64)
    mask[top:top + bh, left:left + bw] = 0.0
    return mask


def inpainting_mask(height: int, width: int, missing: float, seed: int) -> np.ndarray:
    """Kept-pixel mask ``[H, W]``: exactly ``round(missing · H · W)`` pixels removed, seeded."""
    try:
        p = float(missing)
    except (TypeError, ValueError):
        raise DipkitError(f"missing fraction must be a number in [0, 1), got {missing!r}") from None
    if not (0 <= p < 1):
        raise DipkitError(f"missing fraction must be in [0, 1), got {missing}")
    n = height * width
    k = int(round(p * n))
    if k >= n:
        raise DipkitError(f"missing fraction {p:g} removes every pixel of a {height}×{width} image")
    rng = np.random.RandomState(int(seed) % 2**32)
    mask = np.ones(n, dtype=np.float64)
    mask[rng.permutation(n)[:k]] = 0.0
    return mask.reshape(height, width)


class InpaintingOp(Inpainting):
    """Inpainting ``y = m ⊙ x`` (deepinv :class:`~deepinv.physics.Inpainting`); ``m`` is the same in
    every channel. ``mask="box"`` (``box_ratio``) or ``mask="random"`` (``missing``, ``seed``)."""

    def __init__(self, img_size, *, mask: str, box_ratio: float | None = None, missing: float | None = None,
                 seed: int | None = None, device="cpu", dtype=torch.float32):
        c, h, w = _check_img_size(img_size)
        if mask == "box":
            if box_ratio is None or missing is not None or seed is not None:
                raise DipkitError("a box inpainting mask takes box_ratio only")
            m = box_mask(h, w, box_ratio)
            spec = {"mask": "box", "box_ratio": float(box_ratio)}
        elif mask == "random":
            if missing is None or seed is None or box_ratio is not None:
                raise DipkitError("a random inpainting mask takes missing and seed")
            m = inpainting_mask(h, w, missing, seed)
            spec = {"mask": "random", "missing": float(missing), "seed": int(seed)}
        else:
            raise DipkitError(f"unknown inpainting mask {mask!r} (choose from box, random)")
        mt = torch.from_numpy(m).to(dtype)[None].expand(c, h, w).contiguous()
        super().__init__(img_size=(c, h, w), mask=mt.to(device), device=device)
        self.spec = {"kind": "inpainting", "img_size": [c, h, w], **spec}

    @property
    def missing_fraction(self) -> float:
        """The fraction of pixels removed (host value; do not call inside a loop)."""
        return 1.0 - float(self.mask[0, 0].mean())

    def A_dagger(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.mask * y


# ---------------------------------------------------------------------- blur
def gaussian_kernel_size(kernel_std: float) -> int:
    """Default kernel size for a Gaussian of std ``s``: ``2 ceil(3 s) + 1`` (covers ±3σ)."""
    return 2 * int(math.ceil(3 * float(kernel_std))) + 1


class BlurOp(Blur):
    r"""Isotropic Gaussian blur ``y = h * x`` (deepinv :class:`~deepinv.physics.Blur` with
    :func:`deepinv.physics.functional.gaussian_blur`), kernel ``kernel_size × kernel_size``
    (odd), std ``kernel_std`` pixels, normalised to sum 1, same for every channel."""

    def __init__(self, img_size, *, kernel_std: float, kernel_size: int | None = None,
                 padding: str = "circular", device="cpu", dtype=torch.float32):
        import deepinv.physics.functional as dF

        c, h, w = _check_img_size(img_size)
        try:
            s = float(kernel_std)
        except (TypeError, ValueError):
            raise DipkitError(f"kernel std must be a number > 0, got {kernel_std!r}") from None
        if not (math.isfinite(s) and s > 0):
            raise DipkitError(f"kernel std must be > 0, got {kernel_std}")
        k = gaussian_kernel_size(s) if kernel_size is None else kernel_size
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 or k % 2 == 0:
            raise DipkitError(f"kernel size must be an odd positive integer, got {kernel_size!r}")
        k = int(k)
        if k > min(h, w):
            raise DipkitError(f"kernel size {k} is larger than the {h}×{w} image "
                              "(give a smaller --kernel-size or --kernel-std)")
        padding = _check_padding(padding)
        filt = dF.gaussian_blur(psf_size=(k, k), sigma=(s, s), device=device, dtype=torch.float64)
        super().__init__(filter=filt.to(dtype), padding=padding, device=device)
        self.img_size = (c, h, w)
        self.spec = {"kind": "blur", "img_size": [c, h, w], "kernel_std": s, "kernel_size": k,
                     "padding": padding}


# ---------------------------------------------------------------------- downsampling
class DownsamplingOp(Downsampling):
    r"""Down-sampling ``y = S (h * x)`` by an integer ``factor`` (deepinv
    :class:`~deepinv.physics.Downsampling`; the image size, channels included, is fixed at
    construction, which deepinv needs for RGB). ``filter``: ``bicubic`` (default), ``bilinear``,
    ``gaussian`` (σ = factor), ``sinc`` or ``none``; the factor must divide ``H`` and ``W``."""

    def __init__(self, img_size, *, factor: int, filter: str = "bicubic", padding: str = "circular",
                 device="cpu", dtype=torch.float32):
        c, h, w = _check_img_size(img_size)
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 2:
            raise DipkitError(f"down-sampling factor must be an integer ≥ 2, got {factor!r}")
        factor = int(factor)
        if h % factor or w % factor:
            raise DipkitError(f"down-sampling factor {factor} does not divide the image size {h}×{w}")
        if filter not in DOWNSAMPLING_FILTERS:
            raise DipkitError(f"unknown down-sampling filter {filter!r} "
                              f"(choose from {', '.join(DOWNSAMPLING_FILTERS)})")
        padding = _check_padding(padding)
        super().__init__(img_size=(c, h, w), filter=None if filter == "none" else filter, factor=factor,
                         padding=padding, device=device)
        if self.filter is not None and (self.filter.shape[-2] > h or self.filter.shape[-1] > w):
            raise DipkitError(f"the {filter} filter of factor {factor} ({self.filter.shape[-2]}×"
                              f"{self.filter.shape[-1]}) is larger than the {h}×{w} image")
        _cast_buffers(self, dtype)
        self.img_size = (c, h, w)
        self.spec = {"kind": "downsampling", "img_size": [c, h, w], "factor": factor, "filter": str(filter),
                     "padding": padding}


# ---------------------------------------------------------------------- builders
@register_physics("denoising")
def _build_denoising(spec: dict, *, device="cpu", dtype=torch.float32) -> IdentityOp:
    check_spec_keys(spec, {"img_size"}, set(), "denoising")
    return IdentityOp(spec["img_size"], device=device, dtype=dtype)


@register_physics("inpainting")
def _build_inpainting(spec: dict, *, device="cpu", dtype=torch.float32) -> InpaintingOp:
    check_spec_keys(spec, {"img_size", "mask"}, {"box_ratio", "missing", "seed"}, "inpainting")
    return InpaintingOp(spec["img_size"], mask=spec["mask"], box_ratio=spec.get("box_ratio"),
                        missing=spec.get("missing"), seed=spec.get("seed"), device=device, dtype=dtype)


@register_physics("blur")
def _build_blur(spec: dict, *, device="cpu", dtype=torch.float32) -> BlurOp:
    check_spec_keys(spec, {"img_size", "kernel_std", "kernel_size"}, {"padding"}, "blur")
    return BlurOp(spec["img_size"], kernel_std=spec["kernel_std"], kernel_size=spec["kernel_size"],
                  padding=spec.get("padding", "circular"), device=device, dtype=dtype)


@register_physics("downsampling")
def _build_downsampling(spec: dict, *, device="cpu", dtype=torch.float32) -> DownsamplingOp:
    check_spec_keys(spec, {"img_size", "factor"}, {"filter", "padding"}, "downsampling")
    return DownsamplingOp(spec["img_size"], factor=spec["factor"], filter=spec.get("filter", "bicubic"),
                          padding=spec.get("padding", "circular"), device=device, dtype=dtype)
