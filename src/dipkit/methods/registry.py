"""The method registry: every name a user can type after ``--method``.

Network methods live in :mod:`dipkit.methods`, the classical baselines in
:mod:`dipkit.baselines`; both register here. ``index.json`` beside this file says, for every
shipped method, which module defines it and what ``dipkit methods`` prints about it, so that the
listing imports no method module (nor torch); a lookup imports just the method's module.
``tests/test_registry.py`` keeps the index equal to the classes' attributes.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from importlib.resources import files

from ..errors import DipkitError
from ..registry import Registry

__all__ = ["METHODS", "register", "get_method", "make_method"]


def _load_all() -> None:
    for package in ("dipkit.methods", "dipkit.baselines"):
        pkg = importlib.import_module(package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_") and mod.name not in ("base", "registry"):
                importlib.import_module(f"{package}.{mod.name}")


METHODS: Registry = Registry("method", loader=_load_all, hint="run 'dipkit methods'",
                             index=json.loads(files("dipkit.methods").joinpath("index.json").read_text("utf-8")))

#: class decorator: register a method class under ``cls.name``
register = METHODS.register


def get_method(name: str) -> type:
    """The method class registered as ``name``."""
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
