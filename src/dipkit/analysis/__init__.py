"""Analysis tools for DIP networks (``dipkit analyze``).

* :mod:`dipkit.analysis.jacobian` — the top-k singular values and vectors of the network Jacobian
  :math:`J = \\partial f_\\theta(z)/\\partial\\theta` at initialisation (optionally of :math:`AJ`),
  matrix-free by Lanczos bidiagonalisation or a randomised SVD: the linearised DIP / neural tangent
  kernel view of the CT paper's §3.3 and Figure 3.

The submodules import torch; this package does not, until one of its names is used.
"""

from __future__ import annotations

import importlib

__all__ = ["JacobianOperator", "JacobianSpectrum", "jacobian_svd", "lanczos_svd", "randomized_svd"]


def __getattr__(name):
    if name in __all__:
        return getattr(importlib.import_module("dipkit.analysis.jacobian"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
