"""Self-validation: the held-out split, the val rule, refit, and ground-truth-free tuning."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dipkit.engine import State, run
from dipkit.errors import DipkitError
from dipkit.physics.split import MaskedPhysics, ValidationSplit, measured_support
from dipkit.run import reconstruct
from dipkit.stopping import Validation, parse_rules

from .conftest import tiny_image


def _sim(task, **kw):
    from dipkit.tasks import get_task

    return get_task(task).simulate(tiny_image(16), seed=0, **kw)


# ---------------------------------------------------------------------- the split
@pytest.mark.parametrize("task,kw", [("ct", {"views": 8}), ("mri", {}), ("inpaint", {"missing": 0.5}),
                                     ("denoise", {}), ("superres", {"factor": 2}), ("mri-multicoil", {"coils": 2})])
def test_split_is_disjoint_seeded_and_only_measured(task, kw):
    p = _sim(task, **kw)
    s = ValidationSplit(p.physics, p.y, fraction=0.1, seed=3)
    support = measured_support(p.physics, p.y)
    held = s.held_out
    assert held.shape == p.y.shape[-2:] and held.dtype == torch.bool
    assert bool((held <= support).all())                       # only measured entries are held out
    assert int(held.sum()) == round(0.1 * int(support.sum()))  # the fraction of the measured ones
    assert torch.equal(s.keep.bool(), ~held)                   # fit and held-out entries are disjoint
    assert torch.equal(ValidationSplit(p.physics, p.y, fraction=0.1, seed=3).held_out, held)   # seeded
    assert not torch.equal(ValidationSplit(p.physics, p.y, fraction=0.1, seed=4).held_out, held)
    # the fit never sees a held-out value
    fit_y = s.fit_y()
    assert bool((fit_y[..., held] == 0).all())


def test_masked_physics_is_a_linear_operator_with_its_adjoint():
    p = _sim("ct", views=8)
    s = ValidationSplit(p.physics, p.y, fraction=0.2, seed=0)
    A = s.fit_physics()
    assert isinstance(A, MaskedPhysics)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(p.x_true.shape, generator=g)
    y = torch.randn(p.y.shape, generator=g)
    lhs = float((A.A(x).double() * y.double()).sum())
    rhs = float((x.double() * A.A_adjoint(y).double()).sum())
    assert lhs == pytest.approx(rhs, rel=1e-4)
    # held-out rows are zero in A_fit x
    assert bool((A.A(p.x_true)[..., s.held_out] == 0).all())
    assert A.spec == p.physics.spec  # other attributes come from the base operator


def test_fill_restores_a_smooth_measurement_and_zero_fills_kspace():
    p = _sim("ct", views=16)
    s = ValidationSplit(p.physics, p.physics.A(p.x_true), fraction=0.05, seed=0)
    clean = p.physics.A(p.x_true)
    filled = s.fill(s.fit_y())
    err_fill = float((filled - clean)[..., s.held_out].abs().mean())
    err_zero = float(clean[..., s.held_out].abs().mean())
    assert err_fill < 0.25 * err_zero
    assert torch.equal(filled[..., ~s.held_out], clean[..., ~s.held_out])
    m = _sim("mri")
    sm = ValidationSplit(m.physics, m.y, fraction=0.05, seed=0, fill="zero")
    assert bool((sm.fill(m.y)[..., sm.held_out] == 0).all())


def test_split_errors():
    p = _sim("ct", views=8)
    with pytest.raises(DipkitError):
        ValidationSplit(p.physics, p.y, fraction=0.0)
    with pytest.raises(DipkitError):
        ValidationSplit(p.physics, p.y, fraction=0.9)


# ---------------------------------------------------------------------- the val rule
class _Path:
    """An optimiser-free 'method' whose estimate walks along a line: x_k = y + (k − k0)/k0 · d."""

    uses_network, inner_steps, direct = False, 0, False

    def __init__(self, y, d, k0):
        from dipkit.engine.output import LastIterate

        self.y, self.d, self.k0, self.output = y, d, k0, LastIterate()
        self.k = 0

    def setup(self, state, resuming=False):
        pass

    def param_groups(self, state):
        return []

    def forward(self, state):
        self.k += 1
        return self.y + (self.k - self.k0) / self.k0 * self.d

    def loss(self, state, x):
        return {"data": (x - state.y).pow(2).flatten(1).sum(1)}

    def iterate(self, state):
        return state.x

    def outer_update(self, state):
        pass


def test_val_selects_the_minimum_of_a_u_shaped_misfit_and_stops_after_patience():
    from deepinv.physics import Denoising

    g = torch.Generator().manual_seed(0)
    y = torch.rand(1, 1, 12, 12, generator=g)
    split = ValidationSplit(Denoising(), y, fraction=0.25, seed=0)
    d = torch.randn(1, 1, 12, 12, generator=g)
    k0 = 37
    cb = Validation(split, patience=20, mode="stop", check_every=1)
    st = State(physics=split.fit_physics(), y=split.fit_y(), max_steps=200, generator=g)
    run(_Path(y, d, k0), st, [cb])
    assert cb.iteration == k0                     # misfit ∝ (k − k0)²: the minimum is at k0
    assert st.step == k0 + 20 + 1 and st.stop and "val" in st.stop_reason   # stopped after the patience
    torch.testing.assert_close(cb.estimate, y)    # x_{k0} = y
    assert "val" in st.metrics
    rec = Validation(split, patience=5, mode="record", check_every=1)
    st2 = State(physics=split.fit_physics(), y=split.fit_y(), max_steps=80, generator=g)
    run(_Path(y, d, k0), st2, [rec])
    assert rec.iteration == k0 and st2.step == 80 and not st2.stop   # record mode runs to the end


def test_rule_parsing():
    assert parse_rules("val,wmv:record") == [("val", "stop"), ("wmv", "record")]
    assert parse_rules("none") == [] and parse_rules(None) == []
    for bad in ("val,val", "nope", "val:maybe", "val,none"):
        with pytest.raises(DipkitError):
            parse_rules(bad)


# ---------------------------------------------------------------------- runs
def test_val_run_records_pick_history_and_resolved_config(ct_problem, tiny_cfg, tmp_path):
    cfg = tiny_cfg("dip", iterations=30)
    cfg.early_stop.rule = "val:record,wmv:record"
    cfg.early_stop.window, cfg.early_stop.patience = 5, 10
    res = reconstruct(ct_problem, cfg, tmp_path / "run", quiet=True)
    v = res["validation"]
    assert v["fraction"] == 0.05 and v["held_out"] > 0 and 0 < v["iteration"] <= 30 and v["misfit"] > 0
    assert res["early_stop"]["rule"] == "val" and set(res["selections"]) == {"val", "wmv"}
    assert res["early_stop"]["iteration"] == v["iteration"] and res["psnr"] == v["psnr"]
    assert "val" in res.history and len(res.history["val"]) == len(res.history["step"])
    # the pick is the step of the least held-out misfit in the history
    j = min(range(len(res.history["val"])), key=lambda i: res.history["val"][i])
    assert res.history["step"][j] == v["iteration"]
    conf = (tmp_path / "run" / "config.yaml").read_text()
    import yaml

    conf = yaml.safe_load(conf)
    assert conf["input"]["kind"] == "fbp" and conf["params"]["lr"] == 3e-3 and conf["iterations"] == 30
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["request"]["input"]["kind"] == "auto" and metrics["request"]["params"] == {}


def test_refit_reruns_on_all_data_for_the_picked_steps(ct_problem, tiny_cfg):
    cfg = tiny_cfg("dip", iterations=25, lr=1e-2)
    cfg.early_stop.rule = "val:record"
    cfg.validation.refit = True
    res = reconstruct(ct_problem, cfg, quiet=True)
    k = res["validation"]["iteration"]
    assert res["validation"]["refit"]["iterations"] == k
    again = tiny_cfg("dip", iterations=k, lr=1e-2)
    ref = reconstruct(ct_problem, again, quiet=True)   # the same run without a split
    assert torch.equal(res.reconstruction, ref.reconstruction)


def test_refit_replays_the_main_runs_rate_reductions(ct_problem, tiny_cfg, monkeypatch):
    """A plateau schedule has no held-out misfit in the refit: the refit makes the main run's rate
    reductions at the same steps (up to k*) instead of running at the first rate throughout."""
    from dipkit.engine.schedule import Plateau

    monkeypatch.setattr(Plateau, "_window", lambda self, best: 0)  # a reduction at every check
    cfg = tiny_cfg("dip", iterations=25, lr=1e-2)
    cfg.early_stop.rule = "val:record"
    cfg.validation.refit = True
    cfg.set("schedule.kind", "plateau")
    res = reconstruct(ct_problem, cfg, quiet=True)
    k = res["validation"]["iteration"]
    main = res["schedule"]["changes"]
    assert main and main[0]["step"] == 5
    assert res["validation"]["refit"]["rate_changes"] == [c for c in main if c["step"] <= k]


def test_val_works_for_baselines(ct_problem):
    from dipkit.run.config import RunConfig

    cfg = RunConfig(method="tv", iterations=40, device="cpu", log_every=5, params={"alpha": 0.3})
    cfg.early_stop.rule = "val:record"
    res = reconstruct(ct_problem, cfg, quiet=True)
    assert res["validation"]["iteration"] is not None and math.isfinite(res["validation"]["misfit"])


def test_tune_picks_the_point_with_the_least_held_out_misfit(ct_problem_file, tmp_path):
    import csv

    from dipkit.run.config import RunConfig
    from dipkit.run.tune import tune

    cfg = RunConfig(method="tv", iterations=40, device="cpu", log_every=5)
    res = tune(ct_problem_file, cfg, {"alpha": [0.01, 0.3, 30.0]}, tmp_path / "tune")
    rows = list(csv.DictReader(open(tmp_path / "tune" / "tune.csv")))
    assert [float(r["alpha"]) for r in rows] == [0.01, 0.3, 30.0] and all(r["status"] == "ok" for r in rows)
    best = min(rows, key=lambda r: float(r["misfit"]))
    assert res["chosen"]["point"] == best["point"]
    assert (tmp_path / "tune" / "chosen" / "metrics.json").is_file()
    summary = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert summary["chosen"]["alpha"] == float(best["alpha"])
    # the chosen run is a normal run on all data (no split) with the chosen setting
    chosen = json.loads((tmp_path / "tune" / "chosen" / "metrics.json").read_text())
    assert chosen["validation"] is None and chosen["params"]["alpha"] == float(best["alpha"])


def test_tune_cli(ct_problem_file, tmp_path, capsys):
    from dipkit.cli import main

    rc = main(["tune", str(ct_problem_file), "--method", "tv", "--grid", "alpha=0.1,1", "--iterations", "20",
               "--device", "cpu", "--out", str(tmp_path / "t"), "--quiet"])
    assert rc == 0
    assert "<- chosen" in capsys.readouterr().out
    assert main(["tune", str(ct_problem_file), "--method", "tv", "--grid", "alpha", "--out", str(tmp_path / "u")]) == 2


def test_a_split_inside_a_fit_view_holds_out_only_entries_the_fit_view_has(ct_problem):
    """Regression: TV's α search inside a run with a validation split (dip-tv alpha=auto) used to hold
    out the outer split's zeroed entries too, and chose the largest α (a flat image)."""
    from dipkit.baselines.tv_alpha import choose_alpha
    from dipkit.physics.split import ValidationSplit, measured_support

    outer = ValidationSplit(ct_problem.physics, ct_problem.y, fraction=0.2, seed=0)
    fit_physics, fit_y = outer.fit_physics(), outer.fit_y()
    support = measured_support(fit_physics, fit_y)
    assert not support[outer.held_out.reshape(support.shape)].any()
    inner = ValidationSplit(fit_physics, fit_y, fraction=0.2, seed=1)
    assert not (inner.held_out & outer.held_out).any()
    full = float(choose_alpha(ct_problem.physics, ct_problem.y)[0])
    nested = float(choose_alpha(fit_physics, fit_y)[0])
    assert nested < 100 and abs(math.log10(nested / full)) <= 0.5 + 1e-6
