r"""Operators given by arrays (a measured inpainting mask, a measured blur kernel) and the JSON
array codec that lets a spec carry such arrays.

A problem file holds the operator as a JSON spec (:mod:`dipkit.problem`), so an operator defined
by data -- a mask or kernel read by ``dipkit import``, MRI coil sensitivities -- stores its
arrays inside the spec, losslessly:

* :func:`encode_array` / :func:`decode_array`: ``{"dtype": "float32", "shape": [...],
  "zlib_base64": "..."}`` -- the raw little-endian bytes, zlib-compressed, base64 text;
* :func:`encode_mask` / :func:`decode_mask`: ``{"shape": [...], "packbits_base64": "..."}`` --
  a 0/1 array as one bit per entry (``numpy.packbits``).

Operator kinds defined here (the built-in ``inpainting`` and ``blur`` kinds of
:mod:`dipkit.physics.restoration` are generated from parameters):

=================  ==============================================  ==============================
kind               operator                                        spec (besides ``img_size``)
=================  ==============================================  ==============================
``inpainting-mask``  ``y = m ⊙ x`` with a given 0/1 mask            ``mask`` (:func:`encode_mask`,
                   (:class:`deepinv.physics.Inpainting`)            ``[H, W]`` or ``[C, H, W]``)
``blur-kernel``    ``y = h * x`` with a given kernel, circular      ``kernel`` (:func:`encode_array`,
                   boundary (:class:`deepinv.physics.Blur`)         odd ``[kh, kw]``), ``padding``
=================  ==============================================  ==============================
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

import numpy as np
import torch
from deepinv.physics import Blur, Inpainting

from ..errors import DipkitError
from . import check_spec_keys, register_physics

__all__ = ["encode_array", "decode_array", "encode_mask", "decode_mask", "MaskInpaintingOp",
           "KernelBlurOp"]

_CODEC_DTYPES = ("float32", "float64", "complex64", "complex128", "uint8", "int32", "int64")


def encode_array(arr: Any) -> dict:
    """A JSON-serialisable, lossless encoding of a numeric array (see the module docstring)."""
    a = np.asarray(arr)
    if a.dtype.name not in _CODEC_DTYPES:
        raise DipkitError(f"cannot store an array of dtype {a.dtype} in an operator spec")
    raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    return {"dtype": a.dtype.name, "shape": [int(s) for s in a.shape],
            "zlib_base64": base64.b64encode(zlib.compress(raw, 6)).decode("ascii")}


def decode_array(obj: Any, what: str = "array") -> np.ndarray:
    """Inverse of :func:`encode_array`; any defect raises :class:`DipkitError`."""
    try:
        dtype = np.dtype(obj["dtype"])
        if dtype.name not in _CODEC_DTYPES:
            raise ValueError(f"dtype {dtype}")
        shape = tuple(int(s) for s in obj["shape"])
        raw = zlib.decompress(base64.b64decode(obj["zlib_base64"], validate=True))
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    except (KeyError, TypeError, ValueError, zlib.error) as exc:
        raise DipkitError(f"invalid encoded {what} in operator spec ({exc})") from None


def encode_mask(mask: Any) -> dict:
    """One bit per entry of a 0/1 (boolean) array."""
    m = np.asarray(mask) != 0
    return {"shape": [int(s) for s in m.shape],
            "packbits_base64": base64.b64encode(np.packbits(m.reshape(-1))).decode("ascii")}


def decode_mask(obj: Any, what: str = "mask") -> np.ndarray:
    """Inverse of :func:`encode_mask`: a float64 0/1 array."""
    try:
        shape = tuple(int(s) for s in obj["shape"])
        bits = np.frombuffer(base64.b64decode(obj["packbits_base64"], validate=True), dtype=np.uint8)
        size = int(np.prod(shape))
        if bits.size != (size + 7) // 8:
            raise ValueError(f"{bits.size} bytes for {size} entries")
        return np.unpackbits(bits)[:size].reshape(shape).astype(np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise DipkitError(f"invalid encoded {what} in operator spec ({exc})") from None


def _img_size(img_size: Any) -> tuple[int, int, int]:
    try:
        c, h, w = (int(s) for s in img_size)
    except (TypeError, ValueError):
        raise DipkitError(f"img_size must be [C, H, W], got {img_size!r}") from None
    if min(c, h, w) < 1:
        raise DipkitError(f"img_size must be positive, got {[c, h, w]}")
    return c, h, w


class MaskInpaintingOp(Inpainting):
    """Inpainting ``y = m ⊙ x`` with a given kept-pixel mask (1 = observed), ``[H, W]`` (the same
    for every channel) or ``[C, H, W]``."""

    def __init__(self, img_size, mask, *, device="cpu", dtype=torch.float32):
        c, h, w = _img_size(img_size)
        m = np.asarray(mask, dtype=np.float64)
        if m.shape == (h, w):
            m3 = np.broadcast_to(m, (c, h, w))
        elif m.shape == (c, h, w):
            m3 = m
        else:
            raise DipkitError(f"the inpainting mask has shape {list(m.shape)}, expected [{h}, {w}] "
                              f"or [{c}, {h}, {w}] for an image [{c}, {h}, {w}]")
        if not np.all((m3 == 0) | (m3 == 1)):
            raise DipkitError("the inpainting mask must hold only 0 (missing) and 1 (observed)")
        if not m3.any():
            raise DipkitError("the inpainting mask observes no pixel")
        mt = torch.from_numpy(np.array(m3)).to(dtype)  # a writable copy (m3 may be a broadcast view)
        super().__init__(img_size=(c, h, w), mask=mt.to(device), device=device)
        self.spec = {"kind": "inpainting-mask", "img_size": [c, h, w], "mask": encode_mask(m)}

    @property
    def missing_fraction(self) -> float:
        return 1.0 - float(self.mask.mean())

    def A_dagger(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.mask * y


class KernelBlurOp(Blur):
    """Blur ``y = h * x`` with a given kernel ``[kh, kw]`` (odd sizes, centred; used as given,
    not normalised), the same for every channel, circular boundary by default."""

    def __init__(self, img_size, kernel, *, padding: str = "circular", device="cpu",
                 dtype=torch.float32):
        c, h, w = _img_size(img_size)
        k = np.asarray(kernel, dtype=np.float64)
        if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
            raise DipkitError(f"the blur kernel must be a 2-D array of odd sizes, got shape {list(k.shape)}")
        if k.shape[0] > h or k.shape[1] > w:
            raise DipkitError(f"the {k.shape[0]}×{k.shape[1]} blur kernel is larger than the {h}×{w} image")
        if not np.all(np.isfinite(k)) or not np.any(k):
            raise DipkitError("the blur kernel must be finite and not all zero")
        if padding not in ("circular", "reflect", "replicate"):
            raise DipkitError(f"unknown padding {padding!r} (choose from circular, reflect, replicate)")
        filt = torch.from_numpy(np.ascontiguousarray(k))[None, None].to(dtype)
        super().__init__(filter=filt.to(device), padding=padding, device=device)
        self.img_size = (c, h, w)
        self.spec = {"kind": "blur-kernel", "img_size": [c, h, w],
                     "kernel": encode_array(k.astype(np.float64)), "padding": padding}


@register_physics("inpainting-mask")
def _build_mask_inpainting(spec: dict, *, device="cpu", dtype=torch.float32) -> MaskInpaintingOp:
    check_spec_keys(spec, {"img_size", "mask"}, set(), "inpainting-mask")
    return MaskInpaintingOp(spec["img_size"], decode_mask(spec["mask"]), device=device, dtype=dtype)


@register_physics("blur-kernel")
def _build_kernel_blur(spec: dict, *, device="cpu", dtype=torch.float32) -> KernelBlurOp:
    check_spec_keys(spec, {"img_size", "kernel"}, {"padding"}, "blur-kernel")
    return KernelBlurOp(spec["img_size"], decode_array(spec["kernel"], "blur kernel"),
                        padding=spec.get("padding", "circular"), device=device, dtype=dtype)
