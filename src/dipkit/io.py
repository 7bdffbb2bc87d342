"""Image input/output for dipkit: reading, resizing, bundled samples, atomic writes.

Conventions
-----------
* **Array layout.** Every image reader returns a ``numpy.ndarray`` of dtype
  ``float32`` and shape ``[C, H, W]`` with ``C == 1`` (grayscale) or ``C == 3`` (RGB).
* **Value range.** Integer pixel data is divided by the maximum of its dtype
  (``uint8`` / 255, ``uint16`` / 65535, 16-bit PNG / 65535, ``bool`` -> 0/1; signed
  integers are divided by their positive maximum, so negative values stay negative).
  Floating-point data (float TIFF, float ``.npy``) is taken **as is**, not clipped or
  rescaled. DICOM data is windowed into ``[0, 1]`` (see below). Bundled samples
  (:func:`load_sample`) are always in ``[0, 1]``.
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
  type, anything pydicom can read that carries Pixel Data). Compressed transfer
  syntaxes are decoded by whatever pydicom has available; with only Pillow that is
  JPEG baseline (8-bit) and JPEG 2000, plus RLE (pure Python). JPEG-LS and 12-bit
  JPEG extended need ``pylibjpeg`` + ``pylibjpeg-libjpeg`` or ``python-gdcm``.

DICOM window
------------
Monochrome pixel data is first mapped to modality values (Hounsfield units for CT)
with ``value = stored * RescaleSlope + RescaleIntercept`` (defaults 1 and 0; the
enhanced multi-frame functional groups are consulted too). It is then mapped linearly
to ``[0, 1]`` by a window ``(level, width)``::

    x = clip((value - (level - width / 2)) / width, 0, 1)

(the plain linear window, not the DICOM PS3.3 C.11.2.1.2 formula with its ``-0.5`` /
``width - 1`` offsets). The window used is:

* ``window=None`` (default): for CT, :data:`DEFAULT_CT_WINDOW` = ``(40, 2000)``
  HU, i.e. ``[-960, 1040]`` HU: a wide window that keeps air, fat, soft tissue and
  most bone unclipped (soft tissue lands near 0.5). It is chosen for reconstruction
  work, where clipping would destroy information, not for radiological reading.
  For any other modality (MR, NM, US, ...) the min-max of the slice is used, since
  those values have no absolute scale.
* ``window="auto"``: min-max of the slice, whatever the modality.
* ``window="file"``: the file's first WindowCenter/WindowWidth.
* ``window=(level, width)``: that window, in modality units.

``MONOCHROME1`` data (bright = low values) is inverted after windowing, so bright
always means high values. Colour DICOM (RGB, YBR converted to RGB by pydicom, palette
colour through its LUT) is not windowed but divided by ``2**BitsStored - 1`` (the
LUT's dtype maximum for palette colour). For multi-frame DICOM the middle frame
(index ``n_frames // 2``) is taken. A constant slice maps to all zeros.

Atomic writes
-------------
:func:`atomic_write` writes to a temporary file in the target's directory, fsyncs it
and renames it over the target with :func:`os.replace` only when the block succeeds;
on any error the temporary file is deleted and an existing target keeps its old
content. The ``save_*`` helpers are built on it. Missing parent directories are
created.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .errors import DipkitError

__all__ = [
    "DEFAULT_CT_WINDOW",
    "SAMPLES",
    "Sample",
    "atomic_write",
    "list_samples",
    "load_image_source",
    "load_sample",
    "read_image",
    "read_image_with_info",
    "resize_image",
    "sample_path",
    "save_figure",
    "save_json",
    "save_npy",
    "save_png",
    "save_text",
    "save_yaml",
]

#: Default CT window ``(level, width)`` in HU: ``[-960, 1040]`` HU, air to dense bone.
DEFAULT_CT_WINDOW: tuple[float, float] = (40.0, 2000.0)

_CHANNEL_CHOICES = ("auto", "gray", "rgb")
_LUMA_601 = np.array([0.299, 0.587, 0.114], dtype=np.float64)

_PIL_EXTS = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".webp",
             ".pgm", ".ppm", ".pnm", ".pbm"}
_TIFF_EXTS = {".tif", ".tiff"}
_NPY_EXTS = {".npy"}
_DICOM_EXTS = {".dcm", ".dicom", ".ima"}


# --------------------------------------------------------------------------- writes


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically.

    ``mode`` is ``"wb"`` (binary) or ``"w"``/``"wt"`` (UTF-8 text). Yields the open
    file object. If the block raises, the temporary file is removed, ``path`` is left
    untouched and the exception propagates. Failure to create or rename the file
    raises :class:`DipkitError`. The new file gets the usual ``0o666 & ~umask``
    permissions (or the old file's mode, when replacing one).
    """
    if mode not in ("wb", "w", "wt"):
        raise ValueError(f"atomic_write: mode must be 'wb', 'w' or 'wt', not {mode!r}")
    path = Path(path)
    if path.is_dir():
        raise DipkitError(f"cannot write {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise DipkitError(f"cannot write {path}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        if "b" in mode:
            fh = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding="utf-8", newline="")
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        try:
            perm = (path.stat().st_mode & 0o7777) if path.exists() else (0o666 & ~_umask())
            os.chmod(tmp, perm)
        except OSError:
            pass
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise DipkitError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    # Make the rename itself durable (best effort; not possible on every platform).
    with contextlib.suppress(OSError, AttributeError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def save_npy(path: str | os.PathLike[str], array: Any) -> Path:
    """Save ``array`` (NumPy array or tensor) as ``.npy`` atomically; no pickling."""
    arr = _as_numpy(array)
    with atomic_write(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    return Path(path)


def save_png(
    path: str | os.PathLike[str],
    image: Any,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """Save an image as an 8-bit PNG atomically.

    ``image`` is ``[H, W]``, ``[1, H, W]`` or ``[3, H, W]`` (NumPy array or tensor; a
    leading batch dimension of size 1 is dropped). Values are clipped to
    ``[vmin, vmax]`` (default ``[0, 1]``) and mapped linearly to 0..255; NaN becomes 0.
    The file is PNG whatever the extension.
    """
    from PIL import Image

    arr = _as_numpy(image).astype(np.float64)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] == 3:
        arr = np.moveaxis(arr, 0, -1)
    elif arr.ndim != 2:
        raise DipkitError(f"cannot save {path}: expected [H, W], [1, H, W] or [3, H, W], "
                          f"got shape {list(arr.shape)}")
    if arr.size == 0:
        raise DipkitError(f"cannot save {path}: the image is empty")
    lo = 0.0 if vmin is None else float(vmin)
    hi = 1.0 if vmax is None else float(vmax)
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise DipkitError(f"cannot save {path}: need finite vmin < vmax, got {lo}, {hi}")
    scaled = (np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo) - lo) / (hi - lo)
    u8 = np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(u8), mode="RGB" if u8.ndim == 3 else "L")
    with atomic_write(path, "wb") as fh:
        img.save(fh, format="PNG")
    return Path(path)


