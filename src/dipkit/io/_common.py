"""Private helpers shared by the readers (:mod:`.images`, :mod:`.dicom`, :mod:`.samples`).

One-line error messages, the integer-to-float scaling and the ``[C, H, W]`` layout
described under "Conventions" in :mod:`dipkit.io.images`. This module imports no
other part of :mod:`dipkit.io`, so every reader module can use it without a cycle.
"""

from __future__ import annotations

import numpy as np


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
