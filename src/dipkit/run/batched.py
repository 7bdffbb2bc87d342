"""Several seeds of one run configuration as one batched engine run, with one-by-one results.

:func:`reconstruct_seeds` runs the seeds ``s_1 … s_B`` of a configuration as a single engine run
with batch ``B`` (the ensemble machinery, :class:`dipkit.nets.ensemble.Ensemble`: member ``b`` is
built, initialised and fed random numbers exactly as the run with seed ``s_b``), and writes
``B`` run directories that are those of ``B`` separate :func:`dipkit.run.reconstruct` calls
(to float tolerance: the operator and the loss see a batch instead of one sample).

How one-by-one semantics are kept:

* every member has its **own callbacks** (stopping rules, history recorder), which see a view of
  the batch state sliced to the member (``B = 1``), so histories, selections and the ``val``
  misfit are the member's own;
* a member whose stopping rule asks to stop is **frozen** at the end of that step, as its own run
  would end there: its callbacks get ``on_end``, its estimate, step count, stop reason and
  auxiliary variables are kept; the batch goes on (the member's network still trains, unobserved)
  until every member has stopped or the step budget is spent;
* a **rollback** of self-healing (:mod:`dipkit.engine.healing`) would change every member's run,
  so when one happens the batched result is dropped (:func:`reconstruct_seeds` returns ``None``)
  and the caller runs the seeds one by one.

Not batched (:func:`why_not_batched` says why): baselines and other network-free methods, methods
with ``batchable = False``, ``ensemble > 1``, ``validation.refit`` (a refit per member) and user
networks. A batched run writes no checkpoints (an interrupted group is redone). ``wall_time_s``
of a member is the batch's wall time divided by ``B`` (amortised); ``metrics.json`` has
``batched: {seeds, wall_time_s, mode}`` with the whole batch's time and how its members ran.

The members run stacked (vectorised) where that is valid, else in a loop (``ensemble_mode``,
:mod:`dipkit.run.ensembles`). When ``B`` members do not fit the memory budget
(``ensemble_memory_gb``, default half the available memory), the seeds run as consecutive
batched runs of at most ``c`` seeds each — nothing changes for a seed, since each has its own
callbacks and stops on its own; ``batched.seeds`` then lists the seeds of the seed's own batch.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from .config import RunConfig
from ..engine.callbacks import Callback, CallbackList
from ..errors import DipkitError

__all__ = ["reconstruct_seeds", "why_not_batched"]


def why_not_batched(method, cfg: RunConfig) -> str | None:
    """Why ``cfg`` (with its built ``method``) cannot run its seeds as one batch, or None."""
    if not method.uses_network or getattr(method, "direct", False):
        return f"{cfg.method} trains no network"
    if not getattr(method, "batchable", True):
        return f"{cfg.method} does not run batched"
    if int(cfg.ensemble) != 1:
        return "ensemble > 1"
    if cfg.validation.refit:
        return "validation.refit refits each seed"
    return None


def _slice(t, b: int, n: int):
    """Member ``b``'s part of a batch tensor (leading dimension ``n`` or a multiple), else ``t``."""
    if isinstance(t, torch.Tensor) and t.ndim > 0 and t.shape[0] % n == 0 and t.shape[0] >= n:
        return t.chunk(n, dim=0)[b]
    return t


