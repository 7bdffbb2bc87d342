r"""Checkpoints: write a run's complete state to one file while it runs, to resume it later.

:class:`Checkpointer` is a callback that writes ``payload(state)`` — built by the caller
(:mod:`dipkit.run.runner`: the engine state, every callback's ``state_dict``, the resolved
configuration, …) — with ``torch.save`` to one file, atomically (temporary file, fsync, rename),
at the end of every ``every``-th step (:meth:`~dipkit.engine.Callback.on_iteration_end`: the
step's outer update and the self-healing check are done, so the state is consistent and checked).
The file holds only tensors and plain containers (dicts, lists, str, int, float, bool, None), so
:func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``.

**How often.** ``every = N`` writes every N steps (rounded up to a multiple of ``align``, the
run's history interval ``k``, so that checkpoints fall on steps that self-healing has checked);
``every = 0`` never; ``every = None`` (*auto*, the default) decides from the run's speed: the
wall time of the ``k`` steps after the first one (the first includes one-off work: input,
operator norm, denoiser loading) is extrapolated to the whole step budget; if that exceeds
:data:`AUTO_MIN_RUN_S` (60 s), checkpoints are written every :data:`AUTO_INTERVAL_S` (60 s)
worth of steps, else never. On a GPU the two timing points synchronise the device once each
(twice per run).

**Testing hook.** With the environment variable ``DIPKIT_KILL_AFTER_CHECKPOINT=S``, the process
kills itself (SIGKILL) right after writing a checkpoint at a step ≥ S — how the tests interrupt a
run at a known point to check that resuming it gives the uninterrupted run's result bit for bit.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import DipkitError
from .callbacks import Callback

__all__ = ["Checkpointer", "save_checkpoint", "load_checkpoint", "AUTO_MIN_RUN_S", "AUTO_INTERVAL_S",
           "KILL_ENV"]

#: auto mode: checkpoint runs expected to last longer than this (seconds)
AUTO_MIN_RUN_S = 60.0
#: auto mode: wall time between checkpoints (seconds)
AUTO_INTERVAL_S = 60.0
#: the testing hook's environment variable (module docs)
KILL_ENV = "DIPKIT_KILL_AFTER_CHECKPOINT"


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """``torch.save(payload)`` to ``path`` atomically (a crash leaves the previous checkpoint intact)."""
    from ..io import atomic_write

    path = Path(path)
    with atomic_write(path, "wb") as fh:
        torch.save(payload, fh)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)`` onto the CPU; a missing or
    unreadable file is a one-line :class:`DipkitError`."""
    from ..io.guard import read_torch

    path = Path(path)
    if not path.is_file():
        raise DipkitError(f"no checkpoint at {path}")
    data = read_torch(path, "checkpoint")
    if not isinstance(data, dict) or data.get("format") != "dipkit-checkpoint":
        raise DipkitError(f"not a dipkit checkpoint: {path}")
    version = data.get("version", 0)
    bad = [k for k in ("request", "problem") if not isinstance(data.get(k), dict)]
    if isinstance(version, bool) or not isinstance(version, int):
        bad.insert(0, "version")
    if bad:
        raise DipkitError(f"checkpoint {path} is damaged: {', '.join(bad)} missing or of the wrong type")
    return data


class Checkpointer(Callback):
    """Write ``payload(state)`` to ``path`` every ``every`` steps (module docs).

    :param path: the checkpoint file.
    :param payload: ``payload(state) -> dict`` of tensors and plain containers.
    :param every: steps between checkpoints; ``0``: never; ``None``: auto (module docs).
    :param align: round ``every`` up to a multiple of this (the history interval ``k``).
    """

    def __init__(self, path: str | Path, payload: Callable[[Any], dict], *, every: int | None = None,
                 align: int = 1):
        self.path, self.payload, self.align = Path(path), payload, max(1, int(align))
        self.auto = every is None
        self.every = 0 if every is None else self._aligned(int(every))
        self.written = 0
        self._t = None  # auto mode: (step, time) of the first timing point

    def _aligned(self, n: int) -> int:
        return 0 if n <= 0 else int(math.ceil(n / self.align) * self.align)

    def on_start(self, state):
        self._t = None

    def _now(self, state) -> float:
        if state.device.type == "cuda":
            torch.cuda.synchronize(state.device)
        return time.perf_counter()

    def _decide(self, state) -> None:
        """Auto mode: time ``align`` steps after the first step of this (possibly resumed) run."""
        if self._t is None:
            self._t = (state.step, self._now(state))
            return
        s0, t0 = self._t
        if state.step - s0 < max(self.align, 1):
            return
        per_step = (self._now(state) - t0) / (state.step - s0)
        self.auto = False
        if per_step * state.max_steps > AUTO_MIN_RUN_S:
            self.every = self._aligned(max(1, int(AUTO_INTERVAL_S / max(per_step, 1e-9))))

    def on_iteration_end(self, state):
        if self.auto:
            self._decide(state)
        if not self.every or state.step % self.every or state.step >= state.max_steps or state.stop:
            return
        self.write(state)

    def write(self, state) -> None:
        """Write a checkpoint now (and honour the testing hook)."""
        save_checkpoint(self.path, self.payload(state))
        self.written += 1
        kill_at = os.environ.get(KILL_ENV)
        if kill_at and state.step >= int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)

    def describe(self) -> dict:
        """``{"every": N or None, "written": count}`` for ``metrics.json``."""
        return {"every": self.every or None, "written": self.written}
