"""A wall-clock limit for a run (``--time-limit SECONDS``), as a callback.

The run stops at the first check (every ``check_every`` steps) after ``seconds`` of wall time,
counted from the start of the run (a resumed run counts the time it had already spent). The
stopping rules keep their selection, so the reconstruction is the best iterate found in the time
given; ``metrics.json`` says ``stop: {kind: "time_limit", …}``. The clock is the host's; no value
is read from the device.
"""

from __future__ import annotations

import time

from ..engine.callbacks import Callback

__all__ = ["TimeLimit"]


class TimeLimit(Callback):
    """Stop the run once ``seconds`` of wall time are spent (``spent``: time already used before this
    process started the run, e.g. by the run it resumes)."""

    def __init__(self, seconds: float, *, check_every: int = 10, spent: float = 0.0):
        if not seconds > 0 or check_every < 1:
            raise ValueError("a time limit needs seconds > 0 and check_every ≥ 1")
        self.seconds, self.check_every, self.spent = float(seconds), int(check_every), float(spent)
        self._t0: float | None = None

    def on_start(self, state):
        self._t0 = time.perf_counter()

    def elapsed(self) -> float:
        return self.spent + (0.0 if self._t0 is None else time.perf_counter() - self._t0)

    def on_step_end(self, state):
        if state.step % self.check_every == 0 and self.elapsed() >= self.seconds:
            state.request_stop(f"time limit of {self.seconds:g} s reached at step {state.step}", kind="time_limit")
