"""One small registry class for everything a user can name: methods, denoisers, tasks, operator
kinds, networks, inputs and stopping rules.

A :class:`Registry` is a read-only mapping ``name -> object`` with

* :meth:`Registry.register` — a decorator (or a plain call) that adds an entry, refusing a name
  already taken by another object;
* lookup by ``registry[name]`` / :meth:`Registry.get`, which raise one clear error for an unknown
  name: ``unknown method 'x' (choose from a, b, c)``;
* :meth:`Registry.describe` — ``{name: one-line description}`` for listings (``dipkit methods``);
* an optional *loader*, called once on the first miss, that imports the modules which register
  the remaining entries (plug-in style: optional denoisers, operator kinds);
* an optional *index* ``{name: {"module": …, "description": …, …}}`` of entries defined in
  modules not imported yet: :meth:`Registry.catalogue` lists them without importing anything (so
  ``dipkit methods`` and ``dipkit nets`` start without torch), and a lookup imports just the
  entry's module. A test keeps each index equal to the registered objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from .errors import DipkitError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Mapping, Generic[T]):
    """A named collection of objects of one kind (see the module docs).

    :param kind: what an entry is, for messages (``"method"``, ``"denoiser"`` …).
    :param loader: called once, on the first lookup of an unknown name or the first full listing,
        to import modules that register more entries.
    :param hint: appended to the unknown-name error, e.g. ``"run 'dipkit methods'"``.
    """

    def __init__(self, kind: str, *, loader: Callable[[], None] | None = None, hint: str | None = None,
                 index: dict[str, dict] | None = None):
        self.kind = kind
        self.hint = hint
        self._loader = loader
        self.index = dict(index or {})
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    # ------------------------------------------------------------------ registering
    def register(self, obj: Any = None, /, *, name: str | None = None, description: str | None = None):
        """Add ``obj``; used as ``@reg.register``, ``@reg.register("name")`` or ``reg.register(obj, name=…)``.

        ``name`` defaults to the object's ``name`` attribute and ``description`` to its
        ``description`` attribute (classes registered as methods or denoisers carry both).
        """
        if obj is None:
            return lambda target: self._add(target, name, description)
        if isinstance(obj, str):
            return lambda target: self._add(target, obj, description)
        return self._add(obj, name, description)

    def _add(self, obj: T, name: str | None, description: str | None) -> T:
        key = name if name is not None else getattr(obj, "name", None)
        if not key or not isinstance(key, str):
            raise ValueError(f"a {self.kind} needs a name to be registered: {obj!r}")
        if key in self._entries and self._entries[key] is not obj:
            raise ValueError(f"{self.kind} name {key!r} registered twice")
        self._entries[key] = obj
        self._descriptions[key] = description if description is not None else str(getattr(obj, "description", ""))
        return obj

    # ------------------------------------------------------------------ lookup
    def _load(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            loader()

    def _import(self, name: str) -> None:
        """Import the module that defines an indexed entry, else run the loader."""
        module = self.index.get(name, {}).get("module")
        if module is not None:
            import importlib

            importlib.import_module(module)
        if name not in self._entries:
            self._load()

    def get(self, name: str, default: Any = ...) -> T:  # type: ignore[override]
        """The entry ``name``; an unknown name raises :class:`DipkitError` (or returns ``default``)."""
        if name not in self._entries:
            self._import(name)
        if name in self._entries:
            return self._entries[name]
        if default is not ...:
            return default
        raise DipkitError(self.unknown_message(name))

    def unknown_message(self, name: Any) -> str:
        msg = f"unknown {self.kind} {name!r} (choose from {', '.join(self.names())}"
        return msg + (f"; {self.hint})" if self.hint else ")")

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, obj: T) -> None:
        """Set (or replace) an entry explicitly, e.g. a test double; prefer :meth:`register`."""
        self._entries[name] = obj
        self._descriptions[name] = str(getattr(obj, "description", ""))

    def __delitem__(self, name: str) -> None:
        del self._entries[name]
        del self._descriptions[name]

    def __contains__(self, name: object) -> bool:
        if name in self._entries or name in self.index:
            return True
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        self._load()
        return list(self._entries)

    def describe(self) -> dict[str, str]:
        """``{name: one-line description}`` in registration order."""
        self._load()
        return dict(self._descriptions)

    def catalogue(self) -> dict[str, dict]:
        """``{name: fields}`` of the indexed and the registered entries, importing nothing: an
        indexed entry's fields are its index entry; a registered one's are ``description``,
        ``reference`` and ``algorithm`` when the object has them."""
        out = {name: dict(fields) for name, fields in self.index.items()}
        for name, obj in self._entries.items():
            if name not in out:
                out[name] = {"description": self._descriptions[name],
                             **{k: getattr(obj, k) for k in ("reference", "algorithm") if hasattr(obj, k)}}
        return out

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
