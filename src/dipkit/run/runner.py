"""Build a run from a :class:`~dipkit.run.config.RunConfig` and start it on the engine.

:func:`run_method` is one run of a named method: what :func:`dipkit.run.reconstruct` (the entry of
``dipkit reconstruct`` and of every bench and tune run) calls, and what ``method: auto``
(:mod:`dipkit.run.auto`) runs for each of its candidates. The data flow of one run::

    RunConfig ──validate()──▶ Method ─┐
    Problem ──to(device)──▶ [ValidationSplit: fit view of the operator] ──▶ State (operator, y,
        network f_θ, input z, meta) ──▶ engine.run(method, state, [stopping rules, HistoryRecorder,
        progress bar]) ──▶ [refit on all data] ──▶ RunResult ──▶ rundir.write_run_dir

Defaults that depend on the problem or the network are resolved by :mod:`dipkit.run.resolve`
(:func:`resolve_config`) and the resolved values are what ``config.yaml`` records. The files of the
run directory and their reading back are in :mod:`dipkit.run.rundir`.

**Checkpoints and resuming.** With a run directory, the run writes ``checkpoint.pt``
(:mod:`dipkit.engine.checkpoint`; ``checkpoint.every``: auto by default) holding the request and the
resolved configuration, the problem's fingerprint (and file and SHA-256), the validation split
(seed, fraction, held-out mask), and per *phase* of the run (``main``, then ``refit`` when
``validation.refit`` reruns on all data) the engine state (:meth:`dipkit.engine.State.state_dict`:
network, optimiser, z, aux, estimate, random generators, counters), every callback's state
(stopping rules, history recorder), the self-healing state and the wall time so far. A step-0
checkpoint (configuration only) is written when the run starts, so an interrupted run can always
be resumed. ``reconstruct(…, resume=True)`` rebuilds the run from its configuration, loads the
state and continues: on the CPU the result is the uninterrupted run's, bit for bit. Once the run
directory is written the checkpoint is removed (``checkpoint.keep`` keeps it).

**Self-healing** (:mod:`dipkit.engine.healing`, ``healing.*``): a non-finite loss or a loss jump
rolls the run back to its last snapshot with a halved learning rate; ``metrics.json`` lists the
rollbacks.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig
from ..errors import DipkitError
from ..metrics import fov_mask
from .build import _fit_view, build_state, expected_in_channels  # noqa: F401 (re-exported)
from .record import _Run
from .ensembles import chunk_config, join_runs, member_chunks
from .rundir import CHECKPOINT, RunResult, prepare_run_dir, remove_checkpoint, write_run_dir
from .summary import ensemble_info, finite, metric_pair, selection, stop_info, uncertainty_info
from .resolve import make_split, resolve_config, resolve_device, resolve_validation, step_budget
from ..uncertainty import ensemble_mean_std, posterior_std

__all__ = ["run_method", "resolve_device", "resolve_config", "build_state", "make_split", "resolve_validation",
           "RunResult", "expected_in_channels", "CHECKPOINT_VERSION", "step_budget", "direct_reconstruction"]

#: version of the checkpoint layout (see the module docs)
CHECKPOINT_VERSION = 1


def _build_run(method, problem, cfg: RunConfig, device, *, split, rules, mask, quiet, console, restore=None,
               net=None, mode=None, label=None, replay=None) -> _Run:
    """Build a run (state and callbacks; restored from ``restore``, a :meth:`_Run.state_dict`, when
    given) without starting it: :func:`_advance` runs it (and may continue it with a larger budget,
    as ``--method auto``'s successive halving does). ``mode``: the ensemble's (:func:`build_state`);
    ``label``: the progress bar's (default the method's name); ``replay``: a refit's main run's rate
    changes (:class:`dipkit.engine.schedule.Replay`)."""
    from ..engine.healing import Healer
    from ..engine.progress import ProgressBar
    from ..engine.recorder import HistoryRecorder
    from ..engine.schedule import make_schedule, resolve_warmup
    from ..engine.state import to_device_tree
    from ..stopping import make_stopping_rule
    from ..stopping.limits import TimeLimit

    fit = problem if split is None else _fit_view(problem, split)
    state = build_state(method, fit, cfg, device, net=net, mode=mode, init=not restore)
    check = int(cfg.log_every)
    rule_cbs = [make_stopping_rule(name, mode, cfg.early_stop, check_every=check, split=split)
                for name, mode in rules]
    val_cb = next((cb for cb in rule_cbs if cb.rule == "val"), None)
    schedule = make_schedule(cfg.schedule.kind, cfg.schedule, val=val_cb, check_every=check,
                             warmup=resolve_warmup(cfg.schedule.warmup, cfg.init.kind, method), replay=replay)
    recorder = HistoryRecorder(every=check, x_true=problem.x_true, mask=mask)
    healer = Healer.from_config(cfg.healing, check)  # the engine uses it only for methods with an optimiser
    done = 0.0
    if restore:
        try:
            state.load_state_dict(restore["state"])
        except RuntimeError as exc:  # e.g. a network of another kind (ensemble mode) than the one saved
            first = str(exc).splitlines()[0][:200]
            raise DipkitError(f"the checkpoint's state does not fit this run ({first})") from None
        cbs_sd = to_device_tree(restore["callbacks"], device)
        for cb in rule_cbs:
            if cb.rule not in cbs_sd["rules"]:
                raise DipkitError(f"the checkpoint has no state for the stopping rule {cb.rule!r}")
            cb.load_state_dict(cbs_sd["rules"][cb.rule])
        recorder.load_state_dict(cbs_sd["recorder"])
        if schedule is not None and cbs_sd.get("schedule"):
            schedule.load_state_dict(cbs_sd["schedule"])
        if healer is not None and restore.get("healer"):
            healer.load_state_dict(to_device_tree(restore["healer"], device))
        done = float(restore.get("wall", 0.0))
    # rules first: they write state.metrics (val) that the schedule reads and the recorder samples
    callbacks = [*rule_cbs, schedule, recorder]
    if cfg.time_limit:
        callbacks.append(TimeLimit(float(cfg.time_limit), check_every=check, spent=done))
    if not quiet:
        callbacks.append(ProgressBar(recorder, description=label or cfg.method, console=console))
    out = _Run(state, recorder, rule_cbs, done, healer, schedule=schedule, budget=step_budget(cfg, method)[1])
    out.callbacks = callbacks
    return out


def _advance(method, run_: _Run, max_steps: int | None = None) -> _Run:
    """Run (or continue) ``run_`` on the engine up to ``max_steps`` steps (default: its budget)."""
    from ..engine import run

    if max_steps is not None:
        run_.state.max_steps = int(max_steps)
    t0 = time.perf_counter()
    run(method, run_.state, run_.callbacks, healer=run_.healer)
    if run_.state.device.type == "cuda":
        torch.cuda.synchronize(run_.state.device)
    run_.wall += time.perf_counter() - t0
    return run_


def _run_once(method, problem, cfg: RunConfig, device, *, split, rules, mask, quiet, console, restore=None,
              checkpoint=None, net=None, mode=None, label=None, replay=None) -> _Run:
    """Build the run (:func:`_build_run`) and run it; ``checkpoint(run, t0) -> Checkpointer``: the
    run's checkpoint writer."""
    out = _build_run(method, problem, cfg, device, split=split, rules=rules, mask=mask, quiet=quiet,
                     console=console, restore=restore, net=net, mode=mode, label=label, replay=replay)
    if checkpoint is not None:
        out.checkpointer = checkpoint(out, time.perf_counter())
        out.callbacks.append(out.checkpointer)
    return _advance(method, out)


