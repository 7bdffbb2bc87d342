"""Callbacks: observers and controllers of a run (metrics, stopping rules, progress, writers).

A callback is an object with typed hooks and a ``state_dict``; it never owns the loop.
Hooks must not synchronise host and device every step: keep values on the device and read them
every ``k`` steps (see :class:`dipkit.engine.recorder.HistoryRecorder`). A callback stops a run by
calling ``state.request_stop(reason)``.

Checkpoints store ``state_dict()``; self-healing (:mod:`dipkit.engine.healing`) keeps an in-memory
:meth:`Callback.snapshot` every ``k`` steps and, after a rollback, restores it (:meth:`Callback.restore`) and
calls :meth:`Callback.on_rollback`. The default snapshot is a clone of ``state_dict()``.
"""

from __future__ import annotations

from .state import State, clone_tree

__all__ = ["Callback", "CallbackList"]


class Callback:
    """Base class; every hook is optional."""

    def on_start(self, state: State) -> None:
        """After set-up, before the first step."""

    def on_step_end(self, state: State) -> None:
        """After each gradient step (``state.step`` already incremented, ``state.estimate`` updated)."""

    def on_outer_end(self, state: State) -> None:
        """After each outer update (every ``method.inner_steps`` steps)."""

    def on_iteration_end(self, state: State) -> None:
        """After each step is complete — its outer update and the self-healing check included (a
        consistent point to checkpoint the run)."""

    def on_rollback(self, state: State, record: dict) -> None:
        """After self-healing rolled the run back to a snapshot (``record``: ``{step, reason, lr}``);
        the callback has already been restored to its snapshot."""

    def on_end(self, state: State) -> None:
        """Once, after the last step (also when a callback stopped the run)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, sd: dict) -> None:
        pass

    def snapshot(self):
        """An in-memory copy of this callback's state for a rollback (default: cloned ``state_dict``)."""
        return clone_tree(self.state_dict())

    def restore(self, snap) -> None:
        """Return to :meth:`snapshot`'s state (the snapshot stays usable for another rollback)."""
        self.load_state_dict(clone_tree(snap))


class CallbackList(Callback):
    """Calls its callbacks in order."""

    def __init__(self, callbacks=()):
        self.callbacks = [c for c in callbacks if c is not None]

    def on_start(self, state):
        for c in self.callbacks:
            c.on_start(state)

    def on_step_end(self, state):
        for c in self.callbacks:
            c.on_step_end(state)

    def on_outer_end(self, state):
        for c in self.callbacks:
            c.on_outer_end(state)

    def on_iteration_end(self, state):
        for c in self.callbacks:
            c.on_iteration_end(state)

    def on_rollback(self, state, record):
        for c in self.callbacks:
            c.on_rollback(state, record)

    def on_end(self, state):
        for c in self.callbacks:
            c.on_end(state)

    def snapshot(self):
        return [c.snapshot() for c in self.callbacks]

    def restore(self, snap):
        for c, s in zip(self.callbacks, snap):
            c.restore(s)

    def state_dict(self):
        return {str(i): c.state_dict() for i, c in enumerate(self.callbacks)}

    def load_state_dict(self, sd):
        for i, c in enumerate(self.callbacks):
            c.load_state_dict(sd.get(str(i), {}))