class _MemberView:
    """The batch state as member ``b``'s own run sees it (tensors sliced to the member)."""

    def __init__(self, state, b: int, n: int):
        self._state, self._b, self._n = state, b, n
        self.metrics: dict = {}
        self.stop, self.stop_reason, self.stop_kind = False, None, None

    @property
    def member_index(self) -> int:
        """Which member of the batch this view is (a schedule changes only this member's rates)."""
        return self._b

    def _s(self, t):
        return _slice(t, self._b, self._n)

    @property
    def loss(self):
        return self._s(self._state.loss)

    @property
    def terms(self):
        return {k: self._s(v) for k, v in self._state.terms.items()}

    @property
    def estimate(self):
        return self._s(self._state.estimate)

    @property
    def x(self):
        return self._s(self._state.x)

    @property
    def y(self):
        return self._s(self._state.y)

    @property
    def z(self):
        return self._s(self._state.z)

    @property
    def aux(self):
        return {k: self._s(v) for k, v in self._state.aux.items()}

    def request_stop(self, reason: str, kind: str = "rule") -> None:
        if not self.stop:
            self.stop, self.stop_reason, self.stop_kind = True, reason, kind

    def __getattr__(self, name):  # step, max_steps, device, physics, meta …
        return getattr(self._state, name)


class _Frozen:
    """What a member's run left: the fields :func:`dipkit.run.runner._finish` reads."""

    def __init__(self, view: _MemberView):
        self.estimate = None if view.estimate is None else view.estimate.detach().clone()
        self.x = None if view.x is None else view.x.detach().clone()
        self.aux = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in view.aux.items()}
        self.step = view.step
        self.max_steps = view.max_steps
        self.stop_reason = view.stop_reason if view.stop else view._state.stop_reason
        self.stop_kind = view.stop_kind if view.stop else view._state.stop_kind


class _Members(Callback):
    """Dispatches the engine's hooks to each member's callbacks through its view; freezes a member
    at the end of the step in which it asked to stop; stops the batch when all have stopped."""

    def __init__(self, state, callbacks: list[list]):
        self.n = len(callbacks)
        self.views = [_MemberView(state, b, self.n) for b in range(self.n)]
        self.cbs = [CallbackList(c) for c in callbacks]
        self.frozen: list[_Frozen | None] = [None] * self.n

    def _each(self, hook, state):
        for b in range(self.n):
            if self.frozen[b] is None:
                getattr(self.cbs[b], hook)(self.views[b])

    def on_start(self, state):
        self._each("on_start", state)

    def on_step_end(self, state):
        self._each("on_step_end", state)

    def on_outer_end(self, state):
        self._each("on_outer_end", state)

    def on_iteration_end(self, state):
        self._each("on_iteration_end", state)
        for b, view in enumerate(self.views):
            if self.frozen[b] is None and view.stop:
                self.cbs[b].on_end(view)
                self.frozen[b] = _Frozen(view)
        if all(f is not None for f in self.frozen):
            state.request_stop("every member stopped", kind="members")

    def on_end(self, state):
        for b, view in enumerate(self.views):
            if self.frozen[b] is None:
                self.cbs[b].on_end(view)
                self.frozen[b] = _Frozen(view)