def _comparable(request: dict) -> dict:
    """A request as plain JSON values, without its checkpoint settings (they do not change the result)."""
    from ..io.write import _jsonable

    out = json.loads(json.dumps(_jsonable(request)))
    if isinstance(out, dict):
        out.pop("checkpoint", None)
        for key, default in _LATER_SETTINGS.items():  # settings added later: absent = their default
            if out.get(key, default) == default:
                out.pop(key, None)
        if isinstance(out.get("schedule"), dict) and out["schedule"].get("warmup") is None:
            out["schedule"].pop("warmup", None)  # added later; None = auto
    return out


#: top-level settings added after the checkpoint format, with their defaults (:func:`_comparable`)
_LATER_SETTINGS = {"ensemble_mode": "auto", "ensemble_memory_gb": None, "memory_format": "contiguous",
                   "init": {"kind": "random", "steps": 500, "lr": None}}


def _ensemble_plan(method, fit, cfg: RunConfig, device, ckpt, net) -> dict | None:
    """How an ensemble runs (:func:`dipkit.run.ensembles.plan_ensemble`): the checkpoint's plan when
    resuming (a checkpoint written before plans existed ran the loop in one run), else planned from
    member 0's network and input, built as for its run (the global random state is kept)."""
    from .ensembles import plan_ensemble

    n = int(cfg.ensemble)
    if n == 1 or not method.uses_network or getattr(method, "direct", False) or net is not None:
        return None
    if ckpt is not None:
        plan = ckpt.get("ensemble")
        return dict(plan) if plan else {"mode": "loop", "loop_reason": "resumed from an older checkpoint", "chunk": n,
                                        "memory_gb": None}
    one = copy.deepcopy(cfg)
    one.ensemble = 1
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        probe = build_state(method, fit, one, device, init=False)
        plan = plan_ensemble(method, cfg, n, probe.net, probe.z, device, probe.autocast_dtype)
    del probe
    return plan


