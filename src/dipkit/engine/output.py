r"""Output rules: how a method turns its iterates into the reconstruction ``state.estimate``.

* :class:`LastIterate` — :math:`\hat x_k = x_k` (Algorithm 1, line 6);
* :class:`EMA` — exponential moving average
  :math:`\hat x_k = \beta\,\hat x_{k-1} + (1-\beta)\,x_k`, :math:`\hat x_1 = x_1`
  (CT paper Algorithm 7 line 6; used by Self-Guided DIP and the splitting methods).

Both run on the device with no synchronisation.
"""

from __future__ import annotations

import torch

__all__ = ["OutputRule", "LastIterate", "EMA", "make_output_rule"]


class OutputRule:
    def update(self, state, x: torch.Tensor) -> None:
        raise NotImplementedError  # abstract

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, sd: dict) -> None:
        pass


class LastIterate(OutputRule):
    """``estimate = x`` (the last iterate)."""

    def update(self, state, x):
        state.estimate = x

    def __repr__(self):
        return "LastIterate()"


class EMA(OutputRule):
    r"""``estimate ← β·estimate + (1 − β)·x`` with decay ``β`` (``beta``) in (0, 1)."""

    def __init__(self, beta: float = 0.99):
        if not 0.0 < beta < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {beta}")
        self.beta = float(beta)

    def update(self, state, x):
        if state.estimate is None or state.estimate.shape != x.shape:
            state.estimate = x.clone()
        else:
            state.estimate = torch.lerp(x, state.estimate, self.beta)

    def __repr__(self):
        return f"EMA(beta={self.beta})"


def make_output_rule(ema: float | None) -> OutputRule:
    """``EMA(ema)`` when ``ema`` is a decay in (0, 1), else :class:`LastIterate`."""
    return LastIterate() if ema in (None, 0, 0.0) else EMA(float(ema))
