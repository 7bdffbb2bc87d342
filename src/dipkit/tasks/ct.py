r"""CT tasks: parallel-beam (``ct``) and fan-beam (``ct-fan``) tomography.

``y = A x + σ ε``, with ``A`` deepinv's :class:`~deepinv.physics.Tomography` (not normalised;
pixel size 1), ``views`` equispaced angles over [0°, 180°) (parallel) or [0°, 360°) (fan), and
Gaussian noise, relative ``σ = noise_level × mean|A x|`` (default 2 %) or absolute
``σ = noise_std`` (in the units of the line integrals; give at most one). Images are converted to
one channel.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DipkitError
from ..problem import Problem
from .base import add_gaussian_noise, register_task

__all__ = ["simulate_ct"]


def simulate_ct(image: np.ndarray, *, geometry: str, views: int = 60, noise_level: float | None = None,
                noise_std: float | None = None, seed: int = 0, device: str | torch.device = "cpu",
                dtype=torch.float32) -> Problem:
    """Simulate CT; without ``noise_level`` or ``noise_std`` the noise is relative, 2 %."""
    from ..physics.ct import fan_beam, parallel_beam

    if image.ndim != 3 or image.shape[0] != 1:
        raise DipkitError(f"CT needs a one-channel image [1, H, W], got shape {tuple(image.shape)}")
    if image.shape[1] != image.shape[2]:
        raise DipkitError(f"CT needs a square image, got {image.shape[1]}×{image.shape[2]} (use --size)")
    if views is None or int(views) <= 0:
        raise DipkitError(f"--views must be positive, got {views}")
    if not np.all(np.isfinite(image)):
        raise DipkitError("the image contains NaN or Inf")
    n = int(image.shape[1])
    make = parallel_beam if geometry == "parallel" else fan_beam
    physics = make(n, int(views), device=device, dtype=dtype)
    x = torch.as_tensor(np.ascontiguousarray(image), dtype=dtype, device=device)[None]
    with torch.no_grad():
        clean = physics.A(x)
    if noise_level is not None and noise_std is not None:
        raise DipkitError("give either --noise-std or --noise-level, not both")
    if noise_level is None and noise_std is None:
        noise_level = 0.02
    y, sigma = add_gaussian_noise(clean, seed=seed, noise_level=noise_level, noise_std=noise_std)
    spec = {"kind": "ct", **physics.spec}
    meta = {"task": "ct" if geometry == "parallel" else "ct-fan", "noise_level": noise_level,
            "noise_std": noise_std,
            "noise_sigma": sigma, "seed": int(seed), "img_shape": [1, n, n], "views": int(views),
            "geometry": geometry}
    return Problem(physics=physics, y=y, spec=spec, x_true=x, meta=meta)


@register_task("ct", "parallel-beam CT: views equispaced over [0°, 180°), deepinv Tomography",
               ("views", "noise_level", "noise_std"), channels="gray")
def _ct(image, *, views=60, noise_level=None, noise_std=None, seed=0, device="cpu"):
    return simulate_ct(image, geometry="parallel", views=views, noise_level=noise_level, noise_std=noise_std,
                       seed=seed, device=device)


@register_task("ct-fan", "fan-beam CT: views equispaced over [0°, 360°), deepinv Tomography (fan)",
               ("views", "noise_level", "noise_std"), channels="gray")
def _ct_fan(image, *, views=60, noise_level=None, noise_std=None, seed=0, device="cpu"):
    return simulate_ct(image, geometry="fan", views=views, noise_level=noise_level, noise_std=noise_std,
                       seed=seed, device=device)
