"""Self-validation on Cartesian MRI: the ``lines`` split (whole k-space lines outside the centre)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dipkit.errors import DipkitError
from dipkit.physics.mri import CartesianMRI
from dipkit.physics.split import ValidationSplit, measured_support, outer_lines
from dipkit.problem import Problem
from dipkit.run import reconstruct
from dipkit.run.config import RunConfig
from dipkit.run.runner import make_split, resolve_validation

from .conftest import tiny_image

LINES = [0, 2, 5, 7, 8, 9, 10, 12, 14]  # w = 16: the centre block is 7…10 (it holds column 8)


def _mri(lines=LINES, n=16, seed=0):
    physics = CartesianMRI((n, n), lines=lines)
    img = torch.from_numpy(tiny_image(n))[None]  # [1, 1, n, n]
    x = torch.cat([img, torch.zeros_like(img)], 1)  # [1, 2, n, n]: real, imaginary
    g = torch.Generator().manual_seed(seed)
    clean = physics.A(x)
    y = clean + 0.01 * torch.randn(clean.shape, generator=g) * physics.mask
    return physics, x, y


def test_outer_lines_leave_out_the_fully_sampled_centre():
    physics, _, y = _mri()
    pool, n_measured = outer_lines(measured_support(physics, y))
    assert pool.tolist() == [5, 12, 2, 14, 0] and n_measured == len(LINES)  # nearest column 8 first
    no_centre, _, y2 = _mri(lines=[1, 3, 5, 11, 13])  # column 8 unsampled: no centre block, all lines eligible
    assert outer_lines(measured_support(no_centre, y2))[0].tolist() == [5, 11, 3, 13, 1]


@pytest.mark.parametrize("fraction,n_out", [(0.05, 2), (0.25, 2), (0.4, 4)])
def test_line_split_holds_out_whole_outer_lines_spread_seeded_and_disjoint(fraction, n_out):
    physics, x, y = _mri()
    s = ValidationSplit(physics, y, fraction=fraction, seed=3, split="lines", fill="zero")
    assert n_out == max(2, round(fraction * len(LINES)))  # at least two of the five eligible lines
    held = s.held_out
    cols = torch.nonzero(held.any(0)).squeeze(1).tolist()
    assert sorted(s.views) == cols and len(cols) == n_out
    assert set(cols) <= {0, 2, 5, 12, 14}                        # never a line of the centre block
    assert bool(held[:, cols].all()) and s.n_held_out == n_out * 16  # whole lines, nothing else
    pool = [5, 12, 2, 14, 0]                                      # by distance from the centre
    bounds = [(k * len(pool)) // n_out for k in range(n_out + 1)]
    blocks = sorted(k for c in cols for k in range(n_out) if bounds[k] <= pool.index(c) < bounds[k + 1])
    assert blocks == list(range(n_out))                           # one in each block of distances
    assert torch.equal(s.keep.bool(), ~held)                      # disjoint from the fitted entries
    assert bool((s.fit_y()[..., cols] == 0).all()) and bool((s.fill(y)[..., cols] == 0).all())
    assert bool((s.fit_physics().A(x)[..., cols] == 0).all())
    again = ValidationSplit(physics, y, fraction=fraction, seed=3, split="lines", fill="zero")
    assert torch.equal(again.held_out, held)                      # seeded
    if n_out < len(pool):
        others = {tuple(ValidationSplit(physics, y, fraction=fraction, seed=k, split="lines").views)
                  for k in range(4, 12)}
        assert others != {tuple(s.views)}
    d = s.describe()
    assert d["split"] == "lines" and d["lines"] == s.views and d["views"] is None


def test_line_split_misfit_is_the_mean_square_over_the_held_out_lines_brute_force():
    physics, x, y = _mri()
    s = ValidationSplit(physics, y, fraction=0.25, seed=1, split="lines")
    xhat = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    r = physics.A(xhat) - y
    brute = sum(float(r[0, :, :, c].pow(2).sum()) for c in s.views) / (len(s.views) * 16 * 2)
    assert math.isclose(float(s.misfit(xhat)[0]), brute, rel_tol=1e-5)
    assert math.isclose(float(s.entry_scores(xhat).mean()), brute, rel_tol=1e-5)


def test_line_split_errors_are_one_line():
    physics, _, y = _mri(lines=[2, 7, 8, 9, 12])  # two outer lines: holding out both leaves none to fit there
    with pytest.raises(DipkitError, match="cannot hold out 2 k-space lines") as e:
        ValidationSplit(physics, y, fraction=0.4, split="lines")
    assert "\n" not in str(e.value)
    m = torch.zeros(16, 16)
    m[::2, ::3] = 1  # sampled points, not whole lines
    m[:, 8] = 1
    pointwise = CartesianMRI((16, 16), mask=m.numpy())
    with pytest.raises(DipkitError, match="needs a Cartesian line mask"):
        ValidationSplit(pointwise, pointwise.A(torch.zeros(1, 2, 16, 16)), split="lines")
    only_centre = CartesianMRI((16, 16), lines=[7, 8, 9])
    with pytest.raises(DipkitError, match="outside the fully sampled centre"):
        ValidationSplit(only_centre, only_centre.A(torch.zeros(1, 2, 16, 16)), split="lines")
    from dipkit.tasks import get_task

    denoise = get_task("denoise").simulate(tiny_image(16), seed=0)
    cfg = RunConfig(method="dip")
    cfg.set("validation.split", "lines")
    cfg.validate()
    with pytest.raises(DipkitError, match="needs an MRI problem") as e:
        make_split(denoise, cfg)
    assert "\n" not in str(e.value)
    cfg.set("validation.score", "ramp")
    with pytest.raises(DipkitError, match="ramp"):
        cfg.validate()


def test_a_val_run_with_a_line_split(tiny_cfg, tmp_path):
    physics, x, y = _mri()
    problem = Problem(physics=physics, y=y, spec=physics.spec, x_true=x, meta={"task": "mri"})
    cfg = tiny_cfg("dip", iterations=30, lr=1e-2)
    cfg.early_stop.rule = "val:record"
    cfg.set("validation.split", "lines")
    assert resolve_validation(problem, cfg.validation) == ("lines", "raw")
    res = reconstruct(problem, cfg, tmp_path / "run", quiet=True)
    val = json.loads((tmp_path / "run" / "metrics.json").read_text())["validation"]
    assert val["split"] == "lines" and len(val["lines"]) == 2 and val["held_out"] == 32  # at least two lines
    assert set(val["lines"]) <= {0, 2, 5, 12, 14}
    assert val["iteration"] is not None and 0 < val["iteration"] <= 30
    assert all(math.isfinite(v) for v in res.history["val"])


def test_auto_split_holds_out_lines_on_cartesian_mri_with_enough_outer_lines():
    from dipkit.physics.split import measured_support
    from dipkit.tasks import get_task

    from dipkit.run.resolve import AUTO_LINES_MIN

    auto = RunConfig().validation
    big = get_task("mri").simulate(tiny_image(64), seed=0)  # 4×: 16 lines, 11 outside the centre
    assert outer_lines(measured_support(big.physics, big.y))[0].numel() >= AUTO_LINES_MIN
    assert resolve_validation(big, auto) == ("lines", "raw")
    small = get_task("mri").simulate(tiny_image(32), seed=0)  # 8 lines, 5 outside: too few to give two away
    assert resolve_validation(small, auto) == ("entries", "raw")
    physics, x, y = _mri()
    m = torch.zeros(16, 16)
    m[::2, ::3] = 1  # not a line mask
    pointwise = CartesianMRI((16, 16), mask=m.numpy())
    p = Problem(physics=pointwise, y=pointwise.A(x), spec=pointwise.spec, meta={"task": "mri"})
    assert resolve_validation(p, auto) == ("entries", "raw")
    for task in ("denoise", "ct", "mri-multicoil"):  # multi-coil MRI keeps entries (a measured loss with lines)
        assert resolve_validation(get_task(task).simulate(tiny_image(64), seed=0), auto) == ("entries", "raw")


def test_line_split_on_multicoil_mri_holds_out_the_lines_of_every_coil():
    from dipkit.tasks import get_task

    p = get_task("mri-multicoil").simulate(tiny_image(16), seed=0, coils=2)
    s = ValidationSplit(p.physics, p.y, split="lines", fill="zero")
    assert len(s.views) >= 1 and s.fit_y().shape == p.y.shape
    assert bool((s.fit_y()[..., s.views] == 0).all()) and bool((s.fit_physics().A(p.x_true)[..., s.views] == 0).all())
    r = p.physics.A(p.x_true * 0.9) - p.y
    brute = float(r[..., s.views].pow(2).sum()) / (len(s.views) * 16 * r[0].numel() // (16 * 16))
    assert math.isclose(float(s.misfit(p.x_true * 0.9)[0]), brute, rel_tol=1e-5)
