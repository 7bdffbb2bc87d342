"""What ``--method auto`` chooses from: the portfolios, the candidates' run configurations, and the
selection that :meth:`~dipkit.run.config.RunConfig.validate` returns for ``method: auto``.

The runs themselves (successive halving, the choice by held-out misfit) are :mod:`dipkit.run.auto`'s;
this module is what validating an ``auto`` configuration needs, so :mod:`dipkit.run.config` can
return an :class:`AutoSelection` without importing the run machinery. It works on a
:class:`~dipkit.run.config.RunConfig` it is given and imports no configuration module itself.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from ..errors import DipkitError

if TYPE_CHECKING:
    from .config import RunConfig

__all__ = ["PORTFOLIOS", "CANDIDATES", "portfolio", "candidate_config", "AutoSelection"]

#: candidates that are not a method name with its defaults: label → settings
CANDIDATES: dict[str, dict[str, Any]] = {
    "dip-dd": {"method": "dip", "net": {"name": "deep-decoder"}},  # DIP with the deep decoder
    # DIP + TV with TV's own ground-truth-free weight, its network first fitted to the TV image
    # (dipkit.run.netinit; issue 16, item 5)
    "dip-tv-init": {"method": "dip-tv", "params": {"alpha_fraction": 1.0}, "init": {"kind": "tv"}},
    # DIP-ADMM v2 with its network first fitted to the TV image, like dip-tv-init: from a random start
    # it was dropped at the first rung on every MRI case (its misfit at 500 steps far behind the
    # TV-started dip-tv-init's) though run on alone it passes it (benchmarks/results/auto-cost.md)
    "dip-admm-v2-init": {"method": "dip-admm-v2", "init": {"kind": "tv"}},
}

#: the default portfolio per task family (the problem's ``spec["kind"]`` / task name prefix): the
#: classical baseline and the network methods that are best, or within 0.5 dB of the best network
#: method, on that family somewhere in the measured tables. CT leaves out ``dip`` and ``aseqdip``:
#: on both CT tasks of ``benchmarks/results/defaults-128.md`` they are the two lowest network rows
#: (ct: 30.50 and 30.14 dB against dip-dd's 32.20; ct-fan: 29.47 and 31.10 against 34.20), and in
#: ``auto`` they cost 1500 of 5010 network steps at 64² before being dropped (issue 17: a cheap
#: auto). ``--set auto.candidates=...`` puts them back. ``dip-tv-init`` stands in for ``dip-tv``
#: everywhere: its val pick was ahead of dip-tv's on 8 of the 9 cases of
#: ``benchmarks/results/tv-init.md`` (CT +1.3 to +2.4 dB; on the held-out head CT at 128² 29.91 dB
#: against dip-tv's 27.97 and TV's 29.33), behind on one (mr 64², −0.44), and on MRI it stops after
#: 840–1040 steps where dip-tv ran 12 000.
#:
#: Candidates that successive halving dropped on every case of their family, and that never had a
#: stacking weight there, are left out (issue 17, a cheap auto; ``benchmarks/results/auto-cost.md``):
#: on CT ``dip-dd`` (dropped at the first rung in 5 of 5 runs: ct 64² twice, ct, head-ct, fan-beam at
#: 128²; a slow starter beside the TV-started ``dip-tv-init``, though run alone to its end it is the best
#: network on CT in ``defaults-128.md``); on MRI ``dip`` (first rung, 5 of 5: mr 64² twice, mr,
#: abdomen-mr, multi-coil at 128²) and ``dip-dd`` (first or second rung, 5 of 5; one unused stacking
#: weight of 0.07); on denoising ``dip-dd`` (no stacking weight in any of the three denoising
#: ``auto`` runs recorded — astronaut 64² twice, motorcycle 128² —, dropped at the first rung with
#: the largest misfit of the five network candidates on astronaut 64²; the last network row of
#: ``defaults-128.md``'s auto bench on denoise, 21.53 dB: it needs ~8000 steps there where the others
#: need ~1300). It stays on the other image tasks: on super-resolution it carried half the stack
#: (``auto-every-task.md``) and on deblurring it is the best network method of ``defaults-128.md``
#: given 20 000 steps.
#:
#: On MRI ``dip-admm-v2`` starts from the TV image (``dip-admm-v2-init``): from a random start it was
#: dropped at the first rung on every MRI case, though run on alone it passes ``dip-tv-init``
#: (35.25 against 33.68 dB on mr 128²). Started from TV it competes from the first rung: on the
#: held-out head MR image (``mrihead128`` of ``auto-cost.md``) ``auto`` went from 28.19 dB — a stack
#: below TV's 29.45 — to 35.89; on multi-coil abdomen-mr it is chosen, 32.83 against 32.70 before (TV
#: 32.29), in 1.65× the time (568 s against 344 s: it runs 3250 steps to its pick); on mr 64²/128²
#: and abdomen-mr ``auto`` returned the same image as before (±0.01 dB).
PORTFOLIOS: dict[str, list[str]] = {
    "ct": ["tv", "dip-tv-init", "dip-denoiser-admm"],
    "mri": ["tv", "dip-tv-init", "dip-admm-v2-init"],
    "denoise": ["tv", "dip", "dip-tv-init", "deepred", "dip-denoiser-admm"],
    "image": ["tv", "dip", "dip-tv-init", "dip-dd", "deepred", "dip-denoiser-admm"],
}


def _family(problem) -> str:
    kind = str((problem.spec or {}).get("kind", "") or problem.task or "")
    task = str(problem.task or "")
    if kind.startswith("ct") or task.startswith("ct"):
        return "ct"
    if kind.startswith("mri") or task.startswith("mri"):
        return "mri"
    if kind.startswith("denois") or task.startswith("denois"):
        return "denoise"
    return "image"


def portfolio(problem) -> list[str]:
    """The default candidates for ``problem`` (:data:`PORTFOLIOS` by task family)."""
    return list(PORTFOLIOS[_family(problem)])


def _labels(value) -> list[str] | None:
    if value in (None, "", "auto"):
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    labels = [str(v).strip() for v in value if str(v).strip()]
    if len(set(labels)) != len(labels):
        raise DipkitError(f"auto.candidates names a candidate twice: {', '.join(labels)}")
    return labels or None


def candidate_config(cfg: RunConfig, label: str) -> RunConfig:
    """The run configuration of candidate ``label`` (a method name, or a :data:`CANDIDATES` label)
    in an ``auto`` run asked for with ``cfg``: its method with its defaults, the run's settings
    (seed, device, precision, validation split, schedule, cap, network options where the network
    is the same) and the ``val`` rule for network methods (it stops them; a classical baseline runs
    its own budget and its final result is scored)."""
    from ..methods import get_method

    spec = CANDIDATES.get(label, {"method": label})
    c = copy.deepcopy(cfg)
    c.method = spec["method"]
    c.params = dict(spec.get("params", {}))
    c.ensemble, c.time_limit = 1, None
    c.auto = type(cfg.auto)()
    for key, value in spec.get("init", {}).items():
        setattr(c.init, key, value)
    net = spec.get("net")
    if net and net.get("name") and net["name"] != c.net.name:
        c.net.name, c.net.options = net["name"], {k: v for k, v in net.items() if k != "name"}
    cls = get_method(c.method)
    if getattr(cls, "uses_network", True):
        c.early_stop.rule = "val"
    else:  # a baseline runs its own budget to its converged result, which is scored (and returned) as it is
        c.init = type(cfg.init)()  # it trains no network
        c.early_stop.rule = None
        c.iterations = None
    return c


class AutoSelection:
    """What :meth:`RunConfig.validate` returns for ``method: auto`` (the candidates' configurations,
    each validated); it quacks enough like a method for the code that inspects one."""

    name = "auto"
    uses_network = True
    direct = False
    batchable = False
    stochastic_data = False
    default_iterations = None

    def __init__(self, cfg: RunConfig):
        a = cfg.auto
        self.labels = _labels(a.candidates)
        a.combine = self.parse_combine(a.combine)
        if int(a.min_steps) < 1 or int(a.eta) < 2 or not float(a.se) >= 0:
            raise DipkitError("auto needs min_steps ≥ 1, eta ≥ 2 and se ≥ 0")
        a.refit = self.parse_refit(a.refit)
        if cfg.params:
            raise DipkitError(f"--method auto takes no method parameters ({', '.join(cfg.params)}); "
                              "name candidates with auto.candidates=…")
        if int(cfg.ensemble) != 1:
            raise DipkitError("--method auto does not combine with --ensemble (use --combine K)")
        if cfg.early_stop.rule not in ("auto", "val"):
            raise DipkitError("--method auto chooses by held-out misfit: its candidates use the val rule "
                              f"(drop --early-stop {cfg.early_stop.rule})")
        if cfg.validation.refit:
            raise DipkitError("--method auto refits with auto.refit (default true), not validation.refit")
        if self.labels is not None:
            self.check(cfg, self.labels)
        self.cfg = cfg

    @staticmethod
    def parse_combine(value):
        """``auto.combine``: ``stack`` or a whole number K ≥ 1 (the mean of the K best)."""
        if isinstance(value, str) and value.strip().lower() == "stack":
            return "stack"
        try:
            k = int(str(value).strip())
        except ValueError:
            k = 0
        if k < 1 or isinstance(value, bool):
            raise DipkitError(f"auto.combine must be 'stack' or a whole number K ≥ 1 (the mean of the K best), "
                              f"not {value!r}")
        return k

    @staticmethod
    def parse_refit(value) -> str:
        """``auto.refit``: ``mean`` (or true), ``replace``, ``none`` (or false)."""
        v = {True: "mean", False: "none"}.get(value, value) if isinstance(value, bool) else str(value).strip().lower()
        v = {"true": "mean", "yes": "mean", "false": "none", "no": "none", "off": "none"}.get(v, v)
        if v not in ("mean", "replace", "none"):
            raise DipkitError(f"auto.refit must be mean, replace or none, not {value!r}")
        return v

    @staticmethod
    def check(cfg: RunConfig, labels: list[str]) -> None:
        for label in labels:
            if label == "auto":
                raise DipkitError("auto.candidates cannot name auto")
            try:
                candidate_config(cfg, label).validate()
            except DipkitError as exc:
                raise DipkitError(f"auto candidate {label!r}: {exc}") from None

    def config(self) -> dict:
        a = self.cfg.auto
        return {"candidates": self.labels, "min_steps": int(a.min_steps), "eta": int(a.eta), "combine": a.combine,
                "refit": a.refit,
                "se": float(a.se)}
