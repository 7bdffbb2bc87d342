r"""The method interface: a small object that says what its Algorithm box says.

A :class:`Method` never owns a loop over optimiser steps; the engine
(:func:`dipkit.engine.run`) calls its hooks:

* ``setup(state)`` — create auxiliary variables (``u``, ``w`` …) in ``state.aux``;
* ``param_groups(state)`` / ``make_optimizer`` — what is optimised (θ, sometimes ``z``) and how;
* ``forward(state)`` — the network output :math:`f_\theta(z)` (with input perturbation if set);
  the network is called through :meth:`dipkit.engine.State.network`, which applies the run's
  precision (autocast is an engine setting, not method code);
* ``loss(state, x)`` — a dict of per-sample loss terms ``[B]`` (summed by the engine);
* ``before_update`` / ``after_update`` — around ``optimizer.step()`` (e.g. Langevin noise);
* ``iterate(state)`` — the current iterate fed to the output rule (default ``state.x``);
* ``outer_update(state)`` — every ``inner_steps`` steps (dual/splitting/input updates);
* ``output`` — the output rule (:class:`~dipkit.engine.LastIterate` or :class:`~dipkit.engine.EMA`).

Classical baselines are methods too, without an optimiser (:class:`dipkit.core.baseline.Baseline`,
re-exported as :class:`dipkit.baselines.Baseline`): their ``forward`` is one iteration of the
classical algorithm.

This module lives in :mod:`dipkit.core` (the layer under :mod:`dipkit.methods` and
:mod:`dipkit.baselines`, which both import it); :mod:`dipkit.methods.base` re-exports it.

Units and scaling (documented here once, for every method and baseline)
-----------------------------------------------------------------------
* **Data term.** The data fidelity is the per-sample *sum* :math:`\tfrac12\|A x - y\|_2^2`
  (:func:`data_fidelity`; methods form it in their loss through :func:`data_term`, which with
  ``data.subset < 1`` is an unbiased estimate of it over a random subset of measurement blocks,
  :mod:`dipkit.physics.subsets`), not a mean, with the operator as it is built — not normalised. The CT
  operators integrate in pixel units, so :math:`\|A\|^2` grows with the image size and the
  number of views (≈ 600 at 32²/16 views, ≈ 1.8·10³ at 64²/30, ≈ 3.7·10³ at 128²/30); the MRI and
  image-restoration operators have :math:`\|A\| = 1`. Images are in image units (nominally
  [0, 1]); denoiser strengths σ are in image units too.
* **Quadratic coupling weights are relative to** :math:`\|A\|^2`. A weight ``w`` of a penalty
  :math:`\tfrac{w}{2}\|x - v\|^2` between two images (ρ of the ADMM methods, μ of HQS, λ of RED,
  Self-Guided DIP and aSeqDIP) is applied as :math:`w\,\|A\|^2`, with :math:`\|A\|^2` estimated
  once per run by :meth:`dipkit.engine.State.opnorm_sq` (power iteration, per sample, on the
  device, cached). ``w`` is thus the papers' weight for a unit-norm operator, and a default
  carries over between operators and image sizes: ``w = 1`` gives the penalty the curvature of the
  data term's largest eigenvalue.
* **TV weights are absolute.** A weight α of :math:`\alpha\,\mathrm{TV}(x)` (the ``tv`` baseline,
  ``dip-tv``, ``dip-tv-hqs``'s λ, ``dip-wtv-admm``) multiplies the TV of the image in image units
  and lives on the data term's scale, which depends on the operator and on the noise level
  (e.g. TV's optimum at 128²/30 views is about 100 times the one for ‖A‖ = 1 problems). The CT
  paper's code instead divides its data term by an operator-norm estimate, so its numbers for
  these weights do not carry over; each class documents how its default was chosen.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import torch

from ..engine.output import make_output_rule

__all__ = ["Method", "data_fidelity", "data_term", "positive", "nonneg", "count", "perturb"]


def data_fidelity(physics, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Per-sample :math:`\tfrac12\|A x - y\|_2^2`, shape ``[B]``."""
    r = physics.A(x) - y
    return 0.5 * r.pow(2).flatten(1).sum(1)


def data_term(state, x: torch.Tensor) -> torch.Tensor:
    r"""The data term of a gradient step, per sample ``[B]``: the one place methods form it.

    Without ``data.subset`` (``state.data_term is None``) this is :func:`data_fidelity`,
    :math:`\tfrac12\|A x - y\|_2^2`. With ``data.subset = s < 1`` (stochastic DIP, CT paper §5.3)
    it is the unbiased subset term :math:`\frac{N_b}{k}\sum_{i\in S}\tfrac12\|A_i x - y_i\|_2^2`
    over a fresh random subset :math:`S` of :math:`k \approx s N_b` of the :math:`N_b` measurement
    blocks (CT views, MRI k-space lines, image rows), with
    :math:`\mathbb{E}_S[\cdot] = \tfrac12\|A x - y\|_2^2`
    (:class:`dipkit.physics.subsets.SubsetDataTerm`). Call it once per step (each call draws).
    Outer updates and observers that need the data misfit itself use :func:`data_fidelity`.
    """
    if state.data_term is None:
        return data_fidelity(state.physics, x, state.y)
    return state.data_term(state, x)


def perturb(z: torch.Tensor, sigma_p: float, randn) -> torch.Tensor:
    r"""``z + σ_p ε`` with fresh ``ε ~ N(0, I)`` from ``randn(shape, dtype)`` (e.g.
    :meth:`dipkit.engine.State.randn`); the identity if σ_p = 0. Input perturbation
    (:mod:`dipkit.inputs`, re-exported there)."""
    if sigma_p == 0:
        return z
    return z + sigma_p * randn(z.shape, z.dtype)


