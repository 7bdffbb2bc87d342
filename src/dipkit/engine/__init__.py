"""The engine: one loop (:func:`run`), its :class:`State`, callbacks and output rules."""

from .callbacks import Callback, CallbackList
from .output import EMA, LastIterate, OutputRule, make_output_rule
from .solver import observe, run
from .state import State

__all__ = ["run", "observe", "State", "Callback", "CallbackList", "OutputRule", "LastIterate", "EMA",
           "make_output_rule"]
