"""Problems: an operator (a deepinv ``Physics``), a measurement and optional ground truth.

A :class:`Problem` is data. It can be simulated (:mod:`dipkit.tasks`), saved to one
self-describing file and loaded back, and reconstructed by any method.

File format (``.npz``, read with ``allow_pickle=False``; no pickle anywhere):

* ``y`` — the measurement, shape ``[1, ...]`` (leading batch dimension);
* ``x_true`` — optional ground truth ``[1, C, H, W]`` in image units (usually [0, 1]);
* ``header`` — a JSON document (stored as a 0-d unicode array) with
  ``{"format": "dipkit-problem", "version": 1, "operator": SPEC, "meta": {...}}``.

``SPEC`` is the operator's JSON spec (see :func:`dipkit.physics.build_physics`); loading a problem
rebuilds exactly the same operator, so a reloaded problem gives bit-identical results.

*Outside operators.* A problem can also hold an operator dipkit did not build (any deepinv
``Physics``, or any object with ``A`` and ``A_adjoint``; :meth:`Problem.external`, used by
:func:`dipkit.api.solve`). It has no spec (``spec == {}``), so it cannot be rebuilt: it is never
moved to another device (asking for one is an error), and its file stores the arrays with
``"operator": null`` and the operator's type name — loading it needs the operator again,
``Problem.load(path, physics=op)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DipkitError
from .io import atomic_write
from .io.guard import check_file, describe, guarded, open_npz
from .physics import build_physics

__all__ = ["Problem", "FORMAT", "VERSION", "EXTERNAL", "operator_device", "same_device", "file_sha256"]

FORMAT = "dipkit-problem"
VERSION = 1
#: the task name of a problem with an outside operator
EXTERNAL = "external"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def same_device(a, b) -> bool:
    """``a`` and ``b`` name the same device (``cuda`` is the current CUDA device)."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type == "cuda":
        cur = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return (cur if a.index is None else a.index) == (cur if b.index is None else b.index)
    return True


def operator_device(physics) -> torch.device | None:
    """The device of an operator's tensors (an ``nn.Module``'s parameters and buffers, or tensor
    attributes), or None when it holds none (then it works wherever its input is)."""
    tensors = []
    if isinstance(physics, torch.nn.Module):
        tensors = [t for t in (*physics.parameters(), *physics.buffers())]
    if not tensors:
        tensors = [v for v in vars(physics).values() if isinstance(v, torch.Tensor)] if hasattr(physics, "__dict__") else []
    return tensors[0].device if tensors else None


