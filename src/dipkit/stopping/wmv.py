r"""Early stopping by the windowed moving variance (ES-WMV), Wang et al. (2021).

Running variance of the reconstructions over a window of ``W`` iterations (CT paper eq. 19):

.. math::

    \mathrm{VAR}(k) = \frac1W \sum_{w=0}^{W-1}
        \Big\| x^{(k-w)} - \frac1W \sum_{i=0}^{W-1} x^{(k-i)} \Big\|_2^2

— we use the *causal* window ending at ``k`` (the paper's eq. 19 writes the window starting at
``k``; both are the same sequence shifted by ``W − 1``, and the causal one can be evaluated at
``k``, as in Wang et al.'s implementation). The selected reconstruction is ``x^{(k_min)}``.

Algorithm 2 (CT paper, adapted from Wang et al. 2021) with metric ``g(k) = VAR(k)``, patience
``p`` and relative-decrease threshold ``δ``::

    g_min ← ∞ ; k_min ← ∞
    while k ≤ k_min + p:
        if g(k) < δ · g_min:  g_min ← g(k) ; k_min ← k
        k ← k + 1
    return k_min

(The first comparison, with ``g_min = ∞``, always succeeds, so ``k_min`` is finite from the first
evaluated ``k`` on.)

:class:`WMV` is a callback usable with any method. It evaluates ``g(k)`` every step on the device
(``x^{(k)}`` is ``state.estimate``), keeps ``g_min``, ``k_min`` and ``x^{(k_min)}`` on the device,
and reads ``k_min`` back to the host only every ``check_every`` steps to test the stopping
condition — so the run may end up to ``check_every − 1`` steps after the condition first holds;
the selected iteration and estimate are exact (the rule's loop condition ``k ≤ k_min + p`` is
applied on the device). ``mode="record"`` never stops the run: it only records what the rule would
have selected had it stopped the run (the CT paper's Table 2 "early stopping" columns).

Reference: H. Wang, T. Li, Z. Zhuang, T. Chen, H. Liang, J. Sun, "Early stopping for deep image
prior", TMLR 2023 (arXiv:2112.06074).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..engine.callbacks import Callback

__all__ = ["WMV", "select_iteration", "running_variance"]


def select_iteration(g: Sequence[float], patience: int, delta: float = 1.0, start: int = 0) -> tuple[int, bool]:
    """Algorithm 2 on a precomputed metric sequence ``g[i] = g(start + i)``.

    :returns: ``(k_min, stopped)`` — the selected iteration, and whether the rule's loop ended
        (``k > k_min + p``) before the sequence ran out.
    """
    g_min, k_min = math.inf, math.inf
    for i, gk in enumerate(g):
        k = start + i
        if k > k_min + patience:
            return int(k_min), True
        if gk < delta * g_min:
            g_min, k_min = gk, k
    return (int(k_min) if k_min != math.inf else -1), False


def running_variance(window: torch.Tensor) -> torch.Tensor:
    """VAR of eq. (19) for a window ``[W, B, ...]`` → per sample ``[B]``."""
    mean = window.mean(0, keepdim=True)
    return (window - mean).pow(2).flatten(2).sum(2).mean(0)


class WMV(Callback):
    """ES-WMV early stopping (see module docs).

    :param window: ``W``, the window size (Wang et al.: 100).
    :param patience: ``p``, steps without a new minimum before stopping (Wang et al.: 1000).
    :param delta: ``δ``, relative-decrease threshold; ``g(k) < δ·g_min`` counts as a new minimum.
    :param mode: ``"stop"`` ends the run; ``"record"`` only records the selection.
    :param check_every: how often (steps) the stopping condition is read on the host.
    """

    rule = "wmv"

    def __init__(self, window: int = 100, patience: int = 1000, delta: float = 1.0,
                 mode: str = "stop", check_every: int = 10):
        if window < 1 or patience < 0 or not delta > 0 or check_every < 1:
            raise ValueError("wmv needs window ≥ 1, patience ≥ 0, delta > 0, check_every ≥ 1")
        if mode not in ("stop", "record"):
            raise ValueError(f"wmv mode must be 'stop' or 'record', got {mode!r}")
        self.window, self.patience, self.delta = int(window), int(patience), float(delta)
        self.mode, self.check_every = mode, int(check_every)
        self._buf: torch.Tensor | None = None
        self._n = 0
        self.g_min = self.k_min = self.best = None
        self.iteration: int | None = None
        self.estimate: torch.Tensor | None = None
        self.stopped = False

    def on_start(self, state):
        self._buf = None

    @torch.no_grad()
    def on_step_end(self, state):
        x = state.estimate
        if self._buf is None:
            self._buf = torch.zeros((self.window, *x.shape), device=x.device, dtype=x.dtype)
            b = x.shape[0]
            self.g_min = torch.full((b,), math.inf, device=x.device, dtype=torch.float64)
            self.k_min = torch.full((b,), -1, device=x.device, dtype=torch.int64)
            self.best = x.clone()
        self._buf[self._n % self.window] = x
        self._n += 1
        if self._n < self.window:
            return
        g = running_variance(self._buf).to(torch.float64)
        # Alg. 2 evaluates g(k) only while k ≤ k_min + p; afterwards the selection is frozen
        # (this is what "record" mode reports: the rule's choice had it stopped the run).
        active = (self.k_min < 0) | (state.step <= self.k_min + self.patience)
        better = (g < self.delta * self.g_min) & active
        self.g_min = torch.where(better, g, self.g_min)
        self.k_min = torch.where(better, torch.full_like(self.k_min, state.step), self.k_min)
        self.best = torch.where(better.view(-1, *[1] * (x.ndim - 1)), x, self.best)
        if self.mode == "stop" and state.step % self.check_every == 0:
            k_min = self.k_min.cpu()  # one read every check_every steps
            if bool((state.step > k_min + self.patience).all()):
                self.stopped = True
                state.request_stop(f"wmv: no new variance minimum for {self.patience} steps "
                                   f"after step {int(k_min.max())}")

    def on_end(self, state):
        if self.k_min is not None and bool((self.k_min >= 0).any()):
            self.iteration = int(self.k_min.max().cpu()) if self.k_min.numel() == 1 else None
            self.iterations = self.k_min.cpu().tolist()
            self.estimate = self.best
        else:
            self.iteration, self.iterations, self.estimate = None, [], None

    def state_dict(self):
        return {"buf": self._buf, "n": self._n, "g_min": self.g_min, "k_min": self.k_min,
                "best": self.best, "stopped": self.stopped}

    def load_state_dict(self, sd):
        if sd:
            self._buf, self._n = sd["buf"], sd["n"]
            self.g_min, self.k_min, self.best, self.stopped = sd["g_min"], sd["k_min"], sd["best"], sd["stopped"]
