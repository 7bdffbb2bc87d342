"""How long a run goes and how its step size settles: the val rule's growing patience window, the
step budget's kinds, the time limit, and the learning-rate schedules (plateau, cosine)."""

from __future__ import annotations

import json
import math
import types

import pytest
import torch
import yaml

from dipkit.run.config import RunConfig
from dipkit.engine import State, run
from dipkit.engine.callbacks import Callback
from dipkit.engine.output import LastIterate
from dipkit.engine.schedule import Cosine, Plateau, resolve_schedule
from dipkit.methods import make_method
from dipkit.physics.split import ValidationSplit
from dipkit.run import reconstruct
from dipkit.run.runner import step_budget
from dipkit.stopping import Validation, resolve_rule
from dipkit.stopping.limits import TimeLimit


class _UPath:
    """A fake method whose iterate x_k = y + (k − k0)/k0 · d: the held-out misfit is U-shaped with its
    minimum at k0 (x_{k0} = y); with ``flat_after`` the iterate stays at x_{k0} after that step… and
    a parameter p that an optimiser steps (its rate is what schedules change)."""

    inner_steps = 0

    def __init__(self, y, d, k0, *, lr=1.0, plateau_at=None):
        self.y, self.d, self.k0, self.output = y, d, k0, LastIterate()
        self.k, self.lr, self.plateau_at = 0, lr, plateau_at
        self.p = torch.zeros(1, requires_grad=True)

    def setup(self, state, resuming=False):
        pass

    def param_groups(self, state):
        return [{"params": [self.p], "lr": self.lr}]

    def make_optimizer(self, groups):
        return torch.optim.SGD(groups)

    def forward(self, state):
        self.k += 1
        k = self.k if self.plateau_at is None else min(self.k, self.plateau_at)
        return self.y + (k - self.k0) / self.k0 * self.d + 0.0 * self.p

    def loss(self, state, x):
        return {"data": (x - state.y).pow(2).flatten(1).sum(1)}

    def before_update(self, state):
        pass

    def after_update(self, state):
        pass

    def iterate(self, state):
        return state.x

    def outer_update(self, state):
        pass


def _problem(seed=0):
    from deepinv.physics import Denoising

    g = torch.Generator().manual_seed(seed)
    y = torch.rand(1, 1, 12, 12, generator=g)
    d = torch.randn(1, 1, 12, 12, generator=g)
    split = ValidationSplit(Denoising(), y, fraction=0.25, seed=0)
    return y, d, split, g


@pytest.mark.parametrize("k0, expected_window", [(400, 200), (40, 50)])
def test_val_patience_window_grows_with_the_best_step_on_a_synthetic_curve(k0, expected_window):
    """max(p, s·k*) with p = 50, s = ½: a late minimum (k* = 400) waits 200 steps, an early one 50."""
    y, d, split, g = _problem()
    cb = Validation(split, patience=50, patience_scale=0.5, mode="stop", check_every=1)
    st = State(physics=split.fit_physics(), y=split.fit_y(), max_steps=2000, generator=g)
    run(_UPath(y, d, k0), st, [cb])
    assert cb.iteration == k0
    assert st.step == k0 + expected_window + 1 and st.stop_kind == "patience"
    assert f"for {expected_window} steps after step {k0}" in st.stop_reason
    assert cb.window(k0) == expected_window


class _Outlier(_UPath):
    """x_k = y + f(k) d with f falling linearly from 1 to 0 at step 200 (then flat), except one lucky
    iterate x_20 = y: its held-out misfit is a single outlier far below the curve around it."""

    def forward(self, state):
        self.k += 1
        f = 0.0 if self.k == 20 else max(0.0, 1.0 - self.k / 200)
        return self.y + f * self.d + 0.0 * self.p


