"""Operators: deepinv ``Physics`` built from JSON specs, plus what deepinv lacks.

Every operator a :class:`~dipkit.problem.Problem` uses is described by a JSON-serialisable
*spec* ``{"kind": NAME, ...}``; :func:`build_physics` rebuilds the operator from it. New kinds
register a builder in :data:`PHYSICS_BUILDERS`.
"""

from __future__ import annotations

import torch

from ..errors import DipkitError
from ..registry import Registry

__all__ = ["build_physics", "register_physics", "check_spec_keys", "PHYSICS_BUILDERS"]


def _load_all() -> None:
    """Import every sub-module, so that the builders in them register."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


#: operator kinds: ``kind -> builder(spec, *, device, dtype) -> Physics``
PHYSICS_BUILDERS: Registry = Registry("operator kind", loader=_load_all)


def register_physics(kind: str):
    """Decorator: register ``builder(spec, *, device, dtype) -> Physics`` under ``kind``."""
    return PHYSICS_BUILDERS.register(kind)


@register_physics("ct")
def _build_ct(spec: dict, *, device, dtype):
    from .ct import from_spec

    return from_spec(spec, device=device, dtype=dtype)


def check_spec_keys(spec: dict, required: set, optional: set, kind: str) -> None:
    """One-line errors for a spec of operator ``kind`` with unknown or missing keys."""
    extra = set(spec) - set(required) - set(optional) - {"kind"}
    if extra:
        raise DipkitError(f"unexpected keys in {kind} spec: {sorted(extra)}")
    missing = set(required) - set(spec)
    if missing:
        raise DipkitError(f"{kind} spec lacks {sorted(missing)}")


def build_physics(spec: dict, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """Rebuild an operator from its spec (as stored in a problem file)."""
    kind = spec.get("kind")
    builder = PHYSICS_BUILDERS[kind]
    try:
        return builder({k: v for k, v in spec.items() if k != "kind"}, device=torch.device(device), dtype=dtype)
    except DipkitError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise DipkitError(f"invalid operator spec for kind {kind!r}: {exc}") from None
