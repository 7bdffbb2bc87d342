r"""TV's weight chosen without a ground truth: :func:`choose_alpha` (``tv`` with ``alpha="auto"``).

The criterion (held-out misfit, or SURE for denoising with a known noise level), the warm-started
path over the weights, its polish and refinement are documented in :func:`choose_alpha`; the
solver is :class:`dipkit.core.tv.TVSolver` (PDHG). Kept apart from the solver so that the solver's
module stays about solving. It lives in :mod:`dipkit.core`, under both users: the ``tv`` baseline
(:class:`dipkit.baselines.tv.TV`) and ``dip-tv`` (:mod:`dipkit.methods.tv`);
:mod:`dipkit.baselines.tv_alpha` re-exports it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from typing import Callable

import torch

from ..engine.callbacks import Callback
from ..errors import DipkitError
from ..physics.linalg import bview
from .tv import CHECK_EVERY, TVSolver

__all__ = ["choose_alpha", "AUTO_ALPHAS", "shared_choices"]

#: the weights :func:`choose_alpha` tries: half decades from 1e-4 to 100
AUTO_ALPHAS = tuple(10 ** (k / 2) for k in range(-8, 5))
#: :func:`choose_alpha`: at most this many PDHG steps per weight on the warm-started path
PATH_STEPS = 60
#: :func:`choose_alpha`: the path may stop only once its least value is below this fraction of the
#: largest value so far
FALL = 0.25
#: :func:`choose_alpha`: at most this many more steps for the best weight and its neighbours
POLISH_STEPS = 150
#: :func:`choose_alpha`: a weight's solve ends once its criterion value changed by at most this
#: (relative) over two checks in a row
PATH_RTOL = 1e-3
#: :func:`choose_alpha`: disjoint hold-out folds whose misfits are averaged
FOLDS = 1
#: :func:`choose_alpha`: the path stops after this many weights without a lower misfit (after a fall)
PATIENCE = 2
#: :func:`choose_alpha`'s SURE: the Monte-Carlo divergence's step ε, relative to the noise σ
SURE_EPS = 0.1
_SURE_STREAM = 0x5DEECE66D

class _Settled(Callback):
    """Stops a solve of the α search once the criterion it decides by has settled: ``value(x)``
    (``[B]``, on the device) is read every :data:`CHECK_EVERY` steps, and the solve stops when, for
    every sample, two consecutive reads changed it by at most ``rtol`` relatively (one host read
    per check)."""

    def __init__(self, value: Callable[[torch.Tensor], torch.Tensor], rtol: float):
        self.value, self.rtol = value, float(rtol)
        self.last, self.calm, self.result = None, 0, None

    def on_step_end(self, state):
        if state.step % CHECK_EVERY:
            return
        v = self.value(state.aux["x"])
        self.result = (state.step, v)
        if self.last is not None:
            close = (v - self.last).abs() <= self.rtol * self.last.abs()
            self.calm = self.calm + 1 if bool(close.all()) else 0
            if self.calm >= 2:
                state.request_stop("settled")
        self.last = v


class _Path:
    """PDHG for TV on one operator, continued from weight to weight: every solve starts from the
    previous one's primal *and* dual variables and step sizes (the dual ``z2``, which lives in the
    ball of radius ``α/μ``, rescaled by the ratio of the weights), so one state and one estimate of
    ``‖A‖²`` serve the whole search. A solve stops after ``steps`` iterations, or earlier once
    ``value`` has settled (:class:`_Settled`); it returns the iterate and its value."""

    def __init__(self, physics, y: torch.Tensor, *, nonneg: bool, value, rtol: float, opnorm_sq=None,
                 adaptive: bool = True):
        from ..engine import State

        self.method = TVSolver(nonneg=nonneg, tol=0.0)
        self.method.adaptive = adaptive
        self.state = State(physics=physics, y=y, max_steps=0, generator=torch.Generator(device=y.device),
                           report_every=1 << 30)  # the loss terms are not needed along the path
        if opnorm_sq is not None:
            self.state.aux["opnorm_sq"] = opnorm_sq
        self.value, self.rtol = value, rtol
        self.steps_run = 0

    def solve(self, alpha: torch.Tensor, steps: int, start: dict | None = None, settle: bool = True):
        """Continue (or, with ``start``, restart from a :meth:`snapshot`) at weights ``alpha``
        ``[B]`` for ``steps`` steps (fewer once settled, with ``settle``); returns ``(x, value(x))``."""
        from ..engine import run

        state, method = self.state, self.method
        if start is not None:
            state.aux.update({k: v.clone() for k, v in start.items()})
        previous = state.aux.get("alpha")
        if previous is not None and "z2" in state.aux:
            ratio = (alpha / previous.clamp_min(torch.finfo(alpha.dtype).tiny)).reshape(-1, 1, 1, 1, 1)
            state.aux["z2"] = state.aux["z2"] * ratio
        state.aux["alpha"] = alpha
        method.alphas = alpha
        start_step = state.step
        state.max_steps, state.stop, state.stop_reason = state.step + int(steps), False, None
        settled = _Settled(self.value, self.rtol)
        run(method, state, [settled] if settle else [])
        self.steps_run += state.step - start_step
        x = state.aux["x"]
        done = settled.result is not None and settled.result[0] == state.step
        return x, (settled.result[1] if done else self.value(x))

    def snapshot(self) -> dict:
        return {k: self.state.aux[k] for k in ("x", "xbar", "z1", "z2", "alpha", "sigma", "tau", "adapt")}


def _gather(snapshots: list[dict], index: torch.Tensor, folds: int) -> dict:
    """Per sample ``b`` the snapshot ``index[b]`` (the batch is ``folds`` blocks of ``B`` samples)."""
    idx = index.repeat(folds)
    out = {}
    for key in snapshots[0]:
        stacked = torch.stack([s[key] for s in snapshots])  # [T, K·B, ...]
        sel = idx.to(stacked.device).reshape(1, -1, *([1] * (stacked.ndim - 2))).expand(1, *stacked.shape[1:])
        out[key] = stacked.gather(0, sel)[0]
    return out


class _HoldOut:
    r"""The hold-out criterion: ``folds`` disjoint seeded hold-outs, solved as ``folds`` blocks of
    the batch; :math:`V(\alpha)` = the mean over the folds of the held-out mean squared misfit."""

    name = "holdout"

    def __init__(self, physics, y: torch.Tensor, *, folds: int, fraction: float, seed: int):
        from ..physics.split import MaskedPhysics, ValidationSplit

        K, B = int(folds), y.shape[0]
        splits = [ValidationSplit(physics, y, fraction=fraction, seed=seed, fold=k) for k in range(K)]
        h, w = y.shape[-2:]
        keep = torch.stack([s.keep for s in splits]).repeat_interleave(B, 0)  # [K·B, H, W]
        keep = keep.reshape(K * B, *([1] * (y.ndim - 3)), h, w)
        self.physics, self.B, self.copies, self.held = physics, B, K, 1.0 - keep
        self.n_held = torch.tensor([s.n_held_out * s._per_position for s in splits], dtype=torch.float64,
                                   device=y.device).repeat_interleave(B)
        self.y = y.repeat(K, *([1] * (y.ndim - 1)))
        self.path_physics = MaskedPhysics(physics, keep, lambda v: v * keep)
        self.path_y = self.y * keep

    def value(self, x: torch.Tensor) -> torch.Tensor:
        r = (self.physics.A(x) - self.y) * self.held
        v = r.abs().pow(2).flatten(1).sum(1).to(torch.float64) / self.n_held
        return v.reshape(self.copies, self.B).mean(0)

    def estimate(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(self.copies, self.B, *x.shape[1:]).mean(0)


class _Sure:
    r"""Stein's unbiased risk estimate for denoising (``A = I``, known noise σ), with a Monte-Carlo
    divergence (Ramani, Blu & Unser 2008): the batch is ``[y, y + εb]``, ``b ~ N(0, I)`` seeded,
    ``ε = SURE_EPS·σ``, and per sample (``m`` entries)

    .. math:: \mathrm{SURE}(\alpha) = \tfrac1m\big(\|\hat x(y) - y\|^2 - m\sigma^2
              + 2\sigma^2\, b^\top(\hat x(y + \varepsilon b) - \hat x(y))/\varepsilon\big),

    an unbiased estimate of the mean squared error :math:`\tfrac1m\|\hat x - x\|^2`."""

    name = "sure"

    def __init__(self, physics, y: torch.Tensor, *, sigma, seed: int):
        B = y.shape[0]
        self.sigma = torch.as_tensor(sigma, dtype=torch.float64, device=y.device).reshape(-1).expand(B)
        # a stream of its own: b drawn with the simulation's seed would be y's noise itself
        gen = torch.Generator(device="cpu").manual_seed(_SURE_STREAM ^ int(seed))
        self.b = torch.randn(y.shape, generator=gen, dtype=y.dtype).to(y.device)
        self.eps = (SURE_EPS * self.sigma).to(y.dtype)
        self.y, self.B, self.copies = y, B, 2
        self.path_physics = physics
        self.path_y = torch.cat([y, y + bview(self.eps, y) * self.b])

    def value(self, x: torch.Tensor) -> torch.Tensor:
        x0, x1 = x[: self.B], x[self.B:]
        m = x0[0].numel()
        res = (x0 - self.y).pow(2).flatten(1).sum(1).to(torch.float64)
        div = (self.b * (x1 - x0)).flatten(1).sum(1).to(torch.float64) / self.eps.to(torch.float64)
        return (res - m * self.sigma**2 + 2 * self.sigma**2 * div) / m

    def estimate(self, x: torch.Tensor) -> torch.Tensor:
        return x[: self.B]


def _is_identity(physics, y: torch.Tensor) -> bool:
    """Whether ``A`` is the identity (denoising): ``A v = v`` for a seeded random ``v`` like ``y``."""
    if y.is_complex():
        return False
    v = torch.randn(y.shape, generator=torch.Generator(device="cpu").manual_seed(0), dtype=y.dtype).to(y.device)
    try:
        av = physics.A(v)
    except Exception:  # noqa: BLE001 - an operator that cannot take y's shape is not the identity
        return False
    return tuple(av.shape) == tuple(v.shape) and bool(((av - v).norm() <= 1e-6 * v.norm()).item())


#: the searches of the innermost :func:`shared_choices` block (None: outside one, nothing is kept)
_SHARED: contextvars.ContextVar[list | None] = contextvars.ContextVar("dipkit_tv_alpha_shared", default=None)


@contextlib.contextmanager
def shared_choices():
    """Within this block, :func:`choose_alpha` runs once per problem: a call with the same operator,
    measurement and options as an earlier one in the block returns that call's result (cloned);
    options that do not change the search are not compared (``sigma`` under the hold-out criterion,
    ``opnorm_sq`` left out or given as the estimate the search would make).

    ``--method auto`` (:mod:`dipkit.run.auto`) opens one: its ``tv`` candidate, ``dip-tv``'s weight
    (``alpha="auto"``) and the refits on all the data would otherwise each search the same path on
    the same fit view (1–4 s per search at 64²–128²). The operators must be the same object, or the
    same split's fit views (:class:`~dipkit.physics.split.MaskedPhysics` of one operator with equal
    masks), and the measurements equal (``torch.equal``); nothing is kept after the block, so a
    changed problem can never meet a stale result."""
    token = _SHARED.set([])
    try:
        yield
    finally:
        _SHARED.reset(token)


def _criterion(physics, y, sigma, criterion: str) -> str:
    """``criterion`` resolved: ``"auto"`` is ``"sure"`` for a known noise level and ``A = I``, else
    ``"holdout"`` (:func:`choose_alpha`)."""
    known = sigma is not None and bool((torch.as_tensor(sigma, dtype=torch.float64) > 0).all())
    if criterion == "sure" and not known:
        raise DipkitError("criterion 'sure' needs the noise level sigma > 0")
    if criterion == "auto":
        criterion = "sure" if known and _is_identity(physics, y) else "holdout"
    return criterion


def _opnorm_sq(physics, y) -> torch.Tensor:
    """||A||² per sample as :func:`choose_alpha` estimates it when not given (the full operator's; the
    fit views' are at most this)."""
    from ..physics.linalg import opnorm_sq as estimate_opnorm_sq

    return estimate_opnorm_sq(physics, torch.zeros_like(physics.A_adjoint(y)))


def _same_operator(a, b) -> bool:
    if a is b:
        return True
    from ..physics.split import MaskedPhysics

    return (type(a) is MaskedPhysics and type(b) is MaskedPhysics and a.base is b.base and a.fill == b.fill
            and a.keep.shape == b.keep.shape and bool(torch.equal(a.keep, b.keep)))


def _same_value(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and a.device == b.device and bool(torch.equal(a, b)))
    return a == b


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(_clone(v) for v in value)
    return value


def _shared(fn):
    """:func:`choose_alpha` looks in the :func:`shared_choices` block's searches first."""

    @functools.wraps(fn)
    def wrapper(physics, y, **kwargs):
        memo = _SHARED.get()
        if memo is None or kwargs.get("trace") is not None:  # a trace wants the solves themselves
            return fn(physics, y, **kwargs)
        want = bool(kwargs.pop("return_estimate", False))  # kept either way: a later call may want it
        # the same search whatever the arguments that do not change it: the hold-out does not use
        # sigma, and a missing ||A||^2 is the estimate choose_alpha would make
        if kwargs.get("criterion", "auto") not in ("auto", "holdout", "sure"):
            return fn(physics, y, return_estimate=want, **kwargs)  # (its error)
        kwargs["criterion"] = _criterion(physics, y, kwargs.get("sigma"), kwargs.get("criterion", "auto"))
        if kwargs["criterion"] == "holdout":
            kwargs["sigma"] = None
        if kwargs.get("opnorm_sq") is None:
            kwargs["opnorm_sq"] = _opnorm_sq(physics, y)
        for p, y0, kw, result in memo:
            if (kw.keys() == kwargs.keys() and _same_value(y0, y) and _same_operator(p, physics)
                    and all(_same_value(kw[k], kwargs[k]) for k in kw)):
                break
        else:
            result = fn(physics, y, return_estimate=True, **kwargs)
            memo.append((physics, y.detach().clone(), dict(kwargs), _clone(result)))
        return _clone(result) if want else result[0].clone()

    return wrapper


@_shared
@torch.no_grad()
def choose_alpha(physics, y: torch.Tensor, *, nonneg: bool = True, alphas=AUTO_ALPHAS, iterations: int = PATH_STEPS,
                 fraction: float = 0.05, seed: int = 0, return_estimate: bool = False, folds: int = FOLDS,
                 patience: int | None = PATIENCE, polish: int = POLISH_STEPS, refine: bool = True,
                 rtol: float = PATH_RTOL, sigma=None, criterion: str = "auto",
                 opnorm_sq: torch.Tensor | None = None, trace: list | None = None):
    r"""TV's weight chosen without a ground truth: per sample, the α of least estimated error.

    *Criterion* (``criterion``). ``"holdout"``: ``folds`` disjoint seeded hold-outs
    (:class:`~dipkit.physics.split.ValidationSplit` folds ``0 … K−1``, each ``fraction`` of the
    measured entries); each fold's fit view :math:`M_k A` is solved as one block of a batch of
    ``K·B``, and

    .. math:: V(\alpha) = \frac1K \sum_{k=1}^K \frac{1}{|H_k|}\,\|(A\hat x_k(\alpha) - y)_{H_k}\|^2,
              \qquad \hat x_k(\alpha) = \arg\min_{x} \tfrac12\|M_k(Ax - y)\|^2 + \alpha\,\mathrm{TV}(x).

    ``"sure"``: for denoising (``A = I``) with a known noise level ``sigma``, Stein's unbiased
    estimate of the mean squared error of the full-data solution (:class:`_Sure`). The hold-out is
    biased there: a held-out pixel is predicted from its neighbours only, while the full-data
    solution also sees the pixel itself, so it chose α one half decade too small and lost 1.1–1.5
    dB at 128² (``benchmarks/results/tv-choice.md``); SURE chose the PSNR-best α. ``"auto"``
    (default): ``"sure"`` when ``sigma > 0`` is given and ``A`` is the identity, else ``"holdout"``.

    *Path.* The weights ``alphas`` are tried from the largest down; each solve continues the
    previous one (primal and dual variables, :class:`_Path`) for at most ``iterations`` PDHG steps,
    fewer once :math:`V` has settled (relative change ≤ ``rtol`` over two checks in a row, every
    :data:`CHECK_EVERY` steps: :class:`_Settled`). The path stops once :math:`V` has risen
    ``patience`` times in a row, after it has fallen below :data:`FALL` (¼) of its largest value so
    far (over the largest weights the image is nearly constant, :math:`V` flat and, from crude
    solves, wobbling: with 40 steps per weight a wobble there once stopped the path at α = 3.16 on
    4× MRI, 12 dB lost; and with ¾ of the first weight's value as the bar, MRI 64² with two k-space
    lines held out (``validation.split=lines``) wobbled 0.0144 → 0.0099 → 0.0138 → 0.0104 → 0.0141
    → 0.0207 over α = 100 … 0.32 and stopped there, choosing α = 100 where the fall to 0.001 starts
    at α = 0.1); ``patience=None`` tries them all.

    *Polish* (``polish`` steps). The path's values lag: each solve starts from a larger weight's
    solution and stops early, so they lean towards smaller weights (and in the first tens of steps
    of CT's PDHG they are not yet meaningful). The path's best weight and its two neighbours are
    therefore continued from the path's state at each for ``polish`` more steps, and again on the
    side of the least polished value until it has a polished neighbour on both sides; the choice
    is made on the polished values.

    *Refinement* (``refine``). Around the least polished :math:`V` at :math:`\alpha_j` (an interior
    weight), the vertex of the parabola through :math:`(\log\alpha_{j-1,j,j+1}, V)`
    (:func:`_parabola_vertex`), so the weight can fall between grid points: the PSNR-best weight
    is often a quarter decade off the half-decade grid, and the best grid point then 0.2–0.5 dB
    below it (128² CT, fan-beam CT, multi-coil MRI on the held-out image).

    Returns the chosen weights ``[B]``, and with ``return_estimate`` also the image validated at
    each sample's chosen weight (hold-out: the mean over the folds of :math:`\hat x_k`; SURE: the
    full-data solution). Where the data leave part of the image undetermined (inpainting: TV alone
    moves unobserved pixels only slowly), the warm-started solutions carry what larger weights
    filled in, so a solve of the chosen weight from zeros would not be the image that was validated
    (a small α once chose 1e-4 on 50 % inpainting and the cold re-solve left the holes empty: 9 dB
    instead of 24); :class:`dipkit.baselines.tv.TV` therefore starts its final solve from this estimate.
    ``opnorm_sq``: :math:`\|A\|^2` per sample when the caller has it (else estimated here); the fit
    views' norms are at most that, so every solve of the search uses its step sizes. ``trace``: a
    list that gets one ``(alpha, V [B], steps)`` row per solve, in order.
    """
    alphas = sorted({float(a) for a in alphas}, reverse=True)
    if not alphas or alphas[-1] < 0:
        raise DipkitError("alphas must be a non-empty list of weights ≥ 0")
    if int(folds) < 1 or int(iterations) < 1:
        raise DipkitError(f"folds and iterations must be ≥ 1, got {folds} and {iterations}")
    if patience is not None and int(patience) < 1:
        raise DipkitError(f"patience must be ≥ 1 or None, got {patience}")
    if criterion not in ("auto", "holdout", "sure"):
        raise DipkitError(f"criterion must be 'auto', 'holdout' or 'sure', got {criterion!r}")
    criterion = _criterion(physics, y, sigma, criterion)
    B = y.shape[0]
    if criterion == "sure":
        crit = _Sure(physics, y, sigma=sigma, seed=seed)
    else:
        crit = _HoldOut(physics, y, folds=folds, fraction=fraction, seed=seed)
    C = crit.copies
    real = y.real.dtype if y.is_complex() else y.dtype
    if opnorm_sq is None:  # of the full operator (the fit views' are at most this): one estimate
        opnorm_sq = _opnorm_sq(physics, y)
    opnorm_sq = torch.as_tensor(opnorm_sq, device=y.device).reshape(-1).expand(B).repeat(C)
    # SURE's divergence needs the same iteration map for y and y + εb: no per-sample step sizes
    path = _Path(crit.path_physics, crit.path_y, nonneg=nonneg, value=crit.value, rtol=rtol, opnorm_sq=opnorm_sq,
                 adaptive=crit.name != "sure")

    def solve(a: torch.Tensor, steps: int, start=None):
        before = path.steps_run
        x, v = path.solve(a.to(real).repeat(C), int(steps), start=start, settle=start is None)
        if trace is not None:
            trace.append((a.cpu(), v.cpu(), path.steps_run - before))
        return x, v

    tried, values, snaps = [], [], []
    best = torch.full((B,), math.inf, dtype=torch.float64, device=y.device)
    best_i = torch.zeros(B, dtype=torch.long, device=y.device)
    rises = torch.zeros(B, dtype=torch.long, device=y.device)
    for i, a in enumerate(alphas):
        _, v = solve(torch.full((B,), a, dtype=torch.float64, device=y.device), iterations)
        if values:
            rises = torch.where(v > values[-1], rises + 1, torch.zeros_like(rises))
        tried.append(a), values.append(v), snaps.append(path.snapshot())
        better = v < best
        best, best_i = torch.where(better, v, best), torch.where(better, torch.full_like(best_i, i), best_i)
        # V rose `patience` times in a row, after it had fallen well below the largest value so far
        # (not a wobble of the flat start, where the largest weights' solves are crude)
        top = torch.stack(values).amax(0)
        if patience is not None and bool(((rises >= patience) & (best < FALL * top)).all()):
            break
    T, cols = len(tried), torch.arange(B, device=y.device)
    grid = torch.tensor(tried, dtype=torch.float64, device=y.device)
    V = torch.stack(values)  # [T, B]: the path's values
    states = [snaps[i] for i in range(T)]  # the state each (weight, sample) value belongs to
    owner = torch.arange(T, device=y.device).unsqueeze(1).expand(T, B).clone()
    if polish > 0:
        # the path's values lag (each solve starts from a larger weight's solution and stops early),
        # which flattens V below its minimum: continue the best weight and its neighbours
        V = torch.full_like(V, math.inf)

        def continue_at(idx):  # idx [B]: the grid index each sample continues
            _, v = solve(grid[idx], polish, start=_gather(snaps, idx, C))
            V[idx, cols] = v
            owner[idx, cols] = len(states)
            states.append(path.snapshot())

        continue_at(best_i)
        for _ in range(T):  # then each side of the least polished value, until both are polished
            k = V.argmin(0)
            side = None
            for nb in (k - 1, k + 1):
                need = (nb >= 0) & (nb < T) & ~torch.isfinite(V[nb.clamp(0, T - 1), cols])
                if bool(need.any()):
                    side = torch.where(need, nb, k)
                    break
            if side is None:
                break
            continue_at(side)
    k = V.argmin(0)
    chosen = grid[k]
    estimate = _gather(states, owner[k, cols], C)["x"]
    if refine and T >= 3 and tried[-1] > 0:  # (log α: no refinement next to α = 0)
        j = k.clamp(1, T - 2)
        la = grid.log()
        vertex = _parabola_vertex((la[j - 1], la[j], la[j + 1]), (V[j - 1, cols], V[j, cols], V[j + 1, cols]))
        ok = (k >= 1) & (k <= T - 2) & torch.isfinite(vertex)
        chosen = torch.where(ok, vertex.exp(), chosen)
    chosen = chosen.to(real)
    return (chosen, crit.estimate(estimate)) if return_estimate else chosen


def _parabola_vertex(u, f) -> torch.Tensor:
    r"""Abscissa of the vertex of the parabola through ``(u_i, f_i)``, ``i = 0, 1, 2`` (tensors),
    clamped to the points' range; NaN where the parabola is not convex (no minimum).

    .. math:: u^* = u_1 - \tfrac12\,\frac{(u_1-u_0)^2 (f_1-f_2) - (u_1-u_2)^2 (f_1-f_0)}
                                        {(u_1-u_0)(f_1-f_2) - (u_1-u_2)(f_1-f_0)}
    """
    u0, u1, u2 = u
    f0, f1, f2 = f
    num = (u1 - u0) ** 2 * (f1 - f2) - (u1 - u2) ** 2 * (f1 - f0)
    den = (u1 - u0) * (f1 - f2) - (u1 - u2) * (f1 - f0)
    # convex iff the second divided difference f[u0, u1, u2] is positive
    convex = ((f2 - f1) / (u2 - u1) - (f1 - f0) / (u1 - u0)) / (u2 - u0) > 0
    v = u1 - 0.5 * num / torch.where(den == 0, torch.ones_like(den), den)
    v = torch.minimum(torch.maximum(v, torch.minimum(u0, u2)), torch.maximum(u0, u2))
    return torch.where(convex & (den != 0), v, torch.full_like(v, math.nan))
