"""Build a run from a :class:`~dipkit.config.RunConfig` and start it on the engine.

:func:`reconstruct` is what ``dipkit reconstruct`` (and every bench run) calls. The data flow of
one run::

    RunConfig ──validate()──▶ Method ─┐
    Problem ──to(device)──▶ State (operator, y, network f_θ, input z, meta) ──▶ engine.run(method,
        state, [HistoryRecorder, stopping rule, progress bar]) ──▶ RunResult ──▶ rundir.write_run_dir

The files of the run directory and their reading back are in :mod:`dipkit.rundir`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig
from .errors import DipkitError
from .metrics import fov_mask, psnr, ssim
from .rundir import RunResult, write_run_dir

__all__ = ["reconstruct", "resolve_device", "build_state", "RunResult"]


def resolve_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise DipkitError("--device cuda requested but no CUDA GPU is available (use --device auto or cpu)")
    return torch.device(name)


def build_state(method, problem, cfg: RunConfig, device: torch.device):
    """The engine :class:`~dipkit.engine.State` of ``method`` on ``problem`` (already on ``device``):
    the seeded generator, the network and its input for network methods, the step budget, the
    problem's metadata and the engine settings (precision, history interval)."""
    from .engine import State

    gen = torch.Generator(device=device).manual_seed(int(cfg.seed))
    steps = 1 if getattr(method, "direct", False) else int(cfg.iterations or method.default_iterations)
    state = State(physics=problem.physics, y=problem.y, max_steps=steps, generator=gen, meta=problem.state_meta(),
                  report_every=int(cfg.log_every),
                  autocast_dtype=torch.bfloat16 if cfg.precision == "bf16" else None)
    if method.uses_network:
        from .inputs import make_input
        from .nets import build_net

        state.z = make_input(cfg.input.kind, problem, generator=gen, channels=cfg.input.channels,
                             std=cfg.input.std)
        c = problem.img_shape[0]
        state.net = build_net(cfg.net.name, state.z.shape[1], c, **cfg.net.options).to(
            device=device, dtype=problem.y.dtype)
        state.net.train()
        state.z_perturb = float(cfg.input.perturb)
    return state


def _metric_pair(x, problem, mask):
    if problem.x_true is None or x is None:
        return None, None
    return float(psnr(x, problem.x_true, mask=mask).mean()), float(ssim(x, problem.x_true, mask=mask).mean())


def _finite(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def reconstruct(problem, cfg: RunConfig, out_dir: str | Path | None = None, *, quiet: bool = False,
                console=None, method=None) -> RunResult:
    """Run ``cfg.method`` on ``problem``; write the run directory if ``out_dir`` is given.

    ``method``: the method built by ``cfg.validate()`` when the caller already has it (it is built
    once per run). ``metrics.json`` holds ``method, task, iterations`` (steps run; null for a
    direct method such as FBP), ``wall_time_s, iterations_per_s, psnr, ssim`` (of the saved
    reconstruction), ``peak: {psnr, iteration}`` (the best PSNR in the history: an oracle),
    ``final: {psnr, ssim, iteration}``, ``early_stop: {rule, mode, iteration, psnr, ssim}`` or
    null, ``stop_reason``, ``device``, ``fov_mask``, ``params`` (the method's hyper-parameters).
    PSNR/SSIM are null without a ground truth.
    """
    from .engine import run
    from .engine.progress import ProgressBar
    from .engine.recorder import HistoryRecorder
    from .stopping import make_stopping_rule, parse_rule

    if method is None:
        method = cfg.validate()
    device = resolve_device(cfg.device)
    problem = problem.to(device)
    torch.manual_seed(int(cfg.seed))
    mask = None
    if cfg.fov_mask:
        _, h, w = problem.img_shape
        mask = fov_mask(h, w, device=device, dtype=problem.y.dtype)

    state = build_state(method, problem, cfg, device)
    recorder = HistoryRecorder(every=int(cfg.log_every), x_true=problem.x_true, mask=mask)
    callbacks = [recorder]
    es_cb = None
    name, mode = parse_rule(cfg.early_stop.rule)
    if name is not None:
        es = cfg.early_stop
        es_cb = make_stopping_rule(name, mode, window=int(es.window), patience=int(es.patience),
                                   delta=float(es.delta), check_every=int(cfg.log_every))
        callbacks.append(es_cb)
    if not quiet:
        callbacks.append(ProgressBar(recorder, description=cfg.method, console=console))
    t0 = time.perf_counter()
    run(method, state, callbacks)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    history = recorder.history()

    final = state.estimate
    estimates = {"final": final}
    recon = final
    es_info = None
    if es_cb is not None:
        es_info = {"rule": es_cb.rule, "mode": es_cb.mode, "iteration": None, "psnr": None, "ssim": None}
        if es_cb.estimate is not None:
            estimates["early_stop"] = recon = es_cb.estimate
            p, s = _metric_pair(es_cb.estimate, problem, mask)
            es_info.update(iteration=es_cb.iteration, psnr=p, ssim=s)
    peak = {"psnr": None, "iteration": None}
    if history.get("psnr"):
        j = int(np.nanargmax(history["psnr"]))
        peak = {"psnr": history["psnr"][j], "iteration": history["step"][j]}
        if recorder.best_estimate is not None:
            estimates["peak"] = recorder.best_estimate
    fp, fs = _metric_pair(final, problem, mask)
    rp, rs = _metric_pair(recon, problem, mask)
    iters = None if getattr(method, "direct", False) else state.step
    result = RunResult(
        method=cfg.method,
        task=problem.task,
        iterations=iters,
        wall_time_s=wall,
        iterations_per_s=(state.step / wall if iters and wall > 0 else None),
        psnr=_finite(rp),
        ssim=_finite(rs),
        peak={"psnr": _finite(peak["psnr"]), "iteration": peak["iteration"]},
        final={"psnr": _finite(fp), "ssim": _finite(fs), "iteration": iters},
        early_stop=es_info,
        stop_reason=state.stop_reason,
        device=str(device),
        fov_mask=bool(cfg.fov_mask),
        params=method.config(),
    )
    result.reconstruction = recon
    result.estimates = estimates
    result.history = history
    result.config = cfg.to_dict()
    if out_dir is not None:
        write_run_dir(Path(out_dir), result)
    return result
