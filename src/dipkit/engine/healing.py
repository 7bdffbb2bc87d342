r"""Self-healing: roll a run back when its loss goes bad, with a halved learning rate.

A DIP run can diverge — a NaN/Inf loss (an overflow, a bad denoiser output, a too-large step) or
a sudden loss explosion (Adam's occasional instability). Instead of wasting the run,
:class:`Healer` (used by :func:`dipkit.engine.run` for every method with an optimiser):

* **watches every step on the device**: a step is *bad* when its loss is not finite, or when it
  exceeds ``jump_factor`` (default 10³) times the median of the previous ``window`` (default 50)
  steps' losses (per sample; checked once at least 5 steps are in the window and the median is
  positive). The first bad step and its reason are kept in device tensors — no host
  synchronisation per step;
* **reads the flag every** ``k`` **steps** (``k`` = the run's history interval ``log_every``, and
  whenever the run is about to end): one small device→host transfer per ``k`` steps;
* **keeps a snapshot every** ``k`` **steps** while the run is healthy — the state (network,
  optimiser, z, aux variables, estimate, random generators, counters) and every callback
  (:meth:`~dipkit.engine.Callback.snapshot`: stopping rules, history recorder) — in memory
  (a copy of the network and optimiser state on the device);
* **rolls back** when the flag is set: restores the last snapshot, multiplies every learning rate
  of the optimiser by 0.5 (a stacked ensemble's per-member rates ``member_lr`` too), and tells
  the callbacks (:meth:`~dipkit.engine.Callback.on_rollback`).
  The steps since the snapshot — at most ``k`` — are redone with the smaller step. Each rollback is
  recorded as ``{"step": first bad step, "reason": "non-finite loss" | "loss jump", "lr": the new
  learning rate}`` (:attr:`Healer.records`, ``metrics.json``'s ``rollbacks``; the history gains a
  ``rollbacks`` column).
* After ``max_rollbacks`` (default 3) rollbacks, a further bad step ends the run with a one-line
  :class:`~dipkit.errors.DipkitError`.

A run that never goes bad is unchanged bit for bit (the watch only reads the loss). The learning
rate a method uses elsewhere (e.g. SGLD's noise scale √(2·lr·T), computed from the method's
``lr``) is not changed by a rollback.
"""

from __future__ import annotations

import math

import torch

from ..errors import DipkitError
from .state import clone_tree

__all__ = ["Healer", "REASONS"]

#: reason codes of the device flag
REASONS = {1: "non-finite loss", 2: "loss jump"}


