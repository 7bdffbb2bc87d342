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

:class:`WMV` is a callback usable with any method. It evaluates ``g(k)`` every step on the device,
keeps ``g_min``, ``k_min`` and ``x^{(k_min)}`` on the device,
and reads ``k_min`` back to the host only every ``check_every`` steps to test the stopping
condition — so the run may end up to ``check_every − 1`` steps after the condition first holds;
the selected iteration and estimate are exact (the rule's loop condition ``k ≤ k_min + p`` is
applied on the device). ``mode="record"`` never stops the run: it only records what the rule would
have selected had it stopped the run (the CT paper's Table 2 "early stopping" columns).

*What the variance is measured on* (``source``): ``"estimate"`` — the method's reconstruction
``state.estimate`` (for vanilla DIP the network output; for the methods with an EMA output, the
EMA; for aSeqDIP, its input ``z``); ``"output"`` — the raw network output ``state.x`` of each step
(``f_θ(z)``, or the mean over the perturbed inputs for Self-Guided DIP; for vanilla DIP, which
Wang et al. monitor, the two coincide). The selected reconstruction is ``state.estimate`` at ``k_min`` in both
cases. An EMA is a low-pass filter of the outputs, so its running variance is mostly the EMA's own
drift and lags the outputs by about 1/(1 − α) steps, while the raw output's variance follows
the network's fluctuations. The default is ``"estimate"``: measuring the raw output did not pick
better iterations for the EMA methods. PSNR (dB) of the selected estimate (step), ``wmv:record``
with δ = 0.99, 64², the small U-Net, Adam lr 1e-3, 2000 steps, seed 0; CT: shepp-logan, 30
views, 2 % noise; MRI: ``mr``, 4×:

====================================  ============  ============  ============  ============  ============
method (EMA α), problem               peak          estimate,     output,       estimate,     output,
                                                    W100 p1000    W100 p1000    W50 p200      W50 p200
====================================  ============  ============  ============  ============  ============
dip-denoiser-admm (0.9), CT           26.07 (1990)  26.00 (1910)  25.99 (1901)  22.91 (575)   21.99 (410)
self-guided (0.99, FBP input), CT     31.68 (2000)  31.68 (1999)  31.62 (1931)  28.84 (1099)  31.61 (1919)
dip-denoiser-admm (0.9), MRI          29.67 (2000)  29.41 (1820)  28.84 (1341)  29.06 (1486)  26.42 (316)
self-guided (0.99, noise input), MRI  25.17 (380)   24.36 (1875)  24.05 (1523)  24.04 (1539)  20.81 (177)
====================================  ============  ============  ============  ============  ============

The output's variance reaches its minimum earlier (it keeps fluctuating with the network), which
helped once (self-guided on CT with the short window) and cost up to 3.2 dB elsewhere.

*Checkpoints*: :meth:`WMV.state_dict` holds the window, ``g_min``, ``k_min`` and ``x^{(k_min)}``;
a callback restored with :meth:`WMV.load_state_dict` continues with them when the resumed run
starts (``on_start`` resets only a callback that was not restored), so a run resumed from a
checkpoint selects the same iteration as an uninterrupted one.

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
    :param source: ``"estimate"`` (default): the running variance of ``state.estimate``;
        ``"output"``: of the raw network output ``state.x`` (module docs). The selected
        reconstruction is ``state.estimate`` at the selected step either way.
    """

    rule = "wmv"
    SOURCES = ("estimate", "output")

    def __init__(self, window: int = 100, patience: int = 1000, delta: float = 1.0,
                 mode: str = "stop", check_every: int = 10, source: str = "estimate"):
        if window < 1 or patience < 0 or not delta > 0 or check_every < 1:
            raise ValueError("wmv needs window ≥ 1, patience ≥ 0, delta > 0, check_every ≥ 1")
        if mode not in ("stop", "record"):
            raise ValueError(f"wmv mode must be 'stop' or 'record', got {mode!r}")
        if source not in self.SOURCES:
            raise ValueError(f"wmv source must be 'estimate' or 'output', got {source!r}")
        self.window, self.patience, self.delta = int(window), int(patience), float(delta)
        self.mode, self.check_every, self.source = mode, int(check_every), source
        self._reset()
        self._restored = False
        self.iteration: int | None = None
        self.estimate: torch.Tensor | None = None

    def _reset(self):
        self._buf: torch.Tensor | None = None
        self._n = 0
        self.g_min = self.k_min = self.best = None
        self.stopped = False

    def on_start(self, state):
        # a fresh run starts from an empty window; a resumed one keeps what load_state_dict restored
        if not self._restored:
            self._reset()
        self._restored = False

    @torch.no_grad()
    def on_step_end(self, state):
        est = state.estimate
        x = state.x if self.source == "output" else est
        if self._buf is None:
            self._buf = torch.zeros((self.window, *x.shape), device=x.device, dtype=x.dtype)
            b = x.shape[0]
            self.g_min = torch.full((b,), math.inf, device=x.device, dtype=torch.float64)
            self.k_min = torch.full((b,), -1, device=x.device, dtype=torch.int64)
            self.best = est.clone()
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
        self.best = torch.where(better.view(-1, *[1] * (est.ndim - 1)), est, self.best)
        if self.mode == "stop" and state.step % self.check_every == 0:
            k_min = self.k_min.cpu()  # one read every check_every steps
            if bool((state.step > k_min + self.patience).all()):
                self.stopped = True
                state.request_stop(f"wmv: no new variance minimum for {self.patience} steps "
                                   f"after step {int(k_min.max())}", kind="patience")

    def on_end(self, state):
        if self.k_min is not None and bool((self.k_min >= 0).any()):
            self.iteration = int(self.k_min.max().cpu()) if self.k_min.numel() == 1 else None
            self.iterations = self.k_min.cpu().tolist()
            self.estimate = self.best
        else:
            self.iteration, self.iterations, self.estimate = None, [], None

    def state_dict(self):
        return {"buf": self._buf, "n": self._n, "g_min": self.g_min, "k_min": self.k_min,
                "best": self.best, "stopped": self.stopped, "source": self.source}

    def load_state_dict(self, sd):
        if sd:
            if sd.get("source", "estimate") != self.source:
                raise ValueError(f"wmv: the checkpoint measured the variance of the {sd.get('source', 'estimate')}, "
                                 f"this rule measures the {self.source}")
            self._buf, self._n = sd["buf"], sd["n"]
            self.g_min, self.k_min, self.best, self.stopped = sd["g_min"], sd["k_min"], sd["best"], sd["stopped"]
            self._restored = True
