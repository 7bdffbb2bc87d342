"""A rich progress bar that refreshes a few times a second without per-step synchronisation.

Each step costs one ``time.monotonic()`` call; only when ``refresh_s`` has passed does the bar
read the recorder's latest sample (one device→host transfer) and redraw.
"""

from __future__ import annotations

import sys
import time

from .callbacks import Callback

__all__ = ["ProgressBar"]


class ProgressBar(Callback):
    def __init__(self, recorder=None, *, description: str = "dip", refresh_s: float = 0.25, console=None):
        self.recorder = recorder
        self.description = description
        self.refresh_s = refresh_s
        self.console = console
        self._progress = None
        self._task = None
        self._last = 0.0

    def on_start(self, state):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        console = self.console or Console(file=sys.stderr)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TextColumn("<"),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            console=console, auto_refresh=False, transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=state.max_steps,
                                             completed=state.step, info="", speed="")
        self._t0, self._s0 = time.monotonic(), state.step
        self._last = self._t0

    def _refresh(self, state):
        info = ""
        if self.recorder is not None:
            row = self.recorder.latest()
            if row:
                parts = [f"loss {row['loss']:.4g}"]
                if "psnr" in row:
                    parts.append(f"PSNR {row['psnr']:.2f} dB")
                info = "  ".join(parts)
        now = time.monotonic()
        rate = (state.step - self._s0) / max(now - self._t0, 1e-9)
        self._progress.update(self._task, completed=state.step, info=info, speed=f"{rate:.1f} it/s")
        self._progress.refresh()

    def on_step_end(self, state):
        now = time.monotonic()
        if now - self._last >= self.refresh_s:
            self._last = now
            self._refresh(state)

    def on_end(self, state):
        if self._progress is not None:
            self._refresh(state)
            self._progress.stop()
            self._progress = None
