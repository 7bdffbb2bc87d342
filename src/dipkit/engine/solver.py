"""The one optimisation loop of dipkit.

Every method — vanilla DIP, its regularised, splitting, self-guided and Bayesian variants — runs
through :func:`run`. A method says what its Algorithm box says through hooks
(:class:`dipkit.methods.base.Method`); callbacks observe and may stop the run. The loop makes no
host–device synchronisation: loss terms stay on the device; observers read them every ``k`` steps.

The loop runs under ``torch.enable_grad()``, so a run started inside ``torch.no_grad()`` (e.g. by
``deepinv.test`` through :class:`dipkit.api.DIPReconstructor`) still optimises its network.

:func:`observe` adds an observer to every run started inside a ``with`` block, also to runs that
the library starts itself (``dipkit.reconstruct``, the candidates of ``--method auto``): for
benchmarks and profilers that need a hook into a run they do not build.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

import torch

from .callbacks import Callback, CallbackList
from .state import State

__all__ = ["run", "observe"]

#: the observer factories of the enclosing :func:`observe` blocks (innermost last)
_OBSERVERS: ContextVar[tuple] = ContextVar("dipkit_engine_observers", default=())


@contextmanager
def observe(make: Callable[[State, CallbackList], Callback | None]) -> Iterator[None]:
    """Within the block, every :func:`run` also calls the callback ``make(state, callbacks)`` returns
    (None: none), after the run's own ``callbacks`` (a :class:`CallbackList`; e.g. to find the run's
    stopping rules). ``make`` is called once per :func:`run` call, so a run continued block by block
    (``--method auto``'s successive halving) gets one per block, with the same ``state``. Blocks
    nest; the setting is per thread (a :class:`~contextvars.ContextVar`). An observer, like any
    callback, must not synchronise host and device every step."""
    token = _OBSERVERS.set((*_OBSERVERS.get(), make))
    try:
        yield
    finally:
        _OBSERVERS.reset(token)


def run(method, state: State, callbacks=(), *, healer=None) -> State:
    """Run ``method`` from ``state`` until ``state.max_steps`` or a stop request.

    Per step::

        x      = method.forward(state)            # f_θ(z), or a mean over perturbed inputs
                                                  # (one iteration, for an optimiser-free method)
        terms  = method.loss(state, x)            # {name: per-sample loss [B]}
        backward(Σ terms); method.before_update; optimizer.step() [†]; method.after_update
        state.x, state.terms, state.loss ← detached copies; state.step += 1
        method.output.update(state, method.iterate(state))   # last iterate / EMA / z
        healer.observe(state)                     # device-side loss watch (self-healing)
        callbacks.on_step_end(state)
        every method.inner_steps steps: method.outer_update(state); callbacks.on_outer_end(state)
        every k steps: healer.check(...)          # one flag read; snapshot, or roll back
        callbacks.on_iteration_end(state)         # the step is complete (checkpoints)

    [†] For a stacked ensemble (:class:`~dipkit.nets.ensemble.StackedEnsemble`) whose members' rates
    differ (a schedule lowered some), the step is followed by the rescaling of each member's update
    to its own rate (:func:`~dipkit.nets.ensemble.rescale_member_updates`; exact for the elementwise
    optimisers, the only ones a stacked ensemble accepts).

    ``healer``: a :class:`~dipkit.engine.healing.Healer` (self-healing), used only for methods with
    an optimiser. The loop can resume a state loaded from :meth:`State.load_state_dict`
    (``state.step > 0``): ``method.setup`` is then told not to re-initialise auxiliary variables,
    and an optimiser state loaded before the optimiser existed (``state.pending_optimizer``) is
    applied once it is built. Observers of enclosing :func:`observe` blocks are called after
    ``callbacks``.
    """
    cbs = callbacks if isinstance(callbacks, Callback) else CallbackList(callbacks)
    observers = [cb for cb in (make(state, cbs) for make in _OBSERVERS.get()) if cb is not None]
    if observers:
        cbs = CallbackList([cbs, *observers])
    with torch.enable_grad():
        return _run(method, state, cbs, healer)


def _run(method, state: State, cbs: Callback, healer) -> State:
    resuming = state.step > 0
    method.setup(state, resuming=resuming)
    if state.optimizer is None:
        groups = method.param_groups(state)
        if groups and state.net is not None:
            from ..nets.ensemble import split_member_groups

            groups = split_member_groups(groups, state.net)  # per-member rates (own groups, or stacked rates)
        state.optimizer = method.make_optimizer(groups) if groups else None
        if state.optimizer is not None and state.net is not None:
            from ..nets.ensemble import check_stacked_optimizer

            check_stacked_optimizer(state.optimizer, state.net)
    if state.pending_optimizer is not None:
        if state.optimizer is not None:
            state.optimizer.load_state_dict(state.pending_optimizer)
        state.pending_optimizer = None
    cbs.on_start(state)
    opt = state.optimizer
    if opt is None:
        healer = None  # nothing to roll back to a smaller step
    if healer is not None:
        healer.start(state, cbs)
    while state.step < state.max_steps and not state.stop:
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            x = method.forward(state)
            terms = method.loss(state, x)
            loss = sum(terms.values())
            loss.sum().backward()
            method.before_update(state)
            _step(opt)
            method.after_update(state)
        else:
            # an optimiser-free method (a classical baseline): forward() is one iteration; its loss
            # terms are only observed, so they are evaluated every report_every steps
            with torch.no_grad():
                x = method.forward(state)
                last = state.step + 1 == state.max_steps
                if state.loss is None or last or (state.step + 1) % max(1, state.report_every) == 0:
                    terms = method.loss(state, x)
                    loss = sum(terms.values())
                else:
                    terms, loss = state.terms, state.loss
        state.step += 1
        state.x = x.detach()
        state.terms = {k: v.detach() for k, v in terms.items()}
        state.loss = loss.detach()
        method.output.update(state, method.iterate(state))
        if healer is not None:
            healer.observe(state)
        cbs.on_step_end(state)
        if method.inner_steps > 0 and state.step % method.inner_steps == 0:
            with torch.no_grad():
                method.outer_update(state)
            state.outer_step += 1
            cbs.on_outer_end(state)
        if healer is not None and healer.due(state):
            healer.check(state, opt, cbs)
        cbs.on_iteration_end(state)
    cbs.on_end(state)
    return state


def _step(opt) -> None:
    """``opt.step()``; then, for stacked members whose rates differ, each member's update rescaled to
    its own rate (:mod:`dipkit.nets.ensemble`). The check is on the host, without synchronisation."""
    from ..nets.ensemble import member_rate_groups, rescale_member_updates

    groups = member_rate_groups(opt)
    if not groups:
        opt.step()
        return
    before = [[p.detach().clone() for p in g["params"]] for g in groups]
    opt.step()
    rescale_member_updates(groups, before)
