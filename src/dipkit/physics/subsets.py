r"""Stochastic data terms: the data fidelity over a random subset of measurement blocks per step.

The measurement is partitioned into :math:`N_b` *blocks* :math:`y = (y_1, \dots, y_{N_b})`, one per
row :math:`A_i` of a block decomposition of the operator, so that the data term is a sum

.. math::  \tfrac12\|A x - y\|_2^2 = \sum_{i=1}^{N_b} \tfrac12\|A_i x - y_i\|_2^2 .

Each gradient step draws a subset :math:`S` of :math:`k = \max(1, \operatorname{round}(s N_b))`
blocks uniformly without replacement (:math:`s` is the setting ``data.subset``) and uses

.. math::  \ell_S(x) = \frac{N_b}{k} \sum_{i \in S} \tfrac12\|A_i x - y_i\|_2^2 ,

which is *unbiased*: every block lies in :math:`\binom{N_b-1}{k-1}` of the :math:`\binom{N_b}{k}`
subsets, so :math:`\mathbb{E}_S\,\ell_S(x) = \frac{N_b}{k}\cdot\frac{k}{N_b}\sum_i \tfrac12\|A_i x -
y_i\|^2 = \tfrac12\|Ax - y\|^2`, and so is its gradient :math:`\mathbb{E}_S\nabla_\theta\ell_S(f_\theta(z))
= \nabla_\theta\tfrac12\|A f_\theta(z) - y\|^2`. With :math:`k = 1` this is the CT paper's (§5.3)
:math:`\frac{N_b}{2}\|A_i f_\theta(z) - y_i\|^2`; with :math:`s = 1` it is the full data term (and
:func:`make_subset_term` returns ``None``: the run is the full-gradient run, bit for bit).

**Where it applies.** Every network method forms the data term of its gradient steps through
:func:`dipkit.methods.base.data_term`, so ``data.subset`` works for all of them (DIP, DIP+TV,
the splitting and denoiser methods, Self-Guided DIP, aSeqDIP, DeepRED, linearised DIP; for
``sgld`` it makes the Langevin dynamics *stochastic-gradient* Langevin dynamics proper). Outer
updates (closed-form or CG x-updates, adaptive weights) and observers keep the full operator.
``dip-admm-v1``, whose network loss holds no data term, and the classical baselines reject the
setting (:meth:`dipkit.run.config.RunConfig.validate`).

**Blocks** (on the last two axes of the measurement; every leading axis — real/imaginary part,
coils, colour channels — belongs to the same block):

* CT (parallel and fan beam; sinogram ``[…, detector, view]``): the *views* (projection angles),
  the classical ordered-subset / stochastic-gradient partition of tomography;
* MRI, single and multi-coil (k-space ``[…, H, W]``, phase-encode lines along the last axis):
  the sampled k-space *columns* — only columns the mask samples are blocks;
* everything else (denoising, inpainting, deblurring, super-resolution, imported operators):
  the *rows* of the measurement that hold a measured entry.

**With a validation split** (:class:`~dipkit.physics.split.MaskedPhysics`): the term is built on
the fit view :math:`M A` and :math:`M y`, so held-out entries are zero in every block and stay
held out; the subsets are unbiased for the fit term :math:`\tfrac12\|M(Ax - y)\|^2`.

**Randomness.** The subset is drawn on the run's device from the run's seeded generator
(:meth:`dipkit.engine.State.rand`: ``k`` smallest of ``N_b`` uniform numbers, one draw per sample,
so ensemble members draw from their own generators) — no host–device synchronisation per step, and
the same seed gives the same run on the CPU.

**Cost.** The term applies the full operator and weights the residual with the 0/1 block mask, so
it has the statistics of stochastic gradients but not yet their saving: a restricted operator
:math:`A_S` (only the selected views' rows of the sparse CT matrix) would cut the operator's cost
to :math:`k/N_b`. On the CPU that saving would be small — the network dominates a step: at
64²/30 views the sparse CT operator's ``A`` + backward takes 0.57 ms against 14 ms for the default
U-Net's forward + backward (2.1 ms vs 49 ms at 128²; deepinv's projector 5.7 and 24 ms) — see
``benchmarks/stochastic.py``.

References: M. J. Ehrhardt, Ž. Kereta, J. Liang, J. Tang, "A guide to stochastic optimisation for
large-scale inverse problems", Inverse Problems 41 (2025); B. Jin, X. Lu, "On the regularizing
property of stochastic gradient descent", Inverse Problems 35 (2018); H. M. Hudson, R. S. Larkin,
"Accelerated image reconstruction using ordered subsets of projection data", IEEE TMI 13 (1994);
the CT paper (dip-for-ct-reconstruction), §5.3.
"""

