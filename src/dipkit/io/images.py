"""Image readers: format sniffing, Pillow/TIFF/NPY readers, channels, resizing.

:func:`read_image` and :func:`read_image_with_info` read every supported format;
DICOM files are handed to :mod:`dipkit.io.dicom`. :func:`resize_image` crops and
resizes to a square.

Conventions
-----------
* **Array layout.** Every image reader returns a ``numpy.ndarray`` of dtype
  ``float32`` and shape ``[C, H, W]`` with ``C == 1`` (grayscale) or ``C == 3`` (RGB).
* **Value range.** Integer pixel data is divided by the maximum of its dtype
  (``uint8`` / 255, ``uint16`` / 65535, 16-bit PNG / 65535, ``bool`` -> 0/1; signed
  integers are divided by their positive maximum, so negative values stay negative).
  Floating-point data (float TIFF, float ``.npy``) is taken **as is**, not clipped or
  rescaled. DICOM data is windowed into ``[0, 1]`` (see :mod:`dipkit.io.dicom`).
  Bundled samples (:func:`dipkit.io.samples.load_sample`) are always in ``[0, 1]``.
* **Channels.** ``channels="auto"`` keeps what the file holds (RGBA and LA lose their
  alpha channel, which is dropped, not composited; palette images become RGB);
  ``"gray"`` converts RGB to luminance with the ITU-R BT.601 weights
  ``0.299 R + 0.587 G + 0.114 B``; ``"rgb"`` replicates a gray channel three times.
* **Rejected input.** A missing or unreadable file, an unknown format, an empty image,
  a wrong shape, and any NaN or infinite value raise :class:`dipkit.errors.DipkitError`
  with a one-line message that names the file and the problem.

Formats
-------
The format is found from the file's content first (DICOM ``DICM`` magic at byte 128,
NumPy ``.npy`` magic, TIFF magic), then from the extension:

* PNG, JPEG, BMP, GIF (first frame), WebP, PNM: Pillow. JPEG EXIF orientation is
  applied. 16-bit grayscale PNG is read at full depth; Pillow reads 16-bit *RGB* PNG
  as 8-bit.
* TIFF: ``tifffile`` (Pillow if tifffile is missing). For a stack (several pages or a
  leading ``Z``/``T``/``Q`` axis) the middle image is taken.
* ``.npy``: ``np.load(allow_pickle=False)``; accepted shapes ``[H, W]``,
  ``[C, H, W]`` with ``C`` in {1, 3}, ``[H, W, C]`` with ``C`` in {1, 3, 4}.
* DICOM (``.dcm``/``.dicom``/``.ima``, the ``DICM`` magic, or, for a file of unknown
  type, anything pydicom can read that carries Pixel Data): read by
  :mod:`dipkit.io.dicom`, which describes the decoders and the window.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DipkitError
from ._common import _first_line, _int_scale, _to_chw
from .dicom import _read_dicom
from .guard import guarded

__all__ = ["read_image", "read_image_with_info", "resize_image"]

_CHANNEL_CHOICES = ("auto", "gray", "rgb")
_LUMA_601 = np.array([0.299, 0.587, 0.114], dtype=np.float64)

_PIL_EXTS = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".webp",
             ".pgm", ".ppm", ".pnm", ".pbm"}
_TIFF_EXTS = {".tif", ".tiff"}
_NPY_EXTS = {".npy"}
_DICOM_EXTS = {".dcm", ".dicom", ".ima"}


def _convert_channels(img: np.ndarray, channels: str) -> np.ndarray:
    c = img.shape[0]
    if channels == "auto":
        return img
    if channels == "gray":
        if c == 1:
            return img
        return np.tensordot(_LUMA_601, img.astype(np.float64), axes=(0, 0))[None].astype(np.float32)
    if channels == "rgb":
        return img if c == 3 else np.repeat(img, 3, axis=0)
    raise DipkitError(f"channels must be one of {', '.join(_CHANNEL_CHOICES)}, not {channels!r}")


def _check_channels_arg(channels: str) -> None:
    if channels not in _CHANNEL_CHOICES:
        raise DipkitError(f"channels must be one of {', '.join(_CHANNEL_CHOICES)}, not {channels!r}")


def _sniff(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return None
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None


def _read_pillow(path: Path) -> tuple[np.ndarray, dict]:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        fmt = (im.format or "").lower()
        im.load()
        with contextlib.suppress(Exception):
            im = ImageOps.exif_transpose(im)
        mode = im.mode
        if mode == "1":
            arr = np.asarray(im.convert("L")) > 0
        elif mode in ("L", "RGB"):
            arr = np.asarray(im)
        elif mode == "LA":
            arr = np.asarray(im.convert("L"))
        elif mode in ("I;16", "I;16L", "I;16B", "I;16N"):
            arr = np.asarray(im).astype(np.uint16)
        elif mode == "I":
            raw = np.asarray(im)
            if fmt in ("png", "ppm") or (raw.size and raw.min() >= 0 and raw.max() <= 65535):
                arr = raw.astype(np.uint16)  # 16-bit data that Pillow holds as int32
            else:
                arr = raw.astype(np.int32)
        elif mode == "F":
            arr = np.asarray(im).astype(np.float32)
        else:  # P, PA, RGBA, CMYK, YCbCr, LAB, HSV, RGBX, ...
            arr = np.asarray(im.convert("RGB"))
    return _to_chw(_int_scale(np.asarray(arr))), {"format": fmt or "image"}


def _read_tiff(path: Path) -> tuple[np.ndarray, dict]:
    try:
        import tifffile
    except ImportError:  # pragma: no cover - tifffile comes with scikit-image
        img, meta = _read_pillow(path)
        meta["format"] = "tiff"
        return img, meta
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ValueError("no image in the TIFF file")
        series = tif.series[0]
        axes = series.axes
        arr = series.asarray()
        n_pages = len(tif.pages)
    meta: dict[str, Any] = {"format": "tiff"}
    # Reduce to Y, X (+ S for samples); take the middle of any other axis (stack, time...).
    if arr.ndim != len(axes):
        raise ValueError(f"inconsistent TIFF axes {axes!r} for shape {list(arr.shape)}")
    keep = {"Y", "X", "S"}
    for ax_i in reversed(range(arr.ndim)):
        if axes[ax_i] not in keep:
            n = arr.shape[ax_i]
            if n > 1:
                meta.setdefault("stack_index", {})[axes[ax_i]] = n // 2
            arr = np.take(arr, n // 2, axis=ax_i)
    axes_left = "".join(a for a in axes if a in keep)
    if "S" in axes_left:
        arr = np.moveaxis(arr, axes_left.index("S"), 0)
        if arr.shape[0] == 2:  # gray + alpha
            arr = arr[:1]
        elif arr.shape[0] >= 4:
            arr = arr[:3]
        elif arr.shape[0] not in (1, 3):
            raise ValueError(f"unsupported number of TIFF samples per pixel: {arr.shape[0]}")
    elif arr.ndim == 2:
        arr = arr[None]
    else:
        raise ValueError(f"unsupported TIFF axes {axes!r}")
    if n_pages > 1:
        meta["pages"] = n_pages
    return _int_scale(arr), meta


def _read_npy(path: Path) -> tuple[np.ndarray, dict]:
    arr = np.load(path, allow_pickle=False)
    if not isinstance(arr, np.ndarray):
        raise ValueError("not a single .npy array")
    if arr.size == 0:
        raise ValueError(f"the array is empty (shape {list(arr.shape)})")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"unsupported dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ValueError(f"complex arrays are not images (dtype {arr.dtype})")
    arr = _to_chw(arr)
    return _int_scale(arr), {"format": "npy", "dtype": str(arr.dtype)}


def _dispatch(path: Path, window: Any) -> tuple[np.ndarray, dict]:
    kind = _sniff(path)
    ext = path.suffix.lower()
    if kind is None:
        if ext in _NPY_EXTS:
            kind = "npy"
        elif ext in _DICOM_EXTS:
            kind = "dicom-force"
        elif ext in _TIFF_EXTS:
            kind = "tiff"
        elif ext in _PIL_EXTS:
            kind = "pillow"
    if kind == "npy":
        return _read_npy(path)
    if kind == "dicom":
        return _read_dicom(path, window)
    if kind == "dicom-force":
        return _read_dicom(path, window, force=True)
    if kind == "tiff":
        return _read_tiff(path)
    if kind == "pillow":
        try:
            return _read_pillow(path)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"not a readable {ext.lstrip('.').upper() or 'image'} file "
                             f"({_first_line(exc)})") from None
    # Unknown extension and no magic: try Pillow, then pydicom (DICOM without preamble).
    try:
        return _read_pillow(path)
    except DipkitError:
        raise
    except Exception:  # noqa: BLE001
        pass
    try:
        return _read_dicom(path, window, force=True)
    except DipkitError:
        raise
    except Exception:  # noqa: BLE001
        pass
    raise ValueError(
        "unknown image format (supported: PNG, JPEG, BMP, GIF, WebP, PNM, TIFF, .npy, DICOM)"
    )


def read_image_with_info(
    path: str | os.PathLike[str],
    *,
    channels: str = "auto",
    window: Any = None,
) -> tuple[np.ndarray, dict]:
    """Read an image file; return ``([C, H, W] float32 array, info dict)``.

    ``info`` holds ``format``, ``original_shape`` (``[C, H, W]`` as stored, before the
    channel conversion) and, for DICOM, ``modality``, ``window`` (``[level, width]``
    actually applied), ``window_mode``, ``rescale``, ``value_range``,
    ``transfer_syntax`` and, where present, ``frame``/``n_frames`` and
    ``pixel_spacing``. See the module docstring for formats and ranges, and
    :mod:`dipkit.io.dicom` for the window.
    """
    _check_channels_arg(channels)
    p = Path(path)
    if not p.exists():
        raise DipkitError(f"{p}: no such file")
    if p.is_dir():
        raise DipkitError(f"{p}: is a directory, not an image file")
    if not os.access(p, os.R_OK):
        raise DipkitError(f"{p}: permission denied")
    with guarded(p, "image"):  # every reader failure becomes one line (dipkit.io.guard)
        if p.stat().st_size == 0:
            raise DipkitError(f"{p}: the file is empty")
        img, info = _dispatch(p, window)
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise DipkitError(f"{p}: unsupported image shape {list(img.shape)}")
    if img.shape[1] == 0 or img.shape[2] == 0:
        raise DipkitError(f"{p}: the image is empty (shape {list(img.shape)})")
    finite = np.isfinite(img)
    if not finite.all():
        n_nan = int(np.isnan(img).sum())
        n_inf = int(img.size - finite.sum() - n_nan)
        raise DipkitError(f"{p}: the image contains non-finite values ({n_nan} NaN, {n_inf} Inf)")
    info = dict(info)
    info["original_shape"] = [int(s) for s in img.shape]
    img = _convert_channels(img, channels)
    return np.ascontiguousarray(img, dtype=np.float32), info


def read_image(
    path: str | os.PathLike[str],
    *,
    channels: str = "auto",
    window: Any = None,
) -> np.ndarray:
    """Read an image file as a ``[C, H, W]`` float32 array (``C`` is 1 or 3).

    ``channels``: ``"auto"`` (as stored), ``"gray"`` (BT.601 luminance) or ``"rgb"``.
    ``window`` applies to monochrome DICOM only: ``None`` (CT:
    :data:`~dipkit.io.dicom.DEFAULT_CT_WINDOW`, others: min-max), ``"auto"`` (min-max),
    ``"file"`` or ``(level, width)``.
    Any failure raises :class:`DipkitError` naming the file.
    """
    return read_image_with_info(path, channels=channels, window=window)[0]


# --------------------------------------------------------------------------- resize


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a ``[C, H, W]`` image to ``[C, size, size]``.

    A non-square image is first center-cropped to a square of side ``min(H, W)``
    (the extra row/column of an odd difference is dropped from the bottom/right).
    Resizing uses ``skimage.transform.resize`` with bilinear interpolation
    (``order=1``: no overshoot, so a ``[0, 1]`` image stays in ``[0, 1]``) and
    ``anti_aliasing=True`` (a Gaussian pre-filter when shrinking). Returns float32.
    """
    from skimage.transform import resize

    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise DipkitError(f"size must be a positive integer, not {size!r}")
    size = int(size)
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise DipkitError(f"resize_image expects a non-empty [C, H, W] array, got shape {list(arr.shape)}")
    _, h, w = arr.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    arr = arr[:, top:top + side, left:left + side].astype(np.float64)
    if side == size:
        return np.ascontiguousarray(arr, dtype=np.float32)
    out = np.stack([
        resize(ch, (size, size), order=1, mode="reflect", anti_aliasing=True, preserve_range=True)
        for ch in arr
    ])
    return np.ascontiguousarray(out, dtype=np.float32)
