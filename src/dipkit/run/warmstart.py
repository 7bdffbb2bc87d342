r"""Supervised pre-training for warm-started DIP (the Educated DIP; CT paper §5.1, eq. 38).

:func:`pretrain` (``dipkit pretrain``) trains a network preset on a synthetic paired dataset drawn
on the fly: random-ellipse phantoms :math:`x^n` (:func:`dipkit.phantoms.random_ellipses`) pushed
through the problem's operator with the problem's noise, :math:`y^n = A x^n + \eta^n`, the network
input being the input a run would build from :math:`y^n` (``input_kind``: ``fbp`` = :math:`A^\dagger
y^n`, FBP for CT, as in eq. 38; or ``adjoint``), the target the phantom::

    for s = 1 … steps:
        draw B phantoms x^n and noise η^n (one seeded generator);  y^n = A x^n + η^n
        z^n = A† y^n
        L(θ) = (1/B) Σ_n mean_pixels (f_θ(z^n) − x^n)²                       (eq. 38, a mean)
        Adam step on θ (learning rate lr; schedule="cosine": decayed to lr/100 by the last step)
        at s = round(i·steps/K), i = 1 … K: record θ^(i)                      (the trajectory, §5.2)

The operator is the task's (``task`` with its simulation options, at ``size``²) or that of an
existing problem (``like``: its operator and its noise level — relative ``noise_level`` when the
problem has one, else its absolute σ). Noise follows the task's rule: relative noise
:math:`\sigma_n = r\cdot\mathrm{mean}|Ax^n|` per phantom, or an absolute std.

Written (each atomically): the weights ``out`` (a state dict, :mod:`dipkit.nets.weights`), the
trajectory ``<out stem>.trajectory.pt`` (:mod:`dipkit.nets.subspace`: K snapshots of the trainable
parameters, for ``subspace-dip``), and last ``<out stem>.json``: how it was made (task and options,
operator spec, net and options, input kind, steps, batch size, seed, lr, dipkit and torch versions,
final loss, PSNR of input and output on held-out phantoms, wall time, the command).

Use: ``dipkit reconstruct P.npz --method dip --set net.weights=W.pt`` (same ``net.name``, options and
input kind as in pre-training), ``--method subspace-dip --set net.weights=W.pt``.

Reference: R. Barbano, J. Leuschner, M. Schmidt, A. Denker, A. Hauptmann, P. Maass, B. Jin,
"An Educated Warm Start for Deep Image Prior-based Micro CT Reconstruction", IEEE TCI 2022.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import DipkitError

__all__ = ["pretrain", "record_path", "PRETRAIN_INPUTS"]

#: network inputs pre-training can use (informative ones: a network trained to map noise to
#: phantoms learns only their mean)
PRETRAIN_INPUTS = ("fbp", "adjoint")


def record_path(weights: str | Path) -> Path:
    """The JSON record beside a weights file (``W.pt`` → ``W.json``)."""
    return Path(weights).with_suffix(".json")


def _template(task, like, size, task_options, seed, device):
    """The problem whose operator and noise rule the training pairs use."""
    from ..problem import Problem
    from ..tasks import get_task

    if like is not None:
        problem = like if isinstance(like, Problem) else Problem.load(like)
        if problem.is_external:
            raise DipkitError("pre-training needs a dipkit operator (a problem with an operator spec)")
        if task_options:
            raise DipkitError("with like= the operator and noise come from the problem: give no task options")
        return problem.to(device)
    t = get_task(task)
    wrong = sorted(set(task_options) - set(t.options))
    if wrong:
        raise DipkitError(f"task {t.name!r} does not take " + ", ".join(wrong)
                          + f" (it takes: {', '.join(t.options) or 'none'})")
    from ..phantoms import random_ellipses

    img = random_ellipses(1, size, generator=torch.Generator().manual_seed(int(seed)))[0].numpy()
    problem = t.simulate(img.astype(np.float32), seed=int(seed), **task_options)
    return problem.to(device)


def _noise_rule(problem) -> tuple[str, float]:
    level = problem.meta.get("noise_level")
    if level is not None:
        return "relative", float(level)
    sigma = problem.noise_sigma
    return "absolute", float(sigma or 0.0)


def _as_image(x: torch.Tensor, problem) -> torch.Tensor:
    """Gray phantoms ``[B, 1, H, W]`` as the problem's images: MRI (real, imaginary) channels get a
    zero imaginary part, other multi-channel images repeat the phantom."""
    c = problem.img_shape[0]
    if c == 1:
        return x
    if str(problem.spec.get("kind", "")).startswith("mri") and c == 2:
        return torch.cat([x, torch.zeros_like(x)], 1)
    return x.repeat(1, c, 1, 1)


def _psnr(x, ref) -> torch.Tensor:
    mse = (x - ref).pow(2).flatten(1).mean(1).clamp_min(1e-20)
    return (-10 * torch.log10(mse)).mean()


def pretrain(out: str | Path, *, task: str = "ct", like=None, size: int = 64, task_options: dict | None = None,
             net: str = "unet", net_options: dict | None = None, input_kind: str = "fbp", steps: int = 1000,
             batch_size: int = 4, lr: float = 1e-3, schedule: str = "cosine", seed: int = 0, checkpoints: int = 32,
             device: str = "cpu",
             threads: int | None = None, log_every: int = 100, quiet: bool = False) -> dict:
    """Pre-train ``net`` on random-ellipse phantoms for ``task`` (or the operator of the problem
    ``like``, a path or :class:`~dipkit.problem.Problem`) and write the weights, the trajectory and
    the JSON record (module docs). Returns the record.

    :param out: the weights file to write (``.pt``).
    :param task_options: the task's simulation options (``views``, ``noise_level`` …, as
        ``dipkit simulate``); not with ``like``.
    :param net_options: network preset options (as ``net.<option>`` of a run).
    :param input_kind: ``fbp`` (A†y, default) or ``adjoint``; a run from these weights should use the same.
    :param schedule: ``"cosine"`` (default: cosine decay from ``lr`` to ``lr/100``) or ``"constant"``.
    :param checkpoints: K, the trajectory snapshots (uniformly spaced; for ``subspace-dip``, k ≤ K − 1).
    """
    from .. import __version__
    from ..inputs import make_input
    from ..io import save_json
    from ..nets import build_net, count_parameters
    from ..nets.subspace import flat_parameters, save_trajectory, trajectory_path
    from ..nets.weights import save_weights
    from ..phantoms import random_ellipses
    from ..problem import Problem
    from .resolve import resolve_device

    steps, batch_size, checkpoints, size = int(steps), int(batch_size), int(checkpoints), int(size)
    if steps < 1 or batch_size < 1 or checkpoints < 1 or size < 8:
        raise DipkitError("pretrain needs steps ≥ 1, batch size ≥ 1, checkpoints ≥ 1 and size ≥ 8")
    if not float(lr) > 0:
        raise DipkitError(f"lr must be positive, got {lr}")
    if schedule not in ("cosine", "constant"):
        raise DipkitError(f"schedule must be cosine or constant, got {schedule!r}")
    if input_kind not in PRETRAIN_INPUTS:
        raise DipkitError(f"pre-training input must be one of {', '.join(PRETRAIN_INPUTS)}, got {input_kind!r}")
    net_options = dict(net_options or {})
    if "weights" in net_options:
        raise DipkitError("pretrain starts from a random initialisation: drop net.weights")
    out = Path(out)
    if out.suffix != ".pt":
        raise DipkitError(f"the weights file must end in .pt, got {out.name}")
    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    task_options = {k: v for k, v in (task_options or {}).items() if v is not None}
    problem = _template(task, like, size, task_options, seed, dev)
    c, h, w = problem.img_shape
    if h != w:
        raise DipkitError(f"random-ellipse phantoms are square; the problem's image is {h}×{w}")
    size = h
    rule, level = _noise_rule(problem)
    gen = torch.Generator().manual_seed(int(seed))

    def batch(n, g):
        x = _as_image(random_ellipses(n, size, generator=g), problem).to(device=dev, dtype=problem.y.dtype)
        with torch.no_grad():
            clean = problem.physics.A(x)
            eps = torch.randn(clean.shape, generator=g, dtype=clean.dtype).to(dev)
            if rule == "relative":
                sigma = level * clean.abs().flatten(1).mean(1).view(-1, *[1] * (clean.ndim - 1))
            else:
                sigma = level
            y = clean + sigma * eps
            view = Problem(physics=problem.physics, y=y, spec=problem.spec, meta=problem.meta)
            z = make_input(input_kind, view, generator=g)
        return z, x

    torch.manual_seed(int(seed))
    z0, _ = batch(1, torch.Generator().manual_seed(int(seed) + 1))
    model = build_net(net, z0.shape[1], c, **net_options).to(device=dev, dtype=problem.y.dtype)
    model.train()
    from ..core.optim import adam

    opt = adam(model.parameters(), lr=float(lr))
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=float(lr) / 100)
             if schedule == "cosine" else None)
    names, shapes, _ = flat_parameters(model)
    k_snap = min(checkpoints, steps)
    snap_at = {round(i * steps / k_snap): i for i in range(1, k_snap + 1)}
    theta = torch.empty((k_snap, count_parameters(model, trainable_only=True)), dtype=torch.float32)
    losses = torch.zeros(steps, device=dev)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        z, x = batch(batch_size, gen)
        loss = (model(z) - x).pow(2).mean()  # eq. (38), a mean over samples and pixels
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses[step - 1] = loss.detach()
        if step in snap_at:
            theta[snap_at[step] - 1] = flat_parameters(model)[2].float().cpu()
        if not quiet and log_every and (step % log_every == 0 or step == steps):
            recent = float(losses[max(0, step - log_every):step].mean())  # read every log_every steps
            print(f"step {step}/{steps}  loss {recent:.3e}  {time.perf_counter() - t0:.0f}s", flush=True)
    wall = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        zv, xv = batch(8, torch.Generator().manual_seed(int(seed) + 10_000))
        val = {"phantoms": 8, "psnr_input": round(float(_psnr(zv, xv)), 3),
               "psnr_output": round(float(_psnr(model(zv), xv)), 3)}
    model.train()
    tail = max(1, min(50, steps // 10))
    final_loss = float(losses[-tail:].mean())
    traj = trajectory_path(out)
    save_trajectory(traj, names=names, shapes=shapes, steps=sorted(snap_at), theta=theta)
    save_weights(out, model)
    record = {
        "format": "dipkit-pretrain", "version": 1,
        "task": problem.task, "task_options": task_options, "like": None if like is None else (
            problem.file or "<Problem>"), "size": size, "operator": problem.spec,
        "noise": {"rule": rule, "value": level},
        "net": {"name": net, "options": net_options, "in_channels": int(z0.shape[1]), "out_channels": int(c),
                "parameters": count_parameters(model)},
        "input_kind": input_kind, "steps": steps, "batch_size": batch_size, "lr": float(lr), "schedule": schedule,
        "seed": int(seed),
        "optimizer": "adam", "loss": "mean squared error f_θ(A†y) vs x (eq. 38)",
        "dataset": "random ellipses (dipkit.phantoms.random_ellipses), drawn on the fly",
        "final_loss": final_loss, "validation": val,
        "trajectory": {"file": traj.name, "snapshots": k_snap, "steps": sorted(snap_at)},
        "wall_time_s": round(wall, 2), "device": str(dev), "threads": torch.get_num_threads(),
        "dipkit_version": __version__, "torch": torch.__version__,
        "command": _command(out, task=problem.task, like=like, size=size, task_options=task_options, net=net,
                            net_options=net_options, input_kind=input_kind, steps=steps, batch_size=batch_size,
                            lr=lr, schedule=schedule, seed=seed, checkpoints=checkpoints),
    }
    save_json(record_path(out), record)
    return record


def _command(out, *, task, like, size, task_options, net, net_options, input_kind, steps, batch_size, lr, schedule,
             seed, checkpoints) -> str:
    """The ``dipkit pretrain`` command that reproduces a :func:`pretrain` call."""
    parts = ["dipkit", "pretrain"]
    if like is not None and not hasattr(like, "physics"):
        parts += ["--like", str(like)]
    else:
        parts += ["--task", task, "--size", str(size)]
        for k, v in task_options.items():
            parts += ["--" + k.replace("_", "-"), str(v)]
    parts += ["--net", net]
    for k, v in net_options.items():
        parts += ["--set", f"net.{k}={v}"]
    parts += ["--input", input_kind, "--steps", str(steps), "--batch-size", str(batch_size), "--lr", f"{lr:g}",
              "--schedule", schedule, "--seed", str(seed), "--checkpoints", str(checkpoints), "--out", str(out)]
    return shlex.join(parts)
