r"""Classical offline denoisers: ``nlm`` (non-local means), ``wavelet`` (wavelet shrinkage), ``bm3d``.

All three run in NumPy on the host, one sample and one channel at a time: each call copies the
batch to the CPU (a host–device synchronisation) and the result back to the input's device and
dtype. That is fine where dipkit calls denoisers — at outer updates (every ``inner_steps``
gradient steps) and in baselines — but they are not differentiable (``differentiable = False``)
and must not be called inside a per-step hook. ``sigma`` is the noise standard deviation in
image units (a float or a ``[B]`` tensor); ``sigma ≤ 0`` returns the input unchanged.

``nlm``
    :func:`skimage.restoration.denoise_nl_means` (Buades, Coll & Morel 2005) in its fast mode,
    with the filtering parameter tied to the noise level, :math:`h = h_\mathrm{factor}\cdot\sigma`
    (default ``h_factor = 0.8``, scikit-image's recommendation when ``sigma`` is passed, which
    subtracts the expected noise contribution :math:`2\sigma^2` from patch distances), patches of
    ``patch_size``² pixels searched within ``patch_distance`` pixels.

``wavelet``
    :func:`skimage.restoration.denoise_wavelet`: soft (or hard) thresholding of an orthogonal
    wavelet transform (``wavelet``, default ``"db2"``) with BayesShrink (Chang, Yu & Vetterli 2000;
    one threshold :math:`\sigma^2/\hat\sigma_X` per sub-band) or VisuShrink (Donoho & Johnstone
    1994; universal threshold :math:`\sigma\sqrt{2\log N}`, scaled by ``visu_scale``), with
    the given ``sigma`` (not estimated). ``cycle_spin = k > 0`` averages over all
    ``(k+1)²`` circular shifts (translation-invariant denoising, Coifman & Donoho 1995).
    Needs PyWavelets (``pip install PyWavelets``), which scikit-image uses for this function.

``bm3d``
    Block-matching and 3-D filtering (Dabov, Foi, Katkovnik & Egiazarian 2007) through the
    ``bm3d`` package of Tampere University (``pip install bm3d``; optional extra
    ``dipkit[bm3d]``). **Its licence permits non-commercial use only** (the wheel ships a
    compiled library under those terms); dipkit does not depend on it. ``profile`` is the
    package's profile (``"np"`` normal, ``"refilter"``, ``"vn"``, ``"high"``, ``"deb"``).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from ..errors import DipkitError
from .denoisers import Denoiser, register_denoiser

__all__ = ["NLMDenoiser", "WaveletDenoiser", "BM3DDenoiser"]


def _sigmas(sigma, batch: int) -> np.ndarray:
    """``sigma`` (float or tensor) as a float64 array of length ``batch`` (host copy)."""
    if torch.is_tensor(sigma):
        s = sigma.detach().to("cpu", torch.float64).reshape(-1).numpy()
    else:
        s = np.asarray(sigma, dtype=np.float64).reshape(-1)
    if s.size == 1:
        return np.full(batch, float(s[0]))
    if s.size != batch:
        raise DipkitError(f"sigma has {s.size} values for a batch of {batch}")
    return s


class _NumpyDenoiser(Denoiser):
    """Applies ``_denoise2d(image[H, W] float64, sigma: float) -> [H, W]`` per sample and channel."""

    differentiable = False

    def _denoise2d(self, img: np.ndarray, sigma: float) -> np.ndarray:
        raise NotImplementedError  # abstract

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        b, c = x.shape[:2]
        s = _sigmas(sigma, b)
        arr = x.detach().to("cpu", torch.float64).numpy()
        out = np.empty_like(arr)
        for i in range(b):
            for k in range(c):
                out[i, k] = self._denoise2d(arr[i, k], float(s[i])) if s[i] > 0 else arr[i, k]
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


@register_denoiser
class NLMDenoiser(_NumpyDenoiser):
    r"""Non-local means (scikit-image, fast mode), ``h = h_factor·σ``; NumPy, per sample/channel."""

    name = "nlm"
    description = "non-local means (scikit-image), h = h_factor·σ"

    def __init__(self, h_factor: float = 0.8, patch_size: int = 5, patch_distance: int = 6,
                 fast_mode: bool = True):
        self.h_factor, self.patch_size = float(h_factor), int(patch_size)
        self.patch_distance, self.fast_mode = int(patch_distance), bool(fast_mode)

    def _denoise2d(self, img, sigma):
        from skimage.restoration import denoise_nl_means

        return denoise_nl_means(img, patch_size=self.patch_size, patch_distance=self.patch_distance,
                                h=self.h_factor * sigma, sigma=sigma, fast_mode=self.fast_mode)


@register_denoiser
class WaveletDenoiser(_NumpyDenoiser):
    r"""Wavelet shrinkage (scikit-image): BayesShrink/VisuShrink at the given σ, optional cycle spinning."""

    name = "wavelet"
    description = "wavelet shrinkage (scikit-image BayesShrink/VisuShrink at σ, cycle spinning)"

    def __init__(self, wavelet: str = "db2", method: str = "BayesShrink", mode: str = "soft",
                 levels: int | None = None, cycle_spin: int = 2, visu_scale: float = 1.0):
        if method not in ("BayesShrink", "VisuShrink"):
            raise DipkitError(f"wavelet method must be BayesShrink or VisuShrink, not {method!r}")
        if mode not in ("soft", "hard"):
            raise DipkitError(f"wavelet mode must be soft or hard, not {mode!r}")
        try:
            import pywt
        except ImportError:
            raise DipkitError("the 'wavelet' denoiser needs PyWavelets: pip install PyWavelets") from None
        if wavelet not in pywt.wavelist(kind="discrete"):
            raise DipkitError(f"unknown discrete wavelet {wavelet!r} (e.g. db1, db2, sym4, coif1)")
        self.wavelet, self.method, self.mode = wavelet, method, mode
        self.levels = None if levels is None else int(levels)
        self.cycle_spin, self.visu_scale = int(cycle_spin), float(visu_scale)

    def _denoise2d(self, img, sigma):
        from skimage.restoration import cycle_spin, denoise_wavelet

        # VisuShrink's universal threshold is sigma*sqrt(2 log N); skimage applies it to `sigma`
        s = sigma * (self.visu_scale if self.method == "VisuShrink" else 1.0)

        def f(im):
            return denoise_wavelet(im, sigma=s, wavelet=self.wavelet, mode=self.mode,
                                   wavelet_levels=self.levels, method=self.method, rescale_sigma=True)

        if self.cycle_spin > 0:
            # serial (no thread pool); the keyword was renamed in scikit-image 0.26
            workers = {"workers": 1} if "workers" in inspect.signature(cycle_spin).parameters else {"num_workers": 1}
            return cycle_spin(img, f, max_shifts=self.cycle_spin, channel_axis=None, **workers)
        return f(img)


@register_denoiser
class BM3DDenoiser(_NumpyDenoiser):
    r"""BM3D through the optional ``bm3d`` package (non-commercial licence); NumPy, per sample/channel."""

    name = "bm3d"
    description = "BM3D (Dabov et al. 2007) via the optional 'bm3d' package (non-commercial licence)"

    def __init__(self, profile: str = "np"):
        try:
            import bm3d  # noqa: F401
        except ImportError:
            raise DipkitError("the 'bm3d' denoiser needs the optional bm3d package: pip install bm3d "
                              "(or dipkit[bm3d]); note that its licence allows non-commercial use only") from None
        self.profile = str(profile)

    def _denoise2d(self, img, sigma):
        import bm3d

        return np.asarray(bm3d.bm3d(img, sigma_psd=sigma, profile=self.profile), dtype=np.float64)
