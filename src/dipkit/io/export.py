r"""Exports of a reconstruction beside the NumPy array: float TIFF, Hounsfield units, DICOM, and the
magnitude and phase of complex (MRI) images. Used by :func:`dipkit.run.rundir.write_run_dir`; every file
is written atomically (:func:`dipkit.io.atomic_write`).

* :func:`save_tiff` — a ``[C, H, W]`` float32 image as a float32 TIFF (tifffile): one gray page for
  ``C = 1``, an RGB planar image for ``C = 3``, else ``C`` gray pages.
* :func:`hu_window` / :func:`to_hu` — for a CT problem simulated from (or imported as) a DICOM CT
  slice, ``meta["source"]`` records the window ``(level, width)`` that :mod:`dipkit.io.dicom` used to
  map Hounsfield units to [0, 1], ``x = (HU − (level − width/2)) / width``; the reconstruction is
  mapped back linearly, ``HU = level − width/2 + width · x`` (no clipping: values outside [0, 1]
  become HU outside the window; ``MONOCHROME1`` data, inverted on reading, is inverted back).
* :func:`write_dicom` — one CT slice in HU (``CT Image Storage``, explicit VR little endian,
  signed 16-bit with the source's rescale slope/intercept when known, else 1/0), carrying what is
  known of the source's geometry: ``PixelSpacing`` (of the resized pixels), and — read from
  ``meta["source"]`` (``image_position``, ``image_orientation``, ``slice_thickness``,
  ``slice_location``, ``patient_position``) or from the source DICOM file when it is still at its
  path — ``ImagePositionPatient`` (moved to the centre of the first pixel of the centre-cropped
  and resized image), ``ImageOrientationPatient``, ``SliceThickness``, ``SliceLocation`` and
  ``PatientPosition``. **No identifier is copied**: study, series, instance and frame-of-reference
  UIDs are new (``pydicom.uid.generate_uid``), the patient's name and ID are left empty; the
  window is the source's; the image type is ``DERIVED\SECONDARY``.
* :func:`complex_parts` — ``[2, H, W]`` (real, imaginary) → magnitude and phase ``[1, H, W]``
  (``atan2(imag, real)`` in radians, in (−π, π]).
"""

from __future__ import annotations

import datetime
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DipkitError
from .write import atomic_write

__all__ = ["save_tiff", "hu_window", "to_hu", "write_dicom", "complex_parts", "source_geometry"]

#: CT Image Storage SOP class
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def save_tiff(path: str | os.PathLike[str], image: Any) -> Path:
    """Save a ``[C, H, W]`` (or ``[H, W]``) image as a float32 TIFF atomically (module docs)."""
    import tifffile

    arr = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (2, 3):
        raise DipkitError(f"cannot save {path}: expected [C, H, W] or [H, W], got shape {list(arr.shape)}")
    kwargs: dict[str, Any] = {"photometric": "minisblack"}
    if arr.ndim == 3 and arr.shape[0] == 3:
        kwargs = {"photometric": "rgb", "planarconfig": "separate"}
    buf = io.BytesIO()  # tifffile names its file by the handle's .name, an fd number for atomic_write's
    tifffile.imwrite(buf, np.ascontiguousarray(arr), **kwargs)
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())
    return Path(path)


# ---------------------------------------------------------------------- Hounsfield units
def hu_window(source: dict | None) -> tuple[float, float, bool] | None:
    """``(level, width, inverted)`` of a DICOM CT source (``meta["source"]``), or None when the
    source is not a DICOM CT slice with a recorded window."""
    if not isinstance(source, dict):
        return None
    window = source.get("window")
    is_ct = str(source.get("modality") or "").upper() == "CT" or source.get("units") == "HU"
    if source.get("format") != "dicom" or not is_ct or not isinstance(window, (list, tuple)) or len(window) != 2:
        return None
    level, width = float(window[0]), float(window[1])
    if not (math.isfinite(level) and math.isfinite(width) and width > 0):
        return None
    return level, width, str(source.get("photometric") or "").upper() == "MONOCHROME1"


def to_hu(x: np.ndarray, window: tuple[float, float, bool]) -> np.ndarray:
    """A reconstruction in [0, 1] units back to HU with the source's window (module docs)."""
    level, width, inverted = window
    x = np.asarray(x, dtype=np.float64)
    if inverted:
        x = 1.0 - x
    return (level - width / 2.0 + width * x).astype(np.float32)


# ---------------------------------------------------------------------- complex images
def complex_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[2, H, W]`` (real, imaginary) → ``(magnitude, phase)``, each ``[1, H, W]`` float32."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] != 2:
        raise DipkitError(f"a complex image has 2 channels (real, imaginary), got shape {list(x.shape)}")
    mag = np.sqrt(x[0] ** 2 + x[1] ** 2)[None]
    phase = np.arctan2(x[1], x[0])[None]
    return mag.astype(np.float32), phase.astype(np.float32)


# ---------------------------------------------------------------------- DICOM
def _floats(v, n: int) -> list[float] | None:
    try:
        out = [float(t) for t in v]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(t) for t in out) else None


