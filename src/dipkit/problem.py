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
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DipkitError
from .io import atomic_write
from .physics import build_physics

__all__ = ["Problem", "FORMAT", "VERSION"]

FORMAT = "dipkit-problem"
VERSION = 1


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
        operator kind (``operator_kind``) and the image shape (``img_shape``)."""
        return {**self.meta, "operator_kind": self.spec.get("kind"), "img_shape": list(self.img_shape)}

    def to(self, device: str | torch.device) -> "Problem":
        """The same problem on another device (the operator is rebuilt there from its spec)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return Problem(
            physics=build_physics(self.spec, device=device, dtype=self.y.dtype),
            y=self.y.to(device),
            spec=self.spec,
            x_true=None if self.x_true is None else self.x_true.to(device),
            meta=dict(self.meta),
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the problem to ``path`` atomically (``.npz`` format, see module docs)."""
        path = Path(path)
        header = {"format": FORMAT, "version": VERSION, "operator": self.spec, "meta": self.meta}
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
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "Problem":
        """Read a problem file written by :meth:`save`; any defect raises :class:`DipkitError`."""
        path = Path(path)
        if not path.exists():
            raise DipkitError(f"problem file not found: {path}")
        if not path.is_file():
            raise DipkitError(f"problem file is not a file: {path}")
        if path.stat().st_size == 0:
            raise DipkitError(f"problem file is empty: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                if not isinstance(data, np.lib.npyio.NpzFile):
                    raise ValueError("not an .npz archive")
                files = set(data.files)
                if "header" not in files or "y" not in files:
                    raise ValueError("missing 'header' or 'y'")
                header = json.loads(str(data["header"][()]))
                y = np.array(data["y"])
                x_true = np.array(data["x_true"]) if "x_true" in files else None
        except DipkitError:
            raise
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, EOFError) as exc:
            raise DipkitError(f"not a dipkit problem file (or corrupt): {path} ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise DipkitError(f"not a dipkit problem file: {path} (format {header.get('format')!r})"
                              if isinstance(header, dict) else f"not a dipkit problem file: {path}")
        if int(header.get("version", -1)) > VERSION:
            raise DipkitError(f"problem file {path} has version {header['version']}; "
                              f"this dipkit reads up to {VERSION}")
        for name, arr in (("y", y), ("x_true", x_true)):
            if arr is None:
                continue
            if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.complexfloating):
                raise DipkitError(f"problem file {path}: '{name}' has dtype {arr.dtype}, expected floats")
            if arr.size == 0:
                raise DipkitError(f"problem file {path}: '{name}' is empty")
            if not np.all(np.isfinite(arr)):
                raise DipkitError(f"problem file {path}: '{name}' contains NaN or Inf")
        spec = header.get("operator")
        if not isinstance(spec, dict):
            raise DipkitError(f"problem file {path}: missing operator spec")
        device = torch.device(device)
        yt = torch.from_numpy(y).to(device)
        physics = build_physics(spec, device=device, dtype=yt.dtype if yt.is_floating_point() else torch.float32)
        return cls(
            physics=physics,
            y=yt,
            spec=spec,
            x_true=None if x_true is None else torch.from_numpy(x_true).to(device),
            meta=dict(header.get("meta") or {}),
        )
