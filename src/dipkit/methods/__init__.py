"""Registered methods. Importing this package imports every module in it, which registers them."""

from __future__ import annotations

import importlib
import pkgutil

from .base import Method, data_fidelity
from .registry import METHODS, get_method, make_method, register

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("base", "registry") and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["Method", "data_fidelity", "METHODS", "get_method", "make_method", "register"]
