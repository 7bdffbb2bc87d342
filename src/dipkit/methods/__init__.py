"""DIP methods: one small class per method, registered under the name users type.

The classical baselines (FBP, TV, PnP-ADMM, the naive reconstructions) live in
:mod:`dipkit.baselines` and register in the same :data:`METHODS` registry. Method modules are
imported on the first lookup of a name (see :mod:`dipkit.methods.registry`).
"""

from __future__ import annotations

from .base import Method, data_fidelity
from .registry import METHODS, get_method, make_method, register

__all__ = ["Method", "data_fidelity", "METHODS", "get_method", "make_method", "register"]