@pytest.mark.parametrize("smooth, pick, stop", [(1, 20, 71), (5, 204, 255)])
def test_val_trailing_mean_does_not_let_one_low_evaluation_stop_a_falling_curve(smooth, pick, stop):
    """The raw minimum (smooth = 1) is the outlier at step 20 and patience 50 stops the run at 71 while
    the misfit still falls; the mean of the last 5 evaluations dilutes it, new minima follow the
    curve down to 0 (first reached by the mean of steps 200…204) and the run stops 50 steps later."""
    y, d, split, g = _problem()
    cb = Validation(split, patience=50, mode="stop", check_every=1, smooth=smooth)
    st = State(physics=split.fit_physics(), y=split.fit_y(), max_steps=1000, generator=g)
    run(_Outlier(y, d, 100), st, [cb])
    assert cb.iteration == pick and st.step == stop and st.stop_kind == "patience"
    if smooth > 1:
        assert cb.value == pytest.approx(0.0, abs=1e-12)
        torch.testing.assert_close(cb.estimate, y)                  # the iterate at the step of the minimum
        torch.testing.assert_close(st.metrics["val_mean"], cb.recent.nanmean(0))
        assert cb.recent.shape == (5, 1) and "recent" in cb.state_dict()


def test_val_smooth_is_a_setting_and_is_recorded(tmp_path, tiny_cfg):
    from dipkit.errors import DipkitError
    from dipkit.tasks import get_task

    from .conftest import tiny_image

    assert RunConfig().early_stop.smooth == 5
    cfg = tiny_cfg("dip", iterations=30)
    cfg.early_stop.rule = "val:record"
    cfg.set("early_stop.smooth", "0")
    with pytest.raises(DipkitError, match="smooth ≥ 1"):
        cfg.validate()
    cfg.set("early_stop.smooth", "3")
    p = get_task("denoise").simulate(tiny_image(16), seed=0)
    res = reconstruct(p, cfg, tmp_path / "run", quiet=True)
    val = json.loads((tmp_path / "run" / "metrics.json").read_text())["validation"]
    assert val["smooth"] == 3 and "val_mean" in res.history


def test_plateau_schedule_halves_the_rate_after_each_window_without_a_new_minimum():
    y, d, split, g = _problem()
    k0 = 30
    val = Validation(split, patience=1000, mode="record", check_every=1)
    sched = Plateau(val, window=10, factor=0.5, floor=0.1, check_every=1)
    method = _UPath(y, d, k0, lr=1.0)
    st = State(physics=split.fit_physics(), y=split.fit_y(), max_steps=120, generator=g)
    run(method, st, [val, sched])
    # the minimum is at k0 = 30: the rate halves at 40, 50, 60 (0.5, 0.25, 0.125), then reaches the
    # floor 0.1 at 70 and changes no more
    assert [c["step"] for c in sched.changes] == [40, 50, 60, 70]
    assert [c["factor"] for c in sched.changes] == [0.5, 0.25, 0.125, 0.1]
    assert st.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    assert float(st.metrics["lr"][0]) == pytest.approx(0.1)


def test_plateau_default_window_is_half_the_val_patience_and_a_new_minimum_resets_it():
    y, d, split, g = _problem()
    val = Validation(split, patience=40, patience_scale=0.0, mode="record", check_every=1)
    sched = Plateau(val, window=None, check_every=1)
    # the misfit falls until 100 (new minima every step: no change), then stays flat
    method = _UPath(y, d, 100, lr=1.0, plateau_at=100)
    st = State(physics=split.fit_physics(), y=split.fit_y(), max_steps=130, generator=g)
    run(method, st, [val, sched])
    assert [c["step"] for c in sched.changes] == [120]  # window = 40 // 2 after the minimum at 100


