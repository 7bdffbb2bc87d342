"""Resolving a run's configuration for its problem and method: the device, the step budget
(:func:`step_budget` — whether the run decides its own length), every ``auto`` default
(:func:`resolve_config`), the validation split's kind and score (:func:`resolve_validation`) and the
split itself (:func:`make_split`). Used by :mod:`dipkit.run.runner` (which re-exports these names),
:mod:`dipkit.run.batched` and :mod:`dipkit.run.auto`.
"""

from __future__ import annotations

import copy

import torch

from .config import RunConfig
from ..errors import DipkitError

__all__ = ["resolve_device", "step_budget", "resolve_config", "resolve_validation", "make_split"]


def resolve_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise DipkitError("--device cuda requested but no CUDA GPU is available (use --device auto or cpu)")
    return torch.device(name)


def step_budget(cfg: RunConfig, method) -> tuple[int, str]:
    """The step budget of a run and its kind, for ``cfg`` with its stopping rule resolved:

    * ``("fixed", N)`` with ``iterations = N`` — the run goes N steps (unless a rule stops it);
    * ``("auto", cap)`` for a network method whose ``val`` rule stops the run (the default): the
      run decides its own length — it ends when the held-out misfit has not reached a new minimum
      for the rule's patience window (:mod:`dipkit.stopping.val`) — and ``max_iterations`` (or the
      method's :attr:`~dipkit.methods.base.Method.max_iterations`, 20 000) is only a cap;
    * ``("default", n)`` otherwise — the method's ``default_iterations`` (dip 3000, TV 500);
    * ``("direct", 1)`` for a direct method (FBP).

    Returned as ``(steps, kind)``."""
    from ..stopping import parse_rules

    if getattr(method, "direct", False):
        return 1, "direct"
    if cfg.iterations:
        return int(cfg.iterations), "fixed"
    cap = getattr(method, "max_iterations", None) if method.uses_network else None
    if cap and cfg.early_stop.rule != "auto" and ("val", "stop") in parse_rules(cfg.early_stop.rule):
        return int(cfg.max_iterations or cap), "auto"
    return int(method.default_iterations), "default"


def resolve_config(cfg: RunConfig, method, problem) -> RunConfig:
    """A copy of ``cfg`` with every default that depends on the problem or the network resolved:
    the method's hyper-parameters as used (a learning rate left to the network preset is set on
    ``method`` here), the stopping rule (``auto`` → ``val`` for network methods — ``val:record``
    with a fixed ``iterations`` —, none for baselines), the step budget (:func:`step_budget`:
    ``iterations`` stays None for a run that decides its own length, ``max_iterations`` holds
    its cap), the learning-rate schedule (``auto`` → ``plateau`` with a ``val`` rule,
    :mod:`dipkit.engine.schedule`), the network input kind (``auto`` → per task), the validation
    split and score (:func:`resolve_validation`) and the precision
    (``auto`` → ``bf16`` where the problem's device does bf16 natively and the method allows it,
    else ``fp32``: :mod:`dipkit.precision`)."""
    from ..engine.schedule import resolve_schedule, resolve_warmup
    from ..inputs import resolve_input_kind
    from ..nets import NETS
    from ..precision import resolve_precision
    from ..stopping import parse_rules, resolve_rule

    out = copy.deepcopy(cfg)
    out.precision = resolve_precision(cfg.precision, problem.y.device, method)
    out.early_stop.rule = resolve_rule(cfg.early_stop.rule, method, fixed_budget=bool(cfg.iterations))
    out.validation.split, out.validation.score = resolve_validation(problem, cfg.validation)
    if method.uses_network and getattr(method, "lr", 0.0) is None:
        method.lr = float(NETS[cfg.net.name].lr)
        cap = getattr(method, "max_default_lr", None)
        if cap is not None:
            method.lr = min(method.lr, float(cap))
    out.params = dict(method.config())
    steps, kind = step_budget(out, method)
    out.iterations = None if kind in ("direct", "auto") else steps
    out.max_iterations = steps if kind == "auto" else None
    has_val = any(name == "val" for name, _ in parse_rules(out.early_stop.rule))
    out.schedule.kind = resolve_schedule(cfg.schedule.kind, method, has_val)
    out.schedule.warmup = resolve_warmup(cfg.schedule.warmup, cfg.init.kind, method)
    if method.uses_network:
        out.input.kind = resolve_input_kind(cfg.input.kind, problem)
    return out


#: ``validation.split=auto`` holds out k-space lines on single-coil Cartesian MRI when at least this many measured
#: lines lie outside the fully sampled centre (64² at 4×: 11; 32² at 4×: 5 — too few to give two away)
AUTO_LINES_MIN = 8


def _line_mask_outer(problem) -> int:
    """How many measured k-space lines of ``problem`` lie outside its fully sampled centre (0 when its
    sampling is not a Cartesian line mask)."""
    from ..physics.split import measured_support, outer_lines

    try:
        return int(outer_lines(measured_support(problem.physics, problem.y))[0].numel())
    except DipkitError:
        return 0


