r"""Image-quality metrics, computed on the device (no host synchronisation).

Conventions (documented once, used everywhere):

* **Data range.** Images are in image units where the ground truth nominally spans [0, 1]
  (PNG/JPEG scaled by the dtype's maximum, DICOM windowed to [0, 1]), so PSNR and SSIM use a
  fixed data range ``data_range = 1`` — *not* the max of each image:
  :math:`\mathrm{PSNR}(x, x^\star) = 10 \log_{10} \frac{\mathrm{data\_range}^2}{\mathrm{MSE}(x, x^\star)}`.
  Reconstructions are not clipped before measuring.
* **SSIM** is Wang et al. (2004) with an 11×11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03,
  "valid" windows only, averaged over channels; it equals scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1)`` (deepinv's SSIM, through torchmetrics, differs from it in the third decimal).
  We keep our own implementation so that it runs batched on the device and can be restricted
  to a mask.
* **Field-of-view mask** (CT): ``fov_mask(H, W)`` is the inscribed disc; with a mask, PSNR's MSE and
  SSIM's mean are taken over the pixels inside it only.

All functions return one value per sample: shape ``[B]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "fov_mask", "magnitude", "display_image"]


def fov_mask(height: int, width: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Boolean-valued (as ``dtype``) inscribed-disc mask ``[1, 1, H, W]`` (CT field of view)."""
    yy = torch.arange(height, device=device, dtype=torch.float64) - (height - 1) / 2
    xx = torch.arange(width, device=device, dtype=torch.float64) - (width - 1) / 2
    r = min(height, width) / 2
    mask = (yy[:, None] ** 2 + xx[None, :] ** 2) <= r * r
    return mask.to(dtype)[None, None]


def magnitude(x):
    """The magnitude of complex images stored as (real, imaginary) channels: ``[..., 2, H, W]`` →
    ``[..., 1, H, W]`` (a torch tensor or a NumPy array)."""
    if isinstance(x, torch.Tensor):
        return x.pow(2).sum(dim=-3, keepdim=True).sqrt()
    import numpy as np

    x = np.asarray(x)
    return np.sqrt((x.astype(np.float64) ** 2).sum(axis=-3, keepdims=True)).astype(x.dtype, copy=False)


def display_image(img):
    """A ``[C, H, W]`` NumPy reconstruction as something to show: ``[H, W]`` gray (the magnitude of
    a 2-channel complex image, channel 0 of any other count) or ``[H, W, 3]`` RGB."""
    import numpy as np

    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 4:
        img = img[0]
    if img.ndim == 2:
        return img
    if img.shape[0] == 2:
        return magnitude(img)[0]
    if img.shape[0] == 3:
        return np.moveaxis(img, 0, -1)
    return img[0]


def psnr(x: torch.Tensor, ref: torch.Tensor, *, data_range: float = 1.0,
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB per sample, ``[B]`` (see module docs for the data range)."""
    err = (x.to(ref.dtype) - ref) ** 2
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        m = mask.expand_as(err)
        mse = (err * m).flatten(1).sum(1) / m.flatten(1).sum(1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-30))


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    t = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    return g


def ssim(x: torch.Tensor, ref: torch.Tensor, *, data_range: float = 1.0,
         mask: torch.Tensor | None = None, win_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM per sample, ``[B]`` (Wang et al. 2004; see module docs)."""
    x = x.to(ref.dtype)
    b, c, h, w = ref.shape
    win = min(win_size, h, w)
    if win % 2 == 0:
        win -= 1
    g = _gaussian_window(win, sigma, ref.device, ref.dtype)
    kh = g.view(1, 1, win, 1).expand(c, 1, win, 1)
    kw = g.view(1, 1, 1, win).expand(c, 1, 1, win)

    def blur(t):
        return F.conv2d(F.conv2d(t, kh, groups=c), kw, groups=c)

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(ref)
    sxx = blur(x * x) - mu_x**2
    syy = blur(ref * ref) - mu_y**2
    sxy = blur(x * ref) - mu_x * mu_y
    smap = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    if mask is None:
        return smap.flatten(1).mean(1)
    # a window counts when its centre lies inside the mask
    off = (win - 1) // 2
    m = mask[..., off:off + smap.shape[-2], off:off + smap.shape[-1]].expand_as(smap)
    return (smap * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)
