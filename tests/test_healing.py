"""Self-healing: a NaN or a loss jump rolls the run back with a halved learning rate (recorded in the
history and metrics.json); repeated failures end in one clear DipkitError; healthy runs are unchanged."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dipkit.errors import DipkitError
from dipkit.methods.dip import DIP


class Faulty(DIP):
    """DIP whose loss goes bad once, at step ``at`` (NaN, or ×10⁹ for ``kind="jump"``)."""

    name = "faulty-test"

    def __init__(self, *, lr: float = 1e-2, at: int = 12, kind: str = "nan"):
        super().__init__(lr=lr)
        self.at, self.kind = at, kind
        self.fired = 0

    def loss(self, state, x):
        terms = super().loss(state, x)
        if state.step + 1 == self.at and not self.fired:  # state.step counts the steps before this one
            self.fired += 1
            bad = float("nan") if self.kind == "nan" else 1e9
            terms["data"] = terms["data"] * bad
        return terms


def _run(ct_problem, tiny_cfg, method, tmp_path=None, **settings):
    from dipkit.run import reconstruct

    cfg = tiny_cfg("dip", iterations=30, lr=1e-2)
    cfg.params = {}
    for k, v in settings.items():
        cfg.set(k, v)
    return reconstruct(ct_problem, cfg, None if tmp_path is None else tmp_path / "run", quiet=True, method=method)


def test_a_nan_is_survived_and_recorded(ct_problem, tiny_cfg, tmp_path):
    res = _run(ct_problem, tiny_cfg, Faulty(at=12), tmp_path)
    assert res["rollbacks"] == [{"step": 12, "reason": "non-finite loss", "lr": 5e-3}]
    assert res["iterations"] == 30 and torch.isfinite(res.reconstruction).all()
    assert all(math.isfinite(v) for v in res.history["loss"])
    # the history: rows of steps 5 … 30 once each; the redone steps carry the rollback count
    assert res.history["step"] == [5, 10, 15, 20, 25, 30]
    assert res.history["rollbacks"] == [0, 0, 1, 1, 1, 1]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["rollbacks"] == [{"step": 12, "reason": "non-finite loss", "lr": 5e-3}]
    header = (tmp_path / "run" / "history.csv").read_text().splitlines()[0].split(",")
    assert header[-1] == "rollbacks"


def test_a_loss_jump_is_rolled_back(ct_problem, tiny_cfg):
    res = _run(ct_problem, tiny_cfg, Faulty(at=17, kind="jump"))
    assert res["rollbacks"] == [{"step": 17, "reason": "loss jump", "lr": 5e-3}]


def test_repeated_nans_end_in_a_clear_failure(ct_problem, tiny_cfg):
    class AlwaysNaN(DIP):
        name = "always-nan-test"

        def loss(self, state, x):
            terms = super().loss(state, x)
            if state.step + 1 >= 8:
                terms["data"] = terms["data"] * float("nan")
            return terms

    with pytest.raises(DipkitError, match=r"failed at step \d+: non-finite loss after 3 rollback\(s\)") as exc:
        _run(ct_problem, tiny_cfg, AlwaysNaN(lr=1e-2))
    assert "\n" not in str(exc.value)


def test_max_rollbacks_and_disabling(ct_problem, tiny_cfg):
    with pytest.raises(DipkitError, match="after 0 rollback"):
        _run(ct_problem, tiny_cfg, Faulty(at=12), **{"healing.max_rollbacks": 0})
    res = _run(ct_problem, tiny_cfg, Faulty(at=12), **{"healing.enabled": False})
    assert res["rollbacks"] == [] and not torch.isfinite(res.reconstruction).all()


def test_healthy_runs_are_unchanged_bit_for_bit(ct_problem, tiny_cfg):
    on = _run(ct_problem, tiny_cfg, DIP(lr=1e-2), **{"early_stop.rule": "wmv:record", "early_stop.window": 4})
    off = _run(ct_problem, tiny_cfg, DIP(lr=1e-2), **{"early_stop.rule": "wmv:record", "early_stop.window": 4,
                                                      "healing.enabled": False})
    assert on["rollbacks"] == [] and torch.equal(on.reconstruction, off.reconstruction)
    assert on.history == off.history and on["early_stop"] == off["early_stop"]


def test_rollback_restores_the_stopping_rules(ct_problem, tiny_cfg):
    """A NaN reaches WMV's window before the flag is read; the rollback restores the window, so the
    selection is the one of a run whose step 12 had simply been redone (finite, at a real step)."""
    res = _run(ct_problem, tiny_cfg, Faulty(at=12), **{"early_stop.rule": "wmv:record", "early_stop.window": 3})
    es = res["early_stop"]
    assert es["iteration"] is not None and math.isfinite(es["psnr"])
    assert np.isfinite(res.estimates["early_stop"].numpy()).all()


def test_healer_engine_level_no_host_sync_per_step(monkeypatch):
    """The flag is read once per k steps (plus once at the end), not every step."""
    from dipkit.engine import State, run
    from dipkit.engine.healing import Healer

    reads = []
    real = torch.Tensor.cpu

    def counting_cpu(self, *a, **kw):
        reads.append(tuple(self.shape))
        return real(self, *a, **kw)

    class Id:
        def A(self, x):
            return x

        def A_adjoint(self, y):
            return y

    torch.manual_seed(0)
    st = State(physics=Id(), y=torch.rand(1, 1, 8, 8), max_steps=23, generator=torch.Generator().manual_seed(0),
               net=torch.nn.Conv2d(1, 1, 3, padding=1), z=torch.rand(1, 1, 8, 8))
    healer = Healer(every=5)
    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    run(DIP(lr=1e-2), st, [], healer=healer)
    monkeypatch.undo()
    assert st.step == 23 and reads.count((2,)) == 5  # steps 5, 10, 15, 20 and the last, 23
