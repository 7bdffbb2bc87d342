"""Stopping rules, as callbacks usable with any method.

A rule is named on the command line as ``NAME`` (stop the run) or ``NAME:record`` (run to the end,
only record what the rule selects); several rules are separated by commas (``val,wmv:record``): the
first one's selection is the reconstruction, the others are recorded beside it. ``none`` means no
rule; ``auto`` (the default) means ``val`` for network methods and no rule for the classical
baselines (:func:`resolve_rule`). The text is parsed in one place, :func:`parse_rules` (used by
:class:`dipkit.run.config.RunConfig`).

Rules:

* ``wmv`` — the windowed moving variance of the reconstructions (Wang et al. 2021; CT paper Alg. 2),
  :mod:`dipkit.stopping.wmv`;
* ``val`` — the misfit on held-out measurements (self-validation), :mod:`dipkit.stopping.val`.
"""

from __future__ import annotations

from ..errors import DipkitError
from ..registry import Registry
from .val import Validation
from .wmv import WMV, running_variance, select_iteration

__all__ = ["WMV", "Validation", "select_iteration", "running_variance", "STOPPING_RULES", "make_stopping_rule",
           "parse_rule", "parse_rules", "NONE", "needs_split", "AUTO", "resolve_rule"]

#: early-stopping rules: ``name -> builder(mode, es, *, check_every, split) -> Callback`` where ``es``
#: is the run's :class:`~dipkit.run.config.EarlyStopConfig` and ``split`` its validation split (or None)
STOPPING_RULES: Registry = Registry("early-stopping rule")


@STOPPING_RULES.register("wmv", description="windowed moving variance of the estimates (Wang et al. 2021; "
                                            "CT paper Alg. 2)")
def _wmv(mode, es, *, check_every, split=None):
    return WMV(window=int(es.window), patience=_patience(es, 1000), delta=float(es.delta), mode=mode,
               check_every=check_every, source=getattr(es, "source", "estimate"))


@STOPPING_RULES.register("val", description="misfit on held-out measurements (self-validation, no ground truth)")
def _val(mode, es, *, check_every, split=None):
    if split is None:
        raise ValueError("the val rule needs a validation split")
    return Validation(split, patience=_patience(es, 500), patience_scale=float(getattr(es, "patience_scale", 0.0)),
                      mode=mode, check_every=check_every, smooth=int(getattr(es, "smooth", 1)))


def _patience(es, default: int) -> int:
    """``es.patience``, or the rule's own default when it is None."""
    p = getattr(es, "patience", None)
    return default if p is None else int(p)


#: the spellings of "no rule"
NONE = (None, "", "none", "off", False)

#: rules that need a validation split
_SPLIT_RULES = ("val",)


def parse_rule(text) -> tuple[str | None, str]:
    """``"wmv"`` → ``("wmv", "stop")``; ``"wmv:record"`` → ``("wmv", "record")``; none → ``(None, "stop")``."""
    if text in NONE:
        return None, "stop"
    name, _, mode = str(text).strip().partition(":")
    mode = mode or "stop"
    if name not in STOPPING_RULES:
        raise DipkitError(f"unknown early-stopping rule {name!r} (choose from {', '.join(STOPPING_RULES)} "
                          "or none, optionally with ':record')")
    if mode not in ("stop", "record"):
        raise DipkitError(f"unknown early-stopping mode {mode!r} in {text!r} (use '{name}' or '{name}:record')")
    return name, mode


#: the default rule: ``val`` for network methods, none for the classical baselines
AUTO = "auto"


def resolve_rule(text, method, fixed_budget: bool = False):
    """``text`` with ``auto`` resolved for ``method``: ``val`` if it trains a network (the run stops
    when the held-out misfit has stopped improving), ``val:record`` when the step budget is fixed
    (``--iterations N``: the run goes the N steps and the val rule only picks), else None."""
    if text == AUTO:
        if not getattr(method, "uses_network", False):
            return None
        return "val:record" if fixed_budget else "val"
    return text


def parse_rules(text) -> list[tuple[str, str]]:
    """``"val,wmv:record"`` → ``[("val", "stop"), ("wmv", "record")]``; none → ``[]``; ``auto``
    (unresolved) → ``[("val", "stop")]``."""
    if text in NONE:
        return []
    if text == AUTO:
        return [("val", "stop")]
    rules = [parse_rule(part) for part in str(text).split(",")]
    names = [n for n, _ in rules]
    if None in names:
        raise DipkitError(f"'none' cannot be combined with other rules: {text!r}")
    if len(set(names)) != len(names):
        raise DipkitError(f"a rule is named twice in {text!r}")
    return rules


def needs_split(text) -> bool:
    """Whether the rules in ``text`` need a validation split."""
    return any(name in _SPLIT_RULES for name, _ in parse_rules(text))


def make_stopping_rule(name: str, mode: str, es, *, check_every: int, split=None):
    """Build rule ``name`` in ``mode`` from the run's early-stopping settings ``es``."""
    build = STOPPING_RULES[name]
    try:
        return build(mode, es, check_every=check_every, split=split)
    except (TypeError, ValueError) as exc:
        raise DipkitError(f"bad options for early-stopping rule {name!r}: {exc}") from None
