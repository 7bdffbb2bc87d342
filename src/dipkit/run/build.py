"""The engine state of one run (split out of :mod:`dipkit.run.runner`).

:func:`build_state` turns a problem and a resolved :class:`~dipkit.run.config.RunConfig` into the
engine's :class:`~dipkit.engine.State` — the seeded generators, the network (one, or an ensemble's
members, stacked or in a loop) and its input, the step budget and the engine settings.
"""

from __future__ import annotations

import copy

import torch

from .config import RunConfig
from .resolve import step_budget
from ..errors import DipkitError

__all__ = ["build_state", "expected_in_channels"]


def _fit_view(problem, split):
    """The problem as the fit sees it: the masked operator and the measurement without held-out entries."""
    from ..problem import Problem

    return Problem(physics=split.fit_physics(), y=split.fit_y(), spec=problem.spec, x_true=problem.x_true,
                   meta=problem.meta)


def expected_in_channels(net: torch.nn.Module) -> int | None:
    """The input channels a user's network expects: ``in_channels`` of its first module that has
    one (a convolution), else None."""
    for m in net.modules():
        c = getattr(m, "in_channels", None)
        if isinstance(c, int) and c > 0:
            return c
    return None


def _user_net(net, problem, cfg: RunConfig, gen, device):
    """A copy of the user's network on ``device`` and its input z (see :func:`dipkit.api.solve`)."""
    from ..inputs import make_input

    if not isinstance(net, torch.nn.Module):
        raise DipkitError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    want = expected_in_channels(net)
    channels = cfg.input.channels or want
    z = make_input(cfg.input.kind, problem, generator=gen, channels=channels, std=cfg.input.std)
    if want is not None and z.shape[1] != want:
        raise DipkitError(f"the network expects {want} input channel(s), but input.kind={cfg.input.kind!r} gives "
                          f"{z.shape[1]}; use input.kind=noise (its channels follow the network) or a network "
                          f"with {z.shape[1]} input channel(s)")
    copy_ = copy.deepcopy(net).to(device=device, dtype=problem.y.dtype)
    with torch.no_grad():
        out = copy_(z)
    if tuple(out.shape[1:]) != tuple(problem.img_shape):
        raise DipkitError(f"the network maps z {tuple(z.shape)} to {tuple(out.shape)}, but the image is "
                          f"{tuple(problem.img_shape)} (the shape of A_adjoint(y))")
    return copy_, z


def _autocast_dtype(cfg: RunConfig, method, device) -> torch.dtype | None:
    """``torch.bfloat16`` when the run's (resolved) precision is bf16, else None (full precision)."""
    from ..precision import resolve_precision

    return torch.bfloat16 if resolve_precision(cfg.precision, device, method) == "bf16" else None


def _channels_last(cfg: RunConfig, device: torch.device) -> bool:
    """Whether a run's dipkit-built network (a single one, or each member of a loop ensemble) runs
    channels-last (``memory_format``; :mod:`dipkit.nets.layout`)."""
    return getattr(cfg, "memory_format", "contiguous") == "channels_last"


def build_state(method, problem, cfg: RunConfig, device: torch.device, *, net=None, seeds=None, mode=None,
                init: bool = True):
    """The engine :class:`~dipkit.engine.State` of ``method`` on ``problem`` (already on ``device``,
    ``cfg`` resolved): the seeded generator, the network and its input for network methods, the step
    budget, the problem's metadata and the engine settings (precision, history interval).

    An ensemble's members (``cfg.ensemble`` or ``seeds``) are built one by one, each as its own run
    would build it, and then held by a :class:`~dipkit.nets.ensemble.StackedEnsemble` (``mode``
    ``"stacked"``) or an :class:`~dipkit.nets.ensemble.Ensemble` (``"loop"``); ``mode=None`` decides
    by ``cfg.ensemble_mode`` (:func:`dipkit.run.ensembles.choose_mode`).

    ``net``: a user's ``nn.Module`` used as f_θ instead of ``cfg.net`` (a copy, moved to the device;
    its weights as given are the initialisation); its input follows ``cfg.input`` with, for
    ``noise``, the channels of the module's first convolution unless ``input.channels`` says.

    ``init``: apply ``cfg.init`` (:mod:`dipkit.run.netinit`, e.g. fit each network to the TV image
    first); False for a state whose weights come from a checkpoint or that only probes memory."""
    from ..engine import State

    steps, _ = step_budget(cfg, method)
    n = int(cfg.ensemble) if method.uses_network else 1
    if seeds is None:
        seeds = [int(cfg.seed) + i for i in range(n)]
    elif method.uses_network:
        n = len(seeds)
    y = problem.y if n == 1 else problem.y.repeat(n, *[1] * (problem.y.ndim - 1))
    state = State(physics=problem.physics, y=y, max_steps=steps, generator=None, meta=problem.state_meta(),
                  report_every=int(cfg.log_every),
                  autocast_dtype=_autocast_dtype(cfg, method, problem.y.device))
    gens, nets, zs = [], [], []
    for i in range(n):
        # member i is built exactly as a run with seed seeds[i] (global seed, then input, then network)
        torch.manual_seed(int(seeds[i]))
        gen = torch.Generator(device=device).manual_seed(int(seeds[i]))
        gens.append(gen)
        if method.uses_network:
            from ..inputs import make_input
            from ..nets import build_net

            if net is not None:
                if n > 1:
                    raise DipkitError("an ensemble needs dipkit's networks (one seeded network per member); "
                                      "with net= use ensemble=1")
                user, z = _user_net(net, problem, cfg, gen, device)
                zs.append(z)
                nets.append(user)
                continue
            zs.append(make_input(cfg.input.kind, problem, generator=gen, channels=cfg.input.channels,
                                 std=cfg.input.std))
            nets.append(build_net(cfg.net.name, zs[-1].shape[1], problem.img_shape[0], **cfg.net.options).to(
                device=device, dtype=problem.y.dtype))
    if method.uses_network and init and cfg.init.kind != "random":
        from .netinit import initialise

        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            state.meta["init"] = initialise(nets, zs, problem, cfg, method)
    state.generator = gens[0]
    if n > 1:
        state.generators = gens
    if method.uses_network:
        if net is None and cfg.net.options.get("weights"):
            state.meta["net_weights"] = str(cfg.net.options["weights"])  # e.g. subspace-dip's trajectory beside it
        state.z = zs[0] if n == 1 else torch.cat(zs)
        if n == 1:
            state.net = nets[0]
            if net is None and _channels_last(cfg, device):
                from ..nets.layout import use_channels_last

                use_channels_last(state.net)
        else:
            from ..nets.ensemble import Ensemble, StackedEnsemble
            from .ensembles import choose_mode

            if mode is None:
                mode, _ = choose_mode(method, cfg, nets, state.autocast_dtype)
            if mode != "stacked" and _channels_last(cfg, device):
                from ..nets.layout import use_channels_last

                for member in nets:  # as each member's own run: the loop equals separate runs bit for bit
                    use_channels_last(member)
            state.net = StackedEnsemble(nets) if mode == "stacked" else Ensemble(nets)
            del nets
        state.net.train()
        state.z_perturb = float(cfg.input.perturb)
        from ..physics.subsets import make_subset_term

        # stochastic DIP (data.subset < 1): built on the fit view, so held-out entries stay out
        state.data_term = make_subset_term(problem.physics, y, float(cfg.data.subset))
    return state