def _read_source_tags(path) -> dict:
    """Geometry tags of the source DICOM file, when it is still readable at its path."""
    if not path or not Path(path).is_file():
        return {}
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - the source may have moved or changed; geometry is optional
        return {}
    out = {}
    for key, tag in (("image_position", "ImagePositionPatient"), ("image_orientation", "ImageOrientationPatient"),
                     ("slice_thickness", "SliceThickness"), ("slice_location", "SliceLocation"),
                     ("patient_position", "PatientPosition")):
        if tag in ds and ds.get(tag) not in (None, ""):
            v = ds.get(tag)
            out[key] = str(v) if key == "patient_position" else (list(v) if hasattr(v, "__len__") else v)
    return out


def source_geometry(source: dict, shape: tuple[int, int]) -> dict:
    """The geometry tags of the reconstruction (``shape = (H, W)``) from the source's: pixel spacing,
    and position (moved to the first pixel of the centre-cropped, resized image), orientation,
    slice thickness/location and patient position where known (module docs)."""
    geo: dict[str, Any] = {}
    tags = {**_read_source_tags(source.get("path")), **{k: source[k] for k in (
        "image_position", "image_orientation", "slice_thickness", "slice_location", "patient_position")
        if source.get(k) is not None}}
    spacing = _floats(source.get("pixel_spacing") or [], 2)
    if spacing:
        geo["PixelSpacing"] = spacing
    h, w = shape
    orig = source.get("original_shape") or []
    orig_spacing = _floats(source.get("original_pixel_spacing") or source.get("pixel_spacing") or [], 2)
    ipp, iop = _floats(tags.get("image_position") or [], 3), _floats(tags.get("image_orientation") or [], 6)
    if ipp and iop and orig_spacing and len(orig) >= 2:
        rows, cols = int(orig[-2]), int(orig[-1])
        if (rows, cols) == (h, w):
            r_idx = c_idx = 0.0
        else:  # centre crop to a square, then resampled to h × w (dipkit.io.resize_image)
            side = min(rows, cols)
            r_idx = (rows - side) // 2 + 0.5 * side / h - 0.5
            c_idx = (cols - side) // 2 + 0.5 * side / w - 0.5
        row_dir, col_dir = np.array(iop[:3]), np.array(iop[3:])
        pos = np.array(ipp) + row_dir * c_idx * orig_spacing[1] + col_dir * r_idx * orig_spacing[0]
        geo["ImagePositionPatient"] = [round(float(v), 6) for v in pos]
        geo["ImageOrientationPatient"] = iop
    for key, tag in (("slice_thickness", "SliceThickness"), ("slice_location", "SliceLocation")):
        v = tags.get(key)
        if v is not None:
            try:
                geo[tag] = float(v)
            except (TypeError, ValueError):
                pass
    if tags.get("patient_position"):
        geo["PatientPosition"] = str(tags["patient_position"])
    return geo


def _ds(value: float) -> str:
    """A DICOM decimal string (≤ 16 characters)."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.6g}"


def write_dicom(path: str | os.PathLike[str], hu: np.ndarray, source: dict, *, description: str = "dipkit",
                version: str = "") -> Path:
    """Write ``hu`` (``[H, W]`` or ``[1, H, W]``, Hounsfield units) as one CT DICOM slice (module docs)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    hu = np.asarray(hu, dtype=np.float64)
    if hu.ndim == 3 and hu.shape[0] == 1:
        hu = hu[0]
    if hu.ndim != 2:
        raise DipkitError(f"a DICOM slice is one gray image, got shape {list(hu.shape)}")
    window = hu_window(source)
    if window is None:
        raise DipkitError("DICOM output needs a CT problem from a DICOM source (its window to Hounsfield units)")
    rescale = source.get("rescale") or {}
    slope = float(rescale.get("slope", 1.0) or 1.0)
    intercept = float(rescale.get("intercept", 0.0) or 0.0)
    if not (math.isfinite(slope) and slope != 0 and math.isfinite(intercept)):
        slope, intercept = 1.0, 0.0
    stored = np.clip(np.round((np.nan_to_num(hu) - intercept) / slope), -32768, 32767).astype("<i2")

    now = datetime.datetime.now()
    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "", "", "", ""
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "", "", ""
    ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 1, 1, 1
    ds.Modality, ds.Manufacturer, ds.KVP = "CT", "dipkit", ""
    ds.SoftwareVersions = f"dipkit {version}".strip()
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SeriesDescription = description[:64]
    ds.DerivationDescription = f"reconstructed by {description}"[:1024]
    ds.BurnedInAnnotation = "NO"
    for tag, value in source_geometry(source, hu.shape).items():
        if tag in ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient"):
            value = [_ds(v) for v in value]
        elif tag in ("SliceThickness", "SliceLocation"):
            value = _ds(value)
        setattr(ds, tag, value)
    level, width, _ = window
    ds.WindowCenter, ds.WindowWidth = _ds(level), _ds(width)
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = _ds(intercept), _ds(slope), "HU"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    major = int(str(pydicom.__version__).split(".")[0])
    with atomic_write(path, "wb") as fh:
        if major >= 3:
            ds.save_as(fh, enforce_file_format=True)
        else:  # pydicom 2.x
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.preamble = b"\0" * 128
            pydicom.dcmwrite(fh, ds, write_like_original=False)
    return Path(path)