from __future__ import annotations

import torch

from ..errors import DipkitError
from .split import MaskedPhysics, measured_support

__all__ = ["SubsetDataTerm", "make_subset_term", "block_axis"]


def block_axis(physics) -> int:
    """The axis of the measurement whose entries are the blocks: ``-1`` (columns: CT views, MRI
    phase-encode lines) or ``-2`` (rows: image tasks and everything else)."""
    base = physics.base if isinstance(physics, MaskedPhysics) else physics
    kind = (getattr(base, "spec", None) or {}).get("kind")
    if kind in ("ct", "mri", "mri-multicoil"):
        return -1
    from .ct import is_ct

    return -1 if is_ct(base) else -2


class SubsetDataTerm:
    r"""The stochastic data term :math:`\ell_S` of ``physics`` and ``y`` (module docs).

    :param physics: the run's operator (possibly the fit view of a validation split).
    :param y: the measurement ``[B, …, H, W]`` (the fit measurement with a split).
    :param fraction: the share ``s`` of blocks per step, in (0, 1].
    :ivar lines: ``[N_b]`` positions (along :attr:`axis`) of the blocks (measured lines only).
    :ivar k: blocks per step; :ivar scale: :math:`N_b / k`.
    """

    def __init__(self, physics, y: torch.Tensor, fraction: float):
        fraction = float(fraction)
        if not 0.0 < fraction <= 1.0:
            raise DipkitError(f"data.subset must be in (0, 1], got {fraction}")
        if y.ndim < 3:
            raise DipkitError(f"a stochastic data term needs a measurement with two trailing axes, got {tuple(y.shape)}")
        self.physics, self.y, self.fraction = physics, y, fraction
        self.axis = block_axis(physics)
        support = measured_support(physics, y)  # [H, W]
        measured = support.any(dim=0 if self.axis == -1 else 1)
        self.lines = torch.nonzero(measured).squeeze(1).to(y.device)  # setup: one sync, once
        self.n_blocks = int(self.lines.numel())
        self.n_lines = int(measured.numel())
        if self.n_blocks < 1:
            raise DipkitError("a stochastic data term needs a measurement with measured entries")
        self.k = max(1, min(self.n_blocks, int(round(fraction * self.n_blocks))))
        self.scale = self.n_blocks / self.k

    # ------------------------------------------------------------------ drawing
    def draw(self, state) -> torch.Tensor:
        """Indices ``[B, k]`` into :attr:`lines` of this step's blocks, from the run's generator(s)
        on the device (the ``k`` smallest of ``N_b`` uniform numbers: a uniform ``k``-subset)."""
        u = state.rand((state.y.shape[0], self.n_blocks))
        return u.argsort(dim=1)[:, : self.k]

    def __call__(self, state, x: torch.Tensor) -> torch.Tensor:
        """This step's :math:`\\ell_S(x)` per sample ``[B]`` (a fresh subset per call)."""
        return self.term(x, self.draw(state))

    # ------------------------------------------------------------------ the term for a given subset
    def term(self, x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        r""":math:`\frac{N_b}{k}\sum_{i\in S}\tfrac12\|A_i x - y_i\|^2` per sample ``[B]`` for the
        subsets ``chosen`` ``[B, k]`` (indices into :attr:`lines`)."""
        pos = self.lines[chosen]  # [B, k] positions along the block axis
        m = torch.zeros((x.shape[0], self.n_lines), dtype=self.y.dtype, device=self.y.device)
        m.scatter_(1, pos, 1.0)
        lead = self.y.ndim - 3  # axes between the batch and the last two
        if self.axis == -1:
            m = m.reshape(m.shape[0], *([1] * (lead + 1)), self.n_lines)
        else:
            m = m.reshape(m.shape[0], *([1] * lead), self.n_lines, 1)
        r = self.physics.A(x) - self.y
        return self.scale * 0.5 * (r.pow(2) * m).flatten(1).sum(1)

    def describe(self) -> dict:
        return {"subset": self.fraction, "blocks": self.n_blocks, "per_step": self.k,
                "block": "columns" if self.axis == -1 else "rows"}


def make_subset_term(physics, y: torch.Tensor, fraction: float) -> SubsetDataTerm | None:
    """The stochastic data term for ``data.subset = fraction``; ``None`` for ``fraction == 1``
    (the full data term, computed as without the setting)."""
    if float(fraction) == 1.0:
        return None
    return SubsetDataTerm(physics, y, fraction)