def resolve_validation(problem, validation) -> tuple[str, str]:
    """``(split, score)`` of ``validation`` (a :class:`~dipkit.run.config.ValidationConfig`) for
    ``problem``, ``auto`` resolved: ``split`` → ``entries`` (``views`` on a sinogram when the score
    is ``ramp``, which filters whole views; ``lines`` on single-coil Cartesian MRI with enough lines
    outside the fully sampled centre); ``score`` → ``raw``. ``views`` on a non-sinogram, ``lines`` on a
    non-MRI problem and ``ramp`` without ``views`` are one-line :class:`DipkitError` s.

    Why ``entries`` on CT too, although the 64² measurements below favoured views: on the demo's
    128² CT (sample ``ct``, 30 views, 2 %; ``dip`` with its defaults, run-decided length) the views
    split picked 28.56 dB at step 790 and its patience stopped the run at 1300 (peak 29.65), while
    the entries split picked 30.50 at step 1650 (peak 30.98 at 2480) — holding out 2 of 30 views
    leaves 2 × 183 held-out rays, a far noisier misfit than 5 % of all rays (~270 per view's worth
    × 30), and costs the fit two whole projections (``benchmarks/results/schedules.md``). Views
    stay an option (``validation.split=views``, with ``score=ramp`` chosen automatically).

    The 64² measurements:

    Why (``benchmarks/results/ct-validation.md``: 64² CT at 2 % noise, 7 network methods with their
    defaults, ``ct`` 30 parallel views, ``ct-fan`` 60 fan views, held-out ``head-ct`` 30 parallel
    views; one seed). The val pick's distance to the same run's oracle peak: with held-out *views*
    ≤ 0.5 dB in 18 of 21 (case, method) pairs, mean 0.29 dB, worst 1.48 dB; with held-out random
    *entries* (rays) 15 of 21, mean 0.64 dB, worst 2.68 dB — on ``ct`` the entries split stops the
    regularised methods 1.7–2.7 dB early (dip-tv 2.68, dip-denoiser-admm 2.45, dip-tv-hqs 2.19,
    dip-constrained 2.11, deepred 1.66 dB), the views split leaves ≤ 0.45 dB for all seven. The
    price is fitting 2 fewer of 30 views: the views runs' own peaks are 0.09–0.44 dB below the
    entries runs' on ``ct`` (aseqdip +0.09), −0.16…+0.56 dB on ``ct-fan``; on ``head-ct`` single runs
    differ by ±1–3 dB either way, and a second split seed moves them as much (dip: entries peak
    28.04 dB with split seed 0, 26.00 with seed 1) — there one seed cannot tell the two apart, and
    the views split's pick was worse there at seed 0 (dip 1.48, aseqdip 1.45, deepred 0.86 dB from
    the run's peak). ``ramp`` is not better than ``raw`` on the same runs (≤ 0.5 dB in 16 of 21,
    mean 0.27, worst 1.51 dB: better on ``head-ct``, worse on ``ct``) and amplifies the held-out noise,
    so ``raw`` — the same units as every other task's misfit — is the default and ``ramp`` an
    option. Not a cure: the goal of ≤ 0.5 dB for every CT method and case is not reached.

    Why ``lines`` on single-coil Cartesian MRI (``auto`` there, when at least :data:`AUTO_LINES_MIN`
    measured lines lie outside the fully sampled centre; ``benchmarks/results/mri-validation.md``,
    ``--method auto``, 4×): a held-out k-space *sample* is predicted almost exactly by the rest of
    its measured line, so the entries misfit cannot see the error on the unmeasured lines, where
    undersampled MRI's error is. On the ``mr`` slice at 64² the entries split chose ``dip-tv`` at
    30.13 dB (29.57 with the raw minimum) against TV's 31.73 — its misfit half TV's; held-out lines
    returned 31.73, 31.73 and 32.65 dB with split seeds 0, 1, 2 (never below TV). At 128² (``mr``)
    lines chose ``dip-admm-v2`` at 36.24 dB against TV's 32.87 (entries: the same method, 35.54,
    in 5620 network steps against 9790). On the held-out ``abdomen-mr``
    lines chose TV at 64² and 128²; entries chose TV at 64² and ``dip-tv`` at 128² (28.74 against
    29.01, after 20 860 network steps; lines: 3390). The price: where the lines keep a slow
    regularised run alive it runs on (up to 13 310 steps at 64²). Not on multi-coil MRI: on ``mr``
    at 64² with 4 coils, lines chose ``dip-admm-v2`` at 36.57 dB (after its 20 000-step cap)
    against TV's 37.32, which the entries split chose — the coils' sensitivities tie the unmeasured
    lines to the measured ones, and one case says lines did not pay there; ``validation.split=lines``
    is available."""
    kind = str(problem.spec.get("kind", ""))
    sinogram = kind.startswith("ct")
    split, score = validation.split, validation.score
    if split == "auto":  # entries; views where a ramp score asks for whole views; lines on single-coil MRI
        if sinogram and score == "ramp":
            split = "views"
        elif kind == "mri" and score in ("auto", "raw") and _line_mask_outer(problem) >= AUTO_LINES_MIN:
            split = "lines"
        else:
            split = "entries"
    if score == "auto":
        score = "raw"
    if split == "views" and not sinogram:
        raise DipkitError(f"validation.split=views holds out projection angles: it needs a sinogram (a ct task), "
                          f"this problem is {kind or 'not a CT problem'!r}")
    if split == "lines" and not kind.startswith("mri"):
        raise DipkitError(f"validation.split=lines holds out k-space lines: it needs an MRI problem, "
                          f"this problem is {kind or 'not an MRI problem'!r}")
    if score == "ramp" and split != "views":
        raise DipkitError("validation.score=ramp filters whole held-out views: it needs validation.split=views")
    return split, score


def make_split(problem, cfg: RunConfig):
    """The validation split of ``problem`` for ``cfg.validation`` (MRI: held-out k-space is
    zero-filled in network inputs; sinograms and images: filled from neighbours), with the split
    kind and score of :func:`resolve_validation`."""
    from ..physics.split import ValidationSplit

    fill = "zero" if str(problem.spec.get("kind", "")).startswith("mri") else "neighbours"
    split, score = resolve_validation(problem, cfg.validation)
    return ValidationSplit(problem.physics, problem.y, fraction=float(cfg.validation.fraction),
                           seed=int(cfg.validation.seed), fill=fill, split=split, score=score)
