"""Build a run from a :class:`~dipkit.config.RunConfig` and start it on the engine.

:func:`reconstruct` is what ``dipkit reconstruct`` (and every bench and tune run) calls. The data
flow of one run::

    RunConfig ──validate()──▶ Method ─┐
    Problem ──to(device)──▶ [ValidationSplit: fit view of the operator] ──▶ State (operator, y,
        network f_θ, input z, meta) ──▶ engine.run(method, state, [stopping rules, HistoryRecorder,
        progress bar]) ──▶ [refit on all data] ──▶ RunResult ──▶ rundir.write_run_dir

Defaults that depend on the problem or the network are resolved here (:func:`resolve_config`) and
the resolved values are what ``config.yaml`` records. The files of the run directory and their
reading back are in :mod:`dipkit.rundir`.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig
from .errors import DipkitError
from .metrics import fov_mask, psnr, ssim
from .rundir import RunResult, write_run_dir
from .uncertainty import calibration, ensemble_mean_std, posterior_std

__all__ = ["reconstruct", "resolve_device", "resolve_config", "build_state", "make_split", "RunResult"]


def resolve_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise DipkitError("--device cuda requested but no CUDA GPU is available (use --device auto or cpu)")
    return torch.device(name)


def resolve_config(cfg: RunConfig, method, problem) -> RunConfig:
    """A copy of ``cfg`` with every default that depends on the problem or the network resolved:
    the method's hyper-parameters as used (a learning rate left to the network preset is set on
    ``method`` here), the step budget, and the network input kind (``auto`` → per task)."""
    from .inputs import resolve_input_kind
    from .nets import NETS

    out = copy.deepcopy(cfg)
    if method.uses_network and getattr(method, "lr", 0.0) is None:
        method.lr = float(NETS[cfg.net.name].lr)
    out.params = dict(method.config())
    direct = getattr(method, "direct", False)
    out.iterations = None if direct else int(cfg.iterations or method.default_iterations)
    if method.uses_network:
        out.input.kind = resolve_input_kind(cfg.input.kind, problem)
    return out


def make_split(problem, cfg: RunConfig):
    """The validation split of ``problem`` for ``cfg.validation`` (MRI: held-out k-space is
    zero-filled in network inputs; sinograms and images: filled from neighbours)."""
    from .physics.split import ValidationSplit

    fill = "zero" if str(problem.spec.get("kind", "")).startswith("mri") else "neighbours"
    return ValidationSplit(problem.physics, problem.y, fraction=float(cfg.validation.fraction),
                           seed=int(cfg.validation.seed), fill=fill)


def _fit_view(problem, split):
    """The problem as the fit sees it: the masked operator and the measurement without held-out entries."""
    from .problem import Problem

    return Problem(physics=split.fit_physics(), y=split.fit_y(), spec=problem.spec, x_true=problem.x_true,
                   meta=problem.meta)


def build_state(method, problem, cfg: RunConfig, device: torch.device):
    """The engine :class:`~dipkit.engine.State` of ``method`` on ``problem`` (already on ``device``,
    ``cfg`` resolved): the seeded generator, the network and its input for network methods, the step
    budget, the problem's metadata and the engine settings (precision, history interval)."""
    from .engine import State

    steps = 1 if getattr(method, "direct", False) else int(cfg.iterations or method.default_iterations)
    n = int(cfg.ensemble) if method.uses_network else 1
    y = problem.y if n == 1 else problem.y.repeat(n, *[1] * (problem.y.ndim - 1))
    state = State(physics=problem.physics, y=y, max_steps=steps, generator=None, meta=problem.state_meta(),
                  report_every=int(cfg.log_every),
                  autocast_dtype=torch.bfloat16 if cfg.precision == "bf16" else None)
    gens, nets, zs = [], [], []
    for i in range(n):
        # member i is built exactly as a run with seed + i (global seed, then input, then network)
        torch.manual_seed(int(cfg.seed) + i)
        gen = torch.Generator(device=device).manual_seed(int(cfg.seed) + i)
        gens.append(gen)
        if method.uses_network:
            from .inputs import make_input
            from .nets import build_net

            zs.append(make_input(cfg.input.kind, problem, generator=gen, channels=cfg.input.channels,
                                 std=cfg.input.std))
            nets.append(build_net(cfg.net.name, zs[-1].shape[1], problem.img_shape[0], **cfg.net.options).to(
                device=device, dtype=problem.y.dtype))
    state.generator = gens[0]
    if n > 1:
        from .nets.ensemble import Ensemble

        state.generators = gens
    if method.uses_network:
        state.z = zs[0] if n == 1 else torch.cat(zs)
        state.net = nets[0] if n == 1 else Ensemble(nets)
        state.net.train()
        state.z_perturb = float(cfg.input.perturb)
    return state


