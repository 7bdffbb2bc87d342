"""Backends of dipkit's CT operators: ``A`` and ``A^T`` by a sparse system matrix or by deepinv.

See :mod:`dipkit.physics.ct` (module docstring) for when each backend is used and
:mod:`dipkit.physics.sparse` for the matrices. General geometries (:mod:`dipkit.physics.raygeom`:
a detector spacing or cell count of one's own in parallel beam, a centre-of-rotation offset, a
rotation axis elsewhere, a pixel size) exist only as sparse matrices: ``backend="deepinv"`` is an
error for them and ``backend=None`` picks ``"sparse"`` on every device.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DipkitError
from . import sparse as _sparse

__all__ = ["BACKENDS", "AUTO_SPARSE_MAX_NNZ", "default_backend", "check_backend", "Backend"]

BACKENDS = ("sparse", "deepinv")

#: ``backend=None`` picks the sparse backend (on the CPU) only while the matrix is estimated
#: (:func:`dipkit.physics.sparse.estimate_nnz`, an upper bound ~2x the true count) to hold at
#: most this many entries -- ~1 GiB for ``A`` and ``A^T`` together, 512^2 with 180 views.
#: Bigger geometries keep deepinv's projector (less memory, no long first build).
AUTO_SPARSE_MAX_NNZ = 2**28

def default_backend(device: str | torch.device = "cpu") -> str:
    """The backend ``backend=None`` picks on ``device`` for a moderate geometry: ``"sparse"`` on
    the CPU, ``"deepinv"`` elsewhere (see the module docstring)."""
    return "sparse" if torch.device(device).type == "cpu" else "deepinv"


def check_backend(backend: Any) -> None:
    if backend is not None and backend != "auto" and backend not in BACKENDS:
        raise DipkitError(f"unknown CT backend {backend!r} (expected 'sparse' or 'deepinv')")


_SPARSE_DTYPES = (torch.float32, torch.float64)


# ----------------------------------------------------------------------------------------------
# Why a sparse backend: deepinv's projector resamples the whole padded image with grid_sample at
# every call and gets its adjoint by autograd through grid_sample (a scatter-add); on a CPU that
# is ~86 ms for A + backward at 256^2 / 60 views (2 idle cores). The operator is linear and
# fixed, so dipkit.physics.sparse computes the same sample points and bilinear weights once, as
# a CSR matrix; A x and A^T y are then sparse matrix-vector products, 9-13x faster at 256^2,
# 6-9x at 128^2 (benchmarks/sparse_ct.py, 2-core CPU).
# ----------------------------------------------------------------------------------------------
class Backend:
    """Mixin (before :class:`Tomography` in the MRO): ``A`` / ``A_adjoint`` through the selected
    backend. The sparse matrices are non-persistent buffers, so ``.to(device)`` moves them."""

    backend: str

    def _setup_backend(self, backend: Any, make_geometry, device, dtype, general: bool = False) -> None:
        """Select the backend (``backend`` already checked) and, for ``"sparse"``, get the matrix
        of ``make_geometry()`` (a :class:`dipkit.physics.sparse.RayGeometry`) onto ``device``;
        ``general``: a geometry only the sparse backend computes."""
        explicit = backend is not None and backend != "auto"
        geometry = make_geometry() if dtype in _SPARSE_DTYPES else None
        if general and geometry is None:
            raise DipkitError(f"this CT geometry needs the sparse backend, which needs float32 or "
                              f"float64, not {dtype}")
        if general and backend == "deepinv":
            raise DipkitError("deepinv's CT projector cannot express this geometry (a detector "
                              "spacing or cell count of its own in parallel beam, a centre-of-rotation "
                              "offset, a rotation axis elsewhere or a pixel size): only "
                              "backend='sparse' (the default) computes it")
        if explicit:
            if backend == "sparse" and geometry is None:
                raise DipkitError(f"the sparse CT backend needs float32 or float64, not {dtype}")
        elif general:
            backend = "sparse"
        elif (geometry is not None and default_backend(device) == "sparse"
              and _sparse.estimate_nnz(geometry) <= AUTO_SPARSE_MAX_NNZ):
            backend = "sparse"
        else:
            backend = "deepinv"
        self.backend = backend
        self.backend_explicit = explicit
        self.ray_geometry = geometry
        parts = {}
        if backend == "sparse":
            sm = _sparse.system_matrix(geometry)
            for name, p in (("A", sm.A_parts), ("AT", sm.AT_parts)):
                parts.update({f"_sparse_{name}_crow": p.crow, f"_sparse_{name}_col": p.col,
                              f"_sparse_{name}_val": p.val})
        for name in ("A", "AT"):  # dense parts, not sparse tensors: see sparse.CSRParts
            for part in ("crow", "col", "val"):
                key = f"_sparse_{name}_{part}"
                t = parts.get(key)
                self.register_buffer(key, None if t is None else t.to(device), persistent=False)

    def _sparse_matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, A^T)`` as torch sparse CSR tensors (views of the buffers; no copy, no sync)."""
        shape = (self.n_detector_pixels * self.views, self.img_width * self.img_width)
        a = _sparse.csr(self._sparse_A_crow, self._sparse_A_col, self._sparse_A_val, shape)
        at = _sparse.csr(self._sparse_AT_crow, self._sparse_AT_col, self._sparse_AT_val,
                         shape[::-1])
        return a, at

    def _backend_spec(self) -> dict:
        return {"backend": self.backend} if self.backend_explicit else {}

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """Forward projection ``[B, C, N, N]`` -> ``[B, C, n_detector_pixels, views]``."""
        if self.backend != "sparse":
            return super().A(x, **kwargs)
        n = self.img_width
        if tuple(x.shape[-2:]) != (n, n):
            raise ValueError(f"Input image size {tuple(x.shape[-2:])} does not match the operator "
                             f"image size {(n, n)}.")
        a, at = self._sparse_matrices()
        return _sparse.apply_matrix(x, a, at, self.measurement_shape)

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """Exact adjoint (back-projection) ``[B, C, n_detector_pixels, views]`` -> ``[B, C, N, N]``."""
        if self.backend != "sparse":
            return super().A_adjoint(y, **kwargs)
        if tuple(y.shape[-2:]) != tuple(self.measurement_shape):
            raise ValueError(f"sinogram shape {tuple(y.shape[-2:])} does not match the operator "
                             f"{tuple(self.measurement_shape)}")
        n = self.img_width
        a, at = self._sparse_matrices()
        return _sparse.apply_matrix(y, at, a, (n, n))
