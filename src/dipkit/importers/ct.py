r"""``dipkit import --task ct|ct-fan``: a CT problem from a measured sinogram.

dipkit's own conventions (those of :mod:`dipkit.physics.ct`, i.e. of deepinv)
------------------------------------------------------------------------------
* **Sinogram layout**: ``[detectors, views]``.
* **Angles** in degrees. In parallel beam the detector coordinate of a point is
  ``t = x cos(theta) + y sin(theta)``, with ``x`` to the right (columns) and ``y`` *up* (against
  the row index) from the rotation axis: at ``theta = 0`` rays run down the columns and detector
  cells follow the column index; increasing ``theta`` turns the detector counter-clockwise as the
  image is displayed. In fan beam the source sits at ``-R_s (cos theta, sin theta)`` and detector
  cells run along ``(sin theta, -cos theta)`` (at ``theta = 0``: source on the left, cells
  following the row index).
* **Detector**: cell ``d`` at ``(d - (n - 1) / 2) spacing - cor_offset`` from the ray through the
  rotation axis.
* **Rotation axis**: at pixel ``deepinv_axis(N)`` (row = column; the image centre ``(N - 1)/2``
  or half a pixel off it, as deepinv's projector has it), unless ``rotation_center`` says otherwise.

Conventions (``--convention`` or ``convention:`` in the geometry YAML)
----------------------------------------------------------------------
==========  ==================  =========  =============================================================
name        sinogram layout     angles     geometry
==========  ==================  =========  =============================================================
``dipkit``  detectors × views   degrees    as above (``dipkit simulate``'s sinograms import unchanged)
``skimage`` detectors × views   degrees    ``skimage.transform.radon(image, theta)`` as it comes (parallel
                                           only): same angles and orientation; axis at pixel
                                           ``(N//2, N//2)``; the axis projects onto cell ``n//2``
                                           (``cor_offset = n//2 - (n-1)/2`` cells); unit spacing.
                                           ``circle=True`` (skimage's default) gives ``n = N`` cells and
                                           the default image size is ``n``; with ``circle=False`` give
                                           ``image_size`` (or a ground truth). Measured: dipkit's operator
                                           reproduces ``radon`` to 1e-15 (float64), both settings.
``astra``   views × detectors   radians    ASTRA's ``parallel`` / ``fanflat`` geometries: volume centred
                                           on the axis (axis at ``((N-1)/2, (N-1)/2)``), row 0 at the
                                           top (ASTRA's ``y`` up), detector centred; parallel: the
                                           same angles (ASTRA's detector vector ``(cos, sin)`` is
                                           ours); fan: ``theta_dipkit = theta_astra + 90°`` (ASTRA's
                                           source at ``D_s (sin, -cos)``).
==========  ==================  =========  =============================================================

The ``astra`` mapping was derived from ASTRA's geometry definitions (``geom_2vec``, and its volume
geometry putting row 0 at the largest ``y``) and is tested against analytic projections in that
frame; ASTRA itself was not available to compare with.

Geometry YAML (``--geometry FILE.yaml``; every key optional, lengths in one unit of your choice)
------------------------------------------------------------------------------------------------
.. code-block:: yaml

    geometry: parallel            # or fan (default: from --task)
    convention: skimage           # dipkit (default), skimage, astra; --convention wins
    sinogram_layout: detectors-views   # or views-detectors (default: the convention's)
    angles: [0, 1.5, 3.2, ...]    # any list; or {start: 0, stop: 180, count: 90} (stop excluded)
                                  #   or {start: 0, step: 2, count: 90}; or angles_file: a.txt
    angle_unit: degrees           # or radians (default: the convention's)
    angle_offset: 0               # added to every angle, in angle_unit (default 0 after the
                                  #   convention's own offset)
    angle_direction: 1            # -1: angles run clockwise in dipkit's frame
    detector_count: 183           # checked against the sinogram
    detector_spacing: 1.0         # default: pixel_size (parallel), 1.5 pixel_size (fan, dipkit's)
    detector_flip: false          # true: the sinogram's cells run the other way
    cor_offset: 0.0               # where the ray through the rotation axis meets the detector,
                                  #   from its centre, positive towards higher cell indices
                                  #   (in the file's cell order; default: the convention's)
    rotation_center: [63.5, 63.5] # [row, col] pixel indices of the axis in the image
                                  #   (default: the convention's)
    pixel_size: 1.0               # image pixel size; scales the line integrals (default 1)
    image_size: 128               # N (default: the ground truth's, else the largest image whose
                                  #   inscribed disc every view sees)
    source_center_distance: 256   # fan: source to rotation axis (default dipkit's 2 N pixel_size)
    source_detector_distance: 384 # fan: source to detector (default dipkit's 3 N pixel_size)

Angles come from (first found): ``--angles FILE`` (one number per entry, in ``angle_unit``),
``--views N [--arc DEG]`` (``N`` angles ``k · DEG / N`` in degrees, in the file's frame; ``--arc``
alone takes ``N`` from the sinogram; default arc 180 parallel, 360 fan), the YAML's ``angles`` or
``angles_file``. Shapes that disagree are one-line errors naming the dimension, e.g. "the
sinogram has 91 angles but the geometry lists 90".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DipkitError
from .arrays import parse_source, read_array, read_slice

__all__ = ["CONVENTIONS", "Convention", "read_geometry", "import_ct", "GEOMETRY_KEYS"]


@dataclass(frozen=True)
class Convention:
    """How a sinogram file relates to dipkit's frame (see the module docstring)."""

    name: str
    layout: str  # "detectors-views" or "views-detectors"
    angle_unit: str  # "degrees" or "radians"
    angle_offset: dict  # geometry -> degrees added after unit conversion
    axis: str  # rotation axis: "deepinv" (deepinv_axis(N)), "index" (N // 2), "center" ((N-1)/2)
    detector: str  # axis on the detector: "center" ((n-1)/2) or "index" (n // 2)
    geometries: tuple = ("parallel", "fan")
    description: str = ""


