r"""Denoisers behind one interface: ``D(x, sigma) -> x̂``.

``x`` is a batch ``[B, C, H, W]`` in image units (nominally [0, 1]); ``sigma`` is the standard
deviation of the Gaussian noise to remove, in the same units (a float, or a tensor broadcastable to
``[B]``). Every denoiser is registered under the name users type (``--set denoiser=NAME``) in
:data:`DENOISERS`; :func:`make_denoiser` builds one.

Registered here:

* ``tv``        — the TV proximal map :math:`D(x,\sigma) = \mathrm{prox}_{\lambda \mathrm{TV}}(x)`
  with :math:`\lambda = \mathrm{strength}\cdot\sigma` (Chambolle / Beck–Teboulle FGP);
* ``shrinkage`` — the linear shrinkage :math:`D(x, \sigma) = x / (1 + \sigma^2/s^2)`, the MMSE
  denoiser of a zero-mean Gaussian prior with variance :math:`s^2` (used in tests: with it, the
  splitting methods have closed-form fixed points).

More denoisers register themselves from :mod:`dipkit.priors` sub-modules with
:func:`register_denoiser` (imported on the first :func:`make_denoiser` of an unknown name):

* :mod:`dipkit.priors.classical` (NumPy on the host, per sample and channel; not differentiable):
  ``nlm`` — non-local means, :math:`h = 0.8\sigma` (scikit-image); ``wavelet`` — BayesShrink /
  VisuShrink wavelet shrinkage at :math:`\sigma` with cycle spinning (scikit-image + PyWavelets);
  ``bm3d`` — BM3D through the optional ``bm3d`` package (non-commercial licence);
* :mod:`dipkit.priors.learned` (torch, differentiable, on the input's device): ``learned`` — a
  small noise-conditional DnCNN trained by ``dipkit train-denoiser`` (:mod:`dipkit.priors.train`)
  whose weights ship in ``dipkit/data/``; ``drunet`` — deepinv's DRUNet with a user-supplied
  weights file (``make_denoiser("drunet", weights=PATH)``; never downloads).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import DipkitError
from .tv import prox_tv

__all__ = ["Denoiser", "DENOISERS", "register_denoiser", "make_denoiser", "TVDenoiser", "ShrinkageDenoiser"]

DENOISERS: dict[str, type] = {}


def register_denoiser(cls):
    DENOISERS[cls.name] = cls
    return cls


class Denoiser:
    """Base class: ``__call__(x, sigma)``; no host synchronisation; batch in, batch out."""

    name: str = ""
    description: str = ""
    #: True when D is differentiable in x with torch autograd
    differentiable: bool = False

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        raise NotImplementedError  # abstract

    def to(self, device):
        return self


@register_denoiser
class TVDenoiser(Denoiser):
    r"""``prox_{λ TV}(x)`` with ``λ = strength · σ``; ``n_iter`` FGP iterations."""

    name = "tv"
    description = "TV proximal map, λ = strength·σ (Beck–Teboulle FGP)"

    def __init__(self, strength: float = 1.0, n_iter: int = 50):
        self.strength, self.n_iter = float(strength), int(n_iter)

    def __call__(self, x, sigma):
        lam = sigma * self.strength if not torch.is_tensor(sigma) else sigma.to(x.dtype) * self.strength
        return prox_tv(x, lam, n_iter=self.n_iter)


@register_denoiser
class ShrinkageDenoiser(Denoiser):
    r"""``D(x, σ) = x / (1 + σ²/s²)`` (MMSE for a N(0, s²) prior); linear, symmetric Jacobian."""

    name = "shrinkage"
    description = "linear shrinkage x/(1+σ²/s²) (Gaussian-prior MMSE; for tests)"
    differentiable = True

    def __init__(self, s: float = 1.0):
        self.s = float(s)

    def __call__(self, x, sigma):
        if torch.is_tensor(sigma):
            sigma = sigma.to(x.dtype).view(-1, *[1] * (x.ndim - 1))
        return x / (1.0 + sigma**2 / self.s**2)


def make_denoiser(name: str, **options) -> Denoiser:
    """Build the denoiser ``name`` with its options; unknown names/options raise DipkitError."""
    if name not in DENOISERS:
        # optional modules register on import
        from . import _load_optional_denoisers

        _load_optional_denoisers()
    if name not in DENOISERS:
        raise DipkitError(f"unknown denoiser {name!r} (known: {', '.join(sorted(DENOISERS))})")
    try:
        return DENOISERS[name](**options)
    except TypeError as exc:
        raise DipkitError(f"bad options for denoiser {name!r}: {exc}") from None


Factory = Callable[..., Denoiser]
