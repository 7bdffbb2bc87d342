"""History recording without per-step synchronisation.

:class:`HistoryRecorder` samples the loss, each loss term and — when a ground truth is known —
PSNR and SSIM of ``state.estimate`` every ``every`` steps (and at the last step). Each sample is
one small tensor left on the device; :meth:`HistoryRecorder.read` moves all pending samples to the
host in a single transfer (called a few times a second by the progress bar, and at the end).
Values are means over the batch dimension. The recorder also keeps, on the device, the estimate
with the best PSNR seen at a sampled step (the *peak*, an oracle used for benchmarking).

A sample describes the state at the *end* of its step, outer update included: when an outer update
follows a sampled step (``on_outer_end`` at the same step) and may have changed the estimate (e.g.
aSeqDIP's z_k = f_θ(z_{k−1})), the step's PSNR/SSIM are re-evaluated and replace the
sample taken in ``on_step_end`` (the loss terms, which belong to the step's gradient step, stay),
and the peak candidate of that step is replaced likewise. So the last row always describes the
returned estimate, and the peak is the best of the rows (``peak ≥ final`` when the last step is
sampled, as it always is).

*Rollbacks* (:mod:`dipkit.engine.healing`): the recorder's snapshot is cheap (lengths and
references, no host transfer); a rollback drops the rows of the steps that are redone, and once a
run has been rolled back the history gains a column ``rollbacks``: the number of rollbacks before
each row's sample.
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
        self._pending: list[tuple[bool, torch.Tensor]] = []  # (replaces the last row, row)
        self._rows: list[list[float]] = []
        self.best_psnr: torch.Tensor | None = None
        self.best_estimate: torch.Tensor | None = None
        self.best_step: torch.Tensor | None = None
        self._candidate: tuple | None = None  # (estimate, psnr, step) of the last sampled step
        self.n_rollbacks = 0  # rollbacks so far (self-healing)
        self._rb: list[int] = []  # n_rollbacks at each sampled step

    # ------------------------------------------------------------------ hooks
    def on_step_end(self, state):
        if state.step % self.every == 0 or state.step == state.max_steps:
            self._sample(state)

    def on_outer_end(self, state):
        # the outer update belongs to the step just sampled: re-evaluate the estimate it produced
        if self.x_true is not None and self.steps and self.steps[-1] == state.step and state.loss is not None:
            self._sample(state, replace=True)

    def on_end(self, state):
        if (not self.steps or self.steps[-1] != state.step) and state.loss is not None:
            self._sample(state)
        self._commit_peak()
        self.read()

    # ------------------------------------------------------------------ sampling
    def _sample(self, state, replace: bool = False):
        """Sample ``state``; ``replace``: re-sample the last sampled step (after its outer update)."""
        if not replace:
            self._commit_peak()  # the previous sampled step is over
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
            # the peak candidate of this step, until the step is over (an outer update may replace it);
            # a copy, as an output rule may update the estimate in place
            self._candidate = (est.detach().clone(), p.detach(), state.step)
        row = torch.stack([v.detach().to(torch.float64) for v in vals])
        self._pending.append((replace, row))
        if not replace:
            self.steps.append(state.step)
            self._rb.append(self.n_rollbacks)

    @torch.no_grad()
    def _commit_peak(self):
        if self._candidate is None:
            return
        est, p, step = self._candidate
        self._candidate = None
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
            block = torch.stack([row for _, row in self._pending]).cpu().tolist()
            for (replace, _), row in zip(self._pending, block):
                if replace and self._rows:
                    self._rows[-1] = row
                else:
                    self._rows.append(row)
            self._pending.clear()
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
        if self.n_rollbacks:
            out["rollbacks"] = [float(v) for v in self._rb[: len(rows)]]
        return out

    # ------------------------------------------------------------------ checkpoints and rollbacks
    def state_dict(self):
        self._commit_peak()
        self.read()
        return {"columns": self.columns, "metrics": list(self._metrics), "steps": list(self.steps),
                "rows": [list(r) for r in self._rows],
                "best_psnr": self.best_psnr, "best_estimate": self.best_estimate,
                "best_step": self.best_step, "n_rollbacks": self.n_rollbacks, "rb": list(self._rb)}

    def load_state_dict(self, sd):
        if not sd:
            return
        self.columns, self.steps, self._rows = sd["columns"], list(sd["steps"]), [list(r) for r in sd["rows"]]
        self._metrics = list(sd.get("metrics", []))
        self.best_psnr, self.best_estimate, self.best_step = sd["best_psnr"], sd["best_estimate"], sd["best_step"]
        self.n_rollbacks = int(sd.get("n_rollbacks", 0))
        self._rb = list(sd.get("rb", [0] * len(self.steps)))
        self._pending, self._candidate = [], None

    def snapshot(self):
        """Lengths and references only (no host transfer): rows and samples are only appended, and
        the peak tensors are replaced, never changed in place."""
        return {"n_steps": len(self.steps), "n_rows": len(self._rows), "pending": list(self._pending),
                "columns": self.columns, "metrics": list(self._metrics), "candidate": self._candidate,
                "best": (self.best_psnr, self.best_estimate, self.best_step)}

    def restore(self, snap):
        del self.steps[snap["n_steps"]:]
        del self._rb[snap["n_steps"]:]
        del self._rows[snap["n_rows"]:]
        self._pending = list(snap["pending"])
        self.columns, self._metrics = snap["columns"], list(snap["metrics"])
        self._candidate = snap["candidate"]
        self.best_psnr, self.best_estimate, self.best_step = snap["best"]

    def on_rollback(self, state, record):
        self.n_rollbacks += 1