CONVENTIONS = {
    "dipkit": Convention("dipkit", "detectors-views", "degrees", {"parallel": 0.0, "fan": 0.0},
                         "deepinv", "center", description="dipkit's (deepinv's) own frame"),
    "skimage": Convention("skimage", "detectors-views", "degrees", {"parallel": 0.0}, "index", "index",
                          ("parallel",), "skimage.transform.radon(image, theta) as it comes"),
    "astra": Convention("astra", "views-detectors", "radians", {"parallel": 0.0, "fan": 90.0},
                        "center", "center", description="ASTRA parallel / fanflat"),
}

GEOMETRY_KEYS = ("geometry", "convention", "sinogram_layout", "angles", "angles_file", "angle_unit",
                 "angle_offset", "angle_direction", "detector_count", "detector_spacing",
                 "detector_flip", "cor_offset", "rotation_center", "pixel_size", "image_size",
                 "source_center_distance", "source_detector_distance")


def read_geometry(path: str | None) -> dict:
    """The geometry YAML as a dict (unknown keys are errors); ``{}`` without a file."""
    if path is None:
        return {}
    from ..io.guard import read_yaml

    p = Path(path)
    data = read_yaml(p, "geometry file")
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise DipkitError(f"the geometry file {p} must be a mapping of keys to values")
    unknown = sorted(map(str, set(data) - set(GEOMETRY_KEYS)))
    if unknown:
        raise DipkitError(f"unknown keys in the geometry file {p}: {', '.join(map(str, unknown))} "
                          f"(known: {', '.join(GEOMETRY_KEYS)})")
    if "angles_file" in data:
        data["angles_file"] = str((p.parent / str(data["angles_file"])).resolve())
    return data


def _num(geo: dict, key: str, default: Any = None, positive: bool = False) -> Any:
    val = geo.get(key, default)
    if val is None:
        return None
    if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
        raise DipkitError(f"geometry: {key} must be a number, got {val!r}")
    if positive and val <= 0:
        raise DipkitError(f"geometry: {key} must be positive, got {val!r}")
    return float(val)


