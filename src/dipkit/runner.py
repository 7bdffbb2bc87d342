"""Run a method on a problem and write the run directory.

:func:`reconstruct` is what ``dipkit reconstruct`` calls: it builds the method, network, input and
callbacks from a :class:`~dipkit.config.RunConfig`, runs the engine (or a baseline), and writes,
each file atomically (``metrics.json`` last, so its presence marks a complete run):

* ``reconstruction.npy`` / ``reconstruction.png`` — the result (the early-stopped estimate when a
  stopping rule selected one, else the final one), ``[C, H, W]`` float32;
* ``estimates.npz`` — ``final``, and when available ``early_stop`` and ``peak`` (oracle) estimates;
* ``config.yaml`` — the resolved configuration (rerun with ``--config``);
* ``history.csv`` — ``step, loss, <terms…>[, psnr, ssim]`` every ``log_every`` steps, last row =
  final step;
* ``psnr_curve.png`` — when a ground truth is known;
* ``metrics.json`` — see :func:`reconstruct`.
"""

from __future__ import annotations

import csv
import io as _io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import RunConfig
from .errors import DipkitError
from .io import atomic_write, save_json, save_npy, save_png, save_text, save_yaml
from .metrics import fov_mask, psnr, ssim

__all__ = ["reconstruct", "resolve_device", "RunResult"]


def resolve_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise DipkitError("--device cuda requested but no CUDA GPU is available (use --device auto or cpu)")
    return torch.device(name)


class RunResult(dict):
    """The ``metrics.json`` dictionary, with the tensors of the run as attributes."""

    reconstruction: torch.Tensor
    estimates: dict
    history: dict


def _metric_pair(x, problem, mask):
    if problem.x_true is None or x is None:
        return None, None
    p = psnr(x, problem.x_true, mask=mask)
    s = ssim(x, problem.x_true, mask=mask)
    return float(p.mean()), float(s.mean())