def _load_resume(out: Path, cfg: RunConfig, problem, resume) -> dict | None:
    """The checkpoint to resume from (``resume``: True, or "auto" — only when one that matches exists)."""
    from ..engine.checkpoint import load_checkpoint

    path = out / CHECKPOINT
    if resume == "auto" and not path.is_file():
        return None
    if not path.is_file():
        raise DipkitError(f"nothing to resume in {out}: no {CHECKPOINT} (the run finished, or never started)")
    try:
        ckpt = load_checkpoint(path)
        if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
            raise DipkitError(f"checkpoint {path} has version {ckpt['version']}; this dipkit reads up to "
                              f"{CHECKPOINT_VERSION}")
        if _comparable(ckpt["request"]) != _comparable(cfg.to_dict()):
            raise DipkitError(f"checkpoint {path} was written by a run with another configuration")
        if ckpt["problem"]["fingerprint"] != problem.fingerprint():
            raise DipkitError(f"checkpoint {path} was written for another problem (its measurement differs)")
    except DipkitError:
        if resume == "auto":
            return None
        raise
    return ckpt


def run_method(problem, cfg: RunConfig, out_dir: str | Path | None = None, *, quiet: bool = False,
               console=None, method=None, overwrite: bool = True, resume: bool | str = False, dicom: bool = False,
               net=None) -> RunResult:
    """One run of ``cfg.method`` — any method but ``auto`` — on ``problem``: what
    :func:`dipkit.run.reconstruct` runs for a named method, with the same arguments and result (the
    run directory and ``metrics.json`` are described there). ``method: auto`` runs several of these
    (:func:`dipkit.run.auto.reconstruct_auto`).
    """
    from .. import __version__
    from ..engine.checkpoint import Checkpointer, save_checkpoint
    from ..stopping import needs_split, parse_rules
    from .rundir import can_write_dicom

    if cfg.method == "auto":
        raise DipkitError("method auto is a selection over runs of other methods: run it with dipkit.reconstruct")
    if method is None:
        method = cfg.validate()
    out = None if out_dir is None else Path(out_dir)
    ckpt = None
    if out is not None and resume:
        ckpt = _load_resume(out, cfg, problem, resume)
    if out is not None and ckpt is None:
        prepare_run_dir(out, overwrite=bool(overwrite))
    if ckpt is not None:
        dicom = bool(dicom or ckpt.get("dicom"))
    if dicom and not can_write_dicom(problem.meta.get("source"), problem.spec.get("kind")):
        raise DipkitError("--dicom needs a CT problem simulated from (or imported as) a DICOM CT slice")
    request = cfg.to_dict() if ckpt is None else ckpt["request"]
    if ckpt is not None and ckpt.get("config"):
        # the resolved configuration as the run used it (e.g. TV's chosen alpha); checkpoint settings as asked now
        asked = cfg.checkpoint
        cfg = RunConfig.from_dict(ckpt["config"], source=f"checkpoint {out / CHECKPOINT}")
        cfg.checkpoint = copy.deepcopy(asked)
        method = cfg.validate()
    device = resolve_device(cfg.device)
    problem = problem.to(device)
    resolved = resolve_config(cfg, method, problem)
    direct = getattr(method, "direct", False)
    rules = [] if direct else parse_rules(resolved.early_stop.rule)
    split = make_split(problem, cfg) if rules and needs_split(resolved.early_stop.rule) else None
    if ckpt is not None and ckpt.get("split") is not None:
        if split is None or not torch.equal(split.held_out.cpu(), ckpt["split"]["held_out"].cpu()):
            raise DipkitError("the checkpoint's validation split differs from this run's")
    mask = None
    if cfg.fov_mask:
        _, h, w = problem.img_shape
        mask = fov_mask(h, w, device=device, dtype=problem.y.dtype)

    every = cfg.checkpoint.every
    checkpointing = out is not None and every != 0
    resumed_at = list(ckpt.get("resumed_at", [])) if ckpt else []
    runs_done: dict = dict(ckpt.get("runs", {})) if ckpt else {}
    if ckpt is not None:
        resumed_at.append(int(((runs_done.get(ckpt.get("phase")) or {}).get("state") or {}).get("step", 0)))

    fingerprint = problem.fingerprint()
    plan = _ensemble_plan(method, problem if split is None else _fit_view(problem, split), resolved, device, ckpt,
                          net)

    def document(phase: str, runs: dict) -> dict:
        cfg_now = copy.deepcopy(resolved)
        cfg_now.params = dict(method.config())  # values chosen during the run (e.g. TV's alpha="auto")
        return {"format": "dipkit-checkpoint", "version": CHECKPOINT_VERSION, "dipkit_version": __version__,
                "request": request, "config": cfg_now.to_dict(), "phase": phase, "runs": runs,
                "problem": {"file": problem.file, "sha256": problem.file_sha256,
                            "fingerprint": fingerprint},
                "split": None if split is None else {**split.describe(), "held_out": split.held_out.cpu()},
                "resumed_at": resumed_at, "dicom": bool(dicom), "ensemble": plan}

    def checkpointer(phase: str, earlier: dict):
        if not checkpointing:
            return None

        def make(run_: _Run, t0: float):
            def payload(state):
                return document(phase, {**earlier, phase: run_.state_dict(run_.wall + time.perf_counter() - t0)})

            return Checkpointer(out / CHECKPOINT, payload, every=every, align=int(cfg.log_every))

        return make

    if checkpointing and ckpt is None:
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out / CHECKPOINT, document("main", {}))  # step 0: the configuration only
    mode = None if plan is None else plan["mode"]
    chunks = [(0, int(resolved.ensemble))] if plan is None else member_chunks(int(resolved.ensemble), plan["chunk"])
    if len(chunks) == 1:
        main = _run_once(method, problem, resolved, device, split=split, rules=rules, mask=mask, quiet=quiet,
                         console=console, restore=runs_done.get("main"), checkpoint=checkpointer("main", {}),
                         net=net, mode=mode)
    else:  # the ensemble in consecutive runs of at most plan["chunk"] members (dipkit.run.ensembles)
        runs, earlier = [], {}
        for i, (lo, hi) in enumerate(chunks):
            phase = "main" if i == 0 else f"main.{i}"
            sub = chunk_config(resolved, lo, hi, int(resolved.ensemble))
            if checkpointing and i > 0 and phase not in runs_done:
                save_checkpoint(out / CHECKPOINT, document(phase, earlier))
            run_i = _run_once(method if i == 0 else sub.validate(), problem, sub, device, split=split, rules=rules,
                              mask=mask, quiet=quiet, console=console, restore=runs_done.get(phase),
                              checkpoint=checkpointer(phase, dict(earlier)), net=net, mode=mode,
                              label=f"{cfg.method} [members {lo + 1}–{hi} of {resolved.ensemble}]")
            if checkpointing:  # complete: a resumed run replays it (no steps) for its results
                earlier[phase] = run_i.state_dict(run_i.wall)
            runs.append(run_i)
        main = join_runs(runs, chunks)

    def do_refit(val_cb) -> _Run:
        """Rerun on all data for the val rule's k* steps, with the main run's rate reductions at the
        same steps (a plateau schedule has no held-out misfit to follow in the refit)."""
        again = copy.deepcopy(resolved)
        again.iterations = int(val_cb.iteration)
        earlier = {}
        if checkpointing:  # the main run, complete: a resumed refit replays it (no steps) for its results
            earlier = {"main": main.state_dict(main.wall)}
            if "refit" not in runs_done:
                save_checkpoint(out / CHECKPOINT, document("refit", earlier))
        refit = _run_once(again.validate(), problem, again, device, split=None, rules=[], mask=mask,
                          quiet=quiet, console=console, restore=runs_done.get("refit"),
                          checkpoint=checkpointer("refit", earlier), net=net,
                          replay=main.schedule.changes if len(chunks) == 1 and main.schedule is not None else None)
        return refit

    return _finish(main, method=method, problem=problem, cfg=cfg, resolved=resolved, split=split, mask=mask,
                   device=device, request=request, resumed_at=resumed_at, out=out, dicom=dicom, net=net,
                   do_refit=do_refit, plan=None if plan is None else {**plan, "runs": len(chunks)})