def _angle_list(geo: dict, angles_arg: str | None, views: int | None, arc: float | None,
                n_views_data: int, kind: str) -> tuple[np.ndarray, bool]:
    """The angles in the file's frame and whether they are in degrees already (else in
    ``angle_unit``)."""
    if angles_arg is not None:
        arr = read_array(parse_source(angles_arg, "angles"), defaults=("angles", "theta"))
        return arr.reshape(-1), False
    if views is not None or arc is not None:
        n = n_views_data if views is None else views
        a = (180.0 if kind == "parallel" else 360.0) if arc is None else arc
        if not (math.isfinite(a) and a > 0):
            raise DipkitError(f"--arc must be a positive number of degrees, got {arc}")
        return np.arange(n) * (a / n), True
    spec = geo.get("angles")
    if spec is not None:
        if isinstance(spec, dict):
            extra = set(spec) - {"start", "stop", "step", "count"}
            if extra or "count" not in spec or ("stop" in spec) == ("step" in spec):
                raise DipkitError("geometry: angles as a mapping needs count and either stop "
                                  "(excluded) or step, besides an optional start")
            start = _num(spec, "start", 0.0)
            count = spec["count"]
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise DipkitError(f"geometry: angles count must be a positive integer, got {count!r}")
            step = _num(spec, "step") if "step" in spec else (_num(spec, "stop") - start) / count
            return start + np.arange(count) * step, False
        try:
            arr = np.asarray(spec, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise DipkitError("geometry: angles must be a list of numbers") from None
        if arr.size == 0 or not np.all(np.isfinite(arr)):
            raise DipkitError("geometry: angles must be a non-empty list of finite numbers")
        return arr, False
    if "angles_file" in geo:
        arr = read_array(parse_source(geo["angles_file"], "angles"), defaults=("angles", "theta"))
        return arr.reshape(-1), False
    raise DipkitError("no view angles: give --angles FILE, --views N [--arc DEG], or angles / "
                      "angles_file in the --geometry file")


def _fan_defaults(n: int | None, p: float, conv: Convention, geo: dict) -> tuple[float, float]:
    sod, sdd = _num(geo, "source_center_distance", positive=True), _num(geo, "source_detector_distance")
    if sod is None or sdd is None:
        if conv.name != "dipkit" or n is None:
            raise DipkitError("fan-beam geometry needs source_center_distance and "
                              "source_detector_distance in the --geometry file"
                              + (" (or, in dipkit's convention, an image size for dipkit's default "
                                 "fan)" if conv.name == "dipkit" else ""))
        sod = 2.0 * n * p if sod is None else sod
        sdd = 3.0 * n * p if sdd is None else sdd
    if not sdd > sod:
        raise DipkitError(f"geometry: source_detector_distance ({sdd:g}) must exceed "
                          f"source_center_distance ({sod:g})")
    return sod, sdd


def _default_size(kind: str, nd: int, spacing: float, p: float, sod=None, sdd=None) -> int:
    """The largest image whose inscribed disc every view sees (centred axis)."""
    half = 0.5 * nd * spacing
    if kind == "parallel":
        return max(2, int(math.floor(2 * half / p + 1e-6)))
    r = sod * math.sin(math.atan(half / sdd))
    return max(2, int(math.floor(2 * r / p + 1e-6)))


def _dipkit_size(kind: str, nd: int) -> int | None:
    """The image size ``N`` whose default dipkit detector has ``nd`` cells, if exactly one has."""
    from ..physics.ct import default_fan_geometry
    from ..physics.raygeom import padded_size

    guess = int(nd / math.sqrt(2.0)) if kind == "parallel" else int((nd - 7) / 1.512)
    found = [n for n in range(max(2, guess - 8), guess + 9)
             if (padded_size(n) if kind == "parallel" else default_fan_geometry(n)["n_detector_pixels"]) == nd]
    return found[0] if len(found) == 1 else None


def import_ct(*, task: str, sinogram: str, key: str | None = None, slice_index: int | None = None,
              angles: str | None = None, views: int | None = None, arc: float | None = None,
              geometry: str | None = None, convention: str | None = None,
              image_size: int | None = None, ground_truth: str | None = None,
              noise_std: float | None = None, scale: Any = "auto", dtype=torch.float32):
    """Build a CT :class:`~dipkit.problem.Problem` from a sinogram file (module docstring)."""
    from ..physics.ct import fan_beam, parallel_beam
    from ..physics.noise import estimate_noise_sigma
    from ..physics.raygeom import deepinv_axis, padded_size
    from ..problem import Problem
    from .common import finish_meta, parse_scale, read_ground_truth, resolve_scale

    kind = "parallel" if task == "ct" else "fan"
    geo = read_geometry(geometry)
    if geo.get("geometry", kind) != kind:
        raise DipkitError(f"--task {task} is {kind} beam but the geometry file says {geo['geometry']!r}")
    name = convention or geo.get("convention") or "dipkit"
    if name not in CONVENTIONS:
        raise DipkitError(f"unknown convention {name!r} (choose from {', '.join(CONVENTIONS)})")
    conv = CONVENTIONS[name]
    if kind not in conv.geometries:
        raise DipkitError(f"the {name} convention has no {kind}-beam geometry")
    scale = parse_scale(scale)

    src = parse_source(sinogram, "sinogram", key)
    sino, slice_used = read_slice(src, 2, slice_index, defaults=("sinogram", "sino", "projections", "y"))
    layout = geo.get("sinogram_layout", conv.layout)
    if layout not in ("detectors-views", "views-detectors"):
        raise DipkitError(f"geometry: sinogram_layout must be detectors-views or views-detectors, got {layout!r}")
    if layout == "views-detectors":
        sino = sino.T
    nd, nv = sino.shape

    ang, in_degrees = _angle_list(geo, angles, views, arc, nv, kind)
    unit = geo.get("angle_unit", conv.angle_unit)
    if unit not in ("degrees", "radians"):
        raise DipkitError(f"geometry: angle_unit must be degrees or radians, got {unit!r}")
    offset = _num(geo, "angle_offset", 0.0)
    if not in_degrees and unit == "radians":
        ang, offset = np.rad2deg(ang), math.degrees(offset)
    direction = geo.get("angle_direction", 1)
    if direction not in (1, -1):
        raise DipkitError(f"geometry: angle_direction must be 1 or -1, got {direction!r}")
    ang = direction * (ang + offset) + conv.angle_offset[kind]
    if ang.size != nv:
        hint = (" (is the sinogram views × detectors? see --convention / sinogram_layout)"
                if ang.size == nd else "")
        raise DipkitError(f"the sinogram has {nv} angles but the geometry lists {ang.size}{hint}")
    count = geo.get("detector_count")
    if count is not None and count != nd:
        raise DipkitError(f"the sinogram has {nd} detector cells but the geometry says {count}")

    p = _num(geo, "pixel_size", 1.0, positive=True)
    gt_size = None
    if ground_truth is not None:
        gt = read_ground_truth(ground_truth, None, None)
        if gt.shape[0] != 1 or gt.shape[1] != gt.shape[2]:
            raise DipkitError(f"a CT ground truth must be one square image, got shape {list(gt.shape)}")
        gt_size = gt.shape[1]
    else:
        gt = None
    size_geo = geo.get("image_size")
    for label, val in (("--image-size", image_size), ("image_size", size_geo)):
        if val is not None and (isinstance(val, bool) or not isinstance(val, int) or val < 2):
            raise DipkitError(f"{label} must be an integer >= 2, got {val!r}")
    sizes = {v for v in (image_size, size_geo, gt_size) if v is not None}
    if len(sizes) > 1:
        raise DipkitError(f"image sizes disagree: --image-size {image_size}, geometry image_size "
                          f"{size_geo}, ground truth {gt_size}")
    n = sizes.pop() if sizes else None

    plain = conv.name == "dipkit" and not {"detector_spacing", "pixel_size", "source_center_distance",
                                            "source_detector_distance"} & set(geo)
    if n is None and plain:  # dipkit's own sinogram: the image size whose default detector this is
        n = _dipkit_size(kind, nd)
    sod = sdd = None
    if kind == "fan":
        sod, sdd = _fan_defaults(n, p, conv, geo)
    fan_cells = 1.5 if conv.name == "dipkit" else 1.0
    spacing = _num(geo, "detector_spacing", (1.0 if kind == "parallel" else fan_cells) * p, positive=True)
    if n is None:
        n = _default_size(kind, nd, spacing, p, sod, sdd)
    flip = geo.get("detector_flip", False)
    if not isinstance(flip, bool):
        raise DipkitError(f"geometry: detector_flip must be true or false, got {flip!r}")
    cor = _num(geo, "cor_offset")
    if cor is None:
        cor = (nd // 2 - (nd - 1) / 2) * spacing if conv.detector == "index" else 0.0
    if flip:
        sino, cor = sino[::-1].copy(), -cor
    center = geo.get("rotation_center")
    if center is None:
        a = {"deepinv": deepinv_axis(n), "index": float(n // 2), "center": (n - 1) / 2}[conv.axis]
        center = [a, a]
    elif not (isinstance(center, (list, tuple)) and len(center) == 2
              and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in center)):
        raise DipkitError(f"geometry: rotation_center must be [row, col], got {center!r}")

    options = dict(angles=[float(a) for a in ang], dtype=dtype)
    legacy = (kind == "parallel" and p == 1.0 and spacing == 1.0 and cor == 0.0 and nd == padded_size(n)
              and list(center) == [deepinv_axis(n)] * 2)
    if kind == "parallel" and legacy:  # deepinv's own geometry: keep its spec (deepinv backend too)
        physics = parallel_beam(n, **options)
    elif kind == "parallel":
        physics = parallel_beam(n, n_detector_pixels=nd, detector_spacing=spacing, cor_offset=cor,
                                center=[float(c) for c in center], pixel_size=p, **options)
    else:
        physics = fan_beam(n, n_detector_pixels=nd, detector_spacing=spacing, cor_offset=cor,
                           center=[float(c) for c in center], pixel_size=p, source_radius=sod,
                           detector_radius=sdd - sod, **options)

    y = torch.as_tensor(np.ascontiguousarray(sino), dtype=dtype)[None, None]
    naive = None
    if scale == "auto" and gt is None:
        naive = physics.A_dagger(y).clamp_min(0)[0, 0].numpy()
    s = resolve_scale(scale, gt, naive)
    y = y / s
    x_true = None if gt is None else torch.as_tensor(gt / s, dtype=dtype)[None]
    meta = finish_meta(
        {"img_shape": [1, n, n], "views": int(nv), "geometry": kind, "convention": name,
         "source": {"sinogram": str(src), "slice": slice_used, "layout": layout,
                    "detector_flip": flip, "ground_truth": ground_truth}},
        task=task, y=y, scale=s, noise_std=noise_std,
        estimate=lambda: float(estimate_noise_sigma(y)[0]))
    return Problem(physics=physics, y=y, spec=dict(physics.spec), x_true=x_true, meta=meta)
