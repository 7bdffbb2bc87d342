r"""Sparse system matrix of deepinv's 2-D CT projector (parallel and fan beam), with a disk cache.

Why our own matrix
------------------
deepinv's :class:`~deepinv.physics.functional.Radon` projects an image by resampling the whole
zero-padded image once per view with ``grid_sample`` and summing along one axis; its adjoint
(``adjoint_via_backprop=True``) is autograd through ``grid_sample``, a scatter-add. On a CPU that
costs ~86 ms for ``A x`` plus its backward at 256^2 / 60 views, most of it spent re-computing
the same sampling positions and bilinear weights at every call. The operator is linear and fixed,
so we compute those weights **once**, as a sparse matrix ``A``: then ``A x`` is one CSR sparse
matrix-vector product and ``A^T y`` another one with the stored transpose, 9-13x faster at
256^2 (``benchmarks/sparse_ct.py``). The matrix reproduces deepinv's projector (same sample
points, same bilinear weights, same zero padding), so both backends give the same measurements
to float32 rounding.

What the matrix is
------------------
For view ``v`` and detector cell ``d``, deepinv's projector computes

.. math::

    y[d, v] = \sum_{s=0}^{S-1} \tilde x(r_{dvs}, c_{dvs}),
    \qquad
    \tilde x(r, c) = \sum_{i,j} x[i, j]\, \Lambda(r - i)\, \Lambda(c - j),
    \qquad \Lambda(t) = \max(0, 1 - |t|),

where :math:`\tilde x` is the bilinear interpolant of the image (zero outside it: deepinv zero-pads
the image and ``grid_sample`` reads zeros outside the padded grid), ``(r, c)`` are the *row* and
*column* coordinates of the sample points in **image pixel units** (pixel ``(i, j)`` -- row ``i``,
column ``j`` of the ``N x N`` image -- has its centre at ``(i, j)``; ``align_corners=True``), and
``S`` is the number of samples per ray. Hence

.. math::

    A[d V + v,\; i N + j] = \sum_s \Lambda(r_{dvs} - i)\, \Lambda(c_{dvs} - j):

rows are ordered like deepinv's sinogram ``[n_det, V]`` flattened (detector-major), columns like
the image ``[N, N]`` flattened (row-major), so that ``A @ x.reshape(-1) == y.reshape(-1)``. Each
sample point contributes its four bilinear weights; duplicates (a pixel met by several samples of
one ray) are summed. The sample points are given by :func:`sample_points` (which documents the
geometry); the bilinear scattering by :func:`build_matrix`.

Numerical agreement: sample points are computed in float64 from the view angles' ``cos``/``sin``
and the ``linspace`` grids rounded to the operator dtype exactly as deepinv rounds them (deepinv
then works in float32 throughout), entries are summed in float64 and rounded once to the operator
dtype, so ``A x`` agrees with deepinv's to float32 rounding (relative error ~1e-6).

Storage: CSR with int32 row offsets and column indices and values in the operator dtype,
about ``2.3 N^2 V`` entries (8 bytes each in float32) for ``A`` and as many for ``A^T``
(8.8 M entries, 70 MB each at 256^2 / 60 views).

Cache
-----
Building the matrix is vectorised (numpy + scipy; ~3 s at 256^2 / 60 views, 0.8 s at 128^2,
0.3 s at 64^2 on a 2-core CPU), and the result is also saved once per geometry under
:func:`cache_dir` (``$DIPKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/dipkit``, else
``~/.cache/dipkit``), sub-folder ``ct-matrix``, in an ``.npz`` file named by a hash of the full geometry (:meth:`RayGeometry.key`: kind, image size, angles,
detector parameters, dtype, :data:`FORMAT_VERSION`, deepinv's version). Files are written
atomically and verified on load (stored key, shapes, index ranges, a checksum of the arrays);
anything wrong -- truncated, corrupt, another geometry's file -- is rebuilt and overwritten, never
trusted and never an error. Loading uses ``numpy.load(allow_pickle=False)``. An unwritable cache
directory only costs a one-line warning (the matrix is then built in memory each time).
Within one process, operators with the same geometry share the matrices (weak references).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np
import torch

from ..errors import DipkitError

__all__ = [
    "FORMAT_VERSION",
    "RayGeometry",
    "SystemMatrix",
    "CSRParts",
    "csr",
    "clear_memory_cache",
    "padded_size",
    "pad_before",
    "sample_points",
    "build_matrix",
    "system_matrix",
    "cache_dir",
    "matrix_path",
    "estimate_nnz",
    "SparseRayTransform",
    "apply_matrix",
]

#: Version of the matrix construction and of the cache file layout; bump it whenever either
#: changes, so that old cache files are ignored (they then have another name).
FORMAT_VERSION = 1

#: Largest number of stored entries the int32 indices allow.
MAX_NNZ = 2**31 - 1

_KINDS = ("parallel", "fan")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}

# deepinv computes sqrt(2) N in float32 (``SQRT2 = (2 * torch.ones(1)).sqrt()``); mirror it.
_SQRT2 = (2 * torch.ones(1)).sqrt()


def padded_size(n: int) -> int:
    """Width ``W = ceil(sqrt(2) N)`` of deepinv's sampling grid (``Radon._create_grids``, float32
    arithmetic as there); also the number of parallel-beam detector cells."""
    return int((_SQRT2 * n).ceil())


def _padding(n: int) -> tuple[int, int]:
    """``(padded image width, padding before)`` exactly as ``Radon.forward`` pads the image."""
    pad = int((_SQRT2 * n - n).ceil())
    new_center = (n + pad) // 2
    return n + pad, new_center - n // 2


def pad_before(n: int) -> int:
    """Offset of the image inside deepinv's zero-padded image (``Radon.forward``)."""
    return _padding(n)[1]