# ---------------------------------------------------------------------- parameter checks
def positive(name: str, value: float) -> float:
    """``value`` as a float; it must be a finite number > 0 (else ValueError)."""
    value = float(value)
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive number, got {value}")
    return value


def nonneg(name: str, value: float) -> float:
    """``value`` as a float; it must be a finite number ≥ 0 (else ValueError)."""
    value = float(value)
    if not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be ≥ 0, got {value}")
    return value


def count(name: str, value: int, minimum: int = 1) -> int:
    """``value`` as an int; it must be an integer ≥ ``minimum`` (else ValueError)."""
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


class Method:
    """Base class of every registered method (see module docs for the hooks).

    Subclasses set the class attributes ``name`` (the CLI name), ``description`` (one line),
    ``reference`` (the paper) and ``algorithm`` (which box), and take every hyper-parameter as an
    explicit keyword argument of ``__init__`` with the paper's default.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    algorithm: ClassVar[str] = ""
    uses_network: ClassVar[bool] = True
    #: whether the gradient steps' loss holds the data term (:func:`data_term`), so that
    #: ``data.subset < 1`` (stochastic DIP) applies; ``False`` where the data enter only through a
    #: classical update (``dip-admm-v1``)
    stochastic_data: ClassVar[bool] = True
    #: gradient steps when the run does not say (``--iterations``) and no ``val`` rule stops it
    default_iterations: ClassVar[int | None] = 3000
    #: the cap of a run that decides its own length (no ``--iterations``, the ``val`` rule stopping
    #: it after a patience window without a new held-out minimum; :func:`dipkit.run.resolve.step_budget`);
    #: ``None``: the method always runs ``default_iterations`` (e.g. SGLD's posterior mean needs
    #: its burn-in and sampling phases)
    max_iterations: ClassVar[int | None] = 20000
    #: the optimiser's rate is an Adam step size a schedule may lower (:mod:`dipkit.engine.schedule`)
    schedulable: ClassVar[bool] = True
    #: with ``lr`` left to the network preset: at most this rate (None: the preset's as it is), for
    #: methods that are unstable at the rate the preset gives plain DIP
    max_default_lr: ClassVar[float | None] = None
    #: outer update every ``inner_steps`` gradient steps (0: never)
    inner_steps: int = 0
    #: ``precision=auto`` may run the network in bf16 on hardware that does bf16 natively
    #: (:mod:`dipkit.precision`); ``False``: the method's result degrades in bf16, so ``auto``
    #: keeps it in fp32 (an explicit ``precision=bf16`` is still honoured unless the method refuses)
    bf16_safe: ClassVar[bool] = True
    #: an ensemble (``--ensemble N``, batched seeds) of this method may run its members stacked
    #: (:class:`dipkit.nets.ensemble.StackedEnsemble`: one tensor per parameter name, the members
    #: vectorised); ``False`` for methods that reach into the members (their parameters by name or
    #: as separate leaves, per-member gradient clipping), which keep the loop
    #: :class:`~dipkit.nets.ensemble.Ensemble`. Stacking also needs an elementwise optimiser
    #: (Adam, AdamW, SGD).
    stack_members: ClassVar[bool] = True

    @property
    def inputs_per_member(self) -> int:
        """Network inputs per ensemble member and step (methods that average over perturbed inputs
        pass several); scales the ensemble's memory estimate (:mod:`dipkit.run.ensembles`)."""
        return 1

    def __init__(self, *, lr: float | None = None, ema: float | None = None):
        #: Adam learning rate; ``None``: the network preset's (:attr:`dipkit.nets.NetPreset.lr`),
        #: resolved when the run starts (:func:`dipkit.run.resolve.resolve_config`)
        self.lr = None if lr is None else nonneg("lr", lr)
        self.ema = ema
        self.output = make_output_rule(ema)

    # ------------------------------------------------------------------ introspection
    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """``{name: default}`` of every hyper-parameter (the keyword arguments of ``__init__``)."""
        return {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
                if p.kind == p.KEYWORD_ONLY}

    def config(self) -> dict[str, Any]:
        """The hyper-parameters of this instance."""
        return {k: getattr(self, k, v) for k, v in self.hyperparameters().items()}

    # ------------------------------------------------------------------ hooks
    def setup(self, state, resuming: bool = False) -> None:
        """Create auxiliary variables; default: nothing."""

    def param_groups(self, state) -> list[dict]:
        return [{"params": [p for p in state.net.parameters() if p.requires_grad], "lr": self.lr}]

    def make_optimizer(self, groups) -> torch.optim.Optimizer:
        from .optim import adam

        return adam(groups)

    def forward(self, state) -> torch.Tensor:
        return state.network(perturb(state.z, state.z_perturb, state.randn))

    def fresh_output(self, state) -> torch.Tensor:
        r""":math:`f_\theta(z)` at the current θ without input perturbation, detached (the boxes'
        :math:`x^{(k)}` read after the inner steps, in outer updates)."""
        with torch.no_grad():
            return state.network(state.z).detach()

    def loss(self, state, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"data": data_term(state, x)}

    def before_update(self, state) -> None:
        """After ``backward``, before ``optimizer.step()``."""

    def after_update(self, state) -> None:
        """After ``optimizer.step()``."""

    def iterate(self, state) -> torch.Tensor:
        """The iterate the output rule averages (default: the network output)."""
        return state.x

    def outer_update(self, state) -> None:
        """Every ``inner_steps`` steps, under ``torch.no_grad()``."""

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"
