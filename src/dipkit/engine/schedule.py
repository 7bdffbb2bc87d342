r"""Learning-rate schedules of network methods, as callbacks: ``constant``, ``plateau``, ``cosine``.

Adam at a fixed rate never settles: late in a DIP run the iterates keep jumping (on the demo's
128² CT at lr 3e-3 an Adam spike threw the PSNR from 30.7 to 28.1 dB at step ~1740, and a real
abdominal CT swung between 21.6 and 27.4 dB over 9000 steps). A schedule lowers the rate as the
run goes on:

* ``constant`` — the method's rate throughout;
* ``plateau`` — driven by the held-out misfit of the ``val`` rule (:mod:`dipkit.stopping.val`):
  whenever ``window`` steps pass without a new minimum of :math:`v(k)` (counted from the best step
  or from the last reduction, whichever is later), every rate of the member is multiplied by
  ``factor`` (default ½), never below ``floor`` × its initial value. With ``window = None`` the
  window is half of the val rule's patience window :math:`\tfrac12\max(p, s\,k^\star)`, so a run
  that stops by patience has had its rate halved first;
* ``cosine`` — :math:`\eta_k = \eta_0\,\big(f + (1 - f)\,\tfrac12(1 + \cos(\pi k / K))\big)` over
  the step budget ``K`` (for a run that decides its own length: over its cap), ``f`` = ``floor``.

Any of them can start with a linear **warm-up** of ``warmup`` steps: the rates are multiplied by
:math:`\min(1, (k+1)/W)` at step :math:`k` (updated every step while it lasts). A fresh Adam moves
every parameter by about the full rate in its first steps, whatever the size of the gradient; from
random weights that does no harm, but from a network already fitted to an image
(:mod:`dipkit.run.netinit`, ``init.kind=tv``) it throws the image away: on the demo's CT slice at
64² the PSNR fell from 31 dB to 15.7 dB in the first 10 steps at lr 3e-3 (21 dB at 3e-4).

``auto`` (:func:`resolve_schedule`) is ``plateau`` for network methods whose run has a ``val``
rule and whose rate is an Adam step size, else ``constant`` (SGLD's rate also sets its noise; L-BFGS
and the linearised method's gradient descent have no rate to lower).

Rates change per ensemble member: the engine gives each member its own parameter groups
(:func:`dipkit.nets.ensemble.split_member_groups`, tag ``"member"``), or — for stacked members,
whose parameters share tensors — one group with a rate per member (``"member_lr"``; the group's
``lr`` is their maximum and the engine rescales each member's update to its own rate,
:mod:`dipkit.nets.ensemble`); a member's rate changes when *its* misfit stalls. Groups shared by
all members (e.g. Self-Guided DIP's input z) follow the least-reduced member. Changes are made on
the host from values read every ``check_every`` steps (the val rule's best step, one small read),
so there is no per-step synchronisation. A rollback of self-healing (which halves the rates) is
kept: the schedule rescales its reference rates.
``state.metrics["lr"]`` holds each member's current rate (the history's ``lr`` column) and
:attr:`Schedule.changes` the reductions (``metrics.json``: ``schedule``).
"""

from __future__ import annotations

import math

import torch

from .callbacks import Callback

__all__ = ["Schedule", "Plateau", "Cosine", "Replay", "SCHEDULES", "make_schedule", "resolve_schedule", "resolve_warmup",
           "INIT_WARMUP"]


