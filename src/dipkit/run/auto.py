r"""``--method auto``: the method chosen without a ground truth, by held-out misfit.

A user who does not know which method suits their measurement names ``auto``. dipkit then runs a
*portfolio* of candidates — the classical baseline and the network methods that win somewhere in
the benchmark tables (:data:`PORTFOLIOS`) — on **one** validation split
(:mod:`dipkit.physics.split`: every candidate fits the same entries and is scored on the same
held-out ones) and ranks them by the misfit of their ``val`` pick on the held-out entries,

.. math:: v_c = \min_k \frac{1}{|H|}\sum_{i\in H}\big((A\hat x^{(c)}_k)_i - y_i\big)^2 ,

the same score that picks each run's iterate (:mod:`dipkit.stopping.val`) and ``dipkit tune``'s
grid point. The candidate with the least :math:`v_c` is the reconstruction.

**Successive halving** keeps the price near that of a few runs, not of the whole portfolio
(Jamieson & Talwalkar, AISTATS 2016; Li et al., Hyperband, JMLR 2018): the classical baselines
run to the end (they take seconds); the network candidates all get ``min_steps`` steps, are
ranked by :math:`v_c` so far, and the better ``1/eta`` of them (rounded up) continue to
``eta`` × as many steps; and so on until one is left, which runs until its own ``val`` rule
stops it (the patience window, :mod:`dipkit.stopping.val`) or its cap. Candidates are continued,
not restarted (their engine state is kept between rungs). A candidate whose rule stopped it early
keeps its final score and costs nothing more. Ranking after a short budget can drop a slow starter
that would have won (the rows of ``selection.csv`` say at which rung each was dropped and with what
misfit).

**Ties go to the baseline** (``auto.se``, default 1): the least misfit is kept only when it belongs
to a classical baseline or beats the best baseline by more than ``se`` standard errors of the
paired difference over the held-out entries — the one-standard-error rule of cross-validation
(:func:`one_se_choice`); ``selection.md`` says when it decided.

**Stacking** (``auto.combine=stack``, the default; Breiman, *Stacked regressions*, 1996): the
candidates' images, each fitted without the held-out entries, are combined with the convex weights
that minimise the held-out misfit of the combination (:func:`stack_weights`). Different methods
err differently, so a mixture can beat every one of them; the combination is returned only when its
misfit is below the chosen candidate's by more than ``se`` standard errors of the paired difference
(the weights were fitted on the entries that score them), else the chosen candidate is.
``--combine K`` instead averages the K candidates with the least misfit (``1``: the chosen one alone).

**Select, then refit** (``auto.refit``): choosing by held-out misfit costs the fit those entries,
so a network candidate returned alone is rerun on *all* the data for its pick's number of steps, with the rate reductions its run made at the same
steps (:class:`dipkit.engine.schedule.Replay`). ``mean`` (default) returns the mean of the pick
and the refit, ``replace`` the refit alone, ``none`` skips it: the refit sees more data, but it
is one more trajectory stopped at a step chosen on another one, and its iterate there can be worse
than the pick (``benchmarks/results/auto-stack.md``). A stack's (or ``--combine K``'s) members are
returned as their picks: the combination already averages, and refitting each member costs a run
each (on the four stacks measured: −0.16 … +0.03 dB). A classical baseline is always returned as
its solve on all the data (seconds for TV). A candidate whose network is first fitted to the TV
image (``init.kind=tv``) fits again to the TV image of all the data (reusing the fit made on the fit
view saved its 500 steps but the refits gained less: ``benchmarks/results/auto-cost.md``).
``metrics.json`` ``auto.refit`` has the refits' steps,
times and (with a ground truth) PSNR; ``candidates/<label>/refit.npy`` the refit's image.

Output (an ordinary run directory, so ``dipkit bench`` can have an ``auto`` row): the chosen
(or combined) reconstruction with the chosen candidate's history and metrics, ``metrics.json``
with ``auto: {chosen, candidates, rungs, combine, weights, refit, one_se, total_steps, wall_time_s, time_s}``
(``time_s``: wall seconds per stage — ``start`` (split, candidates built), ``baselines``, ``networks``
(the rungs), ``results`` (each candidate's result and run directory, the baseline's solve on all
data), ``combine``, ``pictures`` (the returned candidates' figures), ``refit``), ``selection.csv``
and ``selection.md`` (one row per candidate: settings, misfit, pick, steps, stop, time, and
PSNR/SSIM when a ground truth is known) and ``candidates/<label>/`` (each candidate's run
directory; its figures only for the network candidates in what is returned). An interrupted
``auto`` run starts over (no checkpoints).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import DipkitError
from .config import RunConfig
from .portfolio import CANDIDATES, PORTFOLIOS, AutoSelection, candidate_config, portfolio
from .combine import fit_estimate as _fit_estimate, fmt_weights as _fmt_weights, refit as _refit, stack as _stack, \
    stack_weights
from .rundir import CANDIDATES as CANDIDATES_DIR, SELECTION_CSV, SELECTION_MD  # file names
from .autoreport import COLUMNS as _COLUMNS, fmt as _fmt, markdown as _markdown, rows as _rows

__all__ = ["PORTFOLIOS", "CANDIDATES", "portfolio", "candidate_config", "AutoSelection", "successive_halving",
           "one_se_choice", "stack_weights", "reconstruct_auto", "SELECTION_CSV", "SELECTION_MD", "CANDIDATES_DIR"]


# ---------------------------------------------------------------------- successive halving
def successive_halving(candidates: list, *, advance: Callable[[Any, int | None], None], score: Callable[[Any], float],
                       finished: Callable[[Any], bool], min_steps: int, eta: int = 2,
                       out_of_time: Callable[[], bool] = lambda: False) -> list[dict]:
    """Successive halving over ``candidates`` (module docs).

    ``advance(c, budget)`` continues candidate ``c`` until it has taken ``budget`` steps in all
    (``None``: until its own stopping rule or cap); ``score(c)`` is its held-out misfit so far
    (lower is better); ``finished(c)``: its rule stopped it (no more steps needed).
    Returns the rungs: ``[{budget, scores: [(candidate, score)…] best first, kept, dropped}]``;
    the last survivor has been run to its end.
    """
    active, budget, rungs = list(candidates), int(min_steps), []
    while len(active) > 1:
        for c in active:
            if not finished(c) and not out_of_time():
                advance(c, budget)
        ranked = sorted(active, key=lambda c: _key(score(c)))
        n_keep = max(1, math.ceil(len(active) / eta))
        rungs.append({"budget": budget, "scores": [(c, score(c)) for c in ranked],
                      "kept": ranked[:n_keep], "dropped": ranked[n_keep:]})
        active = ranked[:n_keep]
        budget *= eta
        if out_of_time():
            break
    for c in active[:1]:
        if not finished(c) and not out_of_time():
            advance(c, None)
    return rungs


def _key(v) -> float:
    return math.inf if v is None or not math.isfinite(v) else float(v)


# ---------------------------------------------------------------------- the run
@dataclass
class _Candidate:
    label: str
    cfg: RunConfig
    method: Any = None
    resolved: RunConfig | None = None
    run: Any = None  # runner._Run
    status: str = "pending"
    error: str | None = None
    dropped_at: int | None = None
    result: Any = None
    extra: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return 0 if self.run is None else int(self.run.state.step)

    def misfit(self) -> float | None:
        """The held-out misfit of the candidate's pick so far (a baseline: of its result)."""
        if self.run is None or self.error is not None:
            return None
        if "misfit" in self.extra:
            return self.extra["misfit"]
        val = next((cb for cb in self.run.rules if cb.rule == "val"), None)
        if val is None or val.best is None:
            return None
        return float(val.best.mean())

    def finished(self) -> bool:
        return self.run is None or bool(self.run.state.stop) or self.error is not None


