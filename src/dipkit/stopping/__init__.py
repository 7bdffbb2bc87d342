"""Stopping rules, as callbacks usable with any method.

A rule is named on the command line as ``NAME`` (stop the run) or ``NAME:record`` (run to the end,
only record what the rule selects); ``none`` means no rule. The text is parsed in one place,
:func:`parse_rule` (used by :class:`dipkit.config.RunConfig`).
"""

from __future__ import annotations

from ..errors import DipkitError
from ..registry import Registry
from .wmv import WMV, running_variance, select_iteration

__all__ = ["WMV", "select_iteration", "running_variance", "STOPPING_RULES", "make_stopping_rule",
           "parse_rule", "NONE"]

#: early-stopping rules: ``name -> callback class`` (constructed with ``mode=`` and its options)
STOPPING_RULES: Registry = Registry("early-stopping rule")
STOPPING_RULES.register(WMV, name="wmv",
                        description="windowed moving variance (Wang et al. 2021; CT paper Alg. 2)")

#: the spellings of "no rule"
NONE = (None, "", "none", "off", False)


def parse_rule(text) -> tuple[str | None, str]:
    """``"wmv"`` → ``("wmv", "stop")``; ``"wmv:record"`` → ``("wmv", "record")``; none → ``(None, "stop")``."""
    if text in NONE:
        return None, "stop"
    name, _, mode = str(text).partition(":")
    mode = mode or "stop"
    if name not in STOPPING_RULES:
        raise DipkitError(f"unknown early-stopping rule {name!r} (choose from {', '.join(STOPPING_RULES)} "
                          "or none, optionally with ':record')")
    if mode not in ("stop", "record"):
        raise DipkitError(f"unknown early-stopping mode {mode!r} in {text!r} (use '{name}' or '{name}:record')")
    return name, mode


def make_stopping_rule(name: str, mode: str, **options):
    cls = STOPPING_RULES[name]
    try:
        return cls(mode=mode, **options)
    except (TypeError, ValueError) as exc:
        raise DipkitError(f"bad options for early-stopping rule {name!r}: {exc}") from None
