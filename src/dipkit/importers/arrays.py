"""Reading measured arrays: NPY, NPZ, TIFF, MAT (v5 and v7.3), HDF5 and plain text.

Every array argument of ``dipkit import`` is ``PATH`` or ``PATH:KEY``; ``KEY`` names the array in
a container (NPZ member, MAT variable, HDF5 dataset path such as ``group/kspace``). Without a key,
a container with one array gives that array; otherwise the conventional names for the argument
are tried (``kspace`` for ``--kspace``, ``mask`` for ``--mask`` ...), and failing those the error
lists the arrays the file holds.

The format comes from the file's content (magic bytes), not its name:

========  =============================================================================
NPY       ``numpy.load(allow_pickle=False)``
NPZ       ``numpy.load(allow_pickle=False)``, one member by key
TIFF      ``tifffile`` -- the raw values (integers are *not* rescaled: a sinogram or
          k-space stored as uint16 keeps its numbers)
MAT v5    ``scipy.io.loadmat`` (variables by name; MATLAB's shapes)
MAT 7.3   ``h5py`` (an HDF5 file); the axes are reversed back to MATLAB's order and
          ``{real, imag}`` compound data becomes complex
HDF5      ``h5py``, dataset by path; complex data as stored (``numpy`` complex, or
          compound ``{r, i}`` / ``{real, imag}``)
text      ``numpy.loadtxt`` (``.txt``, ``.csv``, ``.dat``: whitespace or commas), e.g. angles
========  =============================================================================

Measurements are never rescaled when read; NaN or Inf, empty arrays, non-numeric data, missing
files and missing keys are one-line :class:`~dipkit.errors.DipkitError`\\ s naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import DipkitError
from ..io.guard import check_file, guarded, open_npz, read_npy

__all__ = ["ArraySource", "parse_source", "read_array", "read_slice", "pick_slice", "check_finite"]

_MAGIC = {
    b"\x93NUMPY": "npy",
    b"PK\x03\x04": "npz",
    b"\x89HDF\r\n\x1a\n": "hdf5",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"II+\x00": "tiff",
    b"MM\x00+": "tiff",
}
_TEXT_EXTS = {".txt", ".csv", ".dat", ".tsv"}


class ArraySource:
    """A parsed ``PATH[:KEY]`` argument (``what`` names it in messages, e.g. ``"k-space"``)."""

    def __init__(self, path: Path, key: str | None, what: str):
        self.path, self.key, self.what = path, key, what

    def __str__(self) -> str:
        return f"{self.path}" + (f":{self.key}" if self.key else "")


def parse_source(arg: str, what: str, key: str | None = None) -> ArraySource:
    """``PATH`` or ``PATH:KEY`` (split at the last ``:`` when ``PATH`` alone is not a file); an
    explicit ``key`` (``--key``) applies when the argument names none."""
    path = Path(arg)
    if not path.exists() and ":" in arg:
        head, _, tail = arg.rpartition(":")
        if head and tail and Path(head).exists():
            return ArraySource(Path(head), tail, what)
    return ArraySource(path, key, what)


def _kind(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(1024)
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    if head.startswith(b"MATLAB 7.3 MAT-file") or head[512:520] == b"\x89HDF\r\n\x1a\n":
        return "mat73"
    if head.startswith(b"MATLAB 5.0 MAT-file") or head.startswith(b"MATLAB"):
        return "mat5"
    if path.suffix.lower() in _TEXT_EXTS:
        return "text"
    return "unknown"


def _choose(names: list[str], src: ArraySource, defaults: Iterable[str], container: str) -> str:
    if src.key is not None:
        if src.key not in names:
            raise DipkitError(f"the {container} file {src.path} has no {_item(container)} "
                              f"{src.key!r} (it has: {', '.join(names) or 'none'})")
        return src.key
    if len(names) == 1:
        return names[0]
    for d in defaults:
        if d in names:
            return d
    if not names:
        raise DipkitError(f"the {container} file {src.path} holds no array")
    raise DipkitError(f"the {container} file {src.path} holds several arrays ({', '.join(names)}); "
                      f"name the {src.what} with --key NAME or {src.path}:NAME")


def _item(container: str) -> str:
    return {"HDF5": "dataset", "MAT": "variable", "NPZ": "array"}.get(container, "array")


def _hdf5(path: Path, src: ArraySource, defaults, matlab: bool, lazy=None) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        if matlab:  # MATLAB's bookkeeping groups
            names = [n for n in names if not n.startswith("#")]
        name = _choose(names, src, defaults, "MAT" if matlab else "HDF5")
        ds = f[name]
        if lazy is not None and not matlab and ds.ndim == lazy[0] + 1:  # read one slice only
            n = ds.shape[0]
            i = n // 2 if lazy[1] is None else lazy[1]
            if not -n <= i < n:
                raise DipkitError(f"--slice {lazy[1]} is out of range: the {src.what} has {n} slices")
            lazy[2] = int(i % n)
            arr = ds[i]
        else:
            arr = ds[()]
    if arr.dtype.names:  # compound: complex stored as two fields
        fields = set(arr.dtype.names)
        for re_, im_ in (("real", "imag"), ("r", "i"), ("re", "im")):
            if {re_, im_} <= fields:
                arr = arr[re_].astype(np.float64) + 1j * arr[im_].astype(np.float64)
                break
        else:
            raise DipkitError(f"{src.path}:{name} is a compound dataset ({', '.join(arr.dtype.names)}), "
                              "not numbers")
    arr = np.asarray(arr)
    if matlab:
        arr = np.transpose(arr)  # MATLAB stores column-major: back to MATLAB's axis order
    return arr


def _load(src: ArraySource, defaults, lazy=None) -> np.ndarray:
    path = src.path
    kind = _kind(path)
    if kind == "npy":
        return read_npy(path, f"{src.what} file")
    if kind == "npz":
        with open_npz(path, f"{src.what} file") as z:
            return z.get(_choose(list(z.files), src, defaults, "NPZ"))
    if kind in ("hdf5", "mat73"):
        return _hdf5(path, src, defaults, matlab=kind == "mat73", lazy=lazy)
    if kind == "mat5":
        import scipy.io

        data = scipy.io.loadmat(path)
        names = [k for k in data if not k.startswith("__")]
        return np.asarray(data[_choose(names, src, defaults, "MAT")])
    if kind == "tiff":
        import tifffile

        return np.asarray(tifffile.imread(path))
    if kind == "text":
        return np.loadtxt(path, delimiter="," if path.suffix.lower() == ".csv" else None, ndmin=1)
    raise DipkitError(f"cannot read the {src.what} file {path}: unknown format (expected NPY, NPZ, "
                      "TIFF, MAT, HDF5 or a text file)")


def read_array(src: ArraySource, *, defaults: Iterable[str] = (), complex_ok: bool = False,
               _lazy=None) -> np.ndarray:
    """The array of ``src`` (see the module docstring), as float64 or complex128; raises
    :class:`DipkitError` for anything unreadable, non-numeric, empty, or NaN/Inf."""
    what = f"{src.what} file"
    path = check_file(src.path, what)
    with guarded(path, what):  # corrupt or truncated files, odd dtypes: one line, no traceback
        if src.key is not None and _kind(path) in ("npy", "tiff", "text"):
            raise DipkitError(f"{path} holds a single array: it takes no key ({src.key!r})")
        try:
            arr = _load(src, tuple(defaults), _lazy)
        except ImportError as exc:
            raise DipkitError(f"cannot read {path}: {exc} (install the missing package)") from None
        arr = np.asarray(arr)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float64)
    if not (np.issubdtype(arr.dtype, np.number)):
        raise DipkitError(f"the {src.what} in {src} is not numeric (dtype {arr.dtype})")
    if arr.size == 0:
        raise DipkitError(f"the {src.what} in {src} is empty (shape {list(arr.shape)})")
    if np.iscomplexobj(arr):
        if not complex_ok:
            raise DipkitError(f"the {src.what} in {src} is complex; expected real numbers")
        arr = arr.astype(np.complex128)
    else:
        arr = arr.astype(np.float64)
    check_finite(arr, f"the {src.what} in {src}")
    return arr


def read_slice(src: ArraySource, ndim: int, index: int | None, *, defaults: Iterable[str] = (),
               complex_ok: bool = False, transform=None) -> tuple[np.ndarray, Any]:
    """:func:`read_array` then :func:`pick_slice`, reading only the slice from an HDF5 dataset of
    ``ndim + 1`` dimensions (fastMRI files hold every slice of a volume). ``transform`` is applied
    to the raw array before the slice is picked (e.g. (real, imag) pairs to complex)."""
    lazy = [ndim, index, None]
    arr = read_array(src, defaults=defaults, complex_ok=complex_ok, _lazy=lazy)
    if transform is not None:
        arr = transform(arr)
    if lazy[2] is not None:
        return arr, lazy[2]
    return pick_slice(arr, ndim, index, src.what)


def check_finite(arr: np.ndarray, what: str) -> None:
    """One-line error for NaN/Inf, naming the first bad index."""
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DipkitError(f"{what} contains NaN or Inf ({int(bad.sum())} entries, the first at index "
                          f"{list(idx)})")


def pick_slice(arr: np.ndarray, ndim: int, index: int | None, what: str) -> tuple[np.ndarray, Any]:
    """``arr`` with ``ndim`` dims as is; with ``ndim + 1`` dims, slice ``index`` of the first axis
    (default: the middle one). Returns the array and the slice index used (or ``None``)."""
    squeezed = arr
    while squeezed.ndim > ndim + 1 and squeezed.shape[0] == 1:
        squeezed = squeezed[0]
    if squeezed.ndim == ndim:
        if index is not None and index != 0:
            raise DipkitError(f"--slice {index}: the {what} has a single slice (shape {list(arr.shape)})")
        return squeezed, None
    if squeezed.ndim != ndim + 1:
        raise DipkitError(f"the {what} has shape {list(arr.shape)}; expected {ndim} dimensions "
                          f"(or {ndim + 1} with slices first)")
    n = squeezed.shape[0]
    i = n // 2 if index is None else index
    if not -n <= i < n:
        raise DipkitError(f"--slice {index} is out of range: the {what} has {n} slices")
    return squeezed[i], int(i % n)
