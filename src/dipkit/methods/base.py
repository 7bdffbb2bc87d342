r"""The method interface: a small object that says what its Algorithm box says.

A :class:`Method` never owns a loop over optimiser steps; the engine
(:func:`dipkit.engine.run`) calls its hooks:

* ``setup(state)`` — create auxiliary variables (``u``, ``w`` …) in ``state.aux``;
* ``param_groups(state)`` / ``make_optimizer`` — what is optimised (θ, sometimes ``z``) and how;
* ``forward(state)`` — the network output :math:`f_\theta(z)` (with input perturbation if set);
* ``loss(state, x)`` — a dict of per-sample loss terms ``[B]`` (summed by the engine);
* ``before_update`` / ``after_update`` — around ``optimizer.step()`` (e.g. Langevin noise);
* ``iterate(state)`` — the current iterate fed to the output rule (default ``state.x``);
* ``outer_update(state)`` — every ``inner_steps`` steps (dual/splitting/input updates);
* ``output`` — the output rule (:class:`~dipkit.engine.LastIterate` or :class:`~dipkit.engine.EMA`).

Conventions (documented once): the data fidelity is the *sum*
:math:`\tfrac12\|A f_\theta(z) - y\|_2^2` per sample (not a mean), with the operator as deepinv
builds it (our CT operators are not normalised: pixel size 1, so :math:`\|A\|^2` grows with the
image size; regularisation weights are relative to that scale).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch

from ..engine.output import make_output_rule
from ..inputs import perturb

__all__ = ["Method", "data_fidelity", "state_operator_norm_sq"]


def state_operator_norm_sq(state, n_iter: int = 50) -> float:
    r""":math:`\|A\|_2^2` of the run's operator by power iteration (deterministic start vector).

    Called once, in a method's ``setup`` (one host read), to put regularisation weights on the
    scale of the data term: our operators are not normalised (:math:`\|A\|^2 \approx 600` for
    32² CT with 16 views, ≈ 3.7e3 at 128² with 30 views), so a weight ``lam`` of a quadratic
    penalty is applied as ``lam·‖A‖²`` — the papers' weight for a unit-norm operator.
    Used by Self-Guided DIP, aSeqDIP and SGLD. (The denoiser family keeps a per-sample,
    sync-free variant on the device: :func:`dipkit.methods.denoiser_family.operator_norm_sq`.)
    """
    from ..baselines.tv import operator_norm

    with torch.no_grad():
        shape = state.physics.A_adjoint(state.y).shape
    return operator_norm(state.physics, shape, n_iter=n_iter, device=state.device, dtype=state.y.dtype) ** 2


def data_fidelity(physics, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Per-sample :math:`\tfrac12\|A x - y\|_2^2`, shape ``[B]``."""
    r = physics.A(x) - y
    return 0.5 * r.pow(2).flatten(1).sum(1)


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
    #: gradient steps when the run does not say (``--iterations``)
    default_iterations: ClassVar[int | None] = 3000
    #: outer update every ``inner_steps`` gradient steps (0: never)
    inner_steps: int = 0

    def __init__(self, *, lr: float = 1e-4, ema: float | None = None):
        self.lr = float(lr)
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
        return torch.optim.Adam(groups)

    def network(self, state, z: torch.Tensor) -> torch.Tensor:
        """``f_θ(z)``, under the engine's autocast setting; returns the operator's dtype."""
        if state.autocast_dtype is None:
            return state.net(z)
        with torch.autocast(device_type=state.device.type, dtype=state.autocast_dtype):
            out = state.net(z)
        return out.to(state.y.dtype)

    def forward(self, state) -> torch.Tensor:
        return self.network(state, perturb(state.z, state.z_perturb, state.generator))

    def loss(self, state, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"data": data_fidelity(state.physics, x, state.y)}

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