def test_replay_makes_the_rate_changes_of_an_earlier_run_at_the_same_steps():
    """A refit has no held-out misfit: it replays its main run's plateau reductions step for step."""
    from dipkit.engine.schedule import Replay, make_schedule
    from dipkit.run.config import ScheduleConfig

    y, d, split, g = _problem()
    val = Validation(split, patience=1000, mode="record", check_every=1)
    sched = Plateau(val, window=10, factor=0.5, floor=0.1, check_every=1)
    st = State(physics=split.fit_physics(), y=split.fit_y(), max_steps=120, generator=g)
    run(_UPath(y, d, 30, lr=1.0), st, [val, sched])
    replay = make_schedule("plateau", ScheduleConfig(), val=None, check_every=1, replay=sched.changes)
    assert isinstance(replay, Replay)
    rates = []

    class Rates(Callback):
        def on_step_end(self, state):
            rates.append(state.optimizer.param_groups[0]["lr"])

    st2 = State(physics=split.fit_physics(), y=split.fit_y(), max_steps=65, generator=g)
    run(_UPath(y, d, 30, lr=1.0), st2, [replay, Rates()])
    assert replay.changes == [c for c in sched.changes if c["step"] <= 65]  # 40, 50, 60
    # the rate used after step k: 1 up to 40, then 0.5, 0.25 from 50, 0.125 from 60
    assert rates[38] == 1.0 and rates[39] == 0.5 and rates[48] == 0.5 and rates[49] == 0.25 and rates[64] == 0.125


def test_plateau_changes_only_the_stalled_members_rates():
    """An ensemble's groups carry their member; a member whose misfit stalls gets a lower rate alone."""
    p0, p1 = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([{"params": [p0], "lr": 1.0, "member": 0}, {"params": [p1], "lr": 2.0, "member": 1}])
    val = types.SimpleNamespace(host_best_step=lambda state: torch.tensor([5, 95]), window=lambda b: 20)
    st = types.SimpleNamespace(optimizer=opt, y=torch.zeros(2, 1, 4, 4), step=0, metrics={})
    sched = Plateau(val, window=10, check_every=1)
    sched.on_start(st)
    st.step = 100
    sched.on_step_end(st)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 2.0]
    assert sched.changes == [{"step": 100, "member": 0, "factor": 0.5}]
    torch.testing.assert_close(st.metrics["lr"], torch.tensor([0.5, 2.0], dtype=torch.float64))


def test_ensemble_members_get_their_own_parameter_groups_and_the_same_steps():
    from dipkit.nets.ensemble import Ensemble, split_member_groups

    torch.manual_seed(0)
    nets = [torch.nn.Conv2d(1, 1, 3, padding=1) for _ in range(2)]
    ens = Ensemble(nets)
    groups = split_member_groups([{"params": list(ens.parameters()), "lr": 0.1}], ens)
    assert [g["member"] for g in groups] == [0, 1]
    assert sum(len(g["params"]) for g in groups) == len(list(ens.parameters()))
    twin = Ensemble([torch.nn.Conv2d(1, 1, 3, padding=1) for _ in range(2)])
    twin.load_state_dict(ens.state_dict())
    z = torch.randn(2, 1, 6, 6)
    for net, opt in ((ens, torch.optim.Adam(groups)), (twin, torch.optim.Adam(twin.parameters(), lr=0.1))):
        for _ in range(3):
            opt.zero_grad()
            net(z).pow(2).sum().backward()
            opt.step()
    for a, b in zip(ens.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cosine_schedule_follows_its_formula():
    y, d, split, g = _problem()
    sched = Cosine(floor=0.1, check_every=1)
    st = State(physics=split.fit_physics(), y=split.fit_y(), max_steps=50, generator=g)
    seen = {}

    class Spy:
        def on_start(self, state): pass
        def on_outer_end(self, state): pass
        def on_iteration_end(self, state): pass
        def on_end(self, state): pass
        def on_step_end(self, state):
            seen[state.step] = state.optimizer.param_groups[0]["lr"]

    run(_UPath(y, d, 10, lr=2.0), st, [sched, Spy()])
    for k in (1, 25, 50):
        assert seen[k] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 50))))
    assert seen[50] == pytest.approx(0.2)


