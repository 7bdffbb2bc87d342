"""TV's ground-truth-free weight, re-exported from :mod:`dipkit.core.tv_alpha` (where it lives, with
its docs), under both of its users: the ``tv`` baseline and ``dip-tv``. Its private helpers stay
importable from here too (benchmarks/tv_diag and the tests use them)."""

from __future__ import annotations

from ..core.tv_alpha import (  # noqa: F401 - private helpers, re-exported for benchmarks/tv_diag and tests
    _SURE_STREAM,
    AUTO_ALPHAS,
    FALL,
    FOLDS,
    PATH_RTOL,
    PATH_STEPS,
    PATIENCE,
    POLISH_STEPS,
    SURE_EPS,
    _gather,
    _HoldOut,
    _is_identity,
    _parabola_vertex,
    _Path,
    _Settled,
    _Sure,
    choose_alpha,
)

__all__ = ["choose_alpha", "AUTO_ALPHAS"]
