"""A network started on the TV image (``init.kind=tv``, :mod:`dipkit.run.netinit`) and the schedules'
linear warm-up (:mod:`dipkit.engine.schedule`)."""

from __future__ import annotations

import types

import pytest
import torch

from dipkit.engine.schedule import INIT_WARMUP, Plateau, Schedule, make_schedule, resolve_warmup
from dipkit.errors import DipkitError


def _psnr(x, ref):
    return float(10 * torch.log10(ref.abs().max() ** 2 / torch.mean((x - ref) ** 2)))


# ---------------------------------------------------------------------- warm-up
def test_warmup_raises_the_rate_linearly_then_leaves_it_to_the_schedule():
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.4)
    st = types.SimpleNamespace(optimizer=opt, y=torch.zeros(1, 1, 4, 4), step=0, metrics={})
    sched = Schedule(warmup=4, check_every=10)
    sched.on_start(st)
    seen = [opt.param_groups[0]["lr"]]  # the rate of step 1
    for k in range(1, 7):
        st.step = k
        sched.on_step_end(st)
        seen.append(opt.param_groups[0]["lr"])  # the rate of step k + 1
    assert seen == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4])
    assert float(st.metrics["lr"][0]) == pytest.approx(0.4)
    assert sched.describe()["warmup"] == 4


def test_warmup_multiplies_a_plateau_reduction_and_survives_a_rollback():
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([p], lr=1.0)
    val = types.SimpleNamespace(host_best_step=lambda state: torch.tensor([0]), window=lambda b: 4)
    st = types.SimpleNamespace(optimizer=opt, y=torch.zeros(1, 1, 4, 4), step=0, metrics={})
    sched = Plateau(val, window=2, check_every=1, warmup=4)
    sched.on_start(st)
    st.step = 2
    sched.on_step_end(st)  # warm-up (3/4) and a plateau halving (window 2 after the best at 0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * 0.75)
    opt.param_groups[0]["lr"] *= 0.5  # self-healing halves the rates it restores
    sched.on_rollback(st, {})
    st.step = 3
    sched.step = 3
    sched._apply(st)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * 0.5 * 1.0)


def test_warmup_is_automatic_only_for_a_network_started_on_an_image():
    from dipkit.methods import make_method

    dip, tv = make_method("dip"), make_method("tv")
    assert resolve_warmup(None, "tv", dip) == INIT_WARMUP and resolve_warmup(None, "random", dip) == 0
    assert resolve_warmup(7, "random", dip) == 7 and resolve_warmup(None, "tv", tv) == 0
    cfg = types.SimpleNamespace(window=None, factor=0.5, floor=0.01)
    assert make_schedule("constant", cfg) is None
    assert make_schedule("constant", cfg, warmup=5).warmup == 5


# ---------------------------------------------------------------------- the TV start
def test_fit_to_image_brings_the_network_to_the_target():
    from dipkit.nets import build_net
    from dipkit.run.netinit import fit_to_image
    from tests.conftest import TINY_NET

    torch.manual_seed(0)
    net = build_net("unet", 1, 1, **TINY_NET)
    z = 0.1 * torch.randn(1, 1, 16, 16)
    target = torch.zeros(1, 1, 16, 16)
    target[..., 4:12, 4:12] = 1.0
    with torch.no_grad():
        before = _psnr(net(z), target)
    rec = fit_to_image(net, z, target, steps=200, lr=1e-2)
    with torch.no_grad():
        after = _psnr(net(z), target)
    assert after > before + 10 and after > 20
    assert rec["steps"] == 200 and rec["psnr_to_target"] == pytest.approx(after, abs=1e-3)


def test_a_tv_started_run_begins_at_the_tv_image_of_the_fitted_data(ct_problem, tiny_cfg, monkeypatch):
    """Algorithm: x_TV on the data the run fits (the fit view: held-out entries out), θ fitted to
    x_TV, then the method from there — with a rate too small to move, the first iterate is the
    network's copy of x_TV."""
    import dipkit.run.netinit as netinit
    from dipkit.run import reconstruct

    seen = {}
    real = netinit.tv_target

    def spy(problem):
        seen["y"] = problem.y.clone()
        seen["x"] = real(problem)
        return seen["x"]

    monkeypatch.setattr(netinit, "tv_target", spy)
    cfg = tiny_cfg("dip-tv", iterations=5, lr=1e-9, alpha_fraction=1.0)
    cfg.early_stop.rule = "val:record"
    cfg.set("init.kind", "tv")
    cfg.set("init.steps", 300)
    cfg.set("init.lr", 1e-2)
    res = reconstruct(ct_problem, cfg, quiet=True)
    # the TV image is of the fit view: the held-out entries are zero in the y it saw
    held = (seen["y"] == 0) & (ct_problem.y != 0)
    assert int(held.sum()) > 0
    assert res["init"]["kind"] == "tv" and res["init"]["steps"] == 300 and res["init"]["lr"] == 1e-2
    assert res["init"]["psnr_to_target"][0] > 25
    assert _psnr(res.estimates["final"], seen["x"]) > 25
    assert res["schedule"]["warmup"] == INIT_WARMUP


def test_init_settings_are_checked(tiny_cfg):
    for key, value, msg in [("init.kind", "fbp", "unknown init.kind"), ("init.steps", 0, "init.steps"),
                            ("init.lr", -1.0, "init.lr"), ("schedule.warmup", -2, "schedule.warmup")]:
        cfg = tiny_cfg("dip")
        cfg.set(key, value)
        with pytest.raises(DipkitError, match=msg):
            cfg.validate()
    cfg = tiny_cfg("tv")
    cfg.params.clear()
    cfg.set("init.kind", "tv")
    with pytest.raises(DipkitError, match="trains none"):
        cfg.validate()


def test_an_ensemble_starts_every_member_on_the_tv_image(ct_problem, tiny_cfg):
    from dipkit.run import reconstruct

    cfg = tiny_cfg("dip-tv", iterations=2, lr=1e-9, alpha_fraction=1.0)
    cfg.ensemble = 2
    cfg.set("init.kind", "tv")
    cfg.set("init.steps", 150)
    cfg.set("init.lr", 1e-2)
    res = reconstruct(ct_problem, cfg, quiet=True)
    assert len(res["init"]["psnr_to_target"]) == 2 and min(res["init"]["psnr_to_target"]) > 20
    a, b = res.members[0], res.members[1]
    assert _psnr(a, b) > 20  # both near the same x_TV though their weights started apart


def test_the_auto_candidate_dip_tv_init_is_dip_tv_at_tvs_weight_started_on_tv(tiny_cfg):
    from dipkit.run.portfolio import candidate_config

    cfg = tiny_cfg("dip")
    cfg.method, cfg.iterations = "auto", None
    cfg.params.clear()
    c = candidate_config(cfg, "dip-tv-init")
    assert c.method == "dip-tv" and c.params == {"alpha_fraction": 1.0}
    assert c.init.kind == "tv" and c.early_stop.rule == "val"
    assert candidate_config(cfg, "tv").init.kind == "random"
    c.validate()