class Schedule(Callback):
    """Base class: per-member multipliers ``f_b`` of the groups' reference rates ``η_g``."""

    kind = "constant"

    def __init__(self, *, floor: float = 0.01, check_every: int = 10, warmup: int = 0):
        if not 0.0 <= floor <= 1.0 or check_every < 1 or warmup < 0:
            raise ValueError("a schedule needs 0 ≤ floor ≤ 1, check_every ≥ 1 and warmup ≥ 0")
        self.floor, self.check_every, self.warmup = float(floor), int(check_every), int(warmup)
        self.step = 0  # the step whose rates are set (for the warm-up multiplier)
        self.base: list[float] | None = None  # reference rate of each parameter group
        self.factors: list[float] | None = None  # current multiplier of each member
        self.changes: list[dict] = []

    # ------------------------------------------------------------------ groups
    @staticmethod
    def _groups(state):
        opt = state.optimizer
        return [] if opt is None else opt.param_groups

    @staticmethod
    def _member(state) -> int | None:
        return getattr(state, "member_index", None)

    def _n_members(self, state) -> int:
        return 1 if self._member(state) is not None else int(state.y.shape[0])

    def _owner(self, group, state):
        """Which of this callback's members owns ``group``: an index, None (shared) or -1 (not ours)."""
        tag = group.get("member")
        me = self._member(state)
        if me is not None:  # a member's view in a batched run: only its own groups (and none shared)
            return 0 if tag == me else -1
        return tag

    def _slots(self, group, state) -> list[tuple[int, int]]:
        """A stacked group's members that are this callback's: ``(index in group["member_lr"],
        index in self.factors)`` pairs (a member's view in a batched run: only its own)."""
        n = len(group["member_lr"])
        me = self._member(state)
        if me is not None:
            return [(me, 0)] if me < n else []
        return [(b, b) for b in range(min(n, len(self.factors)))]

    def warm(self, step: int) -> float:
        """The warm-up multiplier of the rates used at step ``step + 1`` (1 once it is over)."""
        return 1.0 if step >= self.warmup else (step + 1) / self.warmup

    def _apply(self, state, publish: bool = True) -> None:
        """Set every group's rate to its reference × its member's multiplier (× the warm-up's;
        shared: the largest; stacked: each member's slot of ``member_lr``, the group's rate their maximum).
        ``publish``: also put the rates in ``state.metrics["lr"]`` (a small host-to-device copy)."""
        self.step = int(state.step)
        w = self.warm(self.step)
        for g, base in zip(self._groups(state), self.base):
            if g.get("member_lr"):
                rates = list(g["member_lr"])  # a new list: snapshots of the optimiser keep the old one
                for slot, b in self._slots(g, state):
                    rates[slot] = base * self.factors[b] * w
                g["member_lr"], g["lr"] = rates, max(rates)
                continue
            owner = self._owner(g, state)
            if owner == -1:
                continue
            f = max(self.factors) if owner is None or owner >= len(self.factors) else self.factors[owner]
            g["lr"] = base * f * w
        if publish:
            self._publish(state)

    def _publish(self, state) -> None:
        rates = self._rates(state)
        state.metrics["lr"] = torch.tensor(rates, dtype=torch.float64).to(state.y.device, non_blocking=True)

    def _rates(self, state) -> list[float]:
        """Each member's current rate (its first group's)."""
        out = []
        for b in range(len(self.factors)):
            r = None
            for g, base in zip(self._groups(state), self.base):
                if g.get("member_lr"):
                    slot = next((i for i, j in self._slots(g, state) if j == b), None)
                    if slot is not None:
                        r = g["member_lr"][slot]
                        break
                    continue
                owner = self._owner(g, state)
                if owner == b or (owner is None and r is None):
                    r = base * (self.factors[b] if owner == b else max(self.factors)) * self.warm(self.step)
                    if owner == b:
                        break
            out.append(float(r if r is not None else 0.0))
        return out

    # ------------------------------------------------------------------ hooks
    def on_start(self, state):
        groups = self._groups(state)
        if not groups:
            return
        if self.base is None:
            self.base = [float(g["lr"]) for g in groups]
            self.factors = [1.0] * self._n_members(state)
        self._apply(state)

    def on_step_end(self, state):
        self.warm_up(state)

    def warm_up(self, state) -> None:
        """During the warm-up: set the rates of the next step (every step, from host values; the
        rates are published for the history every ``check_every`` steps and at its end)."""
        if self.base is not None and state.step <= self.warmup:
            self._apply(state, publish=state.step % self.check_every == 0 or state.step == self.warmup)

    def on_rollback(self, state, record):
        # self-healing restored the optimiser (its rates at the snapshot) and halved them: keep that
        w = self.warm(int(state.step))
        for i, g in enumerate(self._groups(state)):
            if g.get("member_lr") and self.factors:
                slots = self._slots(g, state)
                if slots and self.factors[slots[0][1]] > 0:
                    self.base[i] = float(g["member_lr"][slots[0][0]]) / (self.factors[slots[0][1]] * w)
                continue
            owner = self._owner(g, state)
            if owner == -1 or not self.factors:
                continue
            f = max(self.factors) if owner is None or owner >= len(self.factors) else self.factors[owner]
            if f > 0:
                self.base[i] = float(g["lr"]) / (f * w)
        self._publish(state)

    def describe(self) -> dict:
        out = {"kind": self.kind, "floor": self.floor, "changes": [dict(c) for c in self.changes]}
        if self.warmup:
            out["warmup"] = self.warmup
        return out

    def state_dict(self):
        return {"base": None if self.base is None else list(self.base),
                "factors": None if self.factors is None else list(self.factors),
                "changes": [dict(c) for c in self.changes]}

    def load_state_dict(self, sd):
        if sd:
            self.base = None if sd.get("base") is None else [float(v) for v in sd["base"]]
            self.factors = None if sd.get("factors") is None else [float(v) for v in sd["factors"]]
            self.changes = [dict(c) for c in sd.get("changes", [])]


