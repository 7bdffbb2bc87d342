r"""Ground-truth-free selection by self-validation: the ``val`` rule.

A seeded random part of the measured entries is held out of the fit
(:class:`dipkit.physics.split.ValidationSplit`); every ``check_every`` steps the rule evaluates, on
the device, the mean squared misfit of the method's current estimate :math:`\hat x_k` on the
held-out entries,

.. math:: v(k) = \frac{1}{|H|}\sum_{i \in H}\big((A\hat x_k)_i - y_i\big)^2 ,

keeps the running minimum of its trailing mean over the last :math:`m` evaluations (``smooth`` m,
below), :math:`\bar v(k) = \frac1m\sum_{j<m} v(k - j c)` (:math:`c` = ``check_every``; fewer terms
before the m-th evaluation), with the estimate :math:`\hat x_{k^\star}` at its step, and — in
``stop`` mode — ends the run when no new minimum has appeared for

.. math:: P(k^\star) = \max\big(p,\ s\,k^\star\big)

steps (``patience`` p, ``patience_scale`` s; read back to the host once every ``check_every``
steps). The window grows with the step of the best iterate so far: a run whose best came late
(slow CT runs peak after thousands of steps, with long flat stretches and temporary rises on the
way) waits proportionally longer, while a fast one (denoising peaks after a few hundred steps)
stops soon after its minimum. This is how a network method decides its own length
(:func:`dipkit.run.resolve.step_budget`: with no ``--iterations`` the budget is only a cap).

The held-out entries carry only noise the fit never saw, so :math:`v` falls while the reconstruction improves and rises once the method starts to fit
noise (or leaves the data): :math:`\mathbb E\,v(k) = \sigma^2 + \frac1{|H|}\|(A(\hat x_k - x))_H\|^2`.
The selection is :math:`\hat x_{k^\star}` (``mode="record"`` runs to the end and only records it).

**Why a trailing mean.** :math:`v(k)` fluctuates from one evaluation to the next (Adam's steps
move the prediction at the held-out entries by more than the slow improvement between two checks),
and a single low value sets a record that steady progress may not beat within the patience window:
on MRI at 64² (sample ``mr``, 4×, ``dip-tv``) one evaluation at step 1000 read 22.8·10⁻⁴ between
33.6 and 37.4·10⁻⁴; the curve then fell steadily to 25.0·10⁻⁴ at step 1510 without reaching it,
and the rule stopped the run there at 30.31 dB, still climbing (kept running under a held-out-lines
split, the same method reached 32.1–32.7 dB at steps 7000–9000). The
minimum of a noisy curve is also biased low, which flatters a long network run against a
converged classical baseline in ``--method auto``. The mean of :math:`m` evaluations (default 5,
i.e. 50 steps) keeps such outliers from deciding; ``smooth=1`` is the raw minimum of earlier
versions. The selection lags the raw curve by about :math:`(m-1)c/2` steps.

The value :math:`v(k)` is also written to ``state.metrics["val"]`` (and :math:`\bar v(k)` to
``val_mean`` when m > 1), so the history has a ``val`` column (the rule must come before the
:class:`~dipkit.engine.recorder.HistoryRecorder`).
"""

from __future__ import annotations

import math

import torch

from ..engine.callbacks import Callback

__all__ = ["Validation"]


