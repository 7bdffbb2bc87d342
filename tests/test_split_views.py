"""Self-validation on sinograms: the view split, the ramp-filtered score, their config keys."""

from __future__ import annotations

import math

import pytest
import torch

from dipkit.run.config import RunConfig
from dipkit.errors import DipkitError
from dipkit.physics.split import ValidationSplit, measured_support
from dipkit.run import reconstruct
from dipkit.run.runner import make_split, resolve_validation

from .conftest import tiny_image


def _sim(task, n=16, **kw):
    from dipkit.tasks import get_task

    return get_task(task).simulate(tiny_image(n), seed=0, **kw)


# ---------------------------------------------------------------------- the view split
@pytest.mark.parametrize("task,views,fraction,n_out", [("ct", 20, 0.1, 2), ("ct", 20, 0.01, 1), ("ct-fan", 24, 0.2, 5)])
def test_view_split_holds_out_whole_views_spread_seeded_and_disjoint(task, views, fraction, n_out):
    p = _sim(task, views=views)
    s = ValidationSplit(p.physics, p.y, fraction=fraction, seed=3, split="views")
    nd, nv = p.y.shape[-2:]
    assert nv == views
    held = s.held_out
    cols = torch.nonzero(held.any(0)).squeeze(1).tolist()
    assert sorted(s.views) == cols and len(cols) == n_out              # the right number of views (≥ 1) …
    assert bool(held[:, cols].all()) and int(held.sum()) == n_out * nd  # … held out whole, nothing else
    assert s.n_held_out == n_out * nd
    for k, v in enumerate(sorted(s.views)):                              # one in each block of views
        assert (k * nv) // n_out <= v < ((k + 1) * nv) // n_out
    assert torch.equal(s.keep.bool(), ~held)                             # disjoint from the fit entries
    assert bool((s.fit_y()[..., cols] == 0).all())
    assert bool((s.fit_physics().A(p.x_true)[..., cols] == 0).all())
    again = ValidationSplit(p.physics, p.y, fraction=fraction, seed=3, split="views")
    assert torch.equal(again.held_out, held) and again.views == s.views  # seeded
    others = {tuple(ValidationSplit(p.physics, p.y, fraction=fraction, seed=k, split="views").views)
              for k in range(4, 8)}
    assert others != {tuple(s.views)}                                    # another seed, another split
    assert s.describe()["split"] == "views" and s.describe()["views"] == s.views


def test_view_split_inside_a_fit_view_holds_out_only_views_the_fit_view_has():
    p = _sim("ct", views=20)
    outer = ValidationSplit(p.physics, p.y, fraction=0.2, seed=0, split="views")
    fit_physics, fit_y = outer.fit_physics(), outer.fit_y()
    support = measured_support(fit_physics, fit_y)
    assert not support[:, outer.views].any()
    for split in ("views", "entries"):
        inner = ValidationSplit(fit_physics, fit_y, fraction=0.2, seed=1, split=split)
        assert not (inner.held_out & outer.held_out).any()
        assert bool((inner.held_out <= support).all())
    inner = ValidationSplit(fit_physics, fit_y, fraction=0.2, seed=1, split="views")
    assert not set(inner.views) & set(outer.views) and len(inner.views) == round(0.2 * 16)
    # an entries split outside, a view split inside: a view keeps its measured entries only
    outer_e = ValidationSplit(p.physics, p.y, fraction=0.2, seed=0)
    inner_v = ValidationSplit(outer_e.fit_physics(), outer_e.fit_y(), fraction=0.1, seed=0, split="views")
    assert not (inner_v.held_out & outer_e.held_out).any() and inner_v.n_held_out == int(inner_v.held_out.sum())