def _finite(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def reconstruct(problem, cfg: RunConfig, out_dir: str | Path | None = None, *, quiet: bool = False,
                console=None) -> RunResult:
    """Run ``cfg.method`` on ``problem``; write the run dir if ``out_dir`` is given.

    ``metrics.json`` holds ``method, task, iterations (steps run; null for FBP), wall_time_s,
    iterations_per_s, psnr, ssim`` (of the saved reconstruction), ``peak: {psnr, iteration}`` (the
    best PSNR in the history: an oracle), ``final: {psnr, ssim, iteration}``,
    ``early_stop: {rule, mode, iteration, psnr, ssim}`` or null, ``stop_reason``, ``device``,
    ``params`` (the method's hyper-parameters). PSNR/SSIM are null without a ground truth.
    """
    from .methods import make_method

    cfg.validate()
    method = make_method(cfg.method, **cfg.params)
    device = resolve_device(cfg.device)
    problem = problem.to(device)
    torch.manual_seed(int(cfg.seed))
    mask = None
    if cfg.fov_mask:
        _, h, w = problem.img_shape
        mask = fov_mask(h, w, device=device, dtype=problem.y.dtype)

    from .engine.recorder import HistoryRecorder

    recorder = HistoryRecorder(every=int(cfg.log_every), x_true=problem.x_true, mask=mask)
    es_cb = None
    t0 = time.perf_counter()
    if method.uses_network:
        state, es_cb = _run_network_method(method, problem, cfg, recorder, device, quiet, console)
        final = state.estimate
        steps = state.step
        stop_reason = state.stop_reason
    else:
        final, steps = _run_baseline(method, problem, cfg, recorder)
        stop_reason = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    history = recorder.history()

    estimates = {"final": final}
    es_info = None
    recon = final
    if es_cb is not None and es_cb.estimate is not None:
        estimates["early_stop"] = es_cb.estimate
        recon = es_cb.estimate
        p, s = _metric_pair(es_cb.estimate, problem, mask)
        es_info = {"rule": es_cb.rule, "mode": es_cb.mode, "iteration": es_cb.iteration,
                   "psnr": p, "ssim": s}
    elif es_cb is not None:
        es_info = {"rule": es_cb.rule, "mode": es_cb.mode, "iteration": None, "psnr": None, "ssim": None}
    peak = {"psnr": None, "iteration": None}
    if "psnr" in history and history["psnr"]:
        j = int(np.nanargmax(history["psnr"]))
        peak = {"psnr": history["psnr"][j], "iteration": history["step"][j]}
        if recorder.best_estimate is not None:
            estimates["peak"] = recorder.best_estimate
    fp, fs = _metric_pair(final, problem, mask)
    rp, rs = _metric_pair(recon, problem, mask)
    iters = steps if (method.uses_network or steps) else None
    result = RunResult(
        method=cfg.method,
        task=problem.task,
        iterations=iters,
        wall_time_s=wall,
        iterations_per_s=(steps / wall if iters and wall > 0 else None),
        psnr=_finite(rp),
        ssim=_finite(rs),
        peak={"psnr": _finite(peak["psnr"]), "iteration": peak["iteration"]},
        final={"psnr": _finite(fp), "ssim": _finite(fs), "iteration": iters},
        early_stop=es_info,
        stop_reason=stop_reason,
        device=str(device),
        fov_mask=bool(cfg.fov_mask),
        params=method.config(),
    )
    result.reconstruction = recon
    result.estimates = estimates
    result.history = history
    if out_dir is not None:
        write_run_dir(Path(out_dir), result, cfg, problem)
    return result


def _run_network_method(method, problem, cfg, recorder, device, quiet, console):
    from .engine import State, run
    from .engine.progress import ProgressBar
    from .inputs import make_input
    from .nets import build_net
    from .stopping import make_stopping_rule, parse_rule

    gen = torch.Generator(device=device).manual_seed(int(cfg.seed))
    z = make_input(cfg.input.kind, problem, generator=gen, channels=cfg.input.channels, std=cfg.input.std)
    c = problem.img_shape[0]
    net = build_net(cfg.net.name, z.shape[1], c, **cfg.net.options).to(device=device, dtype=problem.y.dtype)
    steps = int(cfg.iterations or method.default_iterations)
    state = State(physics=problem.physics, y=problem.y, max_steps=steps, generator=gen,
                  net=net, z=z, z_perturb=float(cfg.input.perturb),
                  autocast_dtype=torch.bfloat16 if cfg.precision == "bf16" else None)
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
    net.train()
    run(method, state, callbacks)
    return state, es_cb


def _run_baseline(method, problem, cfg, recorder):
    """Run a network-free method; its observer fills the same history as a DIP run."""
    from types import SimpleNamespace

    from .methods.base import data_fidelity

    alpha = getattr(method, "alpha", None)
    # iterations are meaningless for a direct method (default_iterations None, e.g. FBP)
    total = 0 if method.default_iterations is None else int(cfg.iterations or method.default_iterations)

    def observe(iteration, x):
        terms = {"data": data_fidelity(problem.physics, x, problem.y)}
        if alpha is not None:
            from .priors.tv import tv

            terms["tv"] = alpha * tv(x)
        st = SimpleNamespace(step=int(iteration), max_steps=total, estimate=x, terms=terms,
                             loss=sum(terms.values()))
        recorder._sample(st)

    x = method.reconstruct(problem, iterations=total or None, observer=observe,
                           observe_every=int(cfg.log_every))
    if not recorder.steps or recorder.steps[-1] != total:
        observe(total, x)
    recorder.read()
    return x, total


# ---------------------------------------------------------------------- writing
def _to_image(x: torch.Tensor) -> np.ndarray:
    return x.detach()[0].to(torch.float32).cpu().numpy()


def write_run_dir(out: Path, result: RunResult, cfg: RunConfig, problem) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DipkitError(f"cannot create output directory {out}: {exc.strerror}") from None
    recon = _to_image(result.reconstruction)
    save_npy(out / "reconstruction.npy", recon)
    # 2 channels = a complex image (MRI): the PNG shows its magnitude
    save_png(out / "reconstruction.png", np.sqrt((recon**2).sum(0, keepdims=True)) if recon.shape[0] == 2 else recon)
    with atomic_write(out / "estimates.npz", "wb") as fh:
        np.savez(fh, **{k: _to_image(v) for k, v in result.estimates.items() if v is not None})
    save_yaml(out / "config.yaml", cfg.to_dict())
    hist = result.history
    cols = ["step"] + [c for c in hist if c != "step"]
    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for i in range(len(hist["step"])):
        w.writerow([hist["step"][i]] + [f"{hist[c][i]:.8g}" for c in cols[1:]])
    save_text(out / "history.csv", buf.getvalue())
    if "psnr" in hist and hist["psnr"]:
        _plot_psnr(out / "psnr_curve.png", result)
    save_json(out / "metrics.json", dict(result))


def _plot_psnr(path: Path, result: RunResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import save_figure

    h = result.history
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot(h["step"], h["psnr"], lw=1.2, label=result["method"])
    if result["peak"]["iteration"] is not None:
        ax.axvline(result["peak"]["iteration"], color="g", ls="--", lw=0.8,
                   label=f"peak {result['peak']['psnr']:.2f} dB")
    es = result.get("early_stop")
    if es and es.get("iteration") is not None:
        ax.axvline(es["iteration"], color="r", ls="--", lw=0.8, label=f"early stop {es['psnr']:.2f} dB")
    ax.set_xlabel("iteration")
    ax.set_ylabel("PSNR [dB]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)
