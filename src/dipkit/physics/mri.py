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

Measured data (``dipkit import``) may come with any 0/1 sampling pattern ``[H, W]``: the spec then
stores the mask itself (``"mask"``, one bit per entry, :func:`dipkit.physics.custom.encode_mask`)
instead of ``"lines"``.

**Coil maps.** :func:`birdcage_maps` simulates ``N`` birdcage coil sensitivities (the formula of
SigPy's ``sigpy.mri.birdcage_maps``, which deepinv uses but which is not installed here;
re-implemented in NumPy, deterministic, no download) normalised to a unit root-sum-of-squares.
Maps given as a file (``dipkit import --coil-maps``) are stored in the spec as a complex64 array
(``"coil_maps"``, :func:`dipkit.physics.custom.encode_array`; ~43 bytes per coil and pixel in the
problem file, whose header is UTF-32 JSON). Estimated maps (``--estimate-coil-maps``,
:func:`lowres_coil_maps`) store only their small calibration block
(``{"method": "lowres", "calibration": ...}``) and are recomputed from it when the spec is built
(NumPy FFT, float64: the same maps on every build of one installation).

Specs::

    {"kind": "mri", "img_size": [H, W], "lines": [j0, j1, ...]}
    {"kind": "mri", "img_size": [H, W], "mask": {"shape": [H, W], "packbits_base64": "..."}}
    {"kind": "mri-multicoil", "img_size": [H, W], "lines": [...], "coils": N, "coil_radius": 1.5}
    {"kind": "mri-multicoil", "img_size": [H, W], "lines": [...] or "mask": {...}, "coils": N,
     "coil_maps": {"dtype": "complex64", "shape": [N, H, W], "zlib_base64": "..."}
                  or {"method": "lowres", "calibration": {...encoded [N, h, w] block...}}}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from deepinv.physics import MRI, MultiCoilMRI

from ..errors import DipkitError
from . import register_physics
from .custom import decode_array, decode_mask, encode_array, encode_mask