def test_fill_completes_held_out_views_from_the_neighbouring_views():
    p = _sim("ct", views=24)
    clean = p.physics.A(p.x_true)
    s = ValidationSplit(p.physics, clean, fraction=0.1, seed=0, split="views")
    filled = s.fill(s.fit_y())
    assert torch.equal(filled[..., ~s.held_out], clean[..., ~s.held_out])
    err_fill = float((filled - clean)[..., s.held_out].abs().mean())
    assert err_fill < 0.2 * float(clean[..., s.held_out].abs().mean())
    # a held-out view between two kept ones: the mean of its 3×3 kept neighbours (2 views × 3 cells)
    v = next(v for v in s.views if 0 < v < 23 and v - 1 not in s.views and v + 1 not in s.views)
    d = 7
    expect = (clean[0, 0, d - 1:d + 2, v - 1].sum() + clean[0, 0, d - 1:d + 2, v + 1].sum()) / 6
    assert float(filled[0, 0, d, v]) == pytest.approx(float(expect), rel=1e-5)
    # FBP network inputs of the fit view see no held-out value
    assert torch.allclose(s.fit_physics().A_dagger(s.fit_y()), p.physics.A_dagger(filled))


# ---------------------------------------------------------------------- the ramp score
def _ramp_matrix(nd: int) -> torch.Tensor:
    """Dense ``[nd, nd]`` Ram-Lak filtering (float64): ``2 h(i - j)``, h(0) = 1/4, h(odd n) = −1/(π n)²."""
    n = torch.arange(nd, dtype=torch.float64)
    k = (n[:, None] - n[None, :]).abs()
    h = torch.where(k % 2 == 1, -1.0 / (math.pi * k.clamp_min(1)) ** 2, torch.zeros_like(k))
    h = torch.where(k == 0, torch.full_like(k, 0.25), h)
    return 2.0 * h


@pytest.mark.parametrize("task", ["ct", "ct-fan"])
def test_ramp_score_equals_a_brute_force_filtering(task):
    p = _sim(task, views=20)
    s = ValidationSplit(p.physics, p.y, fraction=0.15, seed=2, split="views", score="ramp")
    raw = ValidationSplit(p.physics, p.y, fraction=0.15, seed=2, split="views", score="raw")
    assert raw.views == s.views
    g = torch.Generator().manual_seed(0)
    x = torch.cat([p.x_true, p.x_true + 0.1 * torch.rand(p.x_true.shape, generator=g)])  # a batch of 2
    y = p.y.expand(2, *p.y.shape[1:])
    s.y = raw.y = y
    got = s.misfit(x)
    assert got.shape == (2,)
    r = (p.physics.A(x) - y).to(torch.float64)[..., s.views]  # [B, C, nd, k]
    nd = r.shape[-2]
    filt = torch.einsum("ij,bcjk->bcik", _ramp_matrix(nd), r)
    expect = filt.pow(2).flatten(1).sum(1) / (len(s.views) * nd)
    assert torch.allclose(got.double(), expect, rtol=1e-4)
    # … and the same by a direct DFT with FBP's zero-padding (circular convolution of the padded view)
    size = max(64, 2 ** math.ceil(math.log2(2 * nd)))
    kern = torch.zeros(size, dtype=torch.float64)
    kern[:nd] = _ramp_matrix(nd)[:, 0]
    kern[size - nd + 1:] = _ramp_matrix(nd)[0, 1:].flip(0)
    rp = torch.nn.functional.pad(r, (0, 0, 0, size - nd))
    dft = torch.fft.ifft(torch.fft.fft(rp, dim=-2) * torch.fft.fft(kern).reshape(-1, 1), dim=-2).real[..., :nd, :]
    assert torch.allclose(dft, filt, atol=1e-12)
    # the raw score is the unfiltered one, and the two differ
    expect_raw = r.pow(2).flatten(1).sum(1) / (len(s.views) * nd)
    assert torch.allclose(raw.misfit(x).double(), expect_raw, rtol=1e-5)
    assert not torch.allclose(expect, expect_raw, rtol=0.1)


def test_ramp_score_weights_high_detector_frequencies():
    """A residual that oscillates along the detector scores far higher after the ramp than a smooth one
    of the same energy: the score sees the detail a raw misfit averages away."""
    p = _sim("ct", views=20)
    s = ValidationSplit(p.physics, torch.zeros_like(p.y), fraction=0.1, seed=0, split="views", score="ramp")
    nd = p.y.shape[-2]
    t = torch.arange(nd, dtype=torch.float32)
    smooth, sharp = torch.cos(math.pi * t / nd), torch.cos(math.pi * 0.8 * t)
    scores = []
    for prof in (smooth, sharp):
        s.physics = type("P", (), {"A": staticmethod(lambda x, prof=prof: prof.reshape(1, 1, -1, 1).expand_as(p.y))})()
        scores.append(float(s.misfit(p.x_true)) / float(prof.pow(2).mean()))
    assert scores[1] > 20 * scores[0]