def reconstruct_seeds(problem, cfg: RunConfig, seeds: list[int], outs: list | None = None, *,
                      method=None, plan: dict | None = None) -> list | None:
    """Run ``cfg`` for each of ``seeds`` as one batched engine run; return the
    :class:`~dipkit.run.rundir.RunResult` of each seed (and write ``outs[i]`` when given), as
    :func:`dipkit.run.reconstruct` with ``cfg.seed = seeds[i]`` would. ``None``: a self-healing
    rollback happened, run the seeds one by one. A configuration that cannot be batched
    (:func:`why_not_batched`) is a :class:`DipkitError`. ``plan``: how the members run (mode, chunk:
    :func:`dipkit.run.ensembles.plan_ensemble`); planned here when not given."""
    from ..engine import run
    from ..engine.healing import Healer
    from ..engine.recorder import HistoryRecorder
    from ..metrics import fov_mask
    from .rundir import prepare_run_dir
    from ..engine.schedule import make_schedule, resolve_warmup
    from .resolve import make_split, resolve_config, resolve_device, step_budget
    from .ensembles import member_chunks, plan_ensemble
    from .runner import _finish, _fit_view, _Run, build_state, direct_reconstruction
    from ..stopping import make_stopping_rule, needs_split, parse_rules
    from ..stopping.limits import TimeLimit

    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise DipkitError(f"reconstruct_seeds needs distinct seeds, got {seeds}")
    if outs is not None and len(outs) != len(seeds):
        raise DipkitError("reconstruct_seeds: one output directory per seed")
    if method is None:
        method = cfg.validate()
    reason = why_not_batched(method, cfg)
    if reason:
        raise DipkitError(f"cannot batch the seeds: {reason}")
    n = len(seeds)
    device = resolve_device(cfg.device)
    problem = problem.to(device)
    resolved = resolve_config(cfg, method, problem)
    rules = parse_rules(resolved.early_stop.rule)
    split = make_split(problem, cfg) if rules and needs_split(resolved.early_stop.rule) else None
    mask = None
    if cfg.fov_mask:
        _, h, w = problem.img_shape
        mask = fov_mask(h, w, device=device, dtype=problem.y.dtype)
    for o in outs or []:
        prepare_run_dir(Path(o), overwrite=True)

    fit = problem if split is None else _fit_view(problem, split)
    if plan is None and n > 1:
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # member 0 as its run builds it, for the memory estimate
            probe = build_state(method, fit, resolved, device, seeds=seeds[:1], init=False)
            plan = plan_ensemble(method, resolved, n, probe.net, probe.z, device, probe.autocast_dtype)
        del probe
    chunks = [(0, n)] if plan is None else member_chunks(n, plan["chunk"])
    if len(chunks) > 1:  # consecutive batches of at most plan["chunk"] seeds
        results = []
        for i, (lo, hi) in enumerate(chunks):
            part = reconstruct_seeds(problem, cfg, seeds[lo:hi], None if outs is None else outs[lo:hi],
                                     method=method if i == 0 else None, plan=plan)
            if part is None:
                return None
            results += part
        return results
    mode = None if plan is None else plan["mode"]
    state = build_state(method, fit, resolved, device, seeds=seeds, mode=mode)
    budget = step_budget(resolved, method)[1]
    check = int(cfg.log_every)
    per_member = []
    for _ in seeds:
        rule_cbs = [make_stopping_rule(name, mode, cfg.early_stop, check_every=check, split=split)
                    for name, mode in rules]
        val_cb = next((cb for cb in rule_cbs if cb.rule == "val"), None)
        schedule = make_schedule(resolved.schedule.kind, resolved.schedule, val=val_cb, check_every=check,
                                 warmup=resolve_warmup(resolved.schedule.warmup, resolved.init.kind, method))
        per_member.append((rule_cbs, schedule, HistoryRecorder(every=check, x_true=problem.x_true, mask=mask)))
    members = _Members(state, [[*r, sc, rec] for r, sc, rec in per_member])
    healer = Healer.from_config(cfg.healing, check)
    limit = TimeLimit(float(resolved.time_limit), check_every=check) if resolved.time_limit else None
    t0 = time.perf_counter()
    run(method, state, [members, limit], healer=healer)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    if healer is not None and healer.records:
        return None

    results = []
    naive = None if outs is None else direct_reconstruction(problem)  # one for every seed's overview.png
    for b, seed in enumerate(seeds):
        cfg_b, res_b = copy.deepcopy(cfg), copy.deepcopy(resolved)
        cfg_b.seed = res_b.seed = seed
        rule_cbs, schedule, recorder = per_member[b]
        main = _Run(members.frozen[b], recorder, rule_cbs, wall / n, None, schedule=schedule, budget=budget)
        result = _finish(main, method=method, problem=problem, cfg=cfg_b, resolved=res_b, split=split, mask=mask,
                         device=device, request=cfg_b.to_dict(), resumed_at=[], out=None, dicom=False, net=None,
                         do_refit=None, naive=naive)
        result["batched"] = {"seeds": seeds, "wall_time_s": wall,
                             "mode": getattr(state.net, "mode", None) if n > 1 else None}
        if outs is not None:
            from .rundir import write_run_dir

            write_run_dir(Path(outs[b]), result)
        results.append(result)
    return results