def test_time_limit_stops_the_run_and_says_so():
    y, d, split, g = _problem()
    val = Validation(split, patience=1000, mode="stop", check_every=1)
    st = State(physics=split.fit_physics(), y=split.fit_y(), max_steps=1000, generator=g)
    run(_UPath(y, d, 50), st, [val, TimeLimit(1e-9, check_every=5)])
    assert st.step == 5 and st.stop_kind == "time_limit" and "time limit" in st.stop_reason
    assert val.iteration == 5  # the selection so far is kept


def test_step_budget_kinds_and_the_auto_rule():
    dip, tv, sgld = make_method("dip"), make_method("tv"), make_method("sgld")
    cfg = RunConfig()
    cfg.early_stop.rule = resolve_rule("auto", dip)
    assert cfg.early_stop.rule == "val" and step_budget(cfg, dip) == (20000, "auto")
    cfg.max_iterations = 5000
    assert step_budget(cfg, dip) == (5000, "auto")
    # a fixed budget: the auto rule only records (the run goes the N steps)
    assert resolve_rule("auto", dip, fixed_budget=True) == "val:record"
    fixed = RunConfig(iterations=300)
    fixed.early_stop.rule = "val:record"
    assert step_budget(fixed, dip) == (300, "fixed")
    rec = RunConfig()
    rec.early_stop.rule = "val:record,wmv:record"
    assert step_budget(rec, dip) == (3000, "default")  # no rule stops it: the method's default
    base = RunConfig(method="tv")
    base.early_stop.rule = resolve_rule("auto", tv)
    assert base.early_stop.rule is None and step_budget(base, tv) == (500, "default")
    s = RunConfig(method="sgld")
    s.early_stop.rule = "val"
    assert step_budget(s, sgld) == (10000, "default")  # SGLD keeps its burn-in + sampling budget
    assert resolve_schedule("auto", dip, True) == "plateau" and resolve_schedule("auto", dip, False) == "constant"
    assert resolve_schedule("cosine", sgld, True) == "constant" and resolve_schedule("auto", tv, True) == "constant"


def test_a_run_that_decides_its_length_records_why_it_stopped(ct_problem, tiny_cfg, tmp_path):
    cfg = tiny_cfg("dip", iterations=None)
    cfg.early_stop.rule = "auto"
    cfg.max_iterations = 40
    res = reconstruct(ct_problem, cfg, tmp_path / "run", quiet=True)
    stop = res["stop"]
    assert stop["budget"] == "auto" and stop["max_iterations"] == 40 and stop["step"] == res["iterations"]
    assert stop["kind"] in ("cap", "patience") and isinstance(stop["still_improving"], bool)
    assert res["schedule"]["kind"] == "plateau" and "lr" in res.history
    conf = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert conf["iterations"] is None and conf["max_iterations"] == 40 and conf["schedule"]["kind"] == "plateau"
    assert conf["early_stop"]["rule"] == "val"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["stop"] == stop
    # a fixed budget runs its steps; the auto rule only records the pick
    cfg2 = tiny_cfg("dip", iterations=25)
    cfg2.early_stop.rule = "auto"
    res2 = reconstruct(ct_problem, cfg2, None, quiet=True)
    assert res2["iterations"] == 25 and res2["stop"]["kind"] == "budget" and res2["early_stop"]["mode"] == "record"


def test_cli_max_iterations_and_time_limit(ct_problem_file, tmp_path, capsys):
    from dipkit.cli import main

    rc = main(["reconstruct", str(ct_problem_file), "--method", "dip", "--max-iterations", "20", "--time-limit",
               "600", "--set", "net.scales=3", "--set", "net.channels=8", "--out", str(tmp_path / "r"), "--quiet"])
    assert rc == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["stop"]["max_iterations"] == 20 and m["stop"]["time_limit"] == 600.0 and m["iterations"] <= 20
    assert main(["reconstruct", str(ct_problem_file), "--time-limit", "-1", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "time-limit" in err and len(err.strip().splitlines()) == 1
