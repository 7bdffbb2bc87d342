r"""MRI tasks: single-coil (``mri``) and multi-coil (``mri-multicoil``) Cartesian undersampling.

``y = M (F x + σ ε)`` (single coil) or ``y_n = M (F S_n x + σ ε_n)`` (``N`` coils), with the
operators of :mod:`dipkit.physics.mri` (deepinv ``MRI`` / ``MultiCoilMRI``).

**Complex images, deepinv's convention.** The unknown is a complex image stored as two real
channels (real, imaginary): a gray image ``[1, H, W]`` becomes ``x_true`` ``[1, 2, H, W]`` with a
zero imaginary channel, so ``problem.img_shape == (2, H, W)`` and networks output two channels.
PSNR/SSIM are therefore taken over both channels (an exact zero imaginary part counts as
perfect); :mod:`dipkit.methods.naive` returns the magnitude in the real channel.

**Sampling.** Whole k-space columns (phase-encoding lines), ``round(W / R)`` of them for an
acceleration ``R > 1`` (``acceleration``, default 4; aSeqDIP uses 4× and 8×), including a fully
sampled centre (``center_fraction``; default 8 % of the columns below 8×, 4 % from 8×, as fastMRI),
the others random (``mask_type="random"``, default) or equispaced with a random offset
(``"equispaced"``), drawn from ``seed``. The achieved acceleration ``W / #lines`` is stored in
``meta["acceleration"]``.

**Noise.** Complex Gaussian noise on the sampled entries only: ``σ`` per real component
(``noise_std``, default 0.01; with the orthonormal FFT this is also the image-domain noise std of a
fully sampled acquisition), or ``noise_level`` × the mean absolute value of the sampled real
entries of ``A x``. ``σ`` is stored in ``meta["noise_sigma"]``.

**Coils** (``mri-multicoil``): ``coils`` birdcage sensitivities (default 8), simulated offline.
"""

from __future__ import annotations

import torch

from ..errors import DipkitError
from ..problem import Problem
from .base import register_task
from .restoration import image_tensor, simulate_measurement

__all__ = ["simulate_mri"]

DEFAULT_NOISE_STD = 0.01


def simulate_mri(image, *, coils: int | None = None, acceleration: float = 4, mask_type: str = "random",
                 center_fraction: float | None = None, noise_std: float | None = None,
                 noise_level: float | None = None, seed: int = 0, device="cpu", dtype=torch.float32) -> Problem:
    """Simulate single-coil (``coils=None``) or multi-coil Cartesian MRI from a gray image ``[1, H, W]``."""
    from ..physics.mri import CartesianMRI, MultiCoilCartesianMRI, cartesian_lines, default_center_fraction

    task = "mri" if coils is None else "mri-multicoil"
    x1 = image_tensor(image, dtype=dtype, device=device, channels=1, task=task)
    _, _, h, w = x1.shape
    lines = cartesian_lines(w, acceleration, mask_type=mask_type, center_fraction=center_fraction, seed=seed)
    if coils is None:
        physics = CartesianMRI([h, w], lines, device=device, dtype=dtype)
        support = physics.mask
    else:
        physics = MultiCoilCartesianMRI([h, w], lines, coils, device=device, dtype=dtype)
        support = physics.mask[:, :, None]
    x = torch.cat([x1, torch.zeros_like(x1)], dim=1)
    if noise_std is None and noise_level is None:
        noise_std = DEFAULT_NOISE_STD
    y, sigma = simulate_measurement(physics, x, seed=seed, noise_std=noise_std, noise_level=noise_level,
                                    support=support)
    meta = {"task": task, "noise_std": noise_std, "noise_level": noise_level, "noise_sigma": sigma,
            "seed": int(seed), "img_shape": [2, int(h), int(w)], "acceleration": physics.acceleration,
            "requested_acceleration": float(acceleration), "mask_type": mask_type,
            "center_fraction": float(default_center_fraction(float(acceleration)) if center_fraction is None
                                     else center_fraction),
            "lines": len(lines), "complex": "2 channels (real, imaginary)"}
    if coils is not None:
        meta["coils"] = int(coils)
    return Problem(physics=physics, y=y, spec=dict(physics.spec), x_true=x, meta=meta)


MRI_OPTIONS = ("acceleration", "mask_type", "center_fraction", "noise_std", "noise_level")


@register_task("mri", "single-coil Cartesian MRI, y = M F x (complex image as 2 channels): --acceleration "
                      "(default 4), --mask-type random|equispaced, fully sampled centre", MRI_OPTIONS,
               channels="gray")
def _mri(image, *, seed=0, device="cpu", **options):
    return simulate_mri(image, seed=seed, device=device, **options)


@register_task("mri-multicoil", "multi-coil Cartesian MRI, y = M F S x, --coils birdcage maps (default 8), "
                                "--acceleration, --mask-type", ("coils",) + MRI_OPTIONS, channels="gray")
def _mri_multicoil(image, *, seed=0, device="cpu", coils=8, **options):
    if isinstance(coils, bool) or not isinstance(coils, int) or coils < 1:
        raise DipkitError(f"--coils must be a positive integer, got {coils!r}")
    return simulate_mri(image, coils=coils, seed=seed, device=device, **options)
