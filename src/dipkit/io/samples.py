"""Bundled sample images, and :func:`load_image_source` (a file or a sample).

Every sample in :data:`SAMPLES` loads offline from installed packages (scikit-image's
data and the DICOM test files shipped with pydicom); :func:`load_sample` returns it as
a ``[C, H, W]`` float32 array in ``[0, 1]``, DICOM samples with the default window of
:mod:`dipkit.io.dicom` (:func:`load_image_source` passes its ``window`` on).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import DipkitError
from ._common import _first_line, _int_scale, _to_chw
from .images import (
    _check_channels_arg,
    _convert_channels,
    read_image,
    read_image_with_info,
    resize_image,
)

__all__ = ["SAMPLES", "Sample", "list_samples", "load_image_source", "load_sample", "sample_path"]


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
    "head-ct": "J2K_pixelrep_mismatch.dcm",
    "abdomen-mr": "examples_overlay.dcm",
}


def _motorcycle() -> np.ndarray:
    import skimage.data

    left = np.asarray(skimage.data.stereo_motorcycle()[0])
    return _to_chw(_int_scale(left), hwc_channels=(3,))

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
    # kept apart: used only to evaluate the calibrated defaults (never to tune them or to train)
    "head-ct": Sample(_dicom_sample("J2K_pixelrep_mismatch.dcm"),
                      "real head CT slice, 512x512, HU windowed (pydicom test file J2K_pixelrep_mismatch.dcm); "
                      "held out for evaluation", "ct"),
    "abdomen-mr": Sample(_dicom_sample("examples_overlay.dcm"),
                         "real abdominal MR slice, 300x484, min-max scaled (pydicom test file "
                         "examples_overlay.dcm); held out for evaluation", "mr"),
    "motorcycle": Sample(_motorcycle, "motorcycle photograph, 500x741 RGB (scikit-image stereo pair, left); "
                                      "held out for evaluation", "photo"),
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
    window (see :mod:`dipkit.io.dicom`).
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
