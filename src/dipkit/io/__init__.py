"""Image input/output for dipkit: reading, resizing, bundled samples, atomic writes.

Everything public is importable from here (``from dipkit.io import read_image``); it
lives in, and is documented by, these modules:

* :mod:`dipkit.io.images`: :func:`read_image`, :func:`read_image_with_info`,
  :func:`resize_image`. Its docstring holds the conventions every reader follows
  (``[C, H, W]`` float32 layout, value range, channels, rejected input) and the
  supported formats.
* :mod:`dipkit.io.dicom`: DICOM decoding, the rescale to modality values and the
  window to ``[0, 1]`` (:data:`DEFAULT_CT_WINDOW`).
* :mod:`dipkit.io.samples`: the bundled samples (:data:`SAMPLES`, :class:`Sample`,
  :func:`list_samples`, :func:`load_sample`, :func:`sample_path`) and
  :func:`load_image_source` (a file or a sample, optionally resized).
* :mod:`dipkit.io.write`: :func:`atomic_write` and the ``save_*`` helpers built on it.
* :mod:`dipkit.io.guard`: the guarded readers every input file goes through (problem files,
  YAML configurations, weights and checkpoints, ``.npy``/``.npz`` arrays): any defect of a file
  becomes a one-line :class:`~dipkit.errors.DipkitError` naming it (imported as
  ``dipkit.io.guard``, not re-exported here).
* :mod:`dipkit.io._common`: private helpers shared by the readers.

Imports go one way only: ``_common`` <- ``dicom`` <- ``images`` <- ``samples``; ``guard`` <-
``images``; ``write`` and ``guard`` import no other part of :mod:`dipkit.io`.
"""

from __future__ import annotations

from .dicom import DEFAULT_CT_WINDOW
from .images import read_image, read_image_with_info, resize_image
from .samples import SAMPLES, Sample, list_samples, load_image_source, load_sample, sample_path
from .write import (
    _umask,  # noqa: F401 - private, used by tests/test_io.py
    atomic_write,
    csv_text,
    save_figure,
    save_json,
    save_npy,
    save_png,
    save_text,
    save_yaml,
)

__all__ = [
    "DEFAULT_CT_WINDOW",
    "SAMPLES",
    "Sample",
    "atomic_write",
    "csv_text",
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
