"""Vanilla DIP on a tiny CT problem: it lowers the error, is deterministic, writes its outputs."""

import torch

from dipkit.metrics import psnr
from dipkit.run import reconstruct


def test_dip_lowers_error_on_tiny_problem(ct_problem, tiny_cfg):
    cfg = tiny_cfg("dip", iterations=60, lr=1e-2)
    cfg.input.kind = "fbp"
    res = reconstruct(ct_problem, cfg, quiet=True)
    h = res.history
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["psnr"][-1] > h["psnr"][0] + 3
    assert res["iterations"] == 60 and h["step"][-1] == 60
    assert len(h["step"]) == 60 // 5


def test_same_seed_same_result(ct_problem, tiny_cfg):
    a = reconstruct(ct_problem, tiny_cfg("dip", iterations=15, lr=1e-2), quiet=True)
    b = reconstruct(ct_problem, tiny_cfg("dip", iterations=15, lr=1e-2), quiet=True)
    cfg = tiny_cfg("dip", iterations=15, lr=1e-2)
    cfg.seed = 1
    c = reconstruct(ct_problem, cfg, quiet=True)
    assert torch.equal(a.reconstruction, b.reconstruction)
    assert not torch.equal(a.reconstruction, c.reconstruction)


def test_dip_with_ema_and_input_perturbation(ct_problem, tiny_cfg):
    cfg = tiny_cfg("dip", iterations=20, lr=1e-2, ema=0.9)
    cfg.input.perturb = 0.05
    res = reconstruct(ct_problem, cfg, quiet=True)
    assert res["params"]["ema"] == 0.9
    assert torch.isfinite(res.reconstruction).all()


def test_wmv_with_dip_records_selection(ct_problem, tiny_cfg):
    cfg = tiny_cfg("dip", iterations=40, lr=1e-2)
    cfg.early_stop.rule = "wmv:record"
    cfg.early_stop.window = 5
    cfg.early_stop.patience = 1000
    res = reconstruct(ct_problem, cfg, quiet=True)
    es = res["early_stop"]
    assert es["rule"] == "wmv" and es["mode"] == "record"
    assert 5 <= es["iteration"] <= 40
    assert es["psnr"] == float(psnr(res.estimates["early_stop"], ct_problem.x_true))
    assert res["psnr"] == es["psnr"]  # the saved reconstruction is the early-stopped one


def test_wmv_stop_mode_stops(ct_problem, tiny_cfg):
    cfg = tiny_cfg("dip", iterations=500, lr=1e-2)
    cfg.early_stop.rule = "wmv"
    cfg.early_stop.window = 3
    cfg.early_stop.patience = 5
    res = reconstruct(ct_problem, cfg, quiet=True)
    assert res["iterations"] < 500
    assert res["stop_reason"].startswith("wmv")
    assert res.history["step"][-1] == res["iterations"]


def test_bf16_precision_runs(ct_problem, tiny_cfg):
    cfg = tiny_cfg("dip", iterations=5, lr=1e-2)
    cfg.precision = "bf16"
    res = reconstruct(ct_problem, cfg, quiet=True)
    assert res.reconstruction.dtype == torch.float32


def test_inputs(ct_problem):
    from dipkit.inputs import make_input

    g = torch.Generator().manual_seed(0)
    assert make_input("noise", ct_problem, generator=g, channels=3).shape == (1, 3, 32, 32)
    m = make_input("meshgrid", ct_problem, generator=g)
    assert m.shape == (1, 2, 32, 32) and float(m.min()) == 0 and float(m.max()) == 1
    assert make_input("fbp", ct_problem, generator=g).shape == (1, 1, 32, 32)
    assert float(make_input("adjoint", ct_problem, generator=g).abs().max()) == 1.0
