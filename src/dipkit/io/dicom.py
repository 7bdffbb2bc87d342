"""DICOM reading: pixel decoding, modality rescale and the window to ``[0, 1]``.

DICOM files are recognised by :func:`dipkit.io.images.read_image` (see "Formats" in
:mod:`dipkit.io.images`) and read here.

Decoding
--------
Compressed transfer syntaxes are decoded by whatever pydicom has available; with only
Pillow that is JPEG baseline (8-bit) and JPEG 2000, plus RLE (pure Python). JPEG-LS
and 12-bit JPEG extended need ``pylibjpeg`` + ``pylibjpeg-libjpeg`` or
``python-gdcm``.

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
"""

from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DipkitError
from ._common import _first_line, _int_scale, _to_chw

__all__ = ["DEFAULT_CT_WINDOW"]

#: Default CT window ``(level, width)`` in HU: ``[-960, 1040]`` HU, air to dense bone.
DEFAULT_CT_WINDOW: tuple[float, float] = (40.0, 2000.0)


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

