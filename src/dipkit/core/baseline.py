r"""The base class of the classical baselines: methods without a network and without an optimiser.

A :class:`Baseline` runs through the same engine as the DIP methods (:func:`dipkit.engine.run`),
so history, stopping rules, progress and checkpoints work the same for it:

* an *iterative* baseline (TV by PDHG, PnP-ADMM) does one iteration of its algorithm per engine
  step in ``forward`` and keeps its variables in ``state.aux``; its ``loss`` terms (e.g. the data
  term and α·TV) are only observed, so the engine evaluates them every ``report_every`` steps;
* a *direct* baseline (FBP, the naive reconstructions; ``direct = True``) computes its result in
  ``forward`` of the run's single step; ``metrics.json`` reports ``iterations: null`` for it.

:meth:`Baseline.solve` runs a baseline on ``(physics, y)`` without a problem file or run
directory, which the library functions (:func:`dipkit.baselines.tv.tv_reconstruct`) use.

Lives in :mod:`dipkit.core` (under both :mod:`dipkit.methods` and :mod:`dipkit.baselines`);
:mod:`dipkit.baselines.base` re-exports it.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch

from ..engine.callbacks import Callback
from ..engine.output import LastIterate
from .method import Method, data_fidelity

__all__ = ["Baseline", "ObserverCallback"]


class Baseline(Method):
    """A method without a network: ``forward`` is one iteration (or, if ``direct``, the result)."""

    uses_network: ClassVar[bool] = False
    #: iterations when the run does not say (None for direct methods)
    default_iterations: ClassVar[int | None] = None
    #: True for a direct (one-shot) reconstruction
    direct: ClassVar[bool] = False

    def __init__(self):
        self.output = LastIterate()

    def param_groups(self, state) -> list[dict]:
        return []

    def loss(self, state, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"data": data_fidelity(state.physics, x, state.y)}

    def reconstruct(self, problem, *, iterations: int | None = None,
                    observer: Callable[[int, torch.Tensor], Any] | None = None, observe_every: int = 10) -> torch.Tensor:
        """:meth:`solve` on a :class:`~dipkit.problem.Problem` (its operator, ``y`` and metadata)."""
        return self.solve(problem.physics, problem.y, iterations=iterations, meta=problem.state_meta(),
                          observer=observer, observe_every=observe_every)

    @torch.no_grad()
    def solve(self, physics, y: torch.Tensor, *, iterations: int | None = None, meta: dict | None = None,
              observer: Callable[[int, torch.Tensor], Any] | None = None, observe_every: int = 10) -> torch.Tensor:
        """Run this baseline on ``y`` through the engine; ``observer(k, x)`` every ``observe_every``
        iterations and at the last one. Returns the reconstruction ``[B, C, H, W]``."""
        from ..engine import State, run

        steps = 1 if self.direct else int(iterations if iterations is not None else self.default_iterations)
        state = State(physics=physics, y=y, max_steps=steps, generator=torch.Generator(device=y.device),
                      meta=dict(meta or {}), report_every=max(1, int(observe_every)))
        run(self, state, [ObserverCallback(observer, observe_every)] if observer is not None else [])
        return state.estimate


class ObserverCallback(Callback):
    """Adapts a plain ``observer(k, x)`` function to the engine's callback hooks."""

    def __init__(self, observer: Callable[[int, torch.Tensor], Any], every: int):
        self.observer, self.every = observer, max(1, int(every))

    def on_step_end(self, state):
        if state.step % self.every == 0 or state.step == state.max_steps:
            self.observer(state.step, state.estimate)