@dataclass
class _Run:
    """What one engine run left behind."""

    state: object
    recorder: object
    rules: list
    wall: float


def _run_once(method, problem, cfg: RunConfig, device, *, split, rules, mask, quiet, console) -> _Run:
    from .engine import run
    from .engine.progress import ProgressBar
    from .engine.recorder import HistoryRecorder
    from .stopping import make_stopping_rule

    fit = problem if split is None else _fit_view(problem, split)
    state = build_state(method, fit, cfg, device)
    check = int(cfg.log_every)
    rule_cbs = [make_stopping_rule(name, mode, cfg.early_stop, check_every=check, split=split)
                for name, mode in rules]
    recorder = HistoryRecorder(every=check, x_true=problem.x_true, mask=mask)
    callbacks = [*rule_cbs, recorder]  # rules first: they write state.metrics (val) that the recorder samples
    if not quiet:
        callbacks.append(ProgressBar(recorder, description=cfg.method, console=console))
    t0 = time.perf_counter()
    run(method, state, callbacks)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return _Run(state, recorder, rule_cbs, time.perf_counter() - t0)


def _metric_pair(x, problem, mask):
    if problem.x_true is None or x is None:
        return None, None
    return (_finite(float(psnr(x, problem.x_true, mask=mask).mean())),
            _finite(float(ssim(x, problem.x_true, mask=mask).mean())))