def one_se_choice(ranked: list, split, se: float) -> tuple[Any, dict | None]:
    r"""The candidate to return from ``ranked`` (least held-out misfit first): the **one-standard-error
    rule** of cross-validation (Breiman et al. 1984; Hastie, Tibshirani & Friedman, *The Elements of
    Statistical Learning*, §7.10): among the models whose estimated error is within ``se`` standard
    errors of the least, take the simplest. Here the simplest is the classical baseline (TV): a
    network candidate replaces it only when its misfit is lower by more than ``se`` standard errors
    of the paired difference over the held-out entries :math:`i \in H`,

    .. math:: d_i = e_i(\hat x_{\rm net}) - e_i(\hat x_{\rm base}), \qquad
              z = \frac{\bar d}{s_d/\sqrt{|H|}}, \qquad \text{keep the baseline if } z > -\,\mathrm{se},

    with :math:`e_i` the held-out score of entry :math:`i` (:meth:`~dipkit.physics.split.ValidationSplit.entry_scores`).
    Why the baseline gets the benefit of the doubt: a network candidate's misfit is the least of its
    whole ``val`` curve on these same entries (its pick), and the best of several candidates — a
    minimum of noisy estimates, biased low — while the baseline's weight was chosen on a hold-out of
    its own and its misfit here is an unbiased estimate. In the 128² bench of
    ``benchmarks/results/defaults-128.md``, 5 of the 9 network candidates whose misfit was below
    TV's by less than two standard errors had a lower PSNR than TV (``auto-one-se.md``).
    ``se = 0`` turns the rule off (the least misfit wins).
    Returns ``(chosen, record)``; ``record`` is None when the rule did not apply (the best is a
    baseline, there is no baseline, or ``se = 0``)."""
    best = ranked[0]
    bases = [c for c in ranked if not c.method.uses_network and "fit_estimate" in c.extra]
    if se <= 0 or not best.method.uses_network or not bases or best.result is None:
        return best, None
    base = bases[0]
    with torch.no_grad():
        x_net = best.result.reconstruction.to(device=split.y.device, dtype=split.y.dtype).reshape(
            base.extra["fit_estimate"].shape)
        d = (split.entry_scores(x_net) - split.entry_scores(base.extra["fit_estimate"])).to(torch.float64)
    n = d.numel()
    sd = float(d.std()) if n > 1 else 0.0
    mean = float(d.mean())
    z = mean / (sd / math.sqrt(n)) if sd > 0 else (-math.inf if mean < 0 else math.inf)
    record = {"se": float(se), "best": best.label, "baseline": base.label, "difference": mean,
              "std_error": sd / math.sqrt(max(n, 1)), "z": z, "entries": n,
              "preferred": base.label if z > -se else best.label}
    return (base if z > -se else best), record


