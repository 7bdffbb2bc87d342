"""Callbacks: observers and controllers of a run (metrics, stopping rules, progress, writers).

A callback is an object with four typed hooks and a ``state_dict``; it never owns the loop.
Hooks must not synchronise host and device every step: keep values on the device and read them
every ``k`` steps (see :class:`dipkit.engine.recorder.HistoryRecorder`). A callback stops a run by
calling ``state.request_stop(reason)``.
"""

from __future__ import annotations

from .state import State

__all__ = ["Callback", "CallbackList"]


class Callback:
    """Base class; every hook is optional."""

    def on_start(self, state: State) -> None:
        """After set-up, before the first step."""

    def on_step_end(self, state: State) -> None:
        """After each gradient step (``state.step`` already incremented, ``state.estimate`` updated)."""

    def on_outer_end(self, state: State) -> None:
        """After each outer update (every ``method.inner_steps`` steps)."""

    def on_end(self, state: State) -> None:
        """Once, after the last step (also when a callback stopped the run)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, sd: dict) -> None:
        pass


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

    def on_end(self, state):
        for c in self.callbacks:
            c.on_end(state)

    def state_dict(self):
        return {str(i): c.state_dict() for i, c in enumerate(self.callbacks)}

    def load_state_dict(self, sd):
        for i, c in enumerate(self.callbacks):
            c.load_state_dict(sd.get(str(i), {}))