def direct_reconstruction(problem) -> torch.Tensor | None:
    """The problem's direct reconstruction ``[1, C, H, W]`` (the ``naive`` baseline: FBP, zero-filled
    magnitude, the degraded input, least squares) for ``overview.png``; None when there is none."""
    from ..baselines.naive import naive_reconstruction

    try:
        return naive_reconstruction(problem).detach()
    except (DipkitError, RuntimeError, ValueError, NotImplementedError):
        return None


def _finish(main: _Run, *, method, problem, cfg: RunConfig, resolved: RunConfig, split, mask, device, request,
            resumed_at, out, dicom, net, do_refit, naive=None, plan=None, project: bool = True,
            pictures: bool = True) -> RunResult:
    """The result of a finished run (``main``): selections, metrics, estimates; writes ``out`` when
    given. ``do_refit(val_cb) -> _Run``: the refit of ``validation.refit`` (None: no refit).
    ``naive``: the problem's direct reconstruction when the caller has it (computed here when ``out``
    is given and it is None). ``plan``: an ensemble's plan (:mod:`dipkit.run.ensembles`), recorded
    in ``ensemble``. ``project``: apply ``data_consistency`` to the reconstruction
    (:mod:`dipkit.run.consistency`; ``auto`` leaves its candidates as they are and projects what it returns)."""
    from .. import __version__
    from .consistency import data_consistency

    direct = getattr(method, "direct", False)
    state, recorder = main.state, main.recorder
    history = recorder.history()
    final = state.estimate
    members = final.shape[0]
    estimates = {"final": final}
    chosen = final  # per member: the first rule's selection, else the final estimate
    es_info, selections = None, {}
    for i, cb in enumerate(main.rules):
        selections[cb.rule] = selection(cb, problem, mask)
        if i == 0:
            es_info = selections[cb.rule]
            if cb.estimate is not None:
                estimates["early_stop"] = chosen = cb.estimate
    recon = chosen
    val_info = None
    wall = main.wall
    rollbacks = [] if main.healer is None else list(main.healer.records)
    val_cb = next((cb for cb in main.rules if cb.rule == "val"), None)
    if split is not None and val_cb is None:  # a split without the val rule (an auto run's baseline): its result
        p, s = metric_pair(recon, problem, mask)
        val_info = {**split.describe(), "iteration": state.step, "misfit": float(split.misfit(recon).mean()),
                    "psnr": p, "ssim": s, "refit": None}
    elif split is not None:
        val_info = {**split.describe(), **{k: v for k, v in selection(val_cb, problem, mask).items()
                                           if k in ("iteration", "misfit", "psnr", "ssim")}, "smooth": val_cb.smooth,
                    "refit": None}
        if do_refit is not None and cfg.validation.refit and val_cb.iteration:
            refit = do_refit(val_cb)
            recon = chosen = estimates["refit"] = refit.state.estimate
            p, s = metric_pair(recon, problem, mask)
            val_info["refit"] = {"iterations": refit.state.step, "psnr": p, "ssim": s,
                                 "rate_changes": [] if refit.schedule is None else list(refit.schedule.changes)}
            wall += refit.wall
            rollbacks += [] if refit.healer is None else [{**r, "phase": "refit"} for r in refit.healer.records]
    peak = {"psnr": None, "iteration": None}
    if history.get("psnr"):
        j = int(np.nanargmax(history["psnr"]))
        peak = {"psnr": finite(history["psnr"][j]), "iteration": history["step"][j]}
        if recorder.best_estimate is not None and members == 1:
            estimates["peak"] = recorder.best_estimate
    uncertainty, ens_info = None, None
    if members > 1:
        recon, uncertainty = ensemble_mean_std(chosen)
        ens_info = ensemble_info(cfg, main, chosen, problem, mask)
        if plan is not None:
            ens_info.update(plan)
        estimates = {k: v.mean(0, keepdim=True) for k, v in estimates.items()}
    if "posterior_var" in state.aux:  # SGLD: the posterior's pixel-wise std
        uncertainty = posterior_std(state.aux["posterior_var"], final)
    dc_info = None
    if project:
        recon, dc_info = data_consistency(problem, recon, resolved.data_consistency, mask)
    fp, fs = metric_pair(estimates["final"], problem, mask)
    rp, rs = metric_pair(recon, problem, mask)
    iters = None if direct else state.step
    ck = main.checkpointer
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
        stop=stop_info(state, main.budget, main.rules, resolved.time_limit),
        schedule=None if main.schedule is None else main.schedule.describe(),
        device=str(device),
        precision=resolved.precision,
        fov_mask=bool(cfg.fov_mask),
        params=method.config(),
        ensemble=ens_info,
        uncertainty=uncertainty_info(uncertainty, recon, problem),
        request=request,
        dipkit_version=__version__,
        problem_file=problem.file,
        problem_sha256=problem.file_sha256,
        rollbacks=rollbacks,
        resumed_at=resumed_at,
        checkpoint=ck.describe() if ck is not None else {"every": None, "written": 0},
    )
    if dc_info is not None:
        result["data_consistency"] = dc_info
    if resolved.init.kind != "random":
        result["init"] = state.meta.get("init") or {"kind": resolved.init.kind, "resumed": True}
    if net is not None:
        from ..nets import count_parameters

        result["net"] = {"module": type(net).__name__, "parameters": count_parameters(net)}
    result.reconstruction = recon
    result.uncertainty = uncertainty
    result.members = chosen if members > 1 else None
    result.estimates = estimates
    result.history = history
    result.source = problem.meta.get("source")
    result.operator_kind = problem.spec.get("kind")
    result.direct = naive if naive is not None or out is None else direct_reconstruction(problem)
    resolved.params = dict(method.config())  # values chosen during the run (e.g. TV's alpha="auto")
    result.config = resolved.to_dict()
    if out is not None:
        write_run_dir(out, result, dicom=dicom, pictures=pictures)
        if not cfg.checkpoint.keep:
            remove_checkpoint(out)
    return result