def _jsonable(obj: Any) -> Any:
    """Convert ``obj`` into plain JSON types; NaN and +-Inf become ``None``."""
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, np.ndarray) or hasattr(obj, "detach"):
        return _jsonable(_as_numpy(obj).tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def save_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Save ``obj`` as UTF-8 JSON (indent 2, trailing newline) atomically.

    NaN and infinities become ``null``; NumPy scalars/arrays, tuples and paths are
    converted to plain JSON types.
    """
    text = json.dumps(_jsonable(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


def _yamlable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {(_yamlable(k) if not isinstance(k, str) else k): _yamlable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_yamlable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) or hasattr(obj, "detach"):
        return _as_numpy(obj).tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def save_yaml(path: str | os.PathLike[str], obj: Any) -> Path:
    """Save ``obj`` as YAML (``yaml.safe_dump``, key order kept) atomically."""
    import yaml

    text = yaml.safe_dump(_yamlable(obj), sort_keys=False, allow_unicode=True)
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


def save_text(path: str | os.PathLike[str], text: str) -> Path:
    """Save a string as UTF-8 text atomically (written exactly as given)."""
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


def save_figure(path: str | os.PathLike[str], fig: Any, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure atomically; the format comes from the extension.

    ``savefig_kwargs`` go to :meth:`matplotlib.figure.Figure.savefig` (``dpi``,
    ``bbox_inches``, ...). An extension matplotlib does not support raises
    :class:`DipkitError`.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise DipkitError(f"cannot save figure {path}: unsupported extension '.{fmt}' "
                          f"(use one of: {', '.join(sorted(supported))})")
    savefig_kwargs.pop("format", None)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format=fmt, **savefig_kwargs)
    return path


# --------------------------------------------------------------------------- reads


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's message squeezed onto one line (at most ``limit`` characters)."""
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _int_scale(arr: np.ndarray) -> np.ndarray:
    """Integer/bool -> float32 divided by the dtype maximum; floats unchanged (float32)."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        return (arr.astype(np.float64) / float(np.iinfo(arr.dtype).max)).astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32)
    raise ValueError(f"unsupported pixel dtype {arr.dtype}")


def _to_chw(arr: np.ndarray, *, hwc_channels: tuple[int, ...] = (1, 3, 4)) -> np.ndarray:
    """Bring a 2-D or 3-D array to ``[C, H, W]`` with ``C`` in {1, 3} (alpha dropped)."""
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        if arr.shape[0] in (1, 3):
            return arr
        if arr.shape[-1] in hwc_channels:
            arr = np.moveaxis(arr, -1, 0)
            if arr.shape[0] == 4:
                arr = arr[:3]
            return arr
    raise ValueError(
        f"unsupported array shape {list(arr.shape)} (expected [H, W], [C, H, W] with C in "
        f"{{1, 3}} or [H, W, C] with C in {{{', '.join(map(str, hwc_channels))}}})"
    )


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


def _dicom_rescale(ds: Any, frame: int | None) -> tuple[float, float]:
    """(slope, intercept) from the top level or the enhanced functional groups."""

    def from_item(item: Any) -> tuple[float, float] | None:
        if "RescaleSlope" in item or "RescaleIntercept" in item:
            slope = item.get("RescaleSlope", 1.0)
            icpt = item.get("RescaleIntercept", 0.0)
            return float(slope if slope not in (None, "") else 1.0), float(icpt if icpt not in (None, "") else 0.0)
        return None

    found = from_item(ds)
    if found is not None:
        return found
    groups = []
    pffg = ds.get("PerFrameFunctionalGroupsSequence")
    if pffg and frame is not None and frame < len(pffg):
        groups.append(pffg[frame])
    sfg = ds.get("SharedFunctionalGroupsSequence")
    if sfg:
        groups.append(sfg[0])
    for group in groups:
        seq = group.get("PixelValueTransformationSequence")
        if seq:
            found = from_item(seq[0])
            if found is not None:
                return found
    return 1.0, 0.0


def _first_value(v: Any) -> float:
    if hasattr(v, "__len__") and not isinstance(v, (str, bytes)):
        v = v[0]
    return float(v)


def _parse_window(window: Any, path: Path) -> str | tuple[float, float] | None:
    if window is None:
        return None
    if isinstance(window, str):
        if window in ("auto", "file"):
            return window
        raise DipkitError(f"{path}: window must be None, 'auto', 'file' or (level, width), not {window!r}")
    try:
        level, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise DipkitError(
            f"{path}: window must be None, 'auto', 'file' or (level, width), not {window!r}"
        ) from None
    if not (math.isfinite(level) and math.isfinite(width) and width > 0):
        raise DipkitError(f"{path}: window (level, width) needs finite values and width > 0, "
                          f"got ({level}, {width})")
    return level, width


def _read_dicom(path: Path, window: Any, force: bool = False) -> tuple[np.ndarray, dict]:
    import pydicom
    from pydicom.pixels import apply_color_lut, pixel_array

    win = _parse_window(window, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img, meta = _read_dicom_inner(path, win, force, pydicom, apply_color_lut, pixel_array)
    notes = sorted({_first_line(w.message, 200) for w in caught})
    if notes:
        meta["dicom_warnings"] = notes
    return img, meta


def _read_dicom_inner(path: Path, win: Any, force: bool, pydicom: Any, apply_color_lut: Any,
                      pixel_array: Any) -> tuple[np.ndarray, dict]:
    try:
        ds = pydicom.dcmread(path, force=force)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types
        raise ValueError(f"not a readable DICOM file ({_first_line(exc)})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if force and not getattr(ds, "preamble", None) and len(ds) <= 1:
            raise ValueError("not a DICOM image file (no DICOM header or pixel data found)")
        raise ValueError("the DICOM file has no pixel data")
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    ts_name = getattr(tsyntax, "name", str(tsyntax)) if tsyntax else "unknown transfer syntax"
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n_frames = 1
    frame = n_frames // 2 if n_frames > 1 else None
    try:
        arr = pixel_array(ds, index=frame) if frame is not None else pixel_array(ds)
    except Exception as exc:  # noqa: BLE001
        hint = ""
        if tsyntax is not None and getattr(tsyntax, "is_compressed", False):
            hint = (" (install pylibjpeg with pylibjpeg-libjpeg/pylibjpeg-openjpeg, or "
                    "python-gdcm, to decode this transfer syntax)")
        raise ValueError(f"cannot decode the pixel data, {ts_name}: {_first_line(exc, 200)}{hint}") from None
    arr = np.asarray(arr)
    modality = str(ds.get("Modality", "") or "").upper()
    photometric = str(ds.get("PhotometricInterpretation", "") or "").upper()
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    meta: dict[str, Any] = {
        "format": "dicom",
        "modality": modality or None,
        "photometric": photometric or None,
        "transfer_syntax": ts_name,
    }
    if n_frames > 1:
        meta["frame"] = frame
        meta["n_frames"] = n_frames
    spacing = ds.get("PixelSpacing")
    if spacing is not None:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            meta["pixel_spacing"] = [float(spacing[0]), float(spacing[1])]

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        img = _to_chw(_int_scale(np.asarray(rgb)))
        return img, meta
    if spp > 1 or arr.ndim == 3:
        if arr.ndim != 3:
            raise ValueError(f"unexpected colour pixel array shape {list(arr.shape)}")
        bits = int(ds.get("BitsStored", 8 * arr.dtype.itemsize) or 8)
        if np.issubdtype(arr.dtype, np.floating):
            img = arr.astype(np.float32)
        else:
            img = (arr.astype(np.float64) / float(2**bits - 1)).astype(np.float32)
        return _to_chw(img, hwc_channels=(3, 4)), meta

    if arr.ndim != 2:
        raise ValueError(f"unexpected pixel array shape {list(arr.shape)}")
    slope, intercept = _dicom_rescale(ds, frame)
    values = arr.astype(np.float64) * slope + intercept
    if values.size == 0:
        raise ValueError("the DICOM image is empty")
    if not np.all(np.isfinite(values)):
        raise ValueError("the pixel data contains NaN or infinite values")
    meta["rescale"] = {"slope": slope, "intercept": intercept}
    meta["value_range"] = [float(values.min()), float(values.max())]
    if modality == "CT":
        meta["units"] = "HU"

    if win == "file":
        if "WindowCenter" not in ds or "WindowWidth" not in ds:
            raise DipkitError(f"{path}: window='file' but the DICOM file has no WindowCenter/WindowWidth")
        try:
            level, width = _first_value(ds.WindowCenter), _first_value(ds.WindowWidth)
        except (TypeError, ValueError, IndexError):
            raise DipkitError(f"{path}: unreadable WindowCenter/WindowWidth in the DICOM file") from None
        if not (math.isfinite(level) and math.isfinite(width) and width > 0):
            raise DipkitError(f"{path}: invalid window in the DICOM file ({level}, {width})")
        mode = "file"
    elif isinstance(win, tuple):
        level, width = win
        mode = "user"
    elif win is None and modality == "CT":
        level, width = DEFAULT_CT_WINDOW
        mode = "ct-default"
    else:  # "auto", or default for non-CT
        lo, hi = float(values.min()), float(values.max())
        level, width = (lo + hi) / 2.0, hi - lo
        mode = "min-max"
    if width > 0:
        img = np.clip((values - (level - width / 2.0)) / width, 0.0, 1.0)
    else:  # constant slice under min-max
        img = np.zeros_like(values)
    if photometric == "MONOCHROME1":
        img = 1.0 - img
    meta["window"] = [float(level), float(width)]
    meta["window_mode"] = mode
    return img.astype(np.float32)[None], meta


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
    ``pixel_spacing``. See the module docstring for formats, ranges and the window.
    """
    _check_channels_arg(channels)
    p = Path(path)
    if not p.exists():
        raise DipkitError(f"{p}: no such file")
    if p.is_dir():
        raise DipkitError(f"{p}: is a directory, not an image file")
    if not os.access(p, os.R_OK):
        raise DipkitError(f"{p}: permission denied")
    try:
        if p.stat().st_size == 0:
            raise DipkitError(f"{p}: the file is empty")
        img, info = _dispatch(p, window)
    except DipkitError:
        raise
    except MemoryError:
        raise DipkitError(f"{p}: the image is too large to load into memory") from None
    except Exception as exc:  # noqa: BLE001 - every reader failure becomes one line
        raise DipkitError(f"{p}: {_first_line(exc, 600)}") from None
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
    ``window`` applies to monochrome DICOM only: ``None`` (CT: :data:`DEFAULT_CT_WINDOW`,
    others: min-max), ``"auto"`` (min-max), ``"file"`` or ``(level, width)``.
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


# --------------------------------------------------------------------------- samples


class Sample(NamedTuple):
    """A bundled sample: ``loader() -> [C, H, W] float32 in [0, 1]``, a description, a kind."""

    loader: Callable[[], np.ndarray]
    description: str
    kind: str


def _pydicom_test_file(name: str) -> Path:
    """Path of a DICOM file bundled inside the installed pydicom (never downloads)."""
    import pydicom

    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    if not path.is_file():
        raise DipkitError(f"the DICOM test file {name} is not bundled with the installed "
                          f"pydicom {pydicom.__version__}")
    return path


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        arr = np.asarray(getattr(skimage.data, name)())
        return _to_chw(_int_scale(arr), hwc_channels=(3, 4))

    return load


def _dicom_sample(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return read_image(_pydicom_test_file(filename))

    return load


_DICOM_SAMPLES = {
    "ct": "CT_small.dcm",
    "ct-head": "693_J2KI.dcm",
    "mr": "MR_small.dcm",
}

#: name -> :class:`Sample`; every sample loads offline from installed packages.
SAMPLES: dict[str, Sample] = {
    "shepp-logan": Sample(_skimage("shepp_logan_phantom"),
                          "Shepp-Logan phantom, 400x400 gray (scikit-image)", "phantom"),
    "ct": Sample(_dicom_sample("CT_small.dcm"),
                 "real CT slice through a vertebra, 128x128, HU windowed "
                 "(pydicom test file CT_small.dcm)", "ct"),
    "ct-head": Sample(_dicom_sample("693_J2KI.dcm"),
                      "real head CT slice, 512x512, HU windowed; lossy JPEG 2000 with visible "
                      "compression artifacts (pydicom test file 693_J2KI.dcm)", "ct"),
    "mr": Sample(_dicom_sample("MR_small.dcm"),
                 "real MR slice, 64x64, min-max scaled (pydicom test file MR_small.dcm)", "mr"),
    "camera": Sample(_skimage("camera"), "cameraman photograph, 512x512 gray", "photo"),
    "astronaut": Sample(_skimage("astronaut"), "astronaut Eileen Collins, 512x512 RGB", "photo"),
    "coffee": Sample(_skimage("coffee"), "cup of coffee, 400x600 RGB", "photo"),
    "cat": Sample(_skimage("chelsea"), "Chelsea the cat, 300x451 RGB", "photo"),
    "rocket": Sample(_skimage("rocket"), "rocket launch, 427x640 RGB", "photo"),
    "coins": Sample(_skimage("coins"), "Greek coins, 303x384 gray", "photo"),
    "moon": Sample(_skimage("moon"), "lunar surface, 512x512 gray", "photo"),
    "clock": Sample(_skimage("clock"), "motion-blurred clock, 300x400 gray", "photo"),
    "text": Sample(_skimage("text"), "printed text photograph, 172x448 gray", "document"),
    "page": Sample(_skimage("page"), "scanned book page, 191x384 gray", "document"),
    "brick": Sample(_skimage("brick"), "brick wall texture, 512x512 gray", "texture"),
    "grass": Sample(_skimage("grass"), "grass texture, 512x512 gray", "texture"),
    "gravel": Sample(_skimage("gravel"), "gravel texture, 512x512 gray", "texture"),
    "cell": Sample(_skimage("cell"), "cell, phase-contrast microscopy, 660x550 gray", "microscopy"),
    "microaneurysms": Sample(_skimage("microaneurysms"),
                             "retinal microaneurysms, 102x102 gray", "microscopy"),
    "immunohistochemistry": Sample(_skimage("immunohistochemistry"),
                                   "immunohistochemistry stain, 512x512 RGB", "microscopy"),
    "retina": Sample(_skimage("retina"), "human retina fundus photograph, 1411x1411 RGB",
                     "microscopy"),
    "hubble": Sample(_skimage("hubble_deep_field"), "Hubble deep field, 872x1000 RGB",
                     "astronomy"),
}


def _normalize_sample_name(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    if key not in SAMPLES:
        raise DipkitError(f"unknown sample {name!r}; valid samples: {', '.join(SAMPLES)}")
    return key


def list_samples() -> dict[str, str]:
    """Return ``{name: description}`` for every bundled sample."""
    return {name: s.description for name, s in SAMPLES.items()}


def load_sample(name: str, *, channels: str = "auto") -> np.ndarray:
    """Load a bundled sample as a ``[C, H, W]`` float32 array in ``[0, 1]``.

    Names are case-insensitive and ``_`` may stand for ``-``. An unknown name raises
    :class:`DipkitError` listing the valid names. DICOM samples use the default
    window (see the module docstring).
    """
    _check_channels_arg(channels)
    key = _normalize_sample_name(name)
    try:
        img = SAMPLES[key].loader()
    except DipkitError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DipkitError(f"cannot load sample {key!r}: {_first_line(exc)}") from None
    img = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    return np.ascontiguousarray(_convert_channels(img, channels), dtype=np.float32)


def sample_path(name: str) -> Path:
    """Path of the DICOM file behind a DICOM sample (``ct``, ``ct-head``, ``mr``).

    Other samples are generated in memory and raise :class:`DipkitError`.
    """
    key = _normalize_sample_name(name)
    if key not in _DICOM_SAMPLES:
        raise DipkitError(f"sample {key!r} has no file; samples with a DICOM file: "
                          f"{', '.join(_DICOM_SAMPLES)}")
    return _pydicom_test_file(_DICOM_SAMPLES[key])


# --------------------------------------------------------------------------- source


def load_image_source(
    image: str | os.PathLike[str] | None,
    sample: str | None,
    *,
    size: int | None = None,
    channels: str = "auto",
    window: Any = None,
) -> tuple[np.ndarray, dict]:
    """Load the ground-truth image from a file (``image``) or a sample (``sample``).

    Exactly one of ``image`` and ``sample`` must be given. If ``size`` is given the
    image is center-cropped to a square and resized to ``size x size``
    (:func:`resize_image`). Returns ``(img [C, H, W] float32, meta)``; ``meta`` has
    ``source`` (``"file"``/``"sample"``), ``path`` (the file, or the DICOM file of a
    DICOM sample, else ``None``), ``sample``, ``format``, ``original_shape``,
    ``shape``, ``resized``, ``channels`` and, for DICOM, ``window`` and the other
    DICOM fields of :func:`read_image_with_info` (``pixel_spacing`` is rescaled to the
    resized pixels; the stored one is kept as ``original_pixel_spacing``). ``window`` is passed to the DICOM
    reader (ignored for other formats).
    """
    if (image is None) == (sample is None):
        raise DipkitError("give exactly one of an image file or a sample name"
                          + (" (got both)" if image is not None else " (got neither)"))
    _check_channels_arg(channels)
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer))
                             or size <= 0):
        raise DipkitError(f"size must be a positive integer, not {size!r}")
    meta: dict[str, Any]
    if image is not None:
        img, info = read_image_with_info(image, channels=channels, window=window)
        meta = {"source": "file", "path": str(image), "sample": None, **info}
    else:
        key = _normalize_sample_name(sample)  # type: ignore[arg-type]
        if key in _DICOM_SAMPLES:
            path = sample_path(key)
            img, info = read_image_with_info(path, channels=channels, window=window)
            img = np.clip(img, 0.0, 1.0)
            meta = {"source": "sample", "path": str(path), "sample": key, **info}
        else:
            try:
                raw = np.asarray(SAMPLES[key].loader(), dtype=np.float32)
            except Exception as exc:  # noqa: BLE001
                raise DipkitError(f"cannot load sample {key!r}: {_first_line(exc)}") from None
            meta = {"source": "sample", "path": None, "sample": key, "format": "builtin",
                    "original_shape": [int(s) for s in raw.shape]}
            img = _convert_channels(np.clip(raw, 0.0, 1.0), channels)
        meta["description"] = SAMPLES[key].description
        meta["kind"] = SAMPLES[key].kind
    meta["resized"] = False
    if size is not None and tuple(img.shape[1:]) != (size, size):
        side = min(img.shape[1:])
        img = resize_image(img, int(size))
        meta["resized"] = True
        if "pixel_spacing" in meta:  # physical size of the new pixels (after the square crop)
            meta["original_pixel_spacing"] = meta["pixel_spacing"]
            meta["pixel_spacing"] = [float(s) * side / int(size) for s in meta["pixel_spacing"]]
    meta["shape"] = [int(s) for s in img.shape]
    meta["channels"] = int(img.shape[0])
    return img, meta
