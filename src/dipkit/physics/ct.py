"""2-D CT operators (parallel and fan beam) with a real filtered back-projection.

Both operators are :class:`deepinv.physics.Tomography` subclasses built with

* ``normalize=False`` -- measurements are plain line integrals in *pixel units* (a line crossing
  ``n`` pixels of value 1 integrates to about ``n``; times ``pixel_size`` when one is given), so
  ``||A||`` grows with the image size and the number of views (``||A||^2 ~ 3.7e3`` at 128^2 / 30
  parallel views);
* ``circle=False`` -- the whole square image is projected (the detector covers its diagonal);
* ``adjoint_via_backprop=True`` -- :meth:`A_adjoint` is the exact adjoint (autograd of ``A``).

Measurements have deepinv's layout ``[B, C, n_detector_pixels, views]``.

**Geometries.** By default the views are equispaced (``views``: over [0, 180) in parallel beam,
[0, 360) in fan beam) and the geometry is deepinv's. ``angles=`` takes any list of view angles in
degrees (not necessarily equispaced or sorted); deepinv's projector still computes those. The
*general* geometry options -- ``n_detector_pixels`` and ``detector_spacing`` in parallel beam,
``cor_offset`` (centre-of-rotation offset on the detector), ``center`` (the rotation axis in the
image) and ``pixel_size`` in both -- describe measured data (``dipkit import``); deepinv's
projector cannot express them, so only the sparse backend computes them (``backend="deepinv"``
is an error for them). See :mod:`dipkit.physics.raygeom` for the exact ray model and the angle
and detector orientation, and :mod:`dipkit.importers.ct` for the mapping from other tools'
conventions (scikit-image, ASTRA).

Two interchangeable backends compute ``A`` and ``A^T`` (option ``backend``, recorded in the spec
only when given explicitly; :mod:`dipkit.physics.ct_backend`):

* ``"sparse"`` -- a precomputed sparse system matrix that reproduces deepinv's projector
  (:mod:`dipkit.physics.sparse`; ``A x`` agrees with deepinv's to float32 rounding, exactly in
  float64); ``A`` and ``A^T`` are CSR sparse matrix-vector products. The matrix is built once
  per geometry (about 3 s at 256^2 / 60 views, 0.8 s at 128^2) and cached on disk (loading it
  back: ~0.5 s at 256^2); operators of one process with the same geometry share it.
* ``"deepinv"`` -- deepinv's ``grid_sample`` projector, adjoint by autograd.

The default (``backend=None``) is ``"sparse"`` on the CPU, where ``A`` + its backward is 9-13x
faster at 256^2 / 60 views, 6-9x at 128^2, 2-7x at 64^2 (2-core CPU, ``benchmarks/sparse_ct.py``;
a DIP iteration at 128^2 / 60 views takes about half the time), unless the matrix would be huge
(:data:`AUTO_SPARSE_MAX_NNZ`). On other devices (CUDA) the default stays ``"deepinv"``:
``grid_sample`` is fast on a GPU and the sparse backend has not been measured there (no GPU was
available); ``backend="sparse"`` works on CUDA too (the matrices move with ``.to(device)``).
General geometries always use ``"sparse"``.

``A_dagger(y)`` is **not** deepinv's default (a least-squares CG solve) here: it is the filtered
back-projection (FBP, :mod:`dipkit.physics.ct_fbp`), a fast approximate inverse with
``FBP(A x) ~ x`` for enough views. (The least-squares solve stays reachable as
``deepinv.physics.LinearPhysics.A_dagger(op, y)``; at 30 views it scores higher than FBP on
noise-free data: 23.5 vs 21.4 dB, Shepp-Logan 128^2.)

Measured FBP PSNR (noise-free Shepp-Logan 128^2, data range 1):

=========  ========  =========
views      parallel  fan
=========  ========  =========
30         21.4 dB   18.0 dB
60         27.9 dB   23.9 dB
180        29.9 dB   29.8 dB
360        30.0 dB   30.4 dB
=========  ========  =========

(fan views span 360 deg, so V fan views sample directions half as densely as V parallel ones.)

Every operator carries a JSON-serialisable :attr:`spec` from which :func:`from_spec` rebuilds it
exactly (bit-identical ``A x``)::

    {"kind": "ct", "geometry": "parallel", "img_size": 128, "views": 30}
    {"kind": "ct", "geometry": "fan", "img_size": 128, "views": 30,
     "source_radius": 256.0, "detector_radius": 128.0,
     "detector_spacing": 1.5, "n_detector_pixels": 201}
    {"kind": "ct", "geometry": "parallel", "img_size": 128, "views": 3, "angles": [0.0, 10.5, 97.0]}
    {"kind": "ct", "geometry": "parallel", "img_size": 128, "views": 3, "angles": [...],
     "n_detector_pixels": 128, "detector_spacing": 1.0, "cor_offset": 0.5,
     "center": [64.0, 64.0], "pixel_size": 1.0}

Specs without ``angles`` (all those written before it existed) build the equispaced operator;
specs without the general keys build deepinv's geometry, exactly as before. Lengths of general
specs are in the unit of ``pixel_size`` (e.g. mm); ``center`` is in pixel indices.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from deepinv.physics import Tomography

from ..errors import DipkitError
from . import sparse as _sparse
from .ct_backend import AUTO_SPARSE_MAX_NNZ, BACKENDS, Backend, check_backend, default_backend
from .ct_fbp import angular_weights, fan_fbp, general_fbp

__all__ = [
    "ParallelBeamCT",
    "FanBeamCT",
    "parallel_beam",
    "fan_beam",
    "from_spec",
    "is_ct",
    "default_fan_geometry",
    "default_backend",
    "BACKENDS",
    "AUTO_SPARSE_MAX_NNZ",
    "GENERAL_KEYS",
]

#: general-geometry options (any of them makes the geometry general, see the module docstring)
GENERAL_KEYS = {"parallel": ("n_detector_pixels", "detector_spacing", "cor_offset", "center",
                             "pixel_size"),
                "fan": ("cor_offset", "center", "pixel_size")}
_FAN_KEYS = ("source_radius", "detector_radius", "detector_spacing", "n_detector_pixels")


def _check_size(img_size: Any) -> int:
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 2:
        raise DipkitError(f"CT img_size must be an integer >= 2, got {img_size!r}")
    return img_size


def _angle_tensor(views: Any, angles: Any, full: float) -> tuple[torch.Tensor, bool]:
    """The view angles (float64, degrees) and whether they were given as a list."""
    if angles is None:
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise DipkitError(f"CT views must be a positive integer, got {views!r}")
        return torch.linspace(0.0, full, views + 1, dtype=torch.float64)[:-1], False
    vals = _sparse.RayGeometry._angles(angles)
    if views is not None and views != len(vals):
        raise DipkitError(f"CT views ({views!r}) does not match the {len(vals)} angles given")
    return torch.tensor(vals, dtype=torch.float64), True


def _number(key: str, val: Any, positive: bool = False) -> float:
    if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
        raise DipkitError(f"CT {key} must be a finite number, got {val!r}")
    if positive and not val > 0:
        raise DipkitError(f"CT {key} must be positive, got {val!r}")
    return float(val)


def _count(key: str, val: Any) -> int:
    if isinstance(val, bool) or not isinstance(val, (int, float)) or int(val) != val or val < 2:
        raise DipkitError(f"CT {key} must be an integer >= 2, got {val!r}")
    return int(val)


def _general(kind: str, n: int, given: dict) -> dict | None:
    """The full general geometry (spec values: lengths in pixel_size units) when any general
    option is given, else ``None``."""
    if all(given.get(k) is None for k in GENERAL_KEYS[kind]):
        return None
    p = _number("pixel_size", 1.0 if given.get("pixel_size") is None else given["pixel_size"],
                positive=True)
    out: dict[str, Any] = {}
    if kind == "fan":
        geo = default_fan_geometry(n)
        for key in ("source_radius", "detector_radius", "detector_spacing"):
            val = given.get(key)
            out[key] = _number(key, geo[key] * p if val is None else val)
        out["detector_spacing"] = _number("detector_spacing", out["detector_spacing"], True)
        nd = given.get("n_detector_pixels")
        out["n_detector_pixels"] = _count("n_detector_pixels", geo["n_detector_pixels"] if nd is None
                                          else nd)
    else:
        spacing = _number("detector_spacing", p if given.get("detector_spacing") is None
                          else given["detector_spacing"], positive=True)
        nd = given.get("n_detector_pixels")
        out["n_detector_pixels"] = _count("n_detector_pixels", math.ceil(math.sqrt(2) * n * p / spacing)
                                          if nd is None else nd)
        out["detector_spacing"] = spacing
    out["cor_offset"] = _number("cor_offset", 0.0 if given.get("cor_offset") is None
                                else given["cor_offset"])
    center = given.get("center")
    if center is None:
        center = [_sparse.deepinv_axis(n)] * 2
    try:
        center = [float(c) for c in center]
        if len(center) != 2:
            raise ValueError
    except (TypeError, ValueError):
        raise DipkitError(f"CT center must be [row, col] (pixel indices), got {given.get('center')!r}") from None
    out["center"] = [_number("center", c) for c in center]
    out["pixel_size"] = p
    return out


def _general_ray_geometry(kind: str, n: int, angles: torch.Tensor, g: dict, dtype):
    """:class:`~dipkit.physics.raygeom.RayGeometry` of a general geometry (lengths to pixels)."""
    p = g["pixel_size"]
    extra = {}
    if kind == "fan":
        extra = {"source_radius": g["source_radius"] / p, "detector_radius": g["detector_radius"] / p}
    return _sparse.RayGeometry.general(
        kind, n, angles, n_detector_pixels=g["n_detector_pixels"],
        detector_spacing=g["detector_spacing"] / p, cor_offset=g["cor_offset"] / p,
        center=tuple(g["center"]), scale=p, dtype=dtype, **extra)


class _CT(Backend, Tomography):
    """What both CT operators share: construction of the deepinv base, the backend, the spec."""

    geometry: str

    def _init_ct(self, img_size, views, angles, backend, device, dtype, full, fan_parameters=None,
                 general=None):
        img_size = _check_size(img_size)
        check_backend(backend)
        angles64, listed = _angle_tensor(views, angles, full)
        # general geometries never use deepinv's projector: give it one view (its grids are big)
        base = angles64[:1] if general is not None else angles64
        super().__init__(angles=base.to(device=device, dtype=dtype), img_width=img_size,
                         circle=False, adjoint_via_backprop=True, normalize=False,
                         fan_beam=self.geometry == "fan", fan_parameters=fan_parameters,
                         device=device, dtype=dtype)
        if general is not None:
            self.angles = angles64.to(device=device, dtype=dtype)
        self.img_size = (1, img_size, img_size)  # deepinv convention (C, H, W)
        self.views = len(angles64)
        self.general = general
        spec = {"kind": "ct", "geometry": self.geometry, "img_size": img_size, "views": self.views}
        if listed or general is not None:
            spec["angles"] = [float(a) for a in angles64.tolist()]
        return img_size, angles64, spec

    @property
    def measurement_shape(self) -> tuple[int, int]:
        """``(n_detector_pixels, views)`` -- the last two dims of ``A x``."""
        return (self.n_detector_pixels, self.views)

    @property
    def pixel_size(self) -> float:
        return 1.0 if self.general is None else self.general["pixel_size"]

    def _check_sinogram(self, y: torch.Tensor) -> None:
        if tuple(y.shape[-2:]) != tuple(self.measurement_shape):
            raise ValueError(f"sinogram shape {tuple(y.shape[-2:])} does not match the operator "
                             f"{tuple(self.measurement_shape)}")

    def A_dagger(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """Filtered back-projection of ``y`` ``[B, C, n_det, views]`` -> ``[B, C, N, N]``."""
        kwargs.pop("fbp", None)
        return self.fbp(y, **kwargs)

    def extra_repr(self) -> str:
        geo = "" if self.general is None else ", " + ", ".join(f"{k}={v}" for k, v in self.general.items())
        return f"img_width={self.img_width}, views={self.views}{geo}, backend={self.backend}"


class ParallelBeamCT(_CT):
    """Parallel-beam CT: ``views`` equispaced angles over [0, 180) degrees (endpoint excluded),
    or the list ``angles`` (degrees).

    deepinv's detector: ``ceil(sqrt(2) * img_size)`` cells of one pixel width, centred on the
    rotation axis. General geometries (see the module docstring): ``n_detector_pixels`` cells
    (default: enough for the image diagonal) of width ``detector_spacing`` (default: one pixel,
    ``pixel_size``), the ray through the rotation axis at ``cor_offset`` from the detector centre
    (positive towards higher cell indices; default 0), the rotation axis at pixel ``center``
    (``[row, col]``, default deepinv's, :func:`dipkit.physics.raygeom.deepinv_axis`), values
    multiplied by ``pixel_size`` (default 1). Lengths in the unit of ``pixel_size``.

    ``A_dagger`` is the ramp-filtered (Ram-Lak) back-projection: deepinv's for deepinv
    geometries, whose scaling gives ``FBP(A x) ~ x`` (checked numerically: interior of a uniform
    disc reconstructed at 1.000; 29.9 dB on Shepp-Logan 128^2 with 180 views);
    :func:`dipkit.physics.ct_fbp.general_fbp` for general ones.

    Attributes: ``img_width`` (N), ``img_size`` (deepinv's ``(1, N, N)``), ``views``,
    ``n_detector_pixels``, ``spec``, ``general`` (the general geometry, or ``None``),
    ``backend`` (``"sparse"`` or ``"deepinv"``), ``ray_geometry``
    (:class:`dipkit.physics.raygeom.RayGeometry`).
    """

    geometry = "parallel"

    def __init__(self, img_size: int, views: int | None = None, *, angles=None,
                 n_detector_pixels: int | None = None, detector_spacing: float | None = None,
                 cor_offset: float | None = None, center=None, pixel_size: float | None = None,
                 backend: str | None = None, device="cpu", dtype=torch.float32):
        n = _check_size(img_size)
        general = _general("parallel", n, {
            "n_detector_pixels": n_detector_pixels, "detector_spacing": detector_spacing,
            "cor_offset": cor_offset, "center": center, "pixel_size": pixel_size})
        n, angles64, spec = self._init_ct(n, views, angles, backend, device, dtype, 180.0,
                                          general=general)
        if general is None:
            self.n_detector_pixels = _sparse.padded_size(n)
            make = lambda: _sparse.RayGeometry.parallel(n, self.angles, dtype=dtype)  # noqa: E731
        else:
            self.n_detector_pixels = general["n_detector_pixels"]
            make = lambda: _general_ray_geometry("parallel", n, angles64, general, dtype)  # noqa: E731
            spec.update(general)
        self._setup_backend(backend, make, device, dtype, general=general is not None)
        self.spec = {**spec, **self._backend_spec()}

    def fbp(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """Parallel-beam FBP. deepinv geometries: Ram-Lak filter along the detector, exact
        back-projection ``A^T``, times ``pi / (2 V)`` (deepinv's ``Tomography.fbp``; its scale is
        right) -- with an angle list, each view times its angular interval
        (:func:`~dipkit.physics.ct_fbp.angular_weights`) over 2 instead. General geometries: :func:`dipkit.physics.ct_fbp.general_fbp` (views weighted by
        their angular intervals, spacing and pixel size accounted for)."""
        if self.general is not None:
            self._check_sinogram(y)
            return general_fbp(self, y)
        if "angles" in self.spec:  # any angle list: each view weighted by its angular interval
            self._check_sinogram(y)
            w = angular_weights(self.angles.double().cpu().numpy(), 180.0)
            w = torch.as_tensor(w, dtype=y.dtype, device=y.device)
            return self.A_adjoint(self.iradon.filter(y) * w, **kwargs) / 2
        return super().fbp(y, **kwargs)


def default_fan_geometry(img_size: int) -> dict[str, float | int]:
    """The fan geometry dipkit uses by default, lengths in image pixels.

    * ``source_radius = 2 N`` (source-to-rotation-axis distance, twice the image width);
    * ``detector_radius = N`` (rotation-axis-to-detector distance), so the magnification at
      the axis is ``M = (2N + N) / 2N = 1.5``;
    * ``detector_spacing = M = 1.5``: one detector cell per image pixel once de-magnified to
      the axis (the virtual detector through the axis has unit spacing, like the parallel one);
    * ``n_detector_pixels``: odd, so that the central cell lies on the central ray, and large
      enough that the fan through the disc circumscribing the image (radius ``N/sqrt(2) + 1``)
      fits on the flat detector with two spare cells each side: ``2 ceil(u_max) + 5`` with
      ``u_max = R r / sqrt(R^2 - r^2)`` (``201`` cells at N = 128, ``57`` at N = 32).
    """
    n = float(img_size)
    rs = 2.0 * n
    rd = 1.0 * n
    mag = (rs + rd) / rs
    r = n / math.sqrt(2.0) + 1.0
    u_max = rs * r / math.sqrt(rs * rs - r * r)  # half-length on the virtual (axis) detector
    return {
        "source_radius": rs,
        "detector_radius": rd,
        "detector_spacing": mag,
        "n_detector_pixels": 2 * int(math.ceil(u_max)) + 5,
    }


class FanBeamCT(_CT):
    """Fan-beam CT with a flat (equispaced) detector, ``views`` equispaced angles over [0, 360)
    or the list ``angles`` (degrees).

    Geometry (lengths in image pixels, or in the unit of ``pixel_size``; see
    :func:`default_fan_geometry` for the defaults): the source circles the rotation axis at
    ``source_radius`` (default ``2 N``), the flat detector faces it at ``detector_radius``
    (default ``N``) on the other side, with ``n_detector_pixels`` cells of width
    ``detector_spacing`` (default ``1.5 =`` the magnification, i.e. one cell per image pixel at
    the rotation axis). With these numbers the fan through the whole image hits the detector,
    with two spare cells each side. At view angle ``0`` the source sits to the left of the image
    (column ``-source_radius``), rays run along the rows towards the detector, and detector cells
    are ordered by row index; the geometry rotates with the view angle as in deepinv's ``Radon``
    (``fan_beam=True``). General options (module docstring): ``cor_offset`` (the ray from the
    source through the rotation axis meets the detector at ``cor_offset`` from its centre,
    positive towards higher cell indices), ``center``, ``pixel_size``.

    deepinv geometries: deepinv's fan forward projector samples each ray once per pixel *along
    the central ray* direction, so its measurement is ``cos(gamma)`` times the line integral
    (gamma = fan angle of the ray) -- which is exactly the pre-weighting of the fan-beam FBP.
    General geometries measure the line integral itself (times ``pixel_size``).

    ``A_dagger`` is a real fan-beam FBP (:func:`dipkit.physics.ct_fbp.fan_fbp`, or
    :func:`~dipkit.physics.ct_fbp.general_fbp` for general geometries).

    Attributes: ``img_width`` (N), ``img_size`` (deepinv's ``(1, N, N)``), ``views``,
    ``source_radius``, ``detector_radius``, ``detector_spacing``, ``n_detector_pixels``,
    ``fan_parameters`` (the dict handed to deepinv), ``general``, ``spec``, ``backend``,
    ``ray_geometry``.
    """

    geometry = "fan"

    def __init__(self, img_size: int, views: int | None = None, *, angles=None,
                 source_radius: float | None = None, detector_radius: float | None = None,
                 detector_spacing: float | None = None, n_detector_pixels: int | None = None,
                 cor_offset: float | None = None, center=None, pixel_size: float | None = None,
                 backend: str | None = None, device="cpu", dtype=torch.float32):
        n = _check_size(img_size)
        given = {"source_radius": source_radius, "detector_radius": detector_radius,
                 "detector_spacing": detector_spacing, "n_detector_pixels": n_detector_pixels}
        general = _general("fan", n, {**given, "cor_offset": cor_offset, "center": center,
                                      "pixel_size": pixel_size})
        geo = default_fan_geometry(n)
        if general is not None:  # deepinv's base gets the geometry in pixels (it is not used)
            geo.update({k: general[k] / general["pixel_size"] for k in _FAN_KEYS[:3]})
            geo["n_detector_pixels"] = general["n_detector_pixels"]
        else:
            geo.update({k: v for k, v in given.items() if v is not None})
        for key in _FAN_KEYS[:3]:
            geo[key] = _number(f"fan-beam {key}", geo[key])
        geo["n_detector_pixels"] = _count("fan-beam n_detector_pixels", geo["n_detector_pixels"])
        half_diag = n / math.sqrt(2.0)
        if general is None and not geo["source_radius"] > half_diag:
            raise DipkitError(
                f"fan-beam source_radius ({geo['source_radius']}) must exceed the image half-diagonal "
                f"({half_diag:.1f} pixels)"
            )
        if not (geo["detector_radius"] > -geo["source_radius"] and geo["detector_spacing"] > 0):
            raise DipkitError(f"invalid fan-beam geometry {geo}")
        # deepinv maps its padded W' x W' grid onto [-1, 1] through 2 / (W' * pixel_spacing), while
        # grid_sample(align_corners=True) puts pixel centres 2 / (W' - 1) apart; this pixel_spacing
        # makes one length unit exactly one image pixel.
        w = _sparse.padded_size(n)
        fan_parameters = {"pixel_spacing": (w - 1) / w, **{k: geo[k] for k in _FAN_KEYS}}
        fan_parameters = {k: fan_parameters[k] for k in ("pixel_spacing", *_FAN_KEYS)}
        n, angles64, spec = self._init_ct(n, views, angles, backend, device, dtype, 360.0,
                                          fan_parameters=dict(fan_parameters), general=general)
        src = general if general is not None else geo
        self.source_radius = src["source_radius"]
        self.detector_radius = src["detector_radius"]
        self.detector_spacing = src["detector_spacing"]
        self.n_detector_pixels = src["n_detector_pixels"]
        self.fan_parameters = fan_parameters
        if general is None:
            make = lambda: _sparse.RayGeometry.fan(n, self.angles, dtype=dtype,  # noqa: E731
                                                   **fan_parameters)
            spec.update({k: geo[k] for k in _FAN_KEYS})
        else:
            make = lambda: _general_ray_geometry("fan", n, angles64, general, dtype)  # noqa: E731
            spec.update(general)
        self._setup_backend(backend, make, device, dtype, general=general is not None)
        self.spec = {**spec, **self._backend_spec()}

    @property
    def magnification(self) -> float:
        return (self.source_radius + self.detector_radius) / self.source_radius

    def fbp(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """Fan-beam FBP of ``y`` ``[B, C, n_det, views]`` -> ``[B, C, N, N]``: Ram-Lak filtering
        along the detector with the fan-beam scaling (virtual detector spacing), then
        distance-weighted (``1/U^2``) back-projection with linear interpolation
        (:mod:`dipkit.physics.ct_fbp`). Leading dims are kept; not differentiable."""
        self._check_sinogram(y)
        return fan_fbp(self, y) if self.general is None else general_fbp(self, y)


def parallel_beam(img_size: int, views: int | None = None, *, device="cpu", dtype=torch.float32,
                  backend: str | None = None, **geometry) -> ParallelBeamCT:
    """Parallel-beam CT operator on an ``img_size`` x ``img_size`` image with ``views`` angles
    equispaced over [0, 180) degrees (or ``angles=[...]``, degrees); ``backend``: ``"sparse"``,
    ``"deepinv"`` or ``None`` (the device's default, see the module docstring); ``geometry``:
    the general options of :class:`ParallelBeamCT`."""
    return ParallelBeamCT(img_size, views, backend=backend, device=device, dtype=dtype, **geometry)


def fan_beam(img_size: int, views: int | None = None, *, device="cpu", dtype=torch.float32,
             backend: str | None = None, **geometry) -> FanBeamCT:
    """Fan-beam CT operator (flat detector) with ``views`` angles equispaced over [0, 360) (or
    ``angles=[...]``, degrees).

    Default geometry (lengths in image pixels, ``N = img_size``): source at ``2N`` from the
    rotation axis, detector at ``N`` beyond it (magnification 1.5), detector cells ``1.5`` wide
    (one cell per image pixel at the axis), and just enough cells (odd count) for the fan
    through the whole image plus two spare cells each side -- see :func:`default_fan_geometry`.
    ``geometry``: ``source_radius``, ``detector_radius``, ``detector_spacing``,
    ``n_detector_pixels`` and the general options of :class:`FanBeamCT`. ``backend``:
    ``"sparse"``, ``"deepinv"`` or ``None`` (the device's default, see the module docstring).
    """
    return FanBeamCT(img_size, views, backend=backend, device=device, dtype=dtype, **geometry)


def from_spec(spec: dict, *, device="cpu", dtype=torch.float32) -> ParallelBeamCT | FanBeamCT:
    """Rebuild a CT operator from its :attr:`spec` (``op.spec``); ``A x`` is bit-identical.

    A ``"kind"`` key, if present, must be ``"ct"``. Fan specs may omit geometry numbers (the
    defaults of :func:`default_fan_geometry` are used). ``"angles"`` (degrees) replaces the
    equispaced views (``"views"`` must then equal their number). A ``"backend"`` key
    (``"sparse"`` or ``"deepinv"``) is present only when the operator was built with an explicit
    backend; without it the device's default backend is used (so problem files written before the
    key existed still load, with the same operator up to float32 rounding).
    """
    if not isinstance(spec, dict):
        raise DipkitError(f"CT spec must be a dict, got {type(spec).__name__}")
    kind = spec.get("kind", "ct")
    if kind != "ct":
        raise DipkitError(f"not a CT spec (kind={kind!r})")
    geometry = spec.get("geometry", "parallel")
    for key in ("img_size", "views"):
        if key not in spec:
            raise DipkitError(f"CT spec lacks {key!r}: {spec}")
    known = {"kind", "geometry", "img_size", "views", "backend", "angles"}
    backend = spec.get("backend")
    if backend is not None and backend not in BACKENDS:
        raise DipkitError(f"unknown CT backend {backend!r} in spec (expected 'sparse' or 'deepinv')")
    if geometry not in GENERAL_KEYS:
        raise DipkitError(f"unknown CT geometry {geometry!r} (expected 'parallel' or 'fan')")
    options = set(GENERAL_KEYS[geometry]) | (set(_FAN_KEYS) if geometry == "fan" else set())
    extra = set(spec) - known - options
    if extra:
        raise DipkitError(f"unexpected keys in {geometry}-beam CT spec: {sorted(extra)}")
    make = parallel_beam if geometry == "parallel" else fan_beam
    return make(spec["img_size"], spec["views"], device=device, dtype=dtype, backend=backend,
                angles=spec.get("angles"), **{k: spec[k] for k in options if k in spec})


def is_ct(physics: Any) -> bool:
    """Whether ``physics`` is one of dipkit's CT operators (or any deepinv ``Tomography``)."""
    return isinstance(physics, Tomography)