class Plateau(Schedule):
    """``plateau``: reduce a member's rates by ``factor`` after ``window`` steps without a new
    held-out minimum (module docs). ``val``: the run's :class:`~dipkit.stopping.val.Validation`
    callback (it must come before this one in the callback list)."""

    kind = "plateau"

    def __init__(self, val, *, window: int | None = None, factor: float = 0.5, floor: float = 0.01,
                 check_every: int = 10, warmup: int = 0):
        super().__init__(floor=floor, check_every=check_every, warmup=warmup)
        if window is not None and int(window) < 1:
            raise ValueError("plateau window must be ≥ 1")
        if not 0.0 < factor < 1.0:
            raise ValueError("plateau factor must be in (0, 1)")
        self.val, self.window, self.factor = val, None if window is None else int(window), float(factor)
        self.last_change: list[int] | None = None

    def _window(self, best: int) -> int:
        if self.window is not None:
            return self.window
        return max(1, self.val.window(best) // 2)

    def on_step_end(self, state):
        self.warm_up(state)
        if self.base is None or state.step % self.check_every:
            return
        best = self.val.host_best_step(state)
        if best is None:
            return
        if self.last_change is None:
            self.last_change = [0] * len(self.factors)
        changed = False
        for b, f in enumerate(self.factors):
            start = max(int(best[b]), self.last_change[b])
            if state.step - start < self._window(int(best[b])) or f <= self.floor:
                continue
            self.factors[b] = max(self.floor, f * self.factor)
            self.last_change[b] = state.step
            self.changes.append({"step": state.step, "member": b, "factor": self.factors[b]})
            changed = True
        if changed:
            self._apply(state)

    def describe(self) -> dict:
        return {**super().describe(), "window": self.window, "factor": self.factor}

    def state_dict(self):
        return {**super().state_dict(), "last_change": None if self.last_change is None else list(self.last_change)}

    def load_state_dict(self, sd):
        super().load_state_dict(sd)
        if sd:
            lc = sd.get("last_change")
            self.last_change = None if lc is None else [int(v) for v in lc]


class Cosine(Schedule):
    """``cosine``: the multiplier :math:`f + (1-f)\\,\\tfrac12(1+\\cos(\\pi k/K))` of every member,
    ``K`` = the step budget (module docs); updated every ``check_every`` steps."""

    kind = "cosine"

    def multiplier(self, step: int, total: int) -> float:
        t = min(max(step / max(total, 1), 0.0), 1.0)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    def on_step_end(self, state):
        self.warm_up(state)
        if self.base is None or state.step % self.check_every:
            return
        f = self.multiplier(state.step, int(state.max_steps))
        self.factors = [f] * len(self.factors)
        self._apply(state)


class Replay(Schedule):
    """The rate changes of an earlier run, at the same steps: a refit on all data
    (``validation.refit``, ``auto.refit``) has no held-out misfit to drive a ``plateau``, so it
    follows the reductions its main run made (``changes``: :attr:`Schedule.changes` of that run,
    ``{"step", "member", "factor"}``) — the rerun takes the same path with one more set of data."""

    kind = "replay"

    def __init__(self, changes, *, check_every: int = 10, warmup: int = 0):
        super().__init__(floor=0.0, check_every=check_every, warmup=warmup)
        self.plan: dict[int, list[dict]] = {}
        for c in changes or []:
            self.plan.setdefault(int(c["step"]), []).append(dict(c))

    def on_step_end(self, state):
        self.warm_up(state)
        due = self.plan.get(int(state.step)) if self.base is not None else None
        if not due:
            return
        for c in due:
            b = int(c["member"])
            if 0 <= b < len(self.factors) and self.factors[b] != float(c["factor"]):
                self.factors[b] = float(c["factor"])
                self.changes.append({"step": int(state.step), "member": b, "factor": self.factors[b]})
        self._apply(state)


#: the schedules by name (``schedule.kind``)
SCHEDULES = {"constant": Schedule, "plateau": Plateau, "cosine": Cosine}


#: ``schedule.warmup=auto``: the warm-up of a network started from an image (``init.kind`` ≠ random)
INIT_WARMUP = 100


def resolve_warmup(warmup, init_kind: str, method) -> int:
    """``schedule.warmup``: ``auto`` (None) → :data:`INIT_WARMUP` steps for a network fitted to an
    image first (``init.kind`` ≠ ``random``), else 0; a method without an Adam rate: 0."""
    if not (getattr(method, "uses_network", False) and getattr(method, "schedulable", True)):
        return 0
    if warmup in (None, "auto"):
        return INIT_WARMUP if init_kind != "random" else 0
    return int(warmup)


def resolve_schedule(kind: str, method, has_val: bool) -> str:
    """``auto`` → ``plateau`` for a network method with a ``val`` rule and an Adam rate
    (``method.schedulable``), else ``constant``; an explicit kind on a method without a rate to
    change is ``constant``."""
    schedulable = bool(getattr(method, "uses_network", False) and getattr(method, "schedulable", True))
    if not schedulable:
        return "constant"
    if kind == "auto":
        return "plateau" if has_val else "constant"
    return kind


def make_schedule(kind: str, cfg, *, val=None, check_every: int = 10, warmup: int = 0,
                  replay: list | None = None) -> Schedule | None:
    """The schedule callback of resolved ``kind`` from ``cfg`` (a :class:`~dipkit.run.config.ScheduleConfig`);
    ``None`` for ``constant`` without a warm-up. ``plateau`` needs the run's ``val`` callback (else:
    constant, or — given ``replay``, an earlier run's changes — :class:`Replay` of them).
    ``warmup``: the resolved warm-up steps (:func:`resolve_warmup`)."""
    warmup = int(warmup)
    if kind == "plateau" and val is None and replay is not None:
        return Replay(replay, check_every=check_every, warmup=warmup)
    if kind == "plateau" and val is not None:
        return Plateau(val, window=cfg.window, factor=float(cfg.factor), floor=float(cfg.floor),
                       check_every=check_every, warmup=warmup)
    if kind in ("constant", "plateau"):
        return Schedule(check_every=check_every, warmup=warmup) if warmup else None
    if kind == "cosine":
        return Cosine(floor=float(cfg.floor), check_every=check_every, warmup=warmup)
    raise ValueError(f"unknown schedule {kind!r}")