class Validation(Callback):
    """The ``val`` rule (see module docs).

    :param split: the run's :class:`~dipkit.physics.split.ValidationSplit`.
    :param patience: steps p without a new minimum before stopping (``mode="stop"``).
    :param patience_scale: s: the window is ``max(p, s · best step)`` (0: a fixed window p).
    :param mode: ``"stop"`` ends the run; ``"record"`` only records the selection.
    :param check_every: steps between evaluations of the held-out misfit (the history interval).
    :param smooth: m: the minimum is taken of the trailing mean of the last m evaluations (1: raw).
    """

    rule = "val"

    def __init__(self, split, *, patience: int = 500, patience_scale: float = 0.0, mode: str = "stop",
                 check_every: int = 10, smooth: int = 1):
        if patience < 0 or check_every < 1 or not patience_scale >= 0 or int(smooth) < 1:
            raise ValueError("val needs patience ≥ 0, patience_scale ≥ 0, check_every ≥ 1 and smooth ≥ 1")
        if mode not in ("stop", "record"):
            raise ValueError(f"val mode must be 'stop' or 'record', got {mode!r}")
        self.split, self.patience, self.mode, self.check_every = split, int(patience), mode, int(check_every)
        self.patience_scale, self.smooth = float(patience_scale), int(smooth)
        self.best = self.best_step = self.best_estimate = None
        self.recent: torch.Tensor | None = None  # [smooth, B]: the last evaluations, newest last (NaN: none yet)
        self.iteration: int | None = None
        self.iterations: list[int] = []
        self.estimate: torch.Tensor | None = None
        self.value: float | None = None
        self._host = None  # (step, best_step on the host) of the last read

    @torch.no_grad()
    def on_step_end(self, state):
        if not (state.step % self.check_every == 0 or state.step == state.max_steps):
            return
        x = state.estimate
        v = self.split.misfit(x).to(torch.float64)
        state.metrics["val"] = v
        if self.smooth > 1:
            if self.recent is None:
                self.recent = torch.full((self.smooth, *v.shape), math.nan, dtype=v.dtype, device=v.device)
            self.recent = torch.cat([self.recent[1:], v.unsqueeze(0)])
            v = self.recent.nanmean(0)
            state.metrics["val_mean"] = v
        if self.best is None:
            self.best = torch.full_like(v, math.inf)
            self.best_step = torch.full(v.shape, -1, dtype=torch.int64, device=v.device)
            self.best_estimate = x.clone()
        better = v < self.best
        self.best = torch.where(better, v, self.best)
        self.best_step = torch.where(better, torch.full_like(self.best_step, state.step), self.best_step)
        self.best_estimate = torch.where(better.view(-1, *[1] * (x.ndim - 1)), x, self.best_estimate)
        if self.mode == "stop":
            best_step = self.host_best_step(state)  # one read every check_every steps
            window = self.window(best_step)
            if bool((state.step > best_step + window).all()):
                last = int(best_step.argmax())
                state.request_stop(f"val: no new held-out misfit minimum for {int(window[last])} steps "
                                   f"after step {int(best_step[last])}", kind="patience")

    def host_best_step(self, state):
        """The best step of each sample, on the host (``[B]`` int64; None before the first check);
        read from the device at most once per step (the rule and a schedule share the read)."""
        if self.best_step is None:
            return None
        if self._host is None or self._host[0] != state.step:
            self._host = (state.step, self.best_step.cpu())
        return self._host[1]

    def window(self, best_step):
        """The patience window ``max(p, s · best step)`` (elementwise; ints or a tensor of steps)."""
        if isinstance(best_step, torch.Tensor):
            return torch.clamp((self.patience_scale * best_step.clamp_min(0).to(torch.float64)).floor().to(torch.int64),
                               min=self.patience)
        return max(self.patience, int(self.patience_scale * max(int(best_step), 0)))

    def on_end(self, state):
        if self.best is None:
            return
        self.iterations = self.best_step.cpu().tolist()
        self.iteration = self.iterations[0] if len(self.iterations) == 1 else None
        self.value = float(self.best.mean())
        self.estimate = self.best_estimate

    def state_dict(self):
        return {"best": self.best, "best_step": self.best_step, "best_estimate": self.best_estimate,
                "recent": self.recent}

    def load_state_dict(self, sd):
        if sd:
            self.best, self.best_step, self.best_estimate = sd["best"], sd["best_step"], sd["best_estimate"]
            self.recent = sd.get("recent")
            self._host = None
