"""Operators: deepinv ``Physics`` built from JSON specs, plus what deepinv lacks.

Every operator a :class:`~dipkit.problem.Problem` uses is described by a JSON-serialisable
*spec* ``{"kind": NAME, ...}``; :func:`build_physics` rebuilds the operator from it. New kinds
register a builder in :data:`PHYSICS_BUILDERS`.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import DipkitError

__all__ = ["build_physics", "register_physics", "PHYSICS_BUILDERS"]

PHYSICS_BUILDERS: dict[str, Callable] = {}


def register_physics(kind: str):
    """Decorator: register ``builder(spec, *, device, dtype) -> Physics`` under ``kind``."""

    def deco(fn):
        PHYSICS_BUILDERS[kind] = fn
        return fn

    return deco


@register_physics("ct")
def _build_ct(spec: dict, *, device, dtype):
    from .ct import from_spec

    return from_spec(spec, device=device, dtype=dtype)


def _load_all() -> None:
    """Import every sub-module, so that the builders in them register."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def build_physics(spec: dict, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """Rebuild an operator from its spec (as stored in a problem file)."""
    kind = spec.get("kind")
    if kind not in PHYSICS_BUILDERS:
        _load_all()
    if kind not in PHYSICS_BUILDERS:
        raise DipkitError(f"unknown operator kind {kind!r} in problem spec "
                          f"(known: {', '.join(sorted(PHYSICS_BUILDERS))})")
    try:
        return PHYSICS_BUILDERS[kind]({k: v for k, v in spec.items() if k != "kind"},
                                      device=torch.device(device), dtype=dtype)
    except DipkitError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise DipkitError(f"invalid operator spec for kind {kind!r}: {exc}") from None
