r"""Ray geometry of dipkit's 2-D CT projectors and the sparse system matrix built from it.

What the matrix is
------------------
For view ``v`` and detector cell ``d`` the projector computes

.. math::

    y[d, v] = w_d \sum_{s} \tilde x(r_{dvs}, c_{dvs}),
    \qquad
    \tilde x(r, c) = \sum_{i,j} x[i, j]\, \Lambda(r - i)\, \Lambda(c - j),
    \qquad \Lambda(t) = \max(0, 1 - |t|),

where :math:`\tilde x` is the bilinear interpolant of the image (zero outside it), ``(r, c)``
are the *row* and *column* coordinates of the sample points in **image pixel units** (pixel
``(i, j)`` -- row ``i``, column ``j`` of the ``N x N`` image -- has its centre at ``(i, j)``),
and ``w_d`` a per-ray weight (1 for deepinv's geometries, see :func:`ray_weights`). Hence

.. math::

    A[d V + v,\; i N + j] = w_d \sum_s \Lambda(r_{dvs} - i)\, \Lambda(c_{dvs} - j):

rows are ordered like the sinogram ``[n_det, V]`` flattened (detector-major), columns like the
image ``[N, N]`` flattened (row-major), so that ``A @ x.reshape(-1) == y.reshape(-1)``. Each
sample point contributes its four bilinear weights; duplicates (a pixel met by several samples of
one ray) are summed. :func:`sample_points` gives the points (and documents both geometry
families), :func:`dipkit.physics.sparse.build_matrix` turns any points into the matrix.

Two families of geometries
--------------------------
* **deepinv's** (``RayGeometry.parallel`` / ``RayGeometry.fan``): the sample points of
  ``deepinv.physics.functional.Radon`` (``circle=False``) for any list of angles, reproduced to
  float32 rounding (exactly in float64): sample points are computed in float64 from the angles'
  ``cos``/``sin`` and the ``linspace`` grids rounded to the operator dtype exactly as deepinv
  rounds them. The rotation axis sits where deepinv puts it, :func:`deepinv_axis` ``(N)`` (the
  centre ``(N - 1) / 2`` of the image, or half a pixel off it for some ``N``).
* **general** (``RayGeometry.general``): any detector (cell count, spacing, a centre-of-rotation
  offset), any position of the rotation axis in the image, a pixel size, float64 throughout.
  deepinv's projector cannot express these; only the sparse backend computes them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch

from ..errors import DipkitError

__all__ = [
    "FORMAT_VERSION",
        "RayGeometry",
    "padded_size",
    "pad_before",
    "deepinv_axis",
    "sample_points",
    "ray_weights",
    "n_steps",
]

#: Version of the matrix construction and of the cache file layout; bump it whenever either
#: changes, so that old cache files are ignored (they then have another name).
FORMAT_VERSION = 1

_KINDS = ("parallel", "fan")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}

# deepinv computes sqrt(2) N in float32 (``SQRT2 = (2 * torch.ones(1)).sqrt()``); mirror it.
_SQRT2 = (2 * torch.ones(1)).sqrt()

#: fields of :class:`RayGeometry` that only general geometries use; left out of the cache key
#: when unset, so that deepinv geometries keep the cache files of earlier versions.
_GENERAL_FIELDS = ("center", "cor_offset", "scale")


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


def deepinv_axis(n: int) -> float:
    """Row (= column) of the rotation axis of deepinv's ``N x N`` projector, in image pixel
    coordinates: the centre of its padded grid, ``(W_p - 1) / 2 - p_b``. It is the image centre
    ``(N - 1) / 2`` when ``N`` and the padded width ``W_p`` have the same parity, else half a
    pixel off it (``N = 31``: 14.5; ``N = 33``: 16.0; ``N = 128``: 63.5)."""
    wp, pb = _padding(n)
    return 0.5 * (wp - 1) - pb


def _dtype_name(dtype: Any) -> str:
    for name, dt in _DTYPES.items():
        if dtype == dt or dtype == name:
            return name
    raise DipkitError(f"sparse CT matrix: dtype must be float32 or float64, got {dtype!r}")


def _finite(key: str, val: Any) -> float:
    if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
        raise DipkitError(f"CT {key} must be a finite number, got {val!r}")
    return float(val)


@dataclass(frozen=True)
class RayGeometry:
    """Everything the system matrix depends on (lengths in image pixels, angles in degrees).

    * ``kind``: ``"parallel"`` or ``"fan"``;
    * ``img_size``: ``N`` (the image is ``N x N``);
    * ``angles``: the view angles in degrees, any list (not necessarily equispaced or sorted);
    * ``n_detector_pixels``: number of detector cells (deepinv parallel beam: always
      :func:`padded_size` ``(N)``);
    * ``source_radius``, ``detector_radius`` (fan beam), ``detector_spacing`` (fan beam, and
      parallel beam in general geometries); deepinv fan geometries also ``pixel_spacing`` -- the
      ``fan_parameters`` handed to deepinv (see :class:`dipkit.physics.ct.FanBeamCT`);
    * general geometries only: ``center`` -- ``(row, col)`` of the rotation axis in image pixel
      coordinates; ``cor_offset`` -- where the ray through the rotation axis meets the detector,
      relative to the detector centre (positive towards higher cell indices); ``scale`` -- the
      pixel size, which multiplies every line integral. ``center`` is ``None`` exactly for
      deepinv's geometries;
    * ``dtype``: ``"float32"`` or ``"float64"``, the operator's dtype (that of the matrix values,
      and, for deepinv's geometries, the precision in which deepinv rounds ``cos``/``sin``).

    Build it with :meth:`parallel`, :meth:`fan` or :meth:`general`; they validate the numbers.
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
    center: tuple[float, float] | None = None
    cor_offset: float | None = None
    scale: float | None = None

    # -- constructors ---------------------------------------------------------------------------
    @staticmethod
    def _angles(angles: Any) -> tuple[float, ...]:
        if isinstance(angles, torch.Tensor):
            vals = angles.detach().to("cpu", torch.float64).reshape(-1).tolist()
        else:
            try:
                vals = [float(a) for a in np.asarray(angles, dtype=np.float64).reshape(-1)]
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

    @staticmethod
    def _count(nd: Any) -> int:
        if isinstance(nd, bool) or not isinstance(nd, int) or nd < 2:
            raise DipkitError(f"CT n_detector_pixels must be an integer >= 2, got {nd!r}")
        return nd

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
            vals[key] = _finite(f"fan-beam {key}", val)
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

    @classmethod
    def general(cls, kind: str, img_size: int, angles: Iterable[float] | torch.Tensor, *,
                n_detector_pixels: int, detector_spacing: float = 1.0, cor_offset: float = 0.0,
                center: tuple[float, float] | None = None, scale: float = 1.0,
                source_radius: float | None = None, detector_radius: float | None = None,
                dtype: Any = torch.float32) -> "RayGeometry":
        """A general geometry (lengths in image pixels; see the class docstring). ``center``
        defaults to deepinv's axis (:func:`deepinv_axis`); fan beam needs ``source_radius`` (from
        the rotation axis, beyond the image's circumscribed circle) and ``detector_radius``."""
        if kind not in _KINDS:
            raise DipkitError(f"unknown CT geometry {kind!r} (expected 'parallel' or 'fan')")
        n = cls._size(img_size)
        nd = cls._count(n_detector_pixels)
        spacing = _finite("detector_spacing", detector_spacing)
        cor = _finite("cor_offset", cor_offset)
        sc = _finite("pixel_size", scale)
        if spacing <= 0 or sc <= 0:
            raise DipkitError("CT detector_spacing and pixel_size must be positive")
        if center is None:
            center = (deepinv_axis(n), deepinv_axis(n))
        try:
            cr, cc = (_finite("rotation center", float(c)) for c in center)
        except (TypeError, ValueError):
            raise DipkitError(f"CT rotation center must be [row, col], got {center!r}") from None
        extra: dict[str, float] = {}
        if kind == "fan":
            rs = _finite("fan-beam source_radius", source_radius)
            rd = _finite("fan-beam detector_radius", detector_radius)
            reach = _reach(n, (cr, cc)) - 1.0
            if not rs > reach:
                raise DipkitError(f"fan-beam source distance ({rs:g} pixels) must exceed the largest "
                                  f"distance from the rotation axis to the image ({reach:.1f} pixels)")
            if not rs + rd > 0:
                raise DipkitError("fan-beam detector must lie beyond the source "
                                  "(source_radius + detector_radius > 0)")
            extra = {"source_radius": rs, "detector_radius": rd}
        elif source_radius is not None or detector_radius is not None:
            raise DipkitError("parallel-beam CT takes no source or detector distance")
        return cls(kind=kind, img_size=n, angles=cls._angles(angles), n_detector_pixels=nd,
                   detector_spacing=spacing, dtype=_dtype_name(dtype), center=(cr, cc),
                   cor_offset=cor, scale=sc, **extra)

    # -- derived numbers ------------------------------------------------------------------------
    @property
    def is_general(self) -> bool:
        return self.center is not None

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

    def detector_positions(self) -> np.ndarray:
        """General geometries: lateral position ``t_d`` of each detector cell centre on the detector,
        relative to the ray through the rotation axis, ``(d - (n_det - 1) / 2) spacing - cor_offset``."""
        nd = self.n_detector_pixels
        return (np.arange(nd, dtype=np.float64) - 0.5 * (nd - 1)) * self.detector_spacing - self.cor_offset

    def key(self) -> dict[str, Any]:
        """The full cache key: every field (general-only fields when set), :data:`FORMAT_VERSION`
        and deepinv's version."""
        import deepinv

        fields = dataclasses.asdict(self)
        for name in _GENERAL_FIELDS:
            if fields[name] is None:
                del fields[name]
        return {"format": FORMAT_VERSION, "deepinv": str(deepinv.__version__), **fields}

    def key_json(self) -> str:
        return json.dumps(self.key(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """SHA-256 (hex) of :meth:`key_json`."""
        return hashlib.sha256(self.key_json().encode()).hexdigest()


def _reach(n: int, center: tuple[float, float]) -> float:
    """Distance from ``center`` to the farthest pixel centre of the image, plus one pixel (the
    reach of the bilinear interpolant)."""
    cr, cc = center
    corners = [(r, c) for r in (0.0, n - 1.0) for c in (0.0, n - 1.0)]
    return max(math.hypot(r - cr, c - cc) for r, c in corners) + 1.0


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
    r"""Sample points of the projector, as ``(rows, cols)`` in image pixel coordinates.

    Returns two float64 arrays of shape ``[n_det, len(views), S]``: for detector cell ``d``,
    view ``views[k]`` and step ``s`` along the ray, the point ``(rows[d, k, s], cols[d, k, s])``
    where pixel ``(i, j)`` of the ``N x N`` image has its centre at ``(i, j)``. The measurement
    is :func:`ray_weights` times the sum over ``s`` of the bilinear interpolant of the image (zero
    outside it) at these points; points that are NaN are skipped. ``views`` (indices into
    ``geom.angles``; default all) lets callers process the views in chunks.

    **Orientation** (both families): with ``c = cos theta``, ``s = sin theta`` (``theta`` the
    view angle), a point at coordinate ``X`` along the detector-normal axis and ``Y`` across it
    maps to ``col = c_a + c X + s Y``, ``row = c_a - s X + c Y`` around the rotation axis ``c_a``.
    In parallel beam ``X`` is the detector coordinate and rays run along ``Y``: the detector
    coordinate of a point is ``t = x cos theta + y sin theta`` with ``x`` the column offset
    (right) and ``y`` the row offset *upwards* -- the textbook Radon transform. At
    ``theta = 0`` rays run down the image columns and detector cells are ordered by column index.
    In fan beam ``X`` runs along the central ray from the source (``X = -R_s``) to the flat
    detector (``X = R_d``) and the detector coordinate is ``Y``.

    **deepinv's geometries** (mirroring ``deepinv.physics.functional.radon``): ``W =
    ceil(sqrt(2) N)`` is the sampling grid width; ``u_k = linspace(-1, 1, W)[k]`` the normalised
    grid coordinates (``align_corners=True``); a normalised point ``(g_x, g_y)`` is the image
    pixel ``col = (g_x + 1) / 2 (W_p - 1) - p_b``, ``row = (g_y + 1) / 2 (W_p - 1) - p_b``
    with ``W_p`` the padded image width and ``p_b`` the padding before the image.

    * parallel beam: the ray of detector ``d`` is ``X = u_d``; its samples run along
      ``Y = u_s``, ``s = 0..W-1``; then ``g_x = c X + s Y``, ``g_y = -s X + c Y``.
    * fan beam: lengths are scaled to normalised units by ``2 / (W pixel_spacing)``; with
      ``R_s``, ``R_d``, ``delta`` the scaled source radius, detector radius and detector spacing
      and ``L = delta (n_det - 1)`` the detector length, sample ``s`` of the ray to detector
      ``d`` is ``X = u_s`` and ``Y = v_d L/2 (X + R_s) / (R_s + R_d)`` with
      ``v_d = linspace(-1, 1, n_det)[d]``; then the same rotation. The samples are one pixel
      apart along ``X``, not along the ray, so the measurement is ``cos(gamma)`` times the line
      integral (``gamma``: the ray's fan angle).

    **General geometries** (float64; ``t_d`` = :meth:`RayGeometry.detector_positions`): the
    samples are one pixel apart, at integer ``s`` from ``-M`` to ``M`` with ``M`` the distance
    from the axis to the farthest image corner (plus one pixel, rounded up):

    * parallel beam: ``X = t_d``, ``Y = s`` -- points at integer steps from the foot of the
      perpendicular from the axis, the sampling of ``skimage.transform.radon``;
    * fan beam: ``X = s`` (``X > -R_s``), ``Y = t_d (X + R_s) / (R_s + R_d)``; with the ray
      weight ``1 / cos(gamma)`` (:func:`ray_weights`) the measurement is the line integral.

    To add a geometry, add a branch here that returns the new points (and to
    :func:`ray_weights` if its samples are not one unit of length apart along the ray);
    :func:`dipkit.physics.sparse.build_matrix` turns any points into the matrix.
    """
    idx = list(range(geom.n_views)) if views is None else [int(v) for v in views]
    if geom.is_general:
        return _general_points(geom, idx)
    dt = geom.torch_dtype
    n = geom.img_size
    nd = geom.n_detector_pixels
    w = padded_size(n)
    wp, pb = _padding(n)
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


def n_steps(geom: RayGeometry) -> int:
    """Number of samples per ray."""
    if geom.is_general:
        return 2 * int(math.ceil(_reach(geom.img_size, geom.center))) + 1
    return padded_size(geom.img_size)


def _general_points(geom: RayGeometry, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
    theta = np.deg2rad(np.array([geom.angles[v] for v in idx], dtype=np.float64))
    c = np.cos(theta).reshape(1, -1, 1)
    s = np.sin(theta).reshape(1, -1, 1)
    m = (n_steps(geom) - 1) // 2
    steps = np.arange(-m, m + 1, dtype=np.float64)
    t = geom.detector_positions()
    if geom.kind == "parallel":
        x = t.reshape(-1, 1, 1)
        y = steps.reshape(1, 1, -1)
    else:
        rs, rd = geom.source_radius, geom.detector_radius
        xs = np.where(steps > -rs, steps, np.nan)  # nothing behind the source
        x = xs.reshape(1, 1, -1)
        y = t.reshape(-1, 1, 1) * ((xs + rs) / (rs + rd)).reshape(1, 1, -1)
    cr, cc = geom.center
    cols = cc + c * x + s * y
    rows = cr - s * x + c * y
    shape = (geom.n_detector_pixels, len(idx), steps.size)
    return np.broadcast_to(rows, shape), np.broadcast_to(cols, shape)


def ray_weights(geom: RayGeometry) -> np.ndarray | None:
    """Per-detector-cell weight ``w_d`` of the ray sums (``[n_det]`` float64), or ``None`` for 1.

    deepinv's geometries: ``None``. General geometries: the pixel size (``scale``), times, in fan
    beam, the length of the ray per unit step along the central ray, ``1 / cos(gamma_d) =
    sqrt((R_s + R_d)^2 + t_d^2) / (R_s + R_d)`` -- so that the measurement is the line integral.
    """
    if not geom.is_general:
        return None
    w = np.full(geom.n_detector_pixels, float(geom.scale))
    if geom.kind == "fan":
        sd = geom.source_radius + geom.detector_radius
        w = w * np.sqrt(sd * sd + geom.detector_positions() ** 2) / sd
    return w