@dataclass
class Problem:
    """An inverse problem ``y = A x + η``.

    :param physics: the forward operator ``A`` (a deepinv ``Physics``), rebuilt from ``spec``.
    :param y: the measurement, ``[1, ...]``.
    :param x_true: optional ground truth ``[1, C, H, W]``.
    :param spec: the operator's JSON spec (``{"kind": ..., ...}``).
    :param meta: free JSON metadata: ``task``, ``noise_sigma`` (absolute noise std of ``η``,
        when known), ``source``, ``seed``, ``img_shape`` ...
    """

    physics: Any
    y: torch.Tensor
    spec: dict
    x_true: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)
    #: the file the problem was loaded from (absolute path) and its SHA-256, when it came from one
    file: str | None = field(default=None, compare=False, repr=False)
    file_sha256: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def external(cls, physics, y: torch.Tensor, *, x_true: torch.Tensor | None = None, meta: dict | None = None) -> "Problem":
        """A problem with an outside operator (module docs): the image shape is that of
        ``A_adjoint(y)``; ``meta["task"]`` is ``"external"`` unless given."""
        if not (callable(getattr(physics, "A", None)) and callable(getattr(physics, "A_adjoint", None))):
            raise DipkitError(f"the operator must have A and A_adjoint (a deepinv Physics), got {type(physics).__name__}")
        if not isinstance(y, torch.Tensor):
            raise DipkitError(f"y must be a torch tensor, got {type(y).__name__}")
        if y.ndim < 2:
            raise DipkitError(f"y must have a leading batch dimension, got shape {tuple(y.shape)}")
        if not bool(torch.isfinite(y).all()):
            raise DipkitError("the measurement y contains NaN or Inf")
        with torch.no_grad():
            try:
                aty = physics.A_adjoint(y)
            except Exception as exc:  # noqa: BLE001 - the operator is the user's
                raise DipkitError(f"A_adjoint(y) failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
        if not isinstance(aty, torch.Tensor) or aty.ndim != 4 or aty.is_complex():
            raise DipkitError(f"A_adjoint(y) must be a real image batch [B, C, H, W], got "
                              f"{tuple(aty.shape) if isinstance(aty, torch.Tensor) else type(aty).__name__}"
                              + (" (complex: use a real 2-channel operator)" if isinstance(aty, torch.Tensor)
                                 and aty.is_complex() else ""))
        if x_true is not None and tuple(x_true.shape[1:]) != tuple(aty.shape[1:]):
            raise DipkitError(f"x_true has shape {tuple(x_true.shape)}, but A_adjoint(y) has {tuple(aty.shape)}")
        full = {"task": EXTERNAL, **(meta or {}), "img_shape": [int(s) for s in aty.shape[1:]],
                "operator": f"{type(physics).__module__}.{type(physics).__qualname__}"}
        return cls(physics=physics, y=y, spec={}, x_true=x_true, meta=full)

    @property
    def is_external(self) -> bool:
        """Whether the operator is an outside one (no spec: it cannot be rebuilt or moved)."""
        return not self.spec

    # ------------------------------------------------------------------ properties
    @property
    def task(self) -> str:
        return str(self.meta.get("task", self.spec.get("kind", "unknown")))

    @property
    def img_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of the unknown image."""
        if self.x_true is not None:
            return tuple(self.x_true.shape[1:])
        shape = self.meta.get("img_shape")
        if shape is None:
            raise DipkitError("problem has neither a ground truth nor meta['img_shape']")
        return tuple(int(s) for s in shape)

    @property
    def device(self) -> torch.device:
        return self.y.device

    @property
    def noise_sigma(self) -> float | None:
        """The measurement's noise std when the problem knows it (``meta["noise_sigma"]``), else None."""
        from .physics.noise import known_sigma

        return known_sigma(self.meta)

    def state_meta(self) -> dict:
        """What a run knows about the problem besides the operator and ``y``: ``meta`` plus the
        operator kind (``operator_kind``; None for an outside operator) and the image shape (``img_shape``)."""
        return {**self.meta, "operator_kind": self.spec.get("kind"), "img_shape": list(self.img_shape)}

    def fingerprint(self) -> str:
        """SHA-256 of the measurement (shape, dtype and values): what a checkpoint checks on resume."""
        y = self.y.detach().cpu().contiguous()
        h = hashlib.sha256(f"{tuple(y.shape)} {y.dtype}".encode())
        h.update(y.numpy().tobytes() if not y.is_complex() else torch.view_as_real(y).numpy().tobytes())
        return h.hexdigest()

    def to(self, device: str | torch.device) -> "Problem":
        """The same problem on another device (the operator is rebuilt there from its spec). An
        outside operator is never moved: the problem stays where it is when that is ``device`` (and the
        operator holds no tensors elsewhere), else a :class:`DipkitError`; an operator without tensors
        works wherever its input is, so then only ``y`` and ``x_true`` move."""
        device = torch.device(device)
        if self.is_external:
            op_dev = operator_device(self.physics)
            if op_dev is not None and not same_device(op_dev, device):
                raise DipkitError(f"the operator is on {op_dev} but the run asks for {device}; dipkit cannot move an "
                                  f"operator it did not build: move it yourself (physics.to(...)) or ask for {op_dev}")
            if same_device(device, self.device):
                return self
            return Problem(physics=self.physics, y=self.y.to(device), spec={},
                           x_true=None if self.x_true is None else self.x_true.to(device), meta=dict(self.meta),
                           file=self.file, file_sha256=self.file_sha256)
        if same_device(device, self.device):
            return self
        return Problem(
            physics=build_physics(self.spec, device=device, dtype=self.y.dtype),
            y=self.y.to(device),
            spec=self.spec,
            x_true=None if self.x_true is None else self.x_true.to(device),
            meta=dict(self.meta),
            file=self.file,
            file_sha256=self.file_sha256,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the problem to ``path`` atomically (``.npz`` format, see module docs)."""
        path = Path(path)
        header = {"format": FORMAT, "version": VERSION, "operator": self.spec or None, "meta": self.meta}
        if self.is_external:
            header["external_operator"] = self.meta.get("operator", type(self.physics).__name__)
        arrays = {
            "y": self.y.detach().cpu().numpy(),
            "header": np.array(json.dumps(header)),
        }
        if self.x_true is not None:
            arrays["x_true"] = self.x_true.detach().cpu().numpy()
        with atomic_write(path, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None, *, physics=None) -> "Problem":
        """Read a problem file written by :meth:`save`; any defect raises :class:`DipkitError` with one
        line naming the file (read through :mod:`dipkit.io.guard`, ``allow_pickle=False``: not an
        ``.npz`` archive, truncated, object arrays, a bad header, an operator spec that does not
        build, or a measurement that does not fit its operator's shape).

        ``device``: where to put it (default: the CPU; for an outside operator, the operator's device).
        ``physics``: the operator of a problem saved with an outside operator (it is not in the
        file); not allowed for a problem whose file describes its operator."""
        what = "problem file"
        path = check_file(path, what)
        with open_npz(path, what, hint=_NOT_A_PROBLEM) as z:
            if "header" not in z or "y" not in z:
                raise DipkitError(f"not a dipkit problem file: {path} (an .npz archive without 'header' and 'y'; "
                                  f"it holds {', '.join(map(repr, z.files[:8])) or 'nothing'}); {_NOT_A_PROBLEM}")
            raw = z.get("header")
            y = z.get("y")
            x_true = z.get("x_true") if "x_true" in z else None
        if raw.dtype.kind != "U" or raw.ndim != 0:
            raise DipkitError(f"not a dipkit problem file: {path} (its 'header' is not a JSON text)")
        try:
            header = json.loads(str(raw[()]))
        except (ValueError, RecursionError) as exc:
            raise DipkitError(f"not a dipkit problem file (or corrupt): {path} (its header is {describe(exc)})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise DipkitError(f"not a dipkit problem file: {path} (format {header.get('format')!r})"
                              if isinstance(header, dict) else f"not a dipkit problem file: {path}")
        version = header.get("version", -1)
        if isinstance(version, bool) or not isinstance(version, int):
            raise DipkitError(f"problem file {path}: bad version {version!r} in its header")
        if version > VERSION:
            raise DipkitError(f"problem file {path} has version {header['version']}; "
                              f"this dipkit reads up to {VERSION}")
        if not isinstance(header.get("meta") or {}, dict):
            raise DipkitError(f"problem file {path}: its header's 'meta' is not a mapping")
        for name, arr in (("y", y), ("x_true", x_true)):
            if arr is None:
                continue
            if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.complexfloating):
                raise DipkitError(f"problem file {path}: '{name}' has dtype {arr.dtype}, expected floats")
            if arr.size == 0:
                raise DipkitError(f"problem file {path}: '{name}' is empty")
            if not np.all(np.isfinite(arr)):
                raise DipkitError(f"problem file {path}: '{name}' contains NaN or Inf")
        if y.ndim < 2:
            raise DipkitError(f"problem file {path}: 'y' has shape {list(y.shape)}, expected a leading batch "
                              "dimension [1, ...]")
        if x_true is not None and x_true.ndim != 4:
            raise DipkitError(f"problem file {path}: 'x_true' has shape {list(x_true.shape)}, expected [1, C, H, W]")
        spec = header.get("operator")
        with guarded(path, what):
            sha = file_sha256(path)
        if spec is None and header.get("external_operator"):
            name = header["external_operator"]
            if physics is None:
                raise DipkitError(f"problem file {path} was saved with an outside operator ({name}); supply it "
                                  "again: Problem.load(path, physics=op)")
            meta = dict(header.get("meta") or {})
            dev = operator_device(physics) if device is None else torch.device(device)
            dev = torch.device("cpu") if dev is None else dev
            op_dev = operator_device(physics)
            if op_dev is not None and not same_device(op_dev, dev):
                raise DipkitError(f"the operator is on {op_dev} but device={dev} was asked; dipkit cannot move an "
                                  "operator it did not build")
            prob = cls.external(physics, torch.from_numpy(y).to(dev), meta=meta,
                                x_true=None if x_true is None else torch.from_numpy(x_true).to(dev))
            prob.file, prob.file_sha256 = str(path.resolve()), sha
            return prob
        if not isinstance(spec, dict):
            raise DipkitError(f"problem file {path}: missing operator spec")
        if physics is not None:
            raise DipkitError(f"problem file {path} describes its own operator ({spec.get('kind')}); "
                              "physics= is only for problems saved with an outside operator")
        device = torch.device("cpu" if device is None else device)
        yt = torch.from_numpy(y).to(device)
        physics = _rebuild(path, spec, device, yt.dtype if yt.is_floating_point() else torch.float32)
        prob = cls(
            physics=physics,
            y=yt,
            spec=spec,
            x_true=None if x_true is None else torch.from_numpy(x_true).to(device),
            meta=dict(header.get("meta") or {}),
            file=str(path.resolve()),
            file_sha256=sha,
        )
        _check_shapes(prob, path)
        return prob


#: appended to "not a problem file" messages
_NOT_A_PROBLEM = "problem files are written by 'dipkit simulate' and 'dipkit import'"


def _rebuild(path: Path, spec: dict, device, dtype):
    """The operator of a problem file's spec; a spec that does not build names the file."""
    try:
        return build_physics(spec, device=device, dtype=dtype)
    except DipkitError as exc:
        raise DipkitError(f"problem file {path}: its operator does not build: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a damaged spec can fail anywhere in a builder
        raise DipkitError(f"problem file {path}: its operator ({spec.get('kind')!r}) does not build: "
                          f"{describe(exc)}") from None


def _check_shapes(prob: "Problem", path: Path) -> None:
    """The file's measurement fits its operator: ``A`` of an image of the problem's shape has the shape
    of ``y`` (one operator application on zeros)."""
    try:
        shape = prob.img_shape
    except DipkitError:
        raise DipkitError(f"problem file {path} has neither a ground truth nor meta.img_shape") from None
    if len(shape) != 3 or not all(int(s) > 0 for s in shape):
        raise DipkitError(f"problem file {path}: bad image shape {list(shape)}")
    dtype = prob.y.dtype if prob.y.is_floating_point() else torch.float32
    try:
        with torch.no_grad():
            ay = prob.physics.A(torch.zeros((1, *shape), dtype=dtype, device=prob.y.device))
    except Exception as exc:  # noqa: BLE001
        raise DipkitError(f"problem file {path}: its operator does not take images of shape {list(shape)} "
                          f"({describe(exc)})") from None
    if tuple(ay.shape[1:]) != tuple(prob.y.shape[1:]):
        raise DipkitError(f"problem file {path}: 'y' has shape {list(prob.y.shape)} but its operator measures "
                          f"{list(ay.shape)}")
