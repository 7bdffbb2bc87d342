import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dipkit.metrics import fov_mask, psnr, ssim


def test_psnr_ssim_match_skimage():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 32, 32, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    for b in range(2):
        ref_p = peak_signal_noise_ratio(x[b, 0].numpy(), y[b, 0].numpy(), data_range=1)
        ref_s = structural_similarity(x[b, 0].numpy(), y[b, 0].numpy(), data_range=1, gaussian_weights=True,
                                      sigma=1.5, use_sample_covariance=False)
        assert abs(float(psnr(y, x)[b]) - ref_p) < 1e-4
        assert abs(float(ssim(y, x)[b]) - ref_s) < 1e-4


def test_fov_mask_restricts_metrics():
    x = torch.zeros(1, 1, 64, 64)
    y = x.clone()
    y[..., 6, 6] = 1.0  # an error near a corner, outside the inscribed disc
    m = fov_mask(64, 64)
    assert m[0, 0, 6, 6] == 0 and m[0, 0, 32, 32] == 1
    assert np.isfinite(float(psnr(y, x)))
    assert float(psnr(y, x, mask=m)) > 200  # no error inside the mask
    assert float(ssim(y, x, mask=m)) > float(ssim(y, x))