def _finite(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def _selection(cb, problem, mask) -> dict:
    p, s = _metric_pair(cb.estimate, problem, mask)
    out = {"rule": cb.rule, "mode": cb.mode, "iteration": cb.iteration if cb.estimate is not None else None,
           "psnr": p, "ssim": s}
    if getattr(cb, "value", None) is not None:
        out["misfit"] = cb.value
    return out


def _ensemble_info(cfg, run: _Run, chosen, problem, mask) -> dict:
    """Per-member metrics of an ensemble run."""
    rule = run.rules[0] if run.rules else None
    its = getattr(rule, "iterations", None) or [None] * chosen.shape[0]
    out = []
    for b in range(chosen.shape[0]):
        p, s = _metric_pair(chosen[b:b + 1], problem, mask)
        fp, _ = _metric_pair(run.state.estimate[b:b + 1], problem, mask)
        out.append({"seed": int(cfg.seed) + b, "psnr": p, "ssim": s, "iteration": its[b], "final_psnr": fp})
    return {"members": chosen.shape[0], "member_metrics": out}


def _uncertainty_info(std, recon, problem) -> dict | None:
    """Summary of the uncertainty map, with its calibration when the ground truth is known."""
    if std is None:
        return None
    info = {"mean_std": float(std.mean())}
    if problem.x_true is not None:
        err = (recon - problem.x_true).detach().cpu().numpy()
        info["calibration"] = calibration(std.detach().cpu().numpy(), err)
    return info


def reconstruct(problem, cfg: RunConfig, out_dir: str | Path | None = None, *, quiet: bool = False,
                console=None, method=None) -> RunResult:
    """Run ``cfg.method`` on ``problem``; write the run directory if ``out_dir`` is given.

    ``method``: the method built by ``cfg.validate()`` when the caller already has it (it is built
    once per run). ``metrics.json`` holds ``method, task, iterations`` (steps run; null for a
    direct method such as FBP), ``wall_time_s, iterations_per_s, psnr, ssim`` (of the saved
    reconstruction), ``peak: {psnr, iteration}`` (the best PSNR in the history: an oracle),
    ``final: {psnr, ssim, iteration}``, ``early_stop: {rule, mode, iteration, psnr, ssim[, misfit]}``
    (the first stopping rule's selection, which is the reconstruction) or null, ``selections``
    (every rule's selection, by rule; with an ensemble, the mean over members), ``ensemble``
    (``{members, member_metrics}`` for ``ensemble > 1``; the reconstruction is the mean of the
    members' selections), ``uncertainty`` (``{mean_std, calibration}`` when an uncertainty map is
    written: ensembles and SGLD), ``validation`` (the held-out split and, with
    ``validation.refit``, the refit: ``{fraction, seed, held_out, fill, iteration, misfit, psnr,
    refit: {iterations, psnr, ssim} | null}``) or null, ``stop_reason``, ``device``, ``fov_mask``,
    ``params`` (the method's hyper-parameters as used) and ``request`` (the configuration as asked,
    before defaults were resolved). ``config.yaml`` holds the resolved configuration. PSNR/SSIM are
    null without a ground truth.
    """
    from .stopping import needs_split, parse_rules

    if method is None:
        method = cfg.validate()
    device = resolve_device(cfg.device)
    problem = problem.to(device)
    resolved = resolve_config(cfg, method, problem)
    direct = getattr(method, "direct", False)
    rules = [] if direct else parse_rules(cfg.early_stop.rule)
    split = make_split(problem, cfg) if rules and needs_split(cfg.early_stop.rule) else None
    mask = None
    if cfg.fov_mask:
        _, h, w = problem.img_shape
        mask = fov_mask(h, w, device=device, dtype=problem.y.dtype)

    main = _run_once(method, problem, resolved, device, split=split, rules=rules, mask=mask, quiet=quiet,
                     console=console)
    state, recorder = main.state, main.recorder
    history = recorder.history()
    final = state.estimate
    members = final.shape[0]
    estimates = {"final": final}
    chosen = final  # per member: the first rule's selection, else the final estimate
    es_info, selections = None, {}
    for i, cb in enumerate(main.rules):
        selections[cb.rule] = _selection(cb, problem, mask)
        if i == 0:
            es_info = selections[cb.rule]
            if cb.estimate is not None:
                estimates["early_stop"] = chosen = cb.estimate
    recon = chosen
    val_info = None
    wall = main.wall
    if split is not None:
        val_cb = next(cb for cb in main.rules if cb.rule == "val")
        val_info = {**split.describe(), **{k: v for k, v in _selection(val_cb, problem, mask).items()
                                           if k in ("iteration", "misfit", "psnr", "ssim")}, "refit": None}
        if cfg.validation.refit and val_cb.iteration:
            again = copy.deepcopy(resolved)
            again.iterations = int(val_cb.iteration)
            refit = _run_once(again.validate(), problem, again, device, split=None, rules=[], mask=mask,
                              quiet=quiet, console=console)
            recon = chosen = estimates["refit"] = refit.state.estimate
            p, s = _metric_pair(recon, problem, mask)
            val_info["refit"] = {"iterations": refit.state.step, "psnr": p, "ssim": s}
            wall += refit.wall
    peak = {"psnr": None, "iteration": None}
    if history.get("psnr"):
        j = int(np.nanargmax(history["psnr"]))
        peak = {"psnr": _finite(history["psnr"][j]), "iteration": history["step"][j]}
        if recorder.best_estimate is not None and members == 1:
            estimates["peak"] = recorder.best_estimate
    uncertainty, ens_info = None, None
    if members > 1:
        recon, uncertainty = ensemble_mean_std(chosen)
        ens_info = _ensemble_info(cfg, main, chosen, problem, mask)
        estimates = {k: v.mean(0, keepdim=True) for k, v in estimates.items()}
    if "posterior_var" in state.aux:  # SGLD: the posterior's pixel-wise std
        uncertainty = posterior_std(state.aux["posterior_var"], final)
    fp, fs = _metric_pair(estimates["final"], problem, mask)
    rp, rs = _metric_pair(recon, problem, mask)
    iters = None if direct else state.step
    result = RunResult(
        method=cfg.method,
        task=problem.task,
        iterations=iters,
        wall_time_s=wall,
        iterations_per_s=(state.step / main.wall if iters and main.wall > 0 else None),
        psnr=rp,
        ssim=rs,
        peak=peak,
        final={"psnr": fp, "ssim": fs, "iteration": iters},
        early_stop=es_info,
        selections=selections,
        validation=val_info,
        stop_reason=state.stop_reason,
        device=str(device),
        fov_mask=bool(cfg.fov_mask),
        params=method.config(),
        ensemble=ens_info,
        uncertainty=_uncertainty_info(uncertainty, recon, problem),
        request=cfg.to_dict(),
    )
    result.reconstruction = recon
    result.uncertainty = uncertainty
    result.members = chosen if members > 1 else None
    result.estimates = estimates
    result.history = history
    resolved.params = dict(method.config())  # values chosen during the run (e.g. TV's alpha="auto")
    result.config = resolved.to_dict()
    if out_dir is not None:
        write_run_dir(Path(out_dir), result)
    return result
