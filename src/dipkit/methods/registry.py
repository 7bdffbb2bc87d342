"""The method registry: every name a user can type after ``--method``."""

from __future__ import annotations

from ..errors import DipkitError

__all__ = ["METHODS", "register", "get_method", "make_method"]

METHODS: dict[str, type] = {}


def register(cls):
    """Class decorator: register a method class under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type:
    if name not in METHODS:
        raise DipkitError(f"unknown method {name!r} (run 'dipkit methods'; known: {', '.join(sorted(METHODS))})")
    return METHODS[name]


def make_method(name: str, **params):
    """Instantiate method ``name`` with hyper-parameters; unknown keys raise :class:`DipkitError`."""
    cls = get_method(name)
    known = cls.hyperparameters()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise DipkitError(f"unknown parameter(s) {', '.join(unknown)} for method {name!r} "
                          f"(known: {', '.join(known) or 'none'})")
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise DipkitError(f"bad parameter for method {name!r}: {exc}") from None
