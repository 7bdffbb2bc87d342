r"""Random-ellipse phantoms: the synthetic training set of the Educated DIP (CT paper §5.1, §6.3).

:func:`random_ellipses` draws images as the ``ellipses`` dataset of dival that Barbano et al.
(2022) pre-train on: per image :math:`n \sim \min(\mathrm{Poisson}(\lambda), n_{\max})` ellipses
(λ = 40, :math:`n_{\max}` = 70) with

* value :math:`v \sim \mathcal U[-0.4, 1]`,
* half-axes :math:`a_1, a_2 \sim 0.2\,\mathrm{Exp}(1)` (in units of the half image width),
* centre :math:`(c_1, c_2) \sim \mathcal U[-0.9, 0.9]^2`, rotation :math:`\varphi \sim \mathcal U[0, 2\pi)`,

summed (:math:`x(p) = \sum_j v_j\,\mathbf 1[p \in E_j]` on the pixel centres of :math:`[-1, 1]^2`),
then the foreground (non-zero pixels) is shifted to start at 0 and the image divided by its maximum,
so images are in [0, 1] with a zero background. Every number comes from one ``torch.Generator``:
the same seed gives the same phantoms, on any device (they are drawn on the CPU).

Reference: R. Barbano, J. Leuschner, M. Schmidt, A. Denker, A. Hauptmann, P. Maass, B. Jin,
"An Educated Warm Start for Deep Image Prior-based Micro CT Reconstruction", IEEE TCI 2022
(dataset: J. Leuschner et al., dival, ``get_standard_dataset('ellipses')``).
"""

from __future__ import annotations

import math

import torch

from .errors import DipkitError

__all__ = ["random_ellipses"]


def random_ellipses(n: int, size: int, *, generator: torch.Generator, mean_ellipses: float = 40.0,
                    max_ellipses: int = 70, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` random-ellipse phantoms ``[n, 1, size, size]`` in [0, 1] (module docs), drawn from ``generator``
    (a CPU generator)."""
    if int(n) < 1 or int(size) < 2:
        raise DipkitError(f"random_ellipses needs n ≥ 1 and size ≥ 2, got n={n}, size={size}")
    n, size, m = int(n), int(size), int(max_ellipses)
    g = generator

    def u(lo, hi):
        return lo + (hi - lo) * torch.rand((n, m, 1, 1), generator=g, dtype=torch.float64)

    v = u(-0.4, 1.0)
    a1 = 0.2 * torch.empty((n, m, 1, 1), dtype=torch.float64).exponential_(1.0, generator=g)
    a2 = 0.2 * torch.empty((n, m, 1, 1), dtype=torch.float64).exponential_(1.0, generator=g)
    c1, c2 = u(-0.9, 0.9), u(-0.9, 0.9)
    phi = u(0.0, 2 * math.pi)
    rate = torch.full((n,), float(mean_ellipses), dtype=torch.float64)
    count = torch.poisson(rate, generator=g).clamp(max=m).long()
    v = v * (torch.arange(m).view(1, m, 1, 1) < count.view(n, 1, 1, 1))
    v, a1, a2, c1, c2, phi = (q.float() for q in (v, a1, a2, c1, c2, phi))  # drawn in float64, evaluated in float32
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    py, px = t.view(1, 1, size, 1), t.view(1, 1, 1, size)
    dx, dy = px - c1, py - c2
    cos, sin = torch.cos(phi), torch.sin(phi)
    inside = ((dx * cos + dy * sin) / a1) ** 2 + ((dy * cos - dx * sin) / a2) ** 2 <= 1.0
    x = (v * inside).sum(1, keepdim=True)  # [n, 1, size, size]
    fg = x != 0
    big = torch.finfo(x.dtype).max
    lo = torch.where(fg, x, torch.full_like(x, big)).amin(dim=(1, 2, 3), keepdim=True)
    x = torch.where(fg, x - lo, x)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    x = torch.where(hi > 0, x / hi.clamp_min(1e-12), x)
    return x.to(dtype)
