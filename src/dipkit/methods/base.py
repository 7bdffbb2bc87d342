"""The method interface, re-exported from :mod:`dipkit.core.method` (where it lives, with its docs:
the hooks, and the units and scaling of every method and baseline).

It moved to :mod:`dipkit.core` so that methods and baselines both import it downward; the names
stay importable from here.
"""

from __future__ import annotations

from ..core.method import Method, count, data_fidelity, data_term, nonneg, perturb, positive

__all__ = ["Method", "data_fidelity", "data_term", "positive", "nonneg", "count", "perturb"]
