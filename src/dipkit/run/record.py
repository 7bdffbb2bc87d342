"""What one engine run leaves behind (:class:`_Run`), for :mod:`dipkit.run.runner` to finish; chunked
ensembles join several into one (:class:`dipkit.run.ensembles.JoinedRun`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Run:
    """What one engine run left behind."""

    state: object
    recorder: object
    rules: list
    wall: float
    healer: object = None
    checkpointer: object = None
    schedule: object = None
    budget: str = "fixed"
    callbacks: list = None

    def state_dict(self, wall: float) -> dict:
        """The run's checkpoint part: engine state, callbacks, self-healing, wall time so far."""
        return {"state": self.state.state_dict(),
                "callbacks": {"rules": {cb.rule: cb.state_dict() for cb in self.rules},
                              "recorder": self.recorder.state_dict(),
                              "schedule": None if self.schedule is None else self.schedule.state_dict()},
                "healer": None if self.healer is None else self.healer.state_dict(),
                "wall": float(wall), "max_steps": int(self.state.max_steps)}
