r"""How an ensemble's members run: stacked or in a loop, in one engine run or in chunks.

An ensemble (``--ensemble N``; the batched seeds of ``dipkit bench``, :mod:`dipkit.run.batched`)
is one engine run whose batch holds the members (:mod:`dipkit.nets.ensemble`). This module decides

* **the mode** (``ensemble_mode``, :func:`choose_mode`): ``stacked`` — the members' parameters
  stacked into one tensor per name and the members run as one vectorised call
  (:class:`~dipkit.nets.ensemble.StackedEnsemble`) — wherever it is valid, else ``loop``
  (:class:`~dipkit.nets.ensemble.Ensemble`, the members one after another). ``auto`` (default)
  stacks unless the method reaches into its members (``Method.stack_members = False``:
  ``linearised-dip``, ``self-guided``, ``sgld``, ``subspace-dip``), its optimiser is not
  elementwise (:func:`optimizer_reason`: not Adam, AdamW or SGD), the network cannot run
  vectorised (:func:`~dipkit.nets.ensemble.stack_reason`: the deep decoder and ConvDecoder keep a
  seed of their own, ``net.checkpointing``) or the run's bf16 autocast would not reach the
  vectorised convolutions (:func:`autocast_reason`: on the CPU); ``stacked`` refuses such a run with one line, ``loop``
  never stacks. A user's network (``net=``) runs alone (no ensemble).
* **the chunk size** (:func:`plan_ensemble`): ``N`` members need ``N`` times one member's training
  memory. One member's is estimated before the run: the bytes of the tensors its forward pass saves
  for the backward pass (measured with ``torch.autograd.graph.saved_tensors_hooks`` at the run's
  input, batch 1, times the method's inputs per member), plus 4 copies of its parameters (weights,
  gradient, Adam's two moments; 5 stacked, for the copy that per-member rates need). The budget is
  ``ensemble_memory_gb`` when set, else half of the memory available now (``MemAvailable`` of
  ``/proc/meminfo`` on the CPU; free plus cached-but-unused memory of the CUDA device). When
  ``N`` members do not fit, the ensemble runs as :math:`\lceil N/c\rceil` consecutive engine runs of
  at most ``c`` members (:func:`member_chunks`), member ``b`` always with seed ``SEED + b``, and
  :func:`join_runs` combines them as one run's result: the members' estimates and selections in
  member order (so the mean, the per-pixel std and ``member_metrics`` are those of one run), the
  history as the members' mean per step, the schedule's changes and rollbacks with the members'
  own indices.

A chunked ensemble equals the unchunked one for a fixed step budget. Two things are per chunk,
not per ensemble: a stopping rule in ``stop`` mode ends a chunk when all of *its* members have
stopped (one run ends when all ``N`` have; a member's selection can only come from the steps its
run took), and a self-healing rollback halves the rates of its chunk only. A time limit is shared
out in proportion to the chunks' members. ``metrics.json`` records ``ensemble: {mode, chunk,
runs, memory_gb: {member, budget}, loop_reason}``; a checkpoint keeps the plan, so a resumed run
keeps its mode and chunks (each chunk is a phase of the checkpoint: ``main``, ``main.1``, …).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch

from ..errors import DipkitError
from .record import _Run

__all__ = ["choose_mode", "optimizer_reason", "autocast_reason", "plan_ensemble", "member_bytes", "available_bytes",
           "member_chunks", "chunk_config", "join_runs", "JoinedRun"]

#: share of the available memory an ensemble may use when ``ensemble_memory_gb`` is not set
MEMORY_SHARE = 0.5


# ---------------------------------------------------------------------- the mode
def choose_mode(method, cfg, members, autocast_dtype: torch.dtype | None = None) -> tuple[str, str | None]:
    """``(mode, why_loop)`` of an ensemble of ``members`` (built networks; for a plan before the run,
    one member twice): ``"stacked"`` or ``"loop"`` by ``cfg.ensemble_mode`` (module docs), and why
    the loop when it is one (None when the setting asked for it). ``autocast_dtype``: the run's
    (``precision=bf16``: :func:`autocast_reason`)."""
    from ..nets.ensemble import stack_reason

    asked = getattr(cfg, "ensemble_mode", "auto") or "auto"
    if asked == "loop":
        return "loop", None
    why = None if getattr(method, "stack_members", True) else f"{method.name} reaches into its members"
    why = why or optimizer_reason(method) or stack_reason(members)
    why = why or autocast_reason(members[0], autocast_dtype)
    if why is None:
        return "stacked", None
    if asked == "stacked":
        raise DipkitError(f"ensemble_mode=stacked is not possible here: {why} (use ensemble_mode=auto or loop)")
    return "loop", why


def optimizer_reason(method) -> str | None:
    """Why ``method``'s optimiser cannot update stacked members independently (it is not one of
    :data:`~dipkit.nets.ensemble.ELEMENTWISE_OPTIMIZERS`), or None. Asked of an optimiser that the
    method builds for one stand-in parameter; a method that cannot build one so is not judged here
    (the engine refuses a non-elementwise optimiser on stacked members)."""
    from ..nets.ensemble import ELEMENTWISE_OPTIMIZERS

    if not getattr(method, "uses_network", True):
        return None
    try:
        opt = method.make_optimizer([{"params": [torch.zeros(1, requires_grad=True)], "lr": 1e-3}])
    except Exception:  # noqa: BLE001 - a method whose optimiser needs its run (the engine checks then)
        return None
    if isinstance(opt, ELEMENTWISE_OPTIMIZERS):
        return None
    return f"its optimiser {type(opt).__name__} is not elementwise (only Adam, AdamW and SGD update stacked members)"


def autocast_reason(net: torch.nn.Module, dtype: torch.dtype | None) -> str | None:
    """Why autocast to ``dtype`` (the run's ``precision=bf16``) would not reach the stacked members'
    convolutions on ``net``'s device, or None (also for no autocast). ``vmap`` turns the members'
    convolutions into one batched convolution, which autocast lowers on CUDA but — in the PyTorch
    versions seen — not on the CPU, where the stacked network would silently run in fp32 (slower,
    and not the precision asked for); a tiny vectorised convolution is tried to tell."""
    if dtype is None:
        return None
    p = next(net.parameters(), None)
    device = torch.device("cpu") if p is None else p.device
    w, x = torch.ones(2, 1, 1, 1, 1, device=device), torch.ones(2, 1, 1, 2, 2, device=device)
    try:
        with torch.autocast(device_type=device.type, dtype=dtype):
            out = torch.func.vmap(torch.nn.functional.conv2d, in_dims=(0, 0))(x, w)
    except RuntimeError:
        out = None
    if out is not None and out.dtype == dtype:
        return None
    return f"{str(dtype).replace('torch.', '')} autocast does not reach vectorised convolutions on the {device.type}"


# ---------------------------------------------------------------------- memory
def member_bytes(net: torch.nn.Module, z: torch.Tensor, *, inputs: int = 1, stacked: bool = True) -> int:
    """One member's training memory (bytes, an estimate): what one forward pass of ``net`` at
    ``z[:1]`` saves for the backward pass (distinct storages, parameters excluded) × ``inputs``, plus
    the parameters 4 times (weights, gradient, Adam's moments), 5 times when ``stacked`` (module docs)."""
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        try:
            s = t.untyped_storage()
            ptr = s.data_ptr()
            if ptr not in params and ptr not in seen:
                seen[ptr] = s.nbytes()
        except (RuntimeError, NotImplementedError):  # a tensor without storage (e.g. a functional wrapper)
            pass
        return t

    x = z[:1].detach()
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
    saved = sum(seen.values()) + out.numel() * out.element_size()
    del out
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    return int(saved * max(1, int(inputs)) + weights * (5 if stacked else 4))


def available_bytes(device: torch.device) -> int | None:
    """Memory available for new tensors now: free plus cached-but-unused memory of a CUDA device,
    ``MemAvailable`` of ``/proc/meminfo`` on the CPU; None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def plan_ensemble(method, cfg, n: int, probe_net, probe_z, device, autocast_dtype: torch.dtype | None = None) -> dict:
    """The plan of an ``n``-member ensemble: ``{mode, loop_reason, chunk, memory_gb: {member, budget}}``
    (module docs). ``probe_net``, ``probe_z``: member 0's network and input, built as for its run;
    ``autocast_dtype``: the run's (:func:`choose_mode`)."""
    mode, why = choose_mode(method, cfg, [probe_net, probe_net], autocast_dtype)
    per = member_bytes(probe_net, probe_z, inputs=getattr(method, "inputs_per_member", 1), stacked=mode == "stacked")
    gb = getattr(cfg, "ensemble_memory_gb", None)
    if gb is not None:
        budget = float(gb) * 1e9
    else:
        avail = available_bytes(device)
        budget = None if avail is None else MEMORY_SHARE * avail
    chunk = n if budget is None else max(1, min(n, int(budget // max(per, 1))))
    return {"mode": mode, "loop_reason": why, "chunk": int(chunk),
            "memory_gb": {"member": _gb(per), "budget": None if budget is None else _gb(budget)}}


def _gb(n_bytes: float) -> float:
    """Bytes as GB, 4 significant digits (``metrics.json``)."""
    return float(f"{n_bytes / 1e9:.4g}")


def member_chunks(n: int, chunk: int) -> list[tuple[int, int]]:
    """``[(first, end), …]``: members ``0 … n−1`` in ⌈n/chunk⌉ consecutive runs of at most ``chunk``,
    as even as possible (7 in chunks of 3: 3, 2, 2)."""
    chunk = max(1, min(int(chunk), n))
    runs = math.ceil(n / chunk)
    sizes = [n // runs + (1 if i < n % runs else 0) for i in range(runs)]
    out, lo = [], 0
    for s in sizes:
        out.append((lo, lo + s))
        lo += s
    return out


def chunk_config(cfg, lo: int, hi: int, n: int):
    """The configuration of the run of members ``lo … hi−1`` of an ``n``-member ensemble: ``hi − lo``
    members from seed ``seed + lo``, the time limit shared in proportion."""
    sub = copy.deepcopy(cfg)
    sub.ensemble, sub.seed = hi - lo, int(cfg.seed) + lo
    if cfg.time_limit:
        sub.time_limit = float(cfg.time_limit) * (hi - lo) / n
    return sub


# ---------------------------------------------------------------------- joining chunks
@dataclass
class _JoinedState:
    """The fields of a finished engine state that a run's summary reads, over all chunks."""

    estimate: torch.Tensor
    x: torch.Tensor | None
    aux: dict
    step: int
    max_steps: int
    stop_reason: str | None
    stop_kind: str | None
    device: torch.device


@dataclass
class _JoinedRule:
    """A stopping rule's selection over all chunks (members in order)."""

    rule: str
    mode: str
    estimate: torch.Tensor | None
    iterations: list
    value: float | None
    first: object = field(repr=False, default=None)
    iteration: int | None = None  # one pick per member: see iterations

    def window(self, best_step):
        return self.first.window(best_step)

    @property
    def smooth(self):
        return getattr(self.first, "smooth", None)


class _JoinedRecorder:
    """The history over all chunks: per step, the members' mean (chunks weighted by their members)."""

    best_estimate = None  # the peak estimate is kept for single runs only

    def __init__(self, recorders, sizes):
        self.recorders, self.sizes = recorders, sizes

    def history(self) -> dict[str, list]:
        hists = [r.history() for r in self.recorders]
        steps = sorted({s for h in hists for s in h["step"]})
        columns = []
        for h in hists:
            columns += [c for c in h if c != "step" and c not in columns]
        rows = [{s: i for i, s in enumerate(h["step"])} for h in hists]
        out = {"step": steps}
        for c in columns:
            col = []
            for s in steps:
                if c == "rollbacks":  # rollbacks before the row: summed over the chunks
                    col.append(float(sum(h[c][min(r.get(s, len(h[c]) - 1), len(h[c]) - 1)]
                                         for h, r in zip(hists, rows) if h.get(c))))
                    continue
                num = den = 0.0
                for h, r, w in zip(hists, rows, self.sizes):
                    if c in h and s in r and h[c][r[s]] is not None:
                        num, den = num + w * h[c][r[s]], den + w
                col.append(num / den if den else float("nan"))
            out[c] = col
        return out


class _JoinedHealer:
    def __init__(self, records):
        self.records = records


class _JoinedSchedule:
    def __init__(self, schedules, chunks):
        self.schedules, self.chunks = schedules, chunks

    def describe(self) -> dict:
        out = self.schedules[0].describe()
        changes = []
        for sc, (lo, _) in zip(self.schedules, self.chunks):
            changes += [{**c, "member": int(c.get("member", 0)) + lo} for c in sc.describe()["changes"]]
        out["changes"] = sorted(changes, key=lambda c: (c["step"], c["member"]))
        return out


class _JoinedCheckpointer:
    def __init__(self, checkpointers):
        self.checkpointers = [c for c in checkpointers if c is not None]

    def describe(self) -> dict:
        every = next((c.describe()["every"] for c in self.checkpointers if c.describe()["every"]), None)
        return {"every": every, "written": sum(c.describe()["written"] for c in self.checkpointers)}


@dataclass
class JoinedRun(_Run):
    """What :func:`dipkit.run.runner._finish` reads of a finished run, for chunks joined into one
    (``state``: a :class:`_JoinedState`, ``recorder``: a :class:`_JoinedRecorder`)."""


def _cat(tensors):
    return None if any(t is None for t in tensors) else torch.cat(list(tensors))


def join_runs(runs, chunks) -> JoinedRun:
    """One run's record of the chunk runs ``runs`` (finished ``dipkit.run.runner`` runs) of the
    members ``chunks`` (``[(first, end), …]``, in order): see the module docs."""
    sizes = [hi - lo for lo, hi in chunks]
    states = [r.state for r in runs]
    last = max(range(len(runs)), key=lambda i: states[i].step)
    aux = {}
    for k, v in states[0].aux.items():
        vals = [s.aux.get(k) for s in states]
        per_member = all(isinstance(t, torch.Tensor) and t.ndim > 0 and t.shape[0] == m for t, m in zip(vals, sizes))
        aux[k] = torch.cat(vals) if per_member else v
    state = _JoinedState(estimate=torch.cat([s.estimate for s in states]), x=_cat([s.x for s in states]), aux=aux,
                         step=max(s.step for s in states), max_steps=states[0].max_steps,
                         stop_reason=states[last].stop_reason, stop_kind=states[last].stop_kind,
                         device=states[0].device)
    rules = []
    for j, first in enumerate(runs[0].rules):
        mine = [r.rules[j] for r in runs]
        values = [(cb.value, m) for cb, m in zip(mine, sizes) if getattr(cb, "value", None) is not None]
        value = sum(v * m for v, m in values) / sum(m for _, m in values) if len(values) == len(mine) else None
        its = []
        for cb, m in zip(mine, sizes):
            its += list(getattr(cb, "iterations", None) or [None] * m)
        rules.append(_JoinedRule(rule=first.rule, mode=first.mode, estimate=_cat([cb.estimate for cb in mine]),
                                 iterations=its, value=value, first=first))
    records = []
    for r, (lo, hi) in zip(runs, chunks):
        if r.healer is not None:
            records += [{**rec, "members": [lo, hi - 1]} for rec in r.healer.records]
    schedule = None if runs[0].schedule is None else _JoinedSchedule([r.schedule for r in runs], chunks)
    return JoinedRun(state=state, recorder=_JoinedRecorder([r.recorder for r in runs], sizes), rules=rules,
                     wall=sum(r.wall for r in runs), healer=_JoinedHealer(records),
                     checkpointer=_JoinedCheckpointer([r.checkpointer for r in runs]), schedule=schedule,
                     budget=runs[0].budget, callbacks=[])