class Healer:
    """Watches the loss, keeps snapshots and rolls back (module docs).

    :param every: ``k``, steps between flag reads and snapshots (the history interval).
    :param max_rollbacks: rollbacks allowed before the run fails.
    :param jump_factor: a loss above ``jump_factor`` × the running median is a jump (> 1).
    :param window: steps in the running median.
    :param lr_factor: what a rollback multiplies the learning rates by.
    """

    MIN_HISTORY = 5

    def __init__(self, every: int = 10, *, max_rollbacks: int = 3, jump_factor: float = 1e3, window: int = 50,
                 lr_factor: float = 0.5):
        if every < 1 or max_rollbacks < 0 or not jump_factor > 1 or window < 1 or not 0 < lr_factor < 1:
            raise ValueError("Healer needs every ≥ 1, max_rollbacks ≥ 0, jump_factor > 1, window ≥ 1, "
                             "0 < lr_factor < 1")
        self.every, self.max_rollbacks = int(every), int(max_rollbacks)
        self.jump_factor, self.window, self.lr_factor = float(jump_factor), int(window), float(lr_factor)
        self.records: list[dict] = []
        self._buf: torch.Tensor | None = None  # [window, B] recent losses
        self._n = 0  # losses pushed into the window
        self._code: torch.Tensor | None = None  # 0: good, else a REASONS key
        self._first: torch.Tensor | None = None  # the first bad step
        self._snap = None

    @classmethod
    def from_config(cls, healing, every: int) -> "Healer | None":
        """The healer of a run's ``healing`` settings (:class:`dipkit.run.config.HealingConfig`), or None when off."""
        if not healing.enabled:
            return None
        return cls(every, max_rollbacks=int(healing.max_rollbacks), jump_factor=float(healing.jump_factor),
                   window=int(healing.window))

    # ------------------------------------------------------------------ engine hooks
    def start(self, state, callbacks) -> None:
        """Before the first step (also of a resumed run): the first snapshot."""
        self._take(state, callbacks)

    @torch.no_grad()
    def observe(self, state) -> None:
        """After each step: update the device flag from ``state.loss`` (no host synchronisation)."""
        loss = state.loss.detach().to(torch.float64).reshape(-1)
        dev = loss.device
        if self._buf is None or self._buf.shape[1] != loss.shape[0] or self._buf.device != dev:
            self._buf = torch.zeros((self.window, loss.shape[0]), dtype=torch.float64, device=dev)
            self._n = 0
            self._code = torch.zeros((), dtype=torch.int64, device=dev)
            self._first = torch.full((), -1, dtype=torch.int64, device=dev)
        code = torch.where(torch.isfinite(loss), 0, 1)
        filled = min(self._n, self.window)
        if filled >= self.MIN_HISTORY:
            med = self._buf[:filled].median(dim=0).values
            jump = (loss > self.jump_factor * med) & (med > 0)
            code = torch.where((code == 0) & jump, 2, code)
        code = code.amax()
        new = (self._code == 0) & (code > 0)
        self._first = torch.where(new, torch.full_like(self._first, state.step), self._first)
        self._code = torch.where(new, code, self._code)
        self._buf[self._n % self.window] = loss
        self._n += 1

    def due(self, state) -> bool:
        """Whether to read the flag now: every ``k`` steps and when the run is about to end."""
        return state.step % self.every == 0 or state.step >= state.max_steps or state.stop

    def check(self, state, optimizer, callbacks) -> bool:
        """Read the flag (one transfer); roll back if it is set, else take a snapshot. True: rolled back."""
        if self._code is None:
            return False
        code, first = (int(v) for v in torch.stack([self._code, self._first]).cpu())
        if code == 0:
            self._take(state, callbacks)
            return False
        reason = REASONS.get(code, "bad loss")
        lr = optimizer.param_groups[0]["lr"] if optimizer is not None else None
        if len(self.records) >= self.max_rollbacks or self._snap is None:
            raise DipkitError(f"the run failed at step {first}: {reason} after {len(self.records)} rollback(s) "
                              f"(learning rate {_fmt(lr)}); lower lr, or raise healing.max_rollbacks")
        self._restore(state, callbacks)
        if optimizer is not None:
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * self.lr_factor
                if group.get("member_lr"):  # a stacked ensemble's members' own rates
                    group["member_lr"] = [r * self.lr_factor for r in group["member_lr"]]
        record = {"step": first, "reason": reason,
                  "lr": None if optimizer is None else float(optimizer.param_groups[0]["lr"])}
        self.records.append(record)
        callbacks.on_rollback(state, record)
        return True

    # ------------------------------------------------------------------ snapshots
    def _take(self, state, callbacks) -> None:
        self._snap = {"state": clone_tree(state.state_dict()), "callbacks": callbacks.snapshot(),
                      "buf": None if self._buf is None else self._buf.clone(), "n": self._n}
        if self._code is not None:
            self._code.zero_()
            self._first.fill_(-1)

    def _restore(self, state, callbacks) -> None:
        snap = self._snap
        state.load_state_dict(clone_tree(snap["state"]))
        callbacks.restore(snap["callbacks"])
        self._buf = None if snap["buf"] is None else snap["buf"].clone()
        self._n = snap["n"]
        if self._buf is None:
            self._code = self._first = None
        else:
            self._code.zero_()
            self._first.fill_(-1)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"records": [dict(r) for r in self.records], "buf": self._buf, "n": self._n}

    def load_state_dict(self, sd: dict) -> None:
        if not sd:
            return
        self.records = [dict(r) for r in sd.get("records", [])]
        self._buf, self._n = sd.get("buf"), int(sd.get("n", 0))
        if self._buf is not None:
            dev = self._buf.device
            self._code = torch.zeros((), dtype=torch.int64, device=dev)
            self._first = torch.full((), -1, dtype=torch.int64, device=dev)


def _fmt(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3g}"