# ---------------------------------------------------------------------- configuration
@pytest.mark.parametrize("key,value,needle", [
    ("validation.split", "rays", "validation.split must be entries, views, lines or auto"),
    ("validation.score", "l1", "validation.score must be raw, ramp or auto"),
])
def test_config_errors_are_one_line(key, value, needle):
    cfg = RunConfig(method="dip")
    cfg.set(key, value)
    with pytest.raises(DipkitError) as e:
        cfg.validate()
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_ramp_with_an_entries_split_and_views_without_a_sinogram_are_one_line_errors(ct_problem):
    cfg = RunConfig(method="dip")
    cfg.set("validation.split", "entries")
    cfg.set("validation.score", "ramp")
    with pytest.raises(DipkitError, match="needs validation.split=views|use validation.split=views") as e:
        cfg.validate()
    assert "\n" not in str(e.value)
    with pytest.raises(DipkitError, match="needs validation.split=views"):
        ValidationSplit(ct_problem.physics, ct_problem.y, score="ramp")
    with pytest.raises(DipkitError, match="validation.split must be one of"):
        ValidationSplit(ct_problem.physics, ct_problem.y, split="rays")
    denoise = _sim("denoise")
    cfg = RunConfig(method="dip")
    cfg.set("validation.split", "views")
    with pytest.raises(DipkitError, match="needs a sinogram") as e:
        make_split(denoise, cfg)
    assert "\n" not in str(e.value)
    one = _sim("ct", views=1)
    with pytest.raises(DipkitError, match="cannot hold out"):
        ValidationSplit(one.physics, one.y, fraction=0.5, split="views")


def test_auto_resolves_per_task(ct_problem):
    auto = RunConfig().validation
    assert (auto.split, auto.score) == ("auto", "auto")
    assert resolve_validation(ct_problem, auto) == ("entries", "raw")
    assert resolve_validation(_sim("ct-fan", views=8), auto) == ("entries", "raw")
    for task in ("denoise", "mri", "inpaint"):
        assert resolve_validation(_sim(task), auto) == ("entries", "raw")
    cfg = RunConfig()
    cfg.validation.split = "views"
    assert resolve_validation(ct_problem, cfg.validation) == ("views", "raw")
    cfg.validation.score = "ramp"
    assert resolve_validation(ct_problem, cfg.validation) == ("views", "ramp")
    cfg.validation.split = "auto"
    assert resolve_validation(ct_problem, cfg.validation) == ("views", "ramp")
    with pytest.raises(DipkitError, match="needs validation.split=views"):
        resolve_validation(_sim("denoise"), cfg.validation)  # auto → entries: no ramp there
    cfg.validation.split, cfg.validation.score = "entries", "auto"
    assert resolve_validation(ct_problem, cfg.validation) == ("entries", "raw")


# ---------------------------------------------------------------------- end to end
@pytest.mark.parametrize("score", ["raw", "ramp"])
def test_a_val_run_with_a_view_split(ct_problem, tiny_cfg, tmp_path, score):
    import json

    cfg = tiny_cfg("dip", iterations=30, lr=1e-2)
    cfg.early_stop.rule = "val:record"
    cfg.set("validation.split", "views")
    cfg.set("validation.score", score)
    cfg.set("input.kind", "fbp")  # the FBP input of the fit view uses the filled measurement
    res = reconstruct(ct_problem, cfg, tmp_path / "run", quiet=True)
    val = json.loads((tmp_path / "run" / "metrics.json").read_text())["validation"]
    assert val["split"] == "views" and val["score"] == score
    assert len(val["views"]) == 1 and val["held_out"] == ct_problem.y.shape[-2]  # 5 % of 16 views → 1
    assert val["iteration"] is not None and 0 < val["iteration"] <= 30
    assert res["selections"]["val"]["iteration"] == val["iteration"]
    hist = res.history
    assert "val" in hist and all(math.isfinite(v) for v in hist["val"])
    assert res.config["validation"]["split"] == "views" and res.config["validation"]["score"] == score
