"""Stopping rules, as callbacks usable with any method."""

from __future__ import annotations

from ..errors import DipkitError
from .wmv import WMV, running_variance, select_iteration

__all__ = ["WMV", "select_iteration", "running_variance", "STOPPING_RULES", "make_stopping_rule",
           "parse_rule"]

STOPPING_RULES = {"wmv": (WMV, "windowed moving variance (Wang et al. 2021; CT paper Alg. 2)")}


def parse_rule(text: str | None) -> tuple[str | None, str]:
    """``"wmv"`` → ``("wmv", "stop")``; ``"wmv:record"`` → ``("wmv", "record")``; none → (None, '')."""
    if text in (None, "", "none", "off"):
        return None, "stop"
    name, _, mode = str(text).partition(":")
    mode = mode or "stop"
    if name not in STOPPING_RULES:
        raise DipkitError(f"unknown early-stopping rule {name!r} (choose from {', '.join(STOPPING_RULES)}, "
                          "optionally with ':record')")
    if mode not in ("stop", "record"):
        raise DipkitError(f"unknown early-stopping mode {mode!r} in {text!r} (use '{name}' or '{name}:record')")
    return name, mode


def make_stopping_rule(name: str, mode: str, **options):
    cls = STOPPING_RULES[name][0]
    try:
        return cls(mode=mode, **options)
    except (TypeError, ValueError) as exc:
        raise DipkitError(f"bad options for early-stopping rule {name!r}: {exc}") from None
