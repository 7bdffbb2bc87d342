"""Classical baselines — FBP, TV by PDHG, plug-and-play ADMM and each task's naive (direct)
reconstruction: no network, the same Problem in and the same run directory out as the DIP
methods, through the same engine (:class:`Baseline`)."""

from ..core.baseline import Baseline

__all__ = ["Baseline"]
