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

import inspect
import warnings

import torch

from ..errors import DipkitError
from ..registry import Registry
from .tv import prox_tv

__all__ = ["Denoiser", "DENOISERS", "register_denoiser", "make_denoiser", "TVDenoiser", "ShrinkageDenoiser",
           "DenoiserPrior", "prox_power"]


def _load_optional_denoisers() -> None:
    from . import _load_optional_denoisers as load

    load()


DENOISERS: Registry = Registry("denoiser", loader=_load_optional_denoisers)

#: class decorator: register a denoiser class under ``cls.name``
register_denoiser = DENOISERS.register


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
    cls = DENOISERS[name]
    try:
        return cls(**options)
    except TypeError as exc:
        raise DipkitError(f"bad options for denoiser {name!r}: {exc}") from None


def prox_power(denoiser) -> int:
    r"""How a denoiser's proximal weight grows with ``σ``: ``D(·, σ) = prox_{c σ^p φ}``.

    ``p = 1`` for the TV proximal map (``λ = strength·σ``) and wavelet thresholding; ``p = 2`` for
    the Gaussian denoisers (shrinkage, learned, BM3D, NLM: MMSE/MAP at noise level σ). A denoiser
    class may declare it as ``prox_power``.
    """
    return int(getattr(denoiser, "prox_power", 1 if getattr(denoiser, "name", "") in ("tv", "wavelet") else 2))


class DenoiserPrior:
    """Mixin of the methods and baselines that use a denoiser: ``denoiser`` and ``denoiser_options``.

    The name and the option keys are checked when the method is built; the denoiser itself is
    built on first use (:attr:`D`, e.g. in ``setup``), so building a method is cheap. When the
    default ``learned`` cannot be built (not registered, or its weights file is missing) the
    method falls back to ``tv`` (the TV proximal map) with a :class:`UserWarning` and records
    ``denoiser="tv"`` in its configuration, so a run always says which denoiser it used.
    """

    denoiser: str
    denoiser_options: dict | None

    def _init_denoiser(self, denoiser: str, denoiser_options: dict | None) -> None:
        if denoiser_options is not None and not isinstance(denoiser_options, dict):
            raise ValueError(f"denoiser_options must be a mapping, got {denoiser_options!r}")
        self.denoiser = str(denoiser)
        self.denoiser_options = None if denoiser_options is None else dict(denoiser_options)
        cls = DENOISERS.get(self.denoiser, None)
        if cls is None and self.denoiser != "learned":
            raise ValueError(DENOISERS.unknown_message(self.denoiser))
        if cls is not None and self.denoiser_options:
            params = inspect.signature(cls.__init__).parameters
            if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
                unknown = sorted(set(self.denoiser_options) - set(params) - {"self"})
                if unknown:
                    raise ValueError(f"unknown option(s) {', '.join(unknown)} for denoiser {self.denoiser!r} "
                                     f"(known: {', '.join(k for k in params if k != 'self') or 'none'})")
        self._D = None

    @property
    def D(self) -> Denoiser:
        """The denoiser ``D(x, σ)`` (built on first use)."""
        if self._D is None:
            opts = dict(self.denoiser_options or {})
            if self.denoiser == "learned":
                try:
                    self._D = make_denoiser("learned", **opts)
                except DipkitError as exc:
                    warnings.warn(f"denoiser 'learned' is not available ({exc}); using the TV proximal map "
                                  "(denoiser='tv') instead", UserWarning, stacklevel=3)
                    self.denoiser, self._D = "tv", make_denoiser("tv")
            else:
                self._D = make_denoiser(self.denoiser, **opts)
        return self._D

    @D.setter
    def D(self, denoiser: Denoiser) -> None:
        self._D = denoiser
