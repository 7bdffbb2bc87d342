r"""How a run's network starts: random (the DIP's default) or fitted to the classical TV image first.

``init.kind = tv`` (issue 16, item 5: "a network initialised on the TV image then fitted with the
TV-regularised data term") makes the network *start* where the classical baseline ends. Before the
method's first step, on the data the run fits (the fit view of a ``val`` run, so held-out entries
stay out)::

    x_TV = TV reconstruction of (A, y), α chosen without a ground truth      (dipkit.baselines.tv)
    for s = 1 … init.steps:                                                 (Adam, rate init.lr)
        L(θ) = mean_pixels (f_θ(z) − x_TV)²
        take a gradient step w.r.t. θ
    then the method runs from this θ (its own optimiser, from a fresh state)

The method (e.g. ``dip-tv``, whose loss is ½‖A f_θ(z) − y‖² + α TV(f_θ(z))) then moves the image
away from ``x_TV`` only where the data and its regulariser ask for it, and the ``val`` rule picks
the iterate — which can be the first, so the run's pick is never much worse than a network copy
of TV. Like a warm start from ``dipkit pretrain`` (:mod:`dipkit.run.warmstart`) it is how the
network is *made*, so every network method can use it without change (DESIGN.md, "Warm starts").

An ensemble's members are each fitted from their own initialisation to the same ``x_TV``. A
resumed run does not redo the fit (its weights come from the checkpoint). What it cost and how
close the network came to ``x_TV`` is in ``metrics.json`` (``init``).
"""

from __future__ import annotations

import math
import time

import torch

from ..errors import DipkitError

__all__ = ["INIT_KINDS", "tv_target", "fit_to_image", "initialise"]

#: what ``init.kind`` may be
INIT_KINDS = ("random", "tv")


def tv_target(problem) -> torch.Tensor:
    """The classical TV reconstruction of ``problem`` (α chosen by its own held-out misfit), detached:
    the ``tv`` network input (:mod:`dipkit.inputs`)."""
    from ..inputs import INPUTS

    with torch.no_grad():
        return INPUTS["tv"](problem, channels=None, std=0.0, generator=None)


def fit_to_image(net: torch.nn.Module, z: torch.Tensor, target: torch.Tensor, *, steps: int,
                 lr: float) -> dict:
    r"""Fit ``net`` so that ``net(z) ≈ target``: ``steps`` Adam steps (rate ``lr``) on the mean square
    difference. No host–device synchronisation inside the loop; returns ``{steps, mse,
    psnr_to_target}`` (the fitted output against ``target``; PSNR on the target's range)."""
    params = [p for p in net.parameters() if p.requires_grad]
    from ..core.optim import adam

    opt = adam(params, lr=float(lr))
    target = target.detach()
    net.train()
    for _ in range(int(steps)):
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((net(z) - target) ** 2)
        loss.backward()
        opt.step()
    with torch.no_grad():
        mse = float(torch.mean((net(z) - target) ** 2))
        peak = float(target.abs().max()) or 1.0
    return {"steps": int(steps), "mse": mse, "psnr_to_target": 10.0 * math.log10(peak ** 2 / max(mse, 1e-30))}


def initialise(nets: list, zs: list, problem, cfg, method) -> dict | None:
    """Apply ``cfg.init`` to the freshly built networks ``nets`` (inputs ``zs``) of a run on
    ``problem`` (its fit view). Returns the record for ``metrics.json`` or None (``random``)."""
    kind = cfg.init.kind
    if kind == "random":
        return None
    if kind != "tv":
        raise DipkitError(f"unknown init.kind {kind!r} (choose from {', '.join(INIT_KINDS)})")
    t0 = time.perf_counter()
    target = tv_target(problem)
    t_tv = time.perf_counter() - t0
    lr = float(cfg.init.lr) if cfg.init.lr is not None else float(getattr(method, "lr", None) or 1e-3)
    fits = []
    for net, z in zip(nets, zs):
        with torch.no_grad():
            shape = net(z).shape
        if target.shape != shape:
            raise DipkitError(f"init.kind=tv: the network's output {tuple(shape)} does not match "
                              f"the image {tuple(target.shape)}")
        fits.append(fit_to_image(net, z, target, steps=int(cfg.init.steps), lr=lr))
    return {"kind": "tv", "steps": int(cfg.init.steps), "lr": lr, "tv_time_s": t_tv,
            "time_s": time.perf_counter() - t0, "psnr_to_target": [f["psnr_to_target"] for f in fits]}