def reconstruct_auto(problem, cfg: RunConfig, out_dir=None, *, quiet: bool = False, console=None,
                     overwrite: bool = True, dicom: bool = False, log: Callable[[str], None] | None = None):
    """``--method auto`` on ``problem`` (module docs); returns the :class:`~dipkit.run.rundir.RunResult`
    of the chosen (or combined) reconstruction and writes the run directory when ``out_dir`` is given.
    TV's weight is searched once per operator and measurement for all the candidates and refits
    (:func:`dipkit.core.tv_alpha.shared_choices`)."""
    from ..core.tv_alpha import shared_choices

    with shared_choices():
        return _reconstruct_auto(problem, cfg, out_dir, quiet=quiet, console=console, overwrite=overwrite,
                                 dicom=dicom, log=log)


def _reconstruct_auto(problem, cfg: RunConfig, out_dir=None, *, quiet: bool = False, console=None,
                      overwrite: bool = True, dicom: bool = False, log: Callable[[str], None] | None = None):
    from .. import __version__
    from ..metrics import fov_mask
    from .rundir import RunResult, prepare_run_dir, write_run_dir
    from .resolve import make_split, resolve_config, resolve_device
    from .runner import _advance, _build_run, _finish, direct_reconstruction
    from ..stopping import parse_rules
    from ..stopping.limits import TimeLimit
    from .summary import metric_pair
    from .consistency import data_consistency

    sel = cfg.validate()
    if not isinstance(sel, AutoSelection):
        raise DipkitError("reconstruct_auto needs method: auto")
    say = log or ((lambda m: None) if quiet else (console.print if console is not None else print))
    labels = sel.labels or portfolio(problem)
    AutoSelection.check(cfg, labels)
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        prepare_run_dir(out, overwrite=bool(overwrite))
    t_start = time.perf_counter()
    deadline = None if not cfg.time_limit else t_start + float(cfg.time_limit)
    device = resolve_device(cfg.device)
    problem = problem.to(device)
    split = make_split(problem, cfg)  # one split for every candidate
    mask = None
    if cfg.fov_mask:
        _, h, w = problem.img_shape
        mask = fov_mask(h, w, device=device, dtype=problem.y.dtype)

    times, t_mark = {}, [t_start]

    def lap(stage: str) -> None:  # wall time per stage of the run (metrics.json auto.time_s)
        now = time.perf_counter()
        times[stage] = times.get(stage, 0.0) + now - t_mark[0]
        t_mark[0] = now

    def out_of_time() -> bool:
        return deadline is not None and time.perf_counter() >= deadline

    def with_deadline(run_) -> None:
        run_.callbacks = [c for c in run_.callbacks if not isinstance(c, TimeLimit)]
        if deadline is not None:
            run_.callbacks.append(TimeLimit(max(deadline - time.perf_counter(), 1e-9),
                                            check_every=int(cfg.log_every)))

    cands = [_Candidate(label, candidate_config(cfg, label)) for label in labels]
    say(f"auto: {len(cands)} candidates ({', '.join(labels)}) on one validation split "
        f"({split.describe()['held_out']} held-out entries)")
    for c in cands:
        try:
            c.method = c.cfg.validate()
            c.resolved = resolve_config(c.cfg, c.method, problem)
            # as resolved before the run: a refit re-chooses what the run chose on the fit view (e.g.
            # dip-tv's alpha="auto", which the run's result records as a number) on all the data
            c.extra["resolved"] = copy.deepcopy(c.resolved)
            rules = parse_rules(c.resolved.early_stop.rule)
            c.run = _build_run(c.method, problem, c.resolved, device, split=split, rules=rules, mask=mask,
                               quiet=True, console=console)
        except (DipkitError, RuntimeError, ValueError) as exc:
            c.error, c.status = " ".join(str(exc).split()), "failed"
            say(f"auto: candidate {c.label} failed to start: {c.error}")

    def advance(c: _Candidate, budget: int | None) -> None:
        try:
            with_deadline(c.run)
            cap = step_cap(c)
            _advance(c.method, c.run, cap if budget is None else min(int(budget), cap))
        except (DipkitError, RuntimeError, ValueError) as exc:
            c.error, c.status = " ".join(str(exc).split()), "failed"
            say(f"auto: candidate {c.label} failed: {c.error}")

    def step_cap(c: _Candidate) -> int:
        from .resolve import step_budget

        return step_budget(c.resolved, c.method)[0]

    lap("start")
    ok = [c for c in cands if c.error is None]
    baselines = [c for c in ok if not c.method.uses_network]
    networks = [c for c in ok if c.method.uses_network]
    for c in baselines:  # seconds each: to the end, then the misfit of the result
        advance(c, None)
        if c.error is None:
            c.extra["misfit"] = float(split.misfit(c.run.state.estimate).mean())
            c.extra["fit_estimate"] = c.run.state.estimate.detach().clone()
            c.status = "ran to the end; refit on all data"
    if baselines:
        say("auto: " + ", ".join(f"{c.label} misfit {_fmt(c.misfit())}" for c in baselines if c.error is None))
    lap("baselines")
    rungs = successive_halving(
        networks, advance=advance, score=lambda c: c.misfit() if c.error is None else None,
        finished=lambda c: c.finished() or c.steps >= step_cap(c),  # at its cap: no more steps either
        min_steps=int(cfg.auto.min_steps), eta=int(cfg.auto.eta), out_of_time=out_of_time)
    for r, rung in enumerate(rungs):
        for c in rung["dropped"]:
            if c.error is None:
                c.status, c.dropped_at = f"dropped after rung {r + 1} ({rung['budget']} steps)", r + 1
        say(f"auto: rung {r + 1} ({rung['budget']} steps): "
            + ", ".join(f"{c.label} {_fmt(s)}" for c, s in rung["scores"])
            + f" → keeping {', '.join(c.label for c in rung['kept'])}")
    for c in networks:
        if c.error is None and c.dropped_at is None:
            c.status = "stopped by its rule" if c.run.state.stop and c.run.state.stop_kind == "patience" else \
                "ran to the end"

    lap("networks")
    alive = [c for c in cands if c.error is None and c.misfit() is not None]
    if not alive:
        raise DipkitError("auto: every candidate failed (" + "; ".join(f"{c.label}: {c.error}" for c in cands) + ")")
    naive = None if out is None else direct_reconstruction(problem)  # one for every overview.png
    for c in cands:
        if c.error is None and c.method.uses_network and c.steps == 0:
            # the time limit was spent before its first rung: nothing to report (and no misfit to rank)
            c.status = "not run: the time limit was spent before its first rung"
        elif c.error is None and c.method.uses_network:
            cdir = None if out is None else out / CANDIDATES_DIR / c.label
            c.result = _finish(c.run, method=c.method, problem=problem, cfg=c.cfg, resolved=c.resolved, split=split,
                               mask=mask, device=device, request=c.cfg.to_dict(), resumed_at=[], out=cdir,
                               dicom=False, net=None, do_refit=None, naive=naive, project=False, pictures=False)
        elif c.error is None:
            # a baseline was scored on the fit view like every candidate; what it returns is its solve on
            # all the data (seconds), as the baseline run by itself would — select, then refit
            from .runner import run_method

            fit_result = _finish(c.run, method=c.method, problem=problem, cfg=c.cfg, resolved=c.resolved,
                                 split=split, mask=mask, device=device, request=c.cfg.to_dict(), resumed_at=[],
                                 out=None, dicom=False, net=None, do_refit=None, project=False)
            full = copy.deepcopy(c.cfg)
            full.early_stop.rule = None
            c.result = run_method(problem, full, None if out is None else out / CANDIDATES_DIR / c.label,
                                  quiet=True, console=console)
            c.extra["fit_psnr"] = fit_result.get("psnr")
            c.result["auto_fit"] = {"misfit": c.misfit(), "psnr": fit_result.get("psnr"),
                                    "validation": fit_result.get("validation")}
            if out is not None:
                from ..io import save_json
                from .rundir import METRICS

                save_json(out / CANDIDATES_DIR / c.label / METRICS, dict(c.result))
    lap("results")
    ranked = sorted(alive, key=lambda c: _key(c.misfit()))
    chosen, rule = one_se_choice(ranked, split, float(cfg.auto.se))
    if rule is not None and chosen is not ranked[0]:
        say(f"auto: {ranked[0].label}'s misfit is within {rule['se']:g} standard error(s) of {chosen.label}'s "
            f"(z = {rule['z']:.2f}): keeping the simpler {chosen.label}")
    # what is returned: the chosen candidate, or a combination of several (weights by label)
    shape = chosen.run.state.estimate.shape
    fit_x = {c.label: _fit_estimate(c).to(device=split.y.device, dtype=split.y.dtype).reshape(shape) for c in ranked}
    weights, combine_info = {chosen.label: 1.0}, None
    combine = cfg.auto.combine
    if combine == "stack" and len(ranked) > 1:
        weights, combine_info = _stack(ranked, chosen, fit_x, split, float(cfg.auto.se))
        say(f"auto: stacking weights {_fmt_weights(combine_info['weights'])} (held-out misfit "
            f"{_fmt(combine_info['misfit'])}, z = {combine_info['z']:.2f} against {chosen.label}) → "
            + ("returning the combination" if combine_info["used"] else f"keeping {chosen.label}"))
    elif combine != "stack" and int(combine) > 1:
        members = ranked[:min(int(combine), len(ranked))]
        weights = {m.label: 1.0 / len(members) for m in members}
        x_fit = torch.stack([fit_x[m.label] for m in members]).mean(0)
        combine_info = {"kind": "mean", "k": len(members), "candidates": [m.label for m in members],
                        "weights": dict(weights), "misfit": float(split.misfit(x_fit).mean()), "used": True}
    k = len(weights)
    lap("combine")
    if out is not None:  # the figures of the network candidates in what is returned (the others': none)
        from .rundir import draw_pictures

        for c in ranked:
            if c.label in weights and c.method.uses_network:
                draw_pictures(out / CANDIDATES_DIR / c.label, c.result)
    lap("pictures")
    # select, then refit: a network candidate returned alone reruns on all the data (a stack's members
    # are returned as their picks: the stack already averages, and a refit each cost a run each for
    # −0.16…+0.03 dB on the four stacks of benchmarks/results/auto-stack.md)
    if cfg.auto.refit != "none" and len(weights) == 1:
        for c in ranked:
            if c.label in weights and c.method.uses_network:
                if out_of_time():
                    c.extra["refit"] = {"skipped": "time limit"}
                    continue
                _refit(c, problem, device, mask, console, with_deadline, say, mode=cfg.auto.refit,
                       out=None if out is None else out / CANDIDATES_DIR / c.label)
    lap("refit")
    by_label = {c.label: c for c in ranked}
    recon = sum(w * by_label[lab].result.reconstruction for lab, w in weights.items())
    if combine_info is not None:
        p, s = metric_pair(recon, problem, mask)
        combine_info.update(psnr=p, ssim=s)
    # noiseless data: what is returned is projected onto {x : A x = y} (the candidates, their misfits
    # and the weights are those of the images as fitted; dipkit.run.consistency)
    recon, dc_info = data_consistency(problem, recon, "shrink" if cfg.data_consistency == "auto" else
                                      cfg.data_consistency, mask)
    wall = time.perf_counter() - t_start
    rows = _rows(cands, ranked, chosen, rule, weights)
    refits = {c.label: c.extra["refit"] for c in ranked if "refit" in c.extra}
    total_steps = sum(c.steps for c in cands if c.method is not None and c.method.uses_network)

    res = RunResult(dict(chosen.result))
    p, s = metric_pair(recon, problem, mask)
    request = cfg.to_dict()
    asked = copy.deepcopy(cfg)
    asked.auto.candidates = ",".join(labels)
    res.update(method="auto", psnr=p, ssim=s, wall_time_s=wall, request=request, dipkit_version=__version__,
               params={**sel.config(), "candidates": labels},
               auto={"chosen": chosen.label, "chosen_method": chosen.cfg.method, "candidates": rows,
                     "rungs": [{"budget": r["budget"], "scores": {c.label: v for c, v in r["scores"]},
                                "kept": [c.label for c in r["kept"]], "dropped": [c.label for c in r["dropped"]]}
                               for r in rungs],
                     "combine": combine_info, "weights": weights, "refit": refits, "one_se": rule,
                     "total_steps": total_steps, "wall_time_s": wall, "time_s": times,
                     "split": split.describe()})
    res.pop("data_consistency", None)
    if dc_info is not None:
        res["data_consistency"] = dc_info
    res.reconstruction = recon
    res.uncertainty = None
    res.members = None
    res.direct = naive
    res.estimates = {**chosen.result.estimates, **({"combined": recon} if k > 1 else {})}
    if "refit" in chosen.extra and "iterations" in chosen.extra["refit"]:
        res["validation"] = {**(res.get("validation") or {}), "refit": chosen.extra["refit"]}
    res.history = chosen.result.history
    res.source = problem.meta.get("source")
    res.operator_kind = problem.spec.get("kind")
    res.config = asked.to_dict()
    res.config["chosen"] = chosen.result.config
    say(f"auto: chose {chosen.label} (held-out misfit {_fmt(chosen.misfit())})"
        + (f"; returned {_fmt_weights(weights)} (misfit {_fmt(combine_info['misfit'])})" if k > 1 else "")
        + f" — {total_steps} network steps in all, {wall:.0f} s")
    if out is not None:
        from ..io import csv_text, save_text

        save_text(out / SELECTION_CSV, csv_text(rows, _COLUMNS))
        save_text(out / SELECTION_MD, _markdown(rows, chosen.label, combine_info, total_steps, wall, rule, refits,
                                                     times, dc_info, p))
        write_run_dir(out, res, dicom=dicom)
    return res
