"""Priors: TV (value, prox), weighted TV, and denoisers behind one interface ``D(x, sigma)``."""

from __future__ import annotations

import importlib
import pkgutil

__all__ = ["_load_optional_denoisers"]


def _load_optional_denoisers() -> None:
    """Import every ``dipkit.priors`` sub-module so that the denoisers in them register."""
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
