r"""Sparse system matrix of dipkit's 2-D CT projectors (parallel and fan beam), with a disk cache.

Why our own matrix
------------------
deepinv's :class:`~deepinv.physics.functional.Radon` projects an image by resampling the whole
zero-padded image once per view with ``grid_sample`` and summing along one axis; its adjoint
(``adjoint_via_backprop=True``) is autograd through ``grid_sample``, a scatter-add. On a CPU that
costs ~86 ms for ``A x`` plus its backward at 256^2 / 60 views, most of it spent re-computing
the same sampling positions and bilinear weights at every call. The operator is linear and fixed,
so we compute those weights **once**, as a sparse matrix ``A``: then ``A x`` is one CSR sparse
matrix-vector product and ``A^T y`` another one with the stored transpose, 9-13x faster at
256^2 (``benchmarks/sparse_ct.py``). For deepinv's geometries the matrix reproduces deepinv's
projector (same sample points, same bilinear weights, same zero padding), so both backends give
the same measurements to float32 rounding; general geometries (any detector, a centre-of-rotation
offset, a pixel size) exist only as matrices.

The geometry, its sample points (:func:`sample_points`, the hook for new geometries) and the
construction of the matrix (:func:`build_matrix`) live in :mod:`dipkit.physics.raygeom` and are
re-exported here. Numerical agreement with deepinv: sample points are computed in float64 from the
view angles' ``cos``/``sin`` and the ``linspace`` grids rounded to the operator dtype exactly as
deepinv rounds them (deepinv then works in float32 throughout), entries are summed in float64 and
rounded once to the operator dtype, so ``A x`` agrees with deepinv's to float32 rounding
(relative error ~1e-6).

Storage: CSR with int32 row offsets and column indices and values in the operator dtype,
about ``2.3 N^2 V`` entries (8 bytes each in float32) for ``A`` and as many for ``A^T``
(8.8 M entries, 70 MB each at 256^2 / 60 views).

Cache
-----
Building the matrix is vectorised (numpy + scipy; ~3 s at 256^2 / 60 views, 0.8 s at 128^2,
0.3 s at 64^2 on a 2-core CPU), and the result is also saved once per geometry under
:func:`cache_dir` (``$DIPKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/dipkit``, else
``~/.cache/dipkit``), sub-folder ``ct-matrix``, in an ``.npz`` file named by a hash of the full
geometry (:meth:`RayGeometry.key`: kind, image size, angles, detector parameters, dtype,
:data:`FORMAT_VERSION`, deepinv's version). Files are written
atomically and verified on load (stored key, shapes, index ranges, a checksum of the arrays);
anything wrong -- truncated, corrupt, another geometry's file -- is rebuilt and overwritten, never
trusted and never an error. Loading uses ``numpy.load(allow_pickle=False)``. An unwritable cache
directory only costs a one-line warning (the matrix is then built in memory each time).
Within one process, operators with the same geometry share the matrices (weak references).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..errors import DipkitError
from .raygeom import (  # noqa: F401  (re-exported: the public names of the sparse backend)
    FORMAT_VERSION,
    RayGeometry,
    deepinv_axis,
    n_steps,
    pad_before,
    padded_size,
    ray_weights,
    sample_points,
)

__all__ = [
    "FORMAT_VERSION",
    "RayGeometry",
    "SystemMatrix",
    "CSRParts",
    "csr",
    "clear_memory_cache",
    "padded_size",
    "pad_before",
    "deepinv_axis",
    "sample_points",
    "ray_weights",
    "build_matrix",
    "system_matrix",
    "cache_dir",
    "matrix_path",
    "estimate_nnz",
    "SparseRayTransform",
    "apply_matrix",
]


#: Largest number of stored entries the int32 indices allow.
MAX_NNZ = 2**31 - 1


# ---------------------------------------------------------------------------------------------
# the matrix
# ---------------------------------------------------------------------------------------------
def _bilinear_chunk(geom: RayGeometry, views: range):
    """COO triplets ``(row, col, weight)`` of the views ``views`` (duplicates summed, scipy CSR)."""
    import scipy.sparse as sp

    n = geom.img_size
    nv = geom.n_views
    rows, cols = sample_points(geom, views)
    nd, k, s = rows.shape
    r = rows.reshape(-1)
    c = cols.reshape(-1)
    # samples with at least one of their four neighbours inside the image (NaN: skipped)
    keep = np.flatnonzero((r > -1.0) & (r < n) & (c > -1.0) & (c < n))
    r, c = r[keep], c[keep]
    ray = keep // s  # = d * k + (view - views.start)
    det = ray // k
    ray = det * nv + (ray % k) + views.start  # sinogram row d * V + view
    rw = ray_weights(geom)
    scale = None if rw is None else rw[det]
    r0 = np.floor(r)
    c0 = np.floor(c)
    fr = r - r0
    fc = c - c0
    r0 = r0.astype(np.int64)
    c0 = c0.astype(np.int64)
    out_r, out_c, out_w = [], [], []
    for dr, wr in ((0, 1.0 - fr), (1, fr)):
        rr = r0 + dr
        okr = (rr >= 0) & (rr < n)
        for dc, wc in ((0, 1.0 - fc), (1, fc)):
            cc = c0 + dc
            wgt = wr * wc
            ok = okr & (cc >= 0) & (cc < n) & (wgt > 0)
            out_r.append(ray[ok])
            out_c.append(rr[ok] * n + cc[ok])
            out_w.append(wgt[ok] if scale is None else wgt[ok] * scale[ok])
    m = sp.coo_matrix((np.concatenate(out_w), (np.concatenate(out_r), np.concatenate(out_c))),
                      shape=geom.shape).tocsr()  # tocsr sums the duplicates
    m = m.tocoo()
    return m.row, m.col, m.data


def estimate_nnz(geom: RayGeometry) -> int:
    """A generous estimate of the number of stored entries (about twice the true count): 4 x the
    number of sample points within one pixel of the image, counted on the first view, times the
    number of views, plus 10 %. Cheap (one view's sample points)."""
    rows, cols = sample_points(geom, [0])
    n = geom.img_size
    inside = (rows > -1) & (rows < n) & (cols > -1) & (cols < n)
    return int(4 * int(inside.sum()) * geom.n_views * 1.1) + 16


def build_matrix(geom: RayGeometry):
    """The system matrix ``A`` of ``geom`` (see the module docstring) as a scipy CSR matrix with
    int32 indices and values in ``geom.dtype``; vectorised over views (in chunks of ~2M sample
    points, bounding the temporaries to ~0.3 GB)."""
    import scipy.sparse as sp

    n_pts = geom.n_detector_pixels * n_steps(geom)
    chunk = max(1, (1 << 21) // max(1, n_pts))
    parts = [_bilinear_chunk(geom, range(v0, min(geom.n_views, v0 + chunk)))
             for v0 in range(0, geom.n_views, chunk)]
    rows = np.concatenate([p[0] for p in parts])
    cols = np.concatenate([p[1] for p in parts])
    vals = np.concatenate([p[2] for p in parts])
    del parts
    if vals.size > MAX_NNZ:
        raise DipkitError(f"the CT system matrix has {vals.size} entries, more than int32 indices "
                          "allow; use backend='deepinv'")
    a = sp.coo_matrix((vals.astype(np.dtype(geom.dtype)), (rows, cols)), shape=geom.shape).tocsr()
    a.sum_duplicates()  # no-op (chunks hold different rows), ensures sorted indices
    return _int32(a)


def _int32(m):
    m.indptr = m.indptr.astype(np.int32, copy=False)
    m.indices = m.indices.astype(np.int32, copy=False)
    return m


def _transpose(a):
    """CSR of ``A^T`` (scipy's CSR -> CSC conversion, O(nnz)), int32 indices."""
    return _int32(a.T.tocsr())


class CSRParts(NamedTuple):
    """A CSR matrix as three dense tensors -- int32 row offsets, int32 column indices, values --
    and its shape. Operators keep these (not a sparse tensor) as buffers: dense tensors move with
    ``.to(device)``, survive ``copy.deepcopy`` and pickling, which torch's sparse CSR tensors do
    not all support; :func:`csr` assembles the sparse tensor (no copy, no check, no sync)."""

    crow: torch.Tensor
    col: torch.Tensor
    val: torch.Tensor
    shape: tuple[int, int]


def _to_torch(m, dtype: torch.dtype) -> CSRParts:
    """scipy CSR -> :class:`CSRParts` (the index arrays are shared, not copied)."""
    return CSRParts(torch.from_numpy(np.ascontiguousarray(m.indptr, dtype=np.int32)),
                    torch.from_numpy(np.ascontiguousarray(m.indices, dtype=np.int32)),
                    torch.from_numpy(np.ascontiguousarray(m.data)).to(dtype),
                    tuple(int(d) for d in m.shape))


def csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape) -> torch.Tensor:
    """The torch sparse CSR tensor of these parts (shares their memory)."""
    with warnings.catch_warnings():  # torch's one-off "sparse CSR support is in beta" notice
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, val, size=tuple(shape),
                                       check_invariants=False)  # valid by construction / on load


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """dipkit's cache directory: ``$DIPKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/dipkit``, else
    ``~/.cache/dipkit`` (not created here)."""
    env = os.environ.get("DIPKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "dipkit"
    return Path.home() / ".cache" / "dipkit"


def matrix_path(geom: RayGeometry) -> Path:
    """Cache file of ``geom``: ``<cache_dir>/ct-matrix/<kind>-<N>px-<V>v-<hash>.npz``."""
    return (cache_dir() / "ct-matrix"
            / f"{geom.kind}-{geom.img_size}px-{geom.n_views}v-{geom.digest()[:32]}.npz")


_ARRAYS = ("shape", "crow", "col", "val")


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in _ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _read_cached(path: Path, geom: RayGeometry):
    """The matrix stored at ``path`` if the file is intact and holds ``geom``'s matrix, else
    ``(None, reason)``. Never raises for a bad file."""
    import scipy.sparse as sp

    if not path.is_file():
        return None, None  # not cached yet (or the cache directory is unusable: no complaint)
    try:
        with np.load(path, allow_pickle=False) as z:
            if set(z.files) != {"key", "checksum", *_ARRAYS}:
                return None, "unexpected content"
            if str(z["key"][()]) != geom.key_json():
                return None, "another geometry's key"
            arrays = {name: z[name] for name in _ARRAYS}
            checksum = str(z["checksum"][()])
    except Exception as exc:  # truncated / corrupt zip, bad header, I/O error: rebuild
        return None, f"unreadable ({type(exc).__name__})"
    nr, nc = geom.shape
    shape, crow, col, val = (arrays[k] for k in _ARRAYS)
    if not (shape.dtype == np.int64 and tuple(shape.tolist()) == (nr, nc)
            and crow.dtype == np.int32 and col.dtype == np.int32
            and val.dtype == np.dtype(geom.dtype) and crow.shape == (nr + 1,)
            and col.ndim == 1 and val.shape == col.shape):
        return None, "wrong shapes or dtypes"
    if _checksum(arrays) != checksum:
        return None, "checksum mismatch"
    if not (crow[0] == 0 and crow[-1] == col.size and bool(np.all(np.diff(crow) >= 0))):
        return None, "invalid row offsets"
    if col.size and not (int(col.min()) >= 0 and int(col.max()) < nc):
        return None, "column index out of range"
    if not bool(np.all(np.isfinite(val))):
        return None, "non-finite values"
    return sp.csr_matrix((val, col, crow), shape=(nr, nc)), None


_warned: set[str] = set()


def _warn_once(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(msg, UserWarning, stacklevel=4)


def _write_cached(path: Path, geom: RayGeometry, a) -> bool:
    from ..io import atomic_write

    arrays = {"shape": np.array(a.shape, dtype=np.int64), "crow": a.indptr, "col": a.indices,
              "val": a.data}
    try:
        with atomic_write(path, "wb") as fh:
            np.savez(fh, key=np.array(geom.key_json()), checksum=np.array(_checksum(arrays)),
                     **arrays)
        return True
    except (DipkitError, OSError) as exc:
        _warn_once(str(path.parent), f"dipkit: cannot write the CT matrix cache in {path.parent} "
                   f"({exc}); building the matrix in memory (set DIPKIT_CACHE_DIR to a writable "
                   "directory to cache it)")
        return False


@dataclass
class SystemMatrix:
    """``A`` and ``A^T`` of a geometry (:class:`CSRParts`, int32 indices, on the CPU) and how
    they were obtained: ``source`` is ``"memory"`` (shared with a live operator of this process),
    ``"disk"`` (cache file) or ``"built"``; ``seconds`` the time it took; ``path`` the cache file
    (``None`` without disk cache). :attr:`A` / :attr:`AT` give torch sparse CSR tensors."""

    geometry: RayGeometry
    A_parts: CSRParts
    AT_parts: CSRParts
    source: str
    seconds: float
    path: Path | None = None

    @property
    def A(self) -> torch.Tensor:
        return csr(*self.A_parts)

    @property
    def AT(self) -> torch.Tensor:
        return csr(*self.AT_parts)


# Process-wide sharing of the CPU matrices between operators of the same geometry: weak references
# to the very tensors that operators hold as buffers (they vanish with the last such operator, or
# when it moves to another device).
_MEMO: "weakref.WeakValueDictionary[tuple[str, str], torch.Tensor]" = weakref.WeakValueDictionary()
_LOCK = threading.Lock()
_PART_NAMES = ("crow", "col", "val")


def _memo_get(digest: str, geom: RayGeometry):
    with _LOCK:
        got = [_MEMO.get((digest, f"{w}.{p}")) for w in ("A", "AT") for p in _PART_NAMES]
    if any(t is None for t in got):
        return None
    nr, nc = geom.shape
    return CSRParts(*got[:3], (nr, nc)), CSRParts(*got[3:], (nc, nr))


def _memo_put(digest: str, a: CSRParts, at: CSRParts) -> None:
    with _LOCK:
        for w, parts in (("A", a), ("AT", at)):
            for p in _PART_NAMES:
                _MEMO[(digest, f"{w}.{p}")] = getattr(parts, p)


def system_matrix(geom: RayGeometry, *, cache: bool = True, memory: bool = True) -> SystemMatrix:
    """``A`` and ``A^T`` of ``geom``: shared with a live operator of this process if one has them
    (``memory``), else loaded from the disk cache if there is a valid file (``cache``), else
    built (and then saved to the cache when ``cache``). See the module docstring."""
    t0 = time.perf_counter()
    digest = geom.digest()
    if memory:
        got = _memo_get(digest, geom)
        if got is not None:
            return SystemMatrix(geom, *got, "memory", time.perf_counter() - t0)
    path = matrix_path(geom) if cache else None
    m, source = None, "built"
    if path is not None:
        m, reason = _read_cached(path, geom)
        if m is not None:
            source = "disk"
        elif reason is not None:
            warnings.warn(f"dipkit: CT matrix cache file {path} is invalid ({reason}); "
                          "rebuilding it", UserWarning, stacklevel=3)
    if m is None:
        m = build_matrix(geom)
        if path is not None:
            _write_cached(path, geom, m)
    dt = geom.torch_dtype
    a = _to_torch(m, dt)
    at = _to_torch(_transpose(m), dt)
    if memory:
        _memo_put(digest, a, at)
    return SystemMatrix(geom, a, at, source, time.perf_counter() - t0, path)


def clear_memory_cache() -> None:
    """Forget the process-wide shared matrices (operators keep theirs)."""
    with _LOCK:
        _MEMO.clear()


# ---------------------------------------------------------------------------------------------
# applying the matrix
# ---------------------------------------------------------------------------------------------
def _matmul(m: torch.Tensor, x: torch.Tensor, out_tail: tuple[int, int]) -> torch.Tensor:
    """``m @ x`` over the last two dims of ``x`` (flattened); leading dims kept."""
    lead = x.shape[:-2]
    if x.dtype != m.dtype:
        x = x.to(m.dtype)
    k = 1
    for d in lead:
        k *= d
    xs = x.reshape(k, -1)
    if k == 1:
        return torch.mv(m, xs[0]).reshape(*lead, *out_tail)
    # Several columns: one mv each. torch.sparse.mm on [n_in, k] is faster for k >= 2 (1.3-4x at
    # k = 4 on CPU, see benchmarks/sparse_ct.py) but rounds differently from mv, so a batch would
    # not reproduce its single-image results bit for bit; and for k = 1, mv is ~1.4x faster than mm.
    out = torch.empty(k, m.shape[0], dtype=m.dtype, device=m.device)
    for i in range(k):
        torch.mv(m, xs[i], out=out[i])
    return out.reshape(*lead, *out_tail)


class SparseRayTransform(torch.autograd.Function):
    """``y = M x`` with ``M`` a CSR matrix and ``MT`` its transpose (CSR too), applied over the
    last two dims: ``x [..., h, w]`` -> ``y [..., *out_tail]``. The backward applies ``MT`` (through
    this same function, so that it is itself differentiable). No gradient for the matrices.
    Leading dims (batch x channels) are independent columns, one ``torch.mv`` each, so a batch
    gives bit for bit what its images give one at a time. ``x`` is cast to the matrix dtype."""

    @staticmethod
    def forward(ctx, x, m, mt, out_tail, in_tail):
        ctx.m, ctx.mt, ctx.in_tail, ctx.out_tail = m, mt, in_tail, out_tail
        ctx.in_dtype = x.dtype
        return _matmul(m, x, out_tail)

    @staticmethod
    def backward(ctx, grad):
        g = SparseRayTransform.apply(grad, ctx.mt, ctx.m, ctx.in_tail, ctx.out_tail)
        return g.to(ctx.in_dtype), None, None, None, None


def apply_matrix(x: torch.Tensor, m: torch.Tensor, mt: torch.Tensor,
                 out_tail: tuple[int, int]) -> torch.Tensor:
    """Differentiable ``M x`` over the last two dims of ``x`` (see :class:`SparseRayTransform`);
    ``m``, ``mt``: torch sparse CSR tensors of ``M`` and ``M^T``."""
    return SparseRayTransform.apply(x, m, mt, tuple(out_tail), tuple(x.shape[-2:]))
