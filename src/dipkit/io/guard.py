r"""Guarded reading: the one path by which dipkit opens and parses a file it is given.

Problem files (:meth:`dipkit.problem.Problem.load`), run, bench and geometry configurations (YAML),
network and denoiser weights, checkpoints and pre-training trajectories (``torch.load``), measured
arrays (``.npy``/``.npz``, :mod:`dipkit.importers.arrays`) and JSON side files are read through the
functions here. Whatever is wrong with the file — missing, a directory, empty, unreadable, not the
format asked for, truncated, corrupt, holding pickled Python objects — becomes a
:class:`~dipkit.errors.DipkitError` whose message is one line naming the file and what is wrong;
the CLI prints it as ``dipkit: error: …`` and exits with code 2 (bad input). No other exception
gets out of a guarded read, so no input file makes dipkit show a traceback.

* :func:`check_file` — exists, is a file, is readable, is not empty;
* :func:`guarded` — a ``with`` block in which any exception (but a :class:`DipkitError`, which
  passes as it is) becomes ``cannot read the <what> <path>: <reason>``; callers parse and check
  a file's content inside it;
* :func:`read_npz` / :func:`open_npz` / :func:`read_npy` — NumPy files, always with
  ``allow_pickle=False``: an object array would run pickled code, so dipkit never loads one (the
  message says so). The file's first bytes are checked first, so a ``.npy`` array given where an
  archive is expected (or the reverse) is named as such;
* :func:`read_yaml` (and :func:`yaml_loads`: dipkit's safe loader, ``1e-4`` is a float) — YAML;
* :func:`read_json` — JSON;
* :func:`read_torch` — ``torch.load(weights_only=True)`` on the CPU: tensors and plain
  containers only, no pickled code runs.

What a reader then checks about the content (keys, types, shapes) it reports with its own
one-line :class:`DipkitError` naming the file.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..errors import DipkitError

__all__ = ["check_file", "guarded", "describe", "read_npz", "open_npz", "read_npy", "read_yaml", "yaml_loads",
           "read_json", "read_text", "read_torch", "holds", "NPY_MAGIC", "ZIP_MAGIC"]

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive (an empty one: the end record only)
_LIMIT = 200  # characters of a library's message kept in ours


# ---------------------------------------------------------------------- the guard
def check_file(path: str | os.PathLike, what: str, *, empty_ok: bool = False) -> Path:
    """``path`` as a :class:`~pathlib.Path` if it names a readable, non-empty file (``empty_ok``:
    empty allowed), else a one-line :class:`DipkitError` (``<what> not found: <path>`` …)."""
    path = Path(path)
    try:
        if not path.exists():
            raise DipkitError(f"{what} not found: {path}")
        if path.is_dir():
            raise DipkitError(f"{what} is a directory, not a file: {path}")
        if not path.is_file():
            raise DipkitError(f"{what} is not a file: {path}")
        if not os.access(path, os.R_OK):
            raise DipkitError(f"{what} is not readable (permission denied): {path}")
        if not empty_ok and path.stat().st_size == 0:
            raise DipkitError(f"{what} is empty: {path}")
    except OSError as exc:
        raise DipkitError(f"cannot read the {what} {path}: {exc.strerror or describe(exc)}") from None
    return path


@contextlib.contextmanager
def guarded(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn any exception of the ``with`` block into ``DipkitError("cannot read the <what> <path>:
    <reason>")`` (one line); a :class:`DipkitError` raised in the block passes unchanged."""
    try:
        yield
    except DipkitError:
        raise
    except MemoryError:
        raise DipkitError(f"cannot read the {what} {path}: too large to load into memory (or a corrupt "
                          "size in it)") from None
    except Exception as exc:  # noqa: BLE001 - every reader failure becomes one line
        raise DipkitError(f"cannot read the {what} {path}: {describe(exc)}") from None


def _squeeze(text: str, limit: int = _LIMIT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(exc: BaseException) -> str:
    """What went wrong, on one line, for the exceptions the readers below raise (the zip, NumPy,
    YAML, JSON, text and torch readers')."""
    import json
    import pickle
    import zipfile

    msg = str(exc)
    name = type(exc).__name__
    if isinstance(exc, zipfile.BadZipFile) or "central directory" in msg:
        return f"a truncated or corrupt archive ({_squeeze(msg.split('. ')[0], 120)})"
    if "allow_pickle" in msg or "pickled (object) data" in msg:
        return ("it holds pickled Python objects (object arrays), which dipkit never loads: NumPy files "
                "are read with allow_pickle=False")
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in msg:
        detail = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\n\n|$)", msg, re.S)
        why = _squeeze(detail.group(1), 120) if detail and detail.group(1).strip() else "not a plain torch file"
        return (f"it holds something besides tensors and plain containers ({why}), which dipkit does not "
                "load: torch files are read with weights_only=True")
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start}: {_squeeze(exc.reason, 60)})"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
    if isinstance(exc, EOFError):
        return f"truncated ({_squeeze(msg, 120) or 'unexpected end of file'})"
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or msg
        return f"not valid YAML ({_squeeze(problem, 120)}{where})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{name}: {_squeeze(msg)}" if msg.strip() else name


def holds(obj: Any) -> str:
    """A short description of what a file held (for "expected …, the file holds …" messages)."""
    if isinstance(obj, dict):
        return f"a mapping of {len(obj)} entries" if obj else "an empty mapping"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _head(path: Path, n: int = 8) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