def _dtype_name(dtype: Any) -> str:
    for name, dt in _DTYPES.items():
        if dtype == dt or dtype == name:
            return name
    raise DipkitError(f"sparse CT matrix: dtype must be float32 or float64, got {dtype!r}")


@dataclass(frozen=True)
class RayGeometry:
    """Everything the system matrix depends on (lengths in image pixels, angles in degrees).

    * ``kind``: ``"parallel"`` or ``"fan"``;
    * ``img_size``: ``N`` (the image is ``N x N``);
    * ``angles``: the view angles in degrees, any list (not necessarily equispaced or sorted),
      as the operator holds them (deepinv converts them to radians in ``dtype``);
    * ``n_detector_pixels``: number of detector cells (parallel beam: always
      :func:`padded_size` ``(N)``, as in deepinv);
    * fan beam only: ``source_radius``, ``detector_radius``, ``detector_spacing`` and
      ``pixel_spacing`` -- the ``fan_parameters`` handed to deepinv (see
      :class:`dipkit.physics.ct.FanBeamCT`);
    * ``dtype``: ``"float32"`` or ``"float64"``, the operator's dtype (that of the matrix values,
      and the precision in which deepinv rounds the angles' ``cos``/``sin``).

    Build it with :meth:`parallel` or :meth:`fan`; they validate the numbers.
    """

    kind: str
    img_size: int
    angles: tuple[float, ...]
    n_detector_pixels: int
    source_radius: float | None = None
    detector_radius: float | None = None
    detector_spacing: float | None = None
    pixel_spacing: float | None = None
    dtype: str = "float32"

    # -- constructors ---------------------------------------------------------------------------
    @staticmethod
    def _angles(angles: Any) -> tuple[float, ...]:
        if isinstance(angles, torch.Tensor):
            vals = angles.detach().to("cpu", torch.float64).reshape(-1).tolist()
        else:
            try:
                vals = [float(a) for a in angles]
            except (TypeError, ValueError):
                raise DipkitError(f"CT angles must be a list of numbers, got {angles!r}") from None
        if not vals:
            raise DipkitError("CT angles: at least one view angle is needed")
        if not all(math.isfinite(a) for a in vals):
            raise DipkitError("CT angles must be finite numbers")
        return tuple(vals)

    @staticmethod
    def _size(n: Any) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise DipkitError(f"CT img_size must be an integer >= 2, got {n!r}")
        return n

    @classmethod
    def parallel(cls, img_size: int, angles: Iterable[float] | torch.Tensor, *,
                 dtype: Any = torch.float32) -> "RayGeometry":
        """Parallel beam, deepinv's ``Radon(circle=False)`` geometry."""
        n = cls._size(img_size)
        return cls(kind="parallel", img_size=n, angles=cls._angles(angles),
                   n_detector_pixels=padded_size(n), dtype=_dtype_name(dtype))

    @classmethod
    def fan(cls, img_size: int, angles: Iterable[float] | torch.Tensor, *, source_radius: float,
            detector_radius: float, detector_spacing: float, n_detector_pixels: int,
            pixel_spacing: float, dtype: Any = torch.float32) -> "RayGeometry":
        """Fan beam with a flat detector, deepinv's ``fan_beam_grid`` geometry (its
        ``fan_parameters``; lengths in the units where deepinv's ``pixel_spacing`` is given)."""
        n = cls._size(img_size)
        vals = {}
        for key, val in (("source_radius", source_radius), ("detector_radius", detector_radius),
                         ("detector_spacing", detector_spacing), ("pixel_spacing", pixel_spacing)):
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
                raise DipkitError(f"fan-beam {key} must be a finite number, got {val!r}")
            vals[key] = float(val)
        nd = n_detector_pixels
        if isinstance(nd, bool) or not isinstance(nd, int) or nd < 2:
            raise DipkitError(f"fan-beam n_detector_pixels must be an integer >= 2, got {nd!r}")
        if not (vals["pixel_spacing"] > 0 and vals["detector_spacing"] > 0):
            raise DipkitError("fan-beam pixel_spacing and detector_spacing must be positive")
        if not vals["source_radius"] + vals["detector_radius"] > 0 or vals["source_radius"] <= 0:
            raise DipkitError("fan-beam source_radius must be positive and the detector must lie "
                              "beyond the source (source_radius + detector_radius > 0)")
        return cls(kind="fan", img_size=n, angles=cls._angles(angles), n_detector_pixels=nd,
                   dtype=_dtype_name(dtype), **vals)

    # -- derived numbers ------------------------------------------------------------------------
    @property
    def n_views(self) -> int:
        return len(self.angles)

    @property
    def shape(self) -> tuple[int, int]:
        """Matrix shape ``(n_detector_pixels * views, N * N)``."""
        return (self.n_detector_pixels * self.n_views, self.img_size * self.img_size)

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def key(self) -> dict[str, Any]:
        """The full cache key: every field, :data:`FORMAT_VERSION` and deepinv's version."""
        import deepinv

        return {"format": FORMAT_VERSION, "deepinv": str(deepinv.__version__),
                **dataclasses.asdict(self)}

    def key_json(self) -> str:
        return json.dumps(self.key(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """SHA-256 (hex) of :meth:`key_json`."""
        return hashlib.sha256(self.key_json().encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# sample points
# ---------------------------------------------------------------------------------------------
def _cos_sin(angles_deg: Iterable[float], dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``cos``/``sin`` of the view angles rounded exactly as deepinv rounds them: one scalar at a
    time (as in ``Radon._create_grids``), ``deg2rad(x) = x * 4 * atan(1) / 180`` in ``dtype``."""
    one_atan = torch.ones(1, dtype=dtype).atan()
    cos, sin = [], []
    for a in angles_deg:
        theta = torch.tensor(a, dtype=torch.float64).to(dtype) * 4 * one_atan / 180
        cos.append(float(theta.cos()))
        sin.append(float(theta.sin()))
    return np.array(cos), np.array(sin)


def sample_points(geom: RayGeometry, views: Iterable[int] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    r"""Sample points of deepinv's projector, as ``(rows, cols)`` in image pixel coordinates.

    Returns two float64 arrays of shape ``[n_det, len(views), S]``: for detector cell ``d``,
    view ``views[k]`` and step ``s`` along the ray, the point ``(rows[d, k, s], cols[d, k, s])``
    where pixel ``(i, j)`` of the ``N x N`` image has its centre at ``(i, j)``. deepinv's
    measurement is the sum over ``s`` of the bilinear interpolant of the image (zero outside it)
    at these points (weight 1 per sample). ``views`` (indices into ``geom.angles``; default all)
    lets callers process the views in chunks.

    Conventions (mirroring ``deepinv.physics.functional.radon``): ``W = ceil(sqrt(2) N)`` is the
    sampling grid width; ``u_k = linspace(-1, 1, W)[k]`` the normalised grid coordinates
    (``align_corners=True``: ``-1`` and ``1`` are the centres of the outer pixels of the padded
    image); a normalised point ``(g_x, g_y)`` (``g_x`` along columns) is the image pixel
    ``col = (g_x + 1) / 2 (W_p - 1) - p_b``, ``row = (g_y + 1) / 2 (W_p - 1) - p_b`` with
    ``W_p`` the padded image width and ``p_b`` the padding before the image. With
    ``c = cos theta``, ``s = sin theta`` (``theta`` the view angle):

    * parallel beam (``affine_grid`` of the rotation): the ray of detector ``d`` is the grid
      column ``X = u_d``; its samples run along ``Y = u_s``, ``s = 0..W-1``; then
      ``g_x = c X + s Y``, ``g_y = -s X + c Y``. At ``theta = 0`` rays run down the image
      columns and detector cells are ordered by column index.
    * fan beam (``fan_beam_grid``): lengths are scaled to normalised units by
      ``2 / (W pixel_spacing)``; with ``R_s``, ``R_d``, ``delta`` the scaled source radius,
      detector radius and detector spacing and ``L = delta (n_det - 1)`` the detector length,
      sample ``s`` of the ray to detector ``d`` is ``X = u_s`` (``s = 0..W-1``, the source at
      ``X = -R_s``, the flat detector at ``X = R_d``) and ``Y = v_d L/2 (X + R_s) / (R_s + R_d)``
      with ``v_d = linspace(-1, 1, n_det)[d]``; then the same rotation.

    To add a geometry (detector offsets, a shifted centre of rotation, ...), add a branch here
    that returns the new points; :func:`build_matrix` turns any points into the matrix.
    """
    dt = geom.torch_dtype
    n = geom.img_size
    nd = geom.n_detector_pixels
    w = padded_size(n)
    wp, pb = _padding(n)
    idx = list(range(geom.n_views)) if views is None else [int(v) for v in views]
    cos, sin = _cos_sin([geom.angles[v] for v in idx], dt)
    c = cos.reshape(1, -1, 1)
    s = sin.reshape(1, -1, 1)
    u = torch.linspace(-1, 1, w, dtype=dt).double().numpy()  # affine_grid's base coordinates
    if geom.kind == "parallel":
        x = u.reshape(-1, 1, 1)  # [n_det = W, 1, 1]: the detector coordinate
        y = u.reshape(1, 1, -1)  # [1, 1, S = W]: along the ray
    elif geom.kind == "fan":
        scale = 2.0 / (w * geom.pixel_spacing)  # same Python-float arithmetic as fan_beam_grid
        rs = geom.source_radius * scale
        rd = geom.detector_radius * scale
        ds = geom.detector_spacing * scale
        length = ds * (nd - 1)
        v = torch.linspace(-1, 1, nd, dtype=dt).double().numpy()
        x = u.reshape(1, 1, -1)  # along the central ray
        y = v.reshape(-1, 1, 1) * (0.5 * length * (u + rs) / (rs + rd)).reshape(1, 1, -1)
    else:  # pragma: no cover - RayGeometry validates the kind
        raise DipkitError(f"unknown CT geometry {geom.kind!r}")
    gx = c * x + s * y
    gy = -s * x + c * y
    half = 0.5 * (wp - 1)
    cols = (gx + 1.0) * half - pb
    rows = (gy + 1.0) * half - pb
    return rows, cols  # both [n_det, len(views), W]


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
    # samples with at least one of their four neighbours inside the image
    keep = np.flatnonzero((r > -1.0) & (r < n) & (c > -1.0) & (c < n))
    r, c = r[keep], c[keep]
    ray = keep // s  # = d * k + (view - views.start)
    ray = (ray // k) * nv + (ray % k) + views.start  # sinogram row d * V + view
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
            out_w.append(wgt[ok])
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

    n_pts = geom.n_detector_pixels * padded_size(geom.img_size)
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