__all__ = [
    "CartesianMRI",
    "MultiCoilCartesianMRI",
    "cartesian_lines",
    "birdcage_maps",
    "lowres_coil_maps",
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


def lowres_coil_maps(calibration: np.ndarray, height: int, width: int) -> np.ndarray:
    r"""Coil sensitivities ``[N, H, W]`` (complex64) by the low-resolution (sum-of-squares) method.

    ``calibration`` ``[N, h, w]`` is the fully sampled centre of each coil's (centred, see the
    module docstring) k-space, ``h <= H``, ``w <= W``. It is multiplied by a separable Hann window
    (``sin^2``, zero just outside the block), zero-padded to ``H x W`` around the k-space centre
    ``(H // 2, W // 2)``, inverse-transformed (centred orthonormal FFT) into low-resolution coil
    images ``c_n``, and normalised to a unit root-sum-of-squares, ``s_n = c_n / sqrt(sum |c|^2)``
    (a floor of ``1e-6 max`` keeps empty regions finite). The coil-combined image
    ``sum_n s_n^* F^H y_n`` then carries the low-resolution image's phase, removed from ``x``.
    """
    cal = np.asarray(calibration, dtype=np.complex128)
    if cal.ndim != 3:
        raise DipkitError(f"calibration data must be [coils, h, w], got {list(cal.shape)}")
    n, h, w = cal.shape
    if not (1 <= h <= height and 1 <= w <= width):
        raise DipkitError(f"calibration block {h}×{w} does not fit the {height}×{width} k-space")
    win = np.outer(np.sin(np.pi * (np.arange(h) + 1) / (h + 1)) ** 2,
                   np.sin(np.pi * (np.arange(w) + 1) / (w + 1)) ** 2)
    k = np.zeros((n, height, width), dtype=np.complex128)
    r0, c0 = height // 2 - h // 2, width // 2 - w // 2
    k[:, r0:r0 + h, c0:c0 + w] = cal * win
    img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    rss = np.sqrt(np.sum(np.abs(img) ** 2, axis=0))
    floor = 1e-6 * float(rss.max()) if rss.max() > 0 else 1.0
    return (img / np.maximum(rss, floor)).astype(np.complex64)


def _maps_arguments(obj: Any) -> dict:
    """``coil_maps=`` or ``calibration=`` for :class:`MultiCoilCartesianMRI` from a spec entry."""
    if isinstance(obj, dict) and obj.get("method") == "lowres":
        if set(obj) != {"method", "calibration"}:
            raise DipkitError(f"unexpected keys in lowres coil maps: {sorted(obj)}")
        return {"calibration": decode_array(obj["calibration"], "coil calibration data")}
    return {"coil_maps": decode_array(obj, "coil maps")}


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


def _sampling(h: int, w: int, lines: Any, mask: Any, *, device, dtype) -> tuple[torch.Tensor, dict, int]:
    """The mask tensor, its spec entry (``lines`` or ``mask``) and the number of sampled entries."""
    if (lines is None) == (mask is None):
        raise DipkitError("an MRI operator takes either 'lines' (sampled columns) or 'mask' ([H, W] 0/1)")
    if lines is not None:
        lines = _check_lines(lines, w)
        return _line_mask(h, w, lines, device=device, dtype=dtype), {"lines": lines}, h * len(lines)
    m = np.asarray(mask, dtype=np.float64)
    if m.shape != (h, w):
        raise DipkitError(f"the MRI sampling mask has shape {list(m.shape)}, expected [{h}, {w}]")
    if not np.all((m == 0) | (m == 1)):
        raise DipkitError("the MRI sampling mask must hold only 0 and 1")
    if not m.any():
        raise DipkitError("the MRI sampling mask samples nothing")
    return torch.from_numpy(m).to(dtype).to(device), {"mask": encode_mask(m)}, int(m.sum())


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


class CartesianMRI(MRI):
    r"""Single-coil Cartesian MRI ``y = M F x`` (deepinv :class:`~deepinv.physics.MRI`).

    ``x`` ``[B, 2, H, W]`` (real, imaginary) → ``y`` ``[B, 2, H, W]``; ``F`` orthonormal and
    centred; ``M`` samples the k-space columns ``lines`` (or the entries of a 0/1 ``mask``
    ``[H, W]``). ``A_dagger = A_adjoint`` (``M`` is a projection and ``F`` unitary): the
    zero-filled inverse FFT.

    Attributes: ``lines`` (``None`` with a mask), ``acceleration`` (``H W / #sampled``), ``spec``.
    """

    def __init__(self, img_size, lines=None, *, mask=None, device="cpu", dtype=torch.float32):
        h, w = _check_img_size(img_size)
        m, entry, sampled = _sampling(h, w, lines, mask, device=device, dtype=dtype)
        super().__init__(mask=m, img_size=(h, w), device=device)
        self.lines = entry.get("lines")
        self.acceleration = h * w / sampled
        self.spec = {"kind": "mri", "img_size": [h, w], **entry}

    def A_dagger(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """Zero-filled inverse FFT (the exact pseudo-inverse, as ``M`` is a 0/1 projection)."""
        return self.A_adjoint(y)

    def extra_repr(self) -> str:
        return f"img_size={tuple(self.spec['img_size'])}, R={self.acceleration:.3g}"


class MultiCoilCartesianMRI(MultiCoilMRI):
    r"""Multi-coil Cartesian MRI ``y_n = M F S_n x`` (deepinv :class:`~deepinv.physics.MultiCoilMRI`).

    ``x`` ``[B, 2, H, W]`` → ``y`` ``[B, 2, N, H, W]``; ``S_n`` birdcage maps
    (:func:`birdcage_maps`, unit root-sum-of-squares, so ``A^H A = F^H M F`` on average over
    coils and ``||A|| <= 1``) or the given ``coil_maps`` ``[N, H, W]`` (complex, stored as complex64
    in the spec). ``A_adjoint`` is the coil-combined zero-filled reconstruction
    ``sum_n S_n^* F^H M y_n``; ``A_dagger`` is deepinv's CG least-squares solve. Sampling: ``lines``
    or a 0/1 ``mask`` ``[H, W]`` as in :class:`CartesianMRI`.

    Attributes: ``lines``, ``coils``, ``acceleration``, ``spec``.
    """

    def __init__(self, img_size, lines=None, coils: int | None = None, *, mask=None,
                 coil_maps=None, calibration=None, coil_radius: float = 1.5, device="cpu",
                 dtype=torch.float32):
        h, w = _check_img_size(img_size)
        m, entry, sampled = _sampling(h, w, lines, mask, device=device, dtype=dtype)
        if calibration is not None:  # estimated maps: keep the small calibration block only
            if coil_maps is not None:
                raise DipkitError("give either coil maps or calibration data, not both")
            cal = np.asarray(calibration).astype(np.complex64)
            coil_maps = lowres_coil_maps(cal, h, w)
            stored = {"method": "lowres", "calibration": encode_array(cal)}
        if coil_maps is not None:
            maps_np = np.asarray(coil_maps).astype(np.complex64)
            if maps_np.ndim != 3 or maps_np.shape[1:] != (h, w):
                raise DipkitError(f"coil maps must be [coils, {h}, {w}], got {list(maps_np.shape)}")
            if not np.all(np.isfinite(maps_np)):
                raise DipkitError("the coil maps contain NaN or Inf")
            if coils is not None and int(coils) != maps_np.shape[0]:
                raise DipkitError(f"coils={coils} does not match the {maps_np.shape[0]} coil maps")
            coils = maps_np.shape[0]
            maps = torch.from_numpy(maps_np).to(_complex_dtype(dtype))
            extra = {"coils": coils,
                     "coil_maps": stored if calibration is not None else encode_array(maps_np)}
        else:
            try:
                coils = int(coils)
                coil_radius = float(coil_radius)
            except (TypeError, ValueError):
                raise DipkitError(f"bad multi-coil MRI parameters: coils={coils!r}, "
                                  f"coil_radius={coil_radius!r}") from None
            if coils < 1:
                raise DipkitError(f"the number of coils must be ≥ 1, got {coils}")
            if not (math.isfinite(coil_radius) and coil_radius > 1):
                raise DipkitError(f"coil_radius must be > 1 (coils outside the field of view), got {coil_radius}")
            maps = torch.from_numpy(birdcage_maps(coils, h, w, radius=coil_radius)).to(_complex_dtype(dtype))
            extra = {"coils": coils, "coil_radius": coil_radius}
        super().__init__(mask=m, coil_maps=maps.to(device), img_size=(h, w), device=device)
        self.lines = entry.get("lines")
        self.coils = coils
        self.acceleration = h * w / sampled
        self.spec = {"kind": "mri-multicoil", "img_size": [h, w], **entry, **extra}

    def extra_repr(self) -> str:
        return f"img_size={tuple(self.spec['img_size'])}, coils={self.coils}, R={self.acceleration:.3g}"


def _only(spec: dict, known: set, kind: str) -> None:
    extra = set(spec) - known - {"kind"}
    if extra:
        raise DipkitError(f"unexpected keys in {kind} spec: {sorted(extra)}")
    optional = {"coil_radius", "coil_maps", "lines", "mask"}
    missing = {k for k in known if k not in spec} - optional
    if missing:
        raise DipkitError(f"{kind} spec lacks {sorted(missing)}")
    if ("lines" in spec) == ("mask" in spec):
        raise DipkitError(f"{kind} spec needs exactly one of 'lines' and 'mask'")


def _mask_of(spec: dict):
    return None if "mask" not in spec else decode_mask(spec["mask"], "MRI mask")


@register_physics("mri")
def mri_from_spec(spec: dict, *, device="cpu", dtype=torch.float32) -> CartesianMRI:
    """Rebuild a :class:`CartesianMRI` from its spec (bit-identical)."""
    _only(spec, {"img_size", "lines", "mask"}, "mri")
    return CartesianMRI(spec["img_size"], spec.get("lines"), mask=_mask_of(spec), device=device,
                        dtype=dtype)


@register_physics("mri-multicoil")
def multicoil_mri_from_spec(spec: dict, *, device="cpu", dtype=torch.float32) -> MultiCoilCartesianMRI:
    """Rebuild a :class:`MultiCoilCartesianMRI` from its spec (bit-identical)."""
    _only(spec, {"img_size", "lines", "mask", "coils", "coil_radius", "coil_maps"}, "mri-multicoil")
    if "coil_maps" in spec and "coil_radius" in spec:
        raise DipkitError("mri-multicoil spec: give either 'coil_maps' or 'coil_radius', not both")
    maps = {} if "coil_maps" not in spec else _maps_arguments(spec["coil_maps"])
    return MultiCoilCartesianMRI(spec["img_size"], spec.get("lines"), spec["coils"], mask=_mask_of(spec),
                                 coil_radius=spec.get("coil_radius", 1.5), device=device, dtype=dtype,
                                 **maps)