# ---------------------------------------------------------------------- NumPy
def _kind_of(head: bytes) -> str:
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(ZIP_MAGIC):
        return "npz"
    return "other"


def _refuse_other(path: Path, what: str, want: str, kind: str, hint: str) -> None:
    hint = f"; {hint}" if hint else ""
    if kind == "npy" and want == "npz":
        raise DipkitError(f"cannot read the {what} {path}: it is a single NumPy array (.npy), not an .npz "
                          f"archive{hint}")
    if kind == "npz" and want == "npy":
        raise DipkitError(f"cannot read the {what} {path}: it is an .npz archive, not a single NumPy array "
                          f"(.npy){hint}")
    if kind == "other":
        label = "an .npz archive" if want == "npz" else "a NumPy .npy file"
        raise DipkitError(f"cannot read the {what} {path}: it is not {label} (unrecognised content){hint}")


class _Members:
    """An open ``.npz`` archive (``allow_pickle=False``): :attr:`files`, and :meth:`get` that names the
    member in its message when it cannot be read."""

    def __init__(self, npz, path: Path, what: str):
        self._npz, self.path, self.what = npz, path, what
        self.files: list[str] = list(npz.files)

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def get(self, name: str):
        import numpy as np

        try:
            return np.asarray(self._npz[name])
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise DipkitError(f"cannot read the {self.what} {self.path}: {name!r} is an object array "
                                  "(pickled Python objects), which dipkit never loads: archives are read with "
                                  "allow_pickle=False") from None
            raise DipkitError(f"cannot read the {self.what} {self.path}: {name!r}: {describe(exc)}") from None
        except DipkitError:
            raise
        except MemoryError:
            raise DipkitError(f"cannot read the {self.what} {self.path}: {name!r} is too large to load into "
                              "memory (or its size is corrupt)") from None
        except Exception as exc:  # noqa: BLE001
            raise DipkitError(f"cannot read the {self.what} {self.path}: {name!r}: {describe(exc)}") from None


@contextlib.contextmanager
def open_npz(path: str | os.PathLike, what: str, *, hint: str = "") -> Iterator[_Members]:
    """An ``.npz`` archive opened with ``allow_pickle=False``, guarded (:func:`guarded`) for the whole
    ``with`` block; ``members.get(name)`` reads one array. ``hint`` is appended (after ``;``) to the
    message when the file is not an archive at all (e.g. what writes one)."""
    import numpy as np

    path = check_file(path, what)
    with guarded(path, what):
        _refuse_other(path, what, "npz", _kind_of(_head(path)), hint)
        with np.load(path, allow_pickle=False) as npz:
            yield _Members(npz, path, what)


def read_npz(path: str | os.PathLike, what: str, *, keys=None, hint: str = "") -> dict:
    """``{name: array}`` of an ``.npz`` archive (all members, or just ``keys`` where present), read with
    ``allow_pickle=False`` (see :func:`open_npz`)."""
    with open_npz(path, what, hint=hint) as z:
        names = z.files if keys is None else [k for k in keys if k in z]
        return {name: z.get(name) for name in names}


def read_npy(path: str | os.PathLike, what: str, *, hint: str = ""):
    """The array of a ``.npy`` file, read with ``allow_pickle=False``."""
    import numpy as np

    path = check_file(path, what)
    with guarded(path, what):
        _refuse_other(path, what, "npy", _kind_of(_head(path)), hint)
        return np.load(path, allow_pickle=False)


# ---------------------------------------------------------------------- YAML, JSON, text
class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` (no dot) as a float, as YAML 1.2 does (1.1 reads a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def yaml_loads(text: str) -> Any:
    """Parse YAML text with dipkit's loader (safe: plain data only; ``1e-4`` is a float). Errors are
    PyYAML's (:func:`read_yaml` turns them into one line)."""
    return yaml.load(text, Loader=_Loader)


def read_text(path: str | os.PathLike, what: str, *, empty_ok: bool = True) -> str:
    """A UTF-8 text file's content (guarded)."""
    path = check_file(path, what, empty_ok=empty_ok)
    with guarded(path, what):
        return path.read_text(encoding="utf-8")


def read_yaml(path: str | os.PathLike, what: str = "config") -> Any:
    """A YAML file parsed by :func:`yaml_loads` (an empty file is ``None``)."""
    text = read_text(path, what)
    with guarded(path, what):
        return yaml_loads(text)


def read_json(path: str | os.PathLike, what: str) -> Any:
    """A JSON file, parsed."""
    import json

    text = read_text(path, what, empty_ok=False)
    with guarded(path, what):
        return json.loads(text)


# ---------------------------------------------------------------------- torch
def read_torch(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain containers
    only (no pickled code runs); a NumPy file given instead is named as such."""
    import torch

    path = check_file(path, what)
    with guarded(path, what):
        head = _head(path)
        if head.startswith(NPY_MAGIC):
            raise DipkitError(f"cannot read the {what} {path}: it is a NumPy array (.npy), not a torch file")
        if not head.startswith((b"PK", b"\x80")):  # torch.save: a zip archive, or (legacy) a pickle
            raise DipkitError(f"cannot read the {what} {path}: it is not a torch file (unrecognised content)")
        return torch.load(path, map_location="cpu", weights_only=True)
