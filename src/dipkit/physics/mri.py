r"""Cartesian MRI operators: single coil (``A = M F``) and multi-coil (``A = M F S``).

Both are deepinv operators (:class:`deepinv.physics.MRI`, :class:`deepinv.physics.MultiCoilMRI`)
with a *line* mask and, for multi-coil, simulated birdcage coil sensitivities, rebuilt exactly
from a JSON spec.

**Complex data (deepinv's convention).** Images and k-space are complex and stored as two real
channels (real, imaginary): the image is ``x`` ``[B, 2, H, W]``; single-coil k-space is
``y`` ``[B, 2, H, W]``, multi-coil k-space ``y`` ``[B, 2, N, H, W]`` (``N`` coils). ``F`` is the
centred *orthonormal* 2-D FFT (``norm="ortho"``, zero frequency at index ``(H // 2, W // 2)``),
so ``||A|| = 1`` for single coil (and for multi-coil, since the birdcage maps are normalised to
``sum_n |s_n|^2 = 1``). Unsampled k-space entries are zero in ``y``. The real inner product of
the two-channel representation is the real part of the complex one, so ``A_adjoint`` (``A^H``)
is the adjoint for the real dot product used everywhere in dipkit.

**Mask.** Cartesian sampling of whole k-space columns (phase-encoding lines along the last,
width, axis: ``M[:, j] = 1`` for every sampled column ``j``), as in fastMRI and deepinv's mask
generators. The spec stores the sampled column indices themselves (``"lines"``), so a problem
file rebuilds exactly the same mask without depending on how the mask was generated;
:func:`cartesian_lines` generates them (fully sampled centre + random or equispaced lines, from a
seed).

**Coil maps.** :func:`birdcage_maps` simulates ``N`` birdcage coil sensitivities (the formula of
SigPy's ``sigpy.mri.birdcage_maps``, which deepinv uses but which is not installed here;
re-implemented in NumPy, deterministic, no download) normalised to a unit root-sum-of-squares.

Specs::

    {"kind": "mri", "img_size": [H, W], "lines": [j0, j1, ...]}
    {"kind": "mri-multicoil", "img_size": [H, W], "lines": [...], "coils": N, "coil_radius": 1.5}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from deepinv.physics import MRI, MultiCoilMRI

from ..errors import DipkitError
from . import register_physics

__all__ = [
    "CartesianMRI",
    "MultiCoilCartesianMRI",
    "cartesian_lines",
    "birdcage_maps",
    "default_center_fraction",
    "MASK_TYPES",
    "mri_from_spec",
    "multicoil_mri_from_spec",
]

#: mask types of :func:`cartesian_lines`
MASK_TYPES = ("random", "equispaced")


def default_center_fraction(acceleration: float) -> float:
    """fastMRI's (and deepinv's) default fully sampled centre: 8 % of the columns below 8×, 4 % from 8×."""
    return 0.08 if acceleration < 8 else 0.04


def cartesian_lines(width: int, acceleration: float, *, mask_type: str = "random",
                    center_fraction: float | None = None, seed: int = 0) -> list[int]:
    r"""Sampled k-space columns of a Cartesian line mask (sorted indices in ``[0, width)``).

    ``n = round(width / R)`` columns in all: the ``n_c = min(round(c * width), n)`` central
    columns (centred on the zero frequency, index ``width // 2``; ``c`` = ``center_fraction``,
    default :func:`default_center_fraction`) and ``n - n_c`` of the others, either drawn uniformly
    without replacement (``"random"``) or equispaced with a random offset (``"equispaced"``:
    ``floor(o + j m / k)``, ``j = 0..k-1``, over the ``m`` non-central columns, ``o ~ U[0, m/k)``).
    Randomness comes from ``numpy.random.RandomState(seed)`` (a frozen stream).

    :raises DipkitError: for ``R <= 1``, a centre fraction outside ``[0, 1)``, an unknown mask
        type, or an ``R`` that leaves no column or every column.
    """
    width = int(width)
    if width < 2:
        raise DipkitError(f"MRI needs an image at least 2 pixels wide, got {width}")
    try:
        acceleration = float(acceleration)
    except (TypeError, ValueError):
        raise DipkitError(f"acceleration must be a number > 1, got {acceleration!r}") from None
    if not math.isfinite(acceleration) or acceleration <= 1:
        raise DipkitError(f"acceleration must be > 1, got {acceleration}")
    if mask_type not in MASK_TYPES:
        raise DipkitError(f"unknown mask type {mask_type!r} (choose from {', '.join(MASK_TYPES)})")
    if center_fraction is None:
        center_fraction = default_center_fraction(acceleration)
    center_fraction = float(center_fraction)
    if not (0 <= center_fraction < 1):
        raise DipkitError(f"center fraction must be in [0, 1), got {center_fraction}")
    n = int(round(width / acceleration))
    if n < 1:
        raise DipkitError(f"acceleration {acceleration:g} leaves no k-space line at width {width}")
    if n >= width:
        raise DipkitError(f"acceleration {acceleration:g} samples every k-space line at width {width}")
    n_c = min(int(round(center_fraction * width)), n)
    start = width // 2 - n_c // 2
    center = list(range(start, start + n_c))
    rest = np.array([j for j in range(width) if not (start <= j < start + n_c)], dtype=np.int64)
    k = n - n_c
    rng = np.random.RandomState(int(seed) % 2**32)
    if k == 0:
        outer: list[int] = []
    elif mask_type == "random":
        outer = rest[rng.choice(rest.size, size=k, replace=False)].tolist()
    else:
        step = rest.size / k
        offset = rng.uniform(0.0, step)
        idx = np.floor(offset + np.arange(k) * step).astype(np.int64)
        outer = rest[np.minimum(idx, rest.size - 1)].tolist()
    return sorted(int(j) for j in center + outer)


def birdcage_maps(coils: int, height: int, width: int, *, radius: float = 1.5) -> np.ndarray:
    r"""Simulated birdcage coil sensitivities ``[N, H, W]`` (complex128), unit root-sum-of-squares.

    Coil ``c`` sits at angle ``2 pi c / N`` on a circle of radius ``r`` (in units of the half
    field of view) around the image centre; its map is ``exp(i (phi - 2 pi c / N)) / rho``
    (``rho``, ``phi``: distance and angle from the coil), then all maps are divided by
    ``sqrt(sum_c |s_c|^2)``. This is SigPy's ``birdcage_maps`` (2-D case).
    """
    coils, height, width = int(coils), int(height), int(width)
    if coils < 1:
        raise DipkitError(f"the number of coils must be ≥ 1, got {coils}")
    c, yy, xx = np.mgrid[:coils, :height, :width].astype(np.float64)
    coil_x = radius * np.cos(c * (2 * np.pi / coils))
    coil_y = radius * np.sin(c * (2 * np.pi / coils))
    coil_phase = -c * (2 * np.pi / coils)
    x_co = (xx - width / 2.0) / (width / 2.0) - coil_x
    y_co = (yy - height / 2.0) / (height / 2.0) - coil_y
    rho = np.sqrt(x_co**2 + y_co**2)
    phi = np.arctan2(x_co, -y_co) + coil_phase
    maps = (1.0 / rho) * np.exp(1j * phi)
    rss = np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))
    return maps / rss


def _check_img_size(img_size: Any) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in img_size)
    except (TypeError, ValueError):
        raise DipkitError(f"MRI img_size must be [H, W], got {img_size!r}") from None
    if h < 2 or w < 2:
        raise DipkitError(f"MRI img_size must be at least 2×2, got {h}×{w}")
    return h, w


def _check_lines(lines: Any, width: int) -> list[int]:
    try:
        out = sorted({int(j) for j in lines})
    except (TypeError, ValueError):
        raise DipkitError(f"MRI 'lines' must be a list of column indices, got {lines!r}") from None
    if not out or out[0] < 0 or out[-1] >= width:
        raise DipkitError(f"MRI 'lines' must be non-empty column indices in [0, {width}), got {lines!r}")
    return out


def _line_mask(h: int, w: int, lines: list[int], *, device, dtype) -> torch.Tensor:
    mask = torch.zeros(h, w, dtype=dtype)
    mask[:, lines] = 1
    return mask.to(device)


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


class CartesianMRI(MRI):
    r"""Single-coil Cartesian MRI ``y = M F x`` (deepinv :class:`~deepinv.physics.MRI`).

    ``x`` ``[B, 2, H, W]`` (real, imaginary) → ``y`` ``[B, 2, H, W]``; ``F`` orthonormal and
    centred; ``M`` samples the k-space columns ``lines``. ``A_dagger = A_adjoint`` (``M`` is a
    projection and ``F`` unitary): the zero-filled inverse FFT.

    Attributes: ``lines``, ``acceleration`` (``W / len(lines)``), ``spec``.
    """

    def __init__(self, img_size, lines, *, device="cpu", dtype=torch.float32):
        h, w = _check_img_size(img_size)
        lines = _check_lines(lines, w)
        super().__init__(mask=_line_mask(h, w, lines, device=device, dtype=dtype), img_size=(h, w),
                         device=device)
        self.lines = lines
        self.acceleration = w / len(lines)
        self.spec = {"kind": "mri", "img_size": [h, w], "lines": lines}

    def A_dagger(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """Zero-filled inverse FFT (the exact pseudo-inverse, as ``M`` is a 0/1 projection)."""
        return self.A_adjoint(y)

    def extra_repr(self) -> str:
        return f"img_size={tuple(self.spec['img_size'])}, lines={len(self.lines)}, R={self.acceleration:.3g}"


class MultiCoilCartesianMRI(MultiCoilMRI):
    r"""Multi-coil Cartesian MRI ``y_n = M F S_n x`` (deepinv :class:`~deepinv.physics.MultiCoilMRI`).

    ``x`` ``[B, 2, H, W]`` → ``y`` ``[B, 2, N, H, W]``; ``S_n`` birdcage maps
    (:func:`birdcage_maps`, unit root-sum-of-squares, so ``A^H A = F^H M F`` on average over
    coils and ``||A|| <= 1``). ``A_adjoint`` is the coil-combined zero-filled reconstruction
    ``sum_n S_n^* F^H M y_n``; ``A_dagger`` is deepinv's CG least-squares solve.

    Attributes: ``lines``, ``coils``, ``acceleration``, ``spec``.
    """

    def __init__(self, img_size, lines, coils: int, *, coil_radius: float = 1.5, device="cpu",
                 dtype=torch.float32):
        h, w = _check_img_size(img_size)
        lines = _check_lines(lines, w)
        try:
            coils = int(coils)
            coil_radius = float(coil_radius)
        except (TypeError, ValueError):
            raise DipkitError(f"bad multi-coil MRI parameters: coils={coils!r}, coil_radius={coil_radius!r}") from None
        if coils < 1:
            raise DipkitError(f"the number of coils must be ≥ 1, got {coils}")
        if not (math.isfinite(coil_radius) and coil_radius > 1):
            raise DipkitError(f"coil_radius must be > 1 (coils outside the field of view), got {coil_radius}")
        maps = torch.from_numpy(birdcage_maps(coils, h, w, radius=coil_radius)).to(_complex_dtype(dtype))
        super().__init__(mask=_line_mask(h, w, lines, device=device, dtype=dtype),
                         coil_maps=maps.to(device), img_size=(h, w), device=device)
        self.lines = lines
        self.coils = coils
        self.acceleration = w / len(lines)
        self.spec = {"kind": "mri-multicoil", "img_size": [h, w], "lines": lines, "coils": coils,
                     "coil_radius": coil_radius}

    def extra_repr(self) -> str:
        return (f"img_size={tuple(self.spec['img_size'])}, coils={self.coils}, lines={len(self.lines)}, "
                f"R={self.acceleration:.3g}")


def _only(spec: dict, known: set, kind: str) -> None:
    extra = set(spec) - known - {"kind"}
    if extra:
        raise DipkitError(f"unexpected keys in {kind} spec: {sorted(extra)}")
    missing = {k for k in known if k not in spec} - {"coil_radius"}
    if missing:
        raise DipkitError(f"{kind} spec lacks {sorted(missing)}")


@register_physics("mri")
def mri_from_spec(spec: dict, *, device="cpu", dtype=torch.float32) -> CartesianMRI:
    """Rebuild a :class:`CartesianMRI` from its spec (bit-identical)."""
    _only(spec, {"img_size", "lines"}, "mri")
    return CartesianMRI(spec["img_size"], spec["lines"], device=device, dtype=dtype)


@register_physics("mri-multicoil")
def multicoil_mri_from_spec(spec: dict, *, device="cpu", dtype=torch.float32) -> MultiCoilCartesianMRI:
    """Rebuild a :class:`MultiCoilCartesianMRI` from its spec (bit-identical)."""
    _only(spec, {"img_size", "lines", "coils", "coil_radius"}, "mri-multicoil")
    return MultiCoilCartesianMRI(spec["img_size"], spec["lines"], spec["coils"],
                                 coil_radius=spec.get("coil_radius", 1.5), device=device, dtype=dtype)
