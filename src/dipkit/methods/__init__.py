"""DIP methods: one small class per method, registered under the name users type.

The classical baselines (FBP, TV, PnP-ADMM, the naive reconstructions) live in
:mod:`dipkit.baselines` and register in the same :data:`METHODS` registry. Method modules are
imported on the first lookup of a name (see :mod:`dipkit.methods.registry`).
"""

from __future__ import annotations

from .registry import METHODS, get_method, make_method, register

__all__ = ["Method", "data_fidelity", "METHODS", "get_method", "make_method", "register"]


def __getattr__(name):  # the base class imports torch: only when asked for
    if name in ("Method", "data_fidelity"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
