"""Atomic writers: :func:`atomic_write` and the ``save_*`` helpers built on it.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DipkitError

__all__ = ["atomic_write", "save_figure", "save_json", "save_npy", "save_png", "save_text",
           "save_yaml", "csv_text"]


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


def csv_text(rows: list[dict], columns: list[str]) -> str:
    """``rows`` as CSV text with a header of ``columns`` (None → empty cell, floats with 6 significant digits)."""
    import csv
    import io as _io

    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if r.get(c) is None else (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in columns])
    return buf.getvalue()


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
