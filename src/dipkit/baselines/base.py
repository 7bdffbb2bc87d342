"""The base class of the classical baselines, re-exported from :mod:`dipkit.core.baseline` (where it
lives, with its docs), so that the TV solver and its weight search (:mod:`dipkit.core`) can build
on it below both :mod:`dipkit.methods` and :mod:`dipkit.baselines`."""

from __future__ import annotations

from ..core.baseline import Baseline, ObserverCallback

__all__ = ["Baseline", "ObserverCallback"]
