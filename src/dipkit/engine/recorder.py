"""History recording without per-step synchronisation.

:class:`HistoryRecorder` samples the loss, each loss term and — when a ground truth is known —
PSNR and SSIM of ``state.estimate`` every ``every`` steps (and at the last step). Each sample is
one small tensor left on the device; :meth:`HistoryRecorder.read` moves all pending samples to the
host in a single transfer (called a few times a second by the progress bar, and at the end).
Values are means over the batch dimension. The recorder also keeps, on the device, the estimate
with the best PSNR seen at a sampled step (the *peak*, an oracle used for benchmarking).
"""

from __future__ import annotations

import torch

from ..metrics import psnr, ssim
from .callbacks import Callback

__all__ = ["HistoryRecorder"]


class HistoryRecorder(Callback):
    """Buffer ``step, loss, <terms…>, <state.metrics…>, [psnr, ssim]`` every ``every`` steps.

    :param every: sampling interval ``k`` in steps (≥ 1).
    :param x_true: optional ground truth ``[B, C, H, W]`` for PSNR/SSIM.
    :param mask: optional metric mask (e.g. CT field of view), see :mod:`dipkit.metrics`.
    :param data_range: data range for PSNR/SSIM.
    """

    def __init__(self, every: int = 10, x_true: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None, data_range: float = 1.0):
        if every < 1:
            raise ValueError("every must be ≥ 1")
        self.every = int(every)
        self.x_true, self.mask, self.data_range = x_true, mask, data_range
        self.columns: list[str] | None = None
        self._metrics: list[str] = []
        self.steps: list[int] = []
        self._pending: list[torch.Tensor] = []
        self._rows: list[list[float]] = []
        self.best_psnr: torch.Tensor | None = None
        self.best_estimate: torch.Tensor | None = None
        self.best_step: torch.Tensor | None = None

    # ------------------------------------------------------------------ hooks
    def on_step_end(self, state):
        if state.step % self.every == 0 or state.step == state.max_steps:
            self._sample(state)

    def on_end(self, state):
        if not self.steps or self.steps[-1] != state.step:
            if state.loss is not None:
                self._sample(state)
        self.read()

    # ------------------------------------------------------------------ sampling
    def _sample(self, state):
        terms = state.terms
        if self.columns is None:
            self.columns = ["loss", *terms.keys(), *state.metrics.keys()]
            self._metrics = list(state.metrics.keys())
            if self.x_true is not None:
                self.columns += ["psnr", "ssim"]
        vals = [state.loss.float().mean(), *(t.float().mean() for t in terms.values()),
                *(state.metrics[k].float().mean() for k in self._metrics)]
        if self.x_true is not None and state.estimate is not None:
            est = state.estimate
            p = psnr(est, self.x_true, data_range=self.data_range, mask=self.mask)
            s = ssim(est, self.x_true, data_range=self.data_range, mask=self.mask)
            vals += [p.mean(), s.mean()]
            self._track_peak(est, p, state.step)
        self._pending.append(torch.stack([v.detach().to(torch.float64) for v in vals]))
        self.steps.append(state.step)

    @torch.no_grad()
    def _track_peak(self, est, p, step):
        if self.best_psnr is None:
            self.best_psnr, self.best_estimate = p.clone(), est.clone()
            self.best_step = torch.full_like(p, float(step))
            return
        better = p > self.best_psnr
        self.best_psnr = torch.where(better, p, self.best_psnr)
        self.best_step = torch.where(better, torch.full_like(p, float(step)), self.best_step)
        self.best_estimate = torch.where(better.view(-1, *[1] * (est.ndim - 1)), est, self.best_estimate)

    # ------------------------------------------------------------------ reading
    def read(self) -> list[list[float]]:
        """Move pending samples to the host (one transfer); return all rows so far."""
        if self._pending:
            block = torch.stack(self._pending).cpu().tolist()
            self._pending.clear()
            self._rows.extend(block)
        return self._rows

    def latest(self) -> dict[str, float] | None:
        """The most recent sample as ``{column: value}`` (reads pending samples)."""
        rows = self.read()
        if not rows:
            return None
        return dict(zip(self.columns, rows[-1]))

    def history(self) -> dict[str, list]:
        """Columns ``step``, ``loss``, one per term, and ``psnr``/``ssim`` when known."""
        rows = self.read()
        out = {"step": list(self.steps[: len(rows)])}
        for j, name in enumerate(self.columns or []):
            out[name] = [r[j] for r in rows]
        return out

    def state_dict(self):
        self.read()
        return {"columns": self.columns, "metrics": list(self._metrics), "steps": list(self.steps), "rows": [list(r) for r in self._rows],
                "best_psnr": self.best_psnr, "best_estimate": self.best_estimate,
                "best_step": self.best_step}

    def load_state_dict(self, sd):
        if not sd:
            return
        self.columns, self.steps, self._rows = sd["columns"], list(sd["steps"]), [list(r) for r in sd["rows"]]
        self._metrics = list(sd.get("metrics", []))
        self.best_psnr, self.best_estimate, self.best_step = sd["best_psnr"], sd["best_estimate"], sd["best_step"]
