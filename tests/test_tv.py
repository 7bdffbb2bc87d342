"""TV tools (grad/div/tv/prox_tv) and the Chambolle-Pock TV reconstruction baseline."""

from __future__ import annotations

import math

import pytest
import torch

from dipkit.baselines.tv import tv_objective, tv_reconstruct
from dipkit.physics.linalg import opnorm_sq
from dipkit.errors import DipkitError
from dipkit.physics.ct import parallel_beam
from dipkit.priors.tv import div, grad, prox_tv, tv


def test_grad_shape_and_neumann():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    g = grad(x)
    assert g.shape == (1, 1, 2, 3, 4)
    assert torch.all(g[:, :, 0, :-1] == 4.0) and torch.all(g[:, :, 0, -1] == 0)
    assert torch.all(g[:, :, 1, :, :-1] == 1.0) and torch.all(g[:, :, 1, :, -1] == 0)


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 1, 8, 8), (1, 2, 1, 5)])
def test_div_is_minus_grad_adjoint(shape):
    torch.manual_seed(0)
    u = torch.randn(*shape, dtype=torch.float64)
    p = torch.randn(shape[0], shape[1], 2, *shape[2:], dtype=torch.float64)
    lhs = (grad(u) * p).sum()
    rhs = -(u * div(p)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-12, abs=1e-12)


class _GradPhysics:
    """``x -> grad x`` as an operator (adjoint ``-div``)."""

    def A(self, x):
        return grad(x)

    def A_adjoint(self, y):
        return -div(y)


def test_grad_norm_bound():
    n2 = opnorm_sq(_GradPhysics(), torch.zeros(1, 1, 16, 16, dtype=torch.float64), iterations=100)
    assert 7.0 < float(n2) <= 8.0 + 1e-9  # ||grad||^2 <= 8 (GRAD_NORM_SQ)
    assert float(opnorm_sq(_IdentityPhysics(), torch.zeros(2, 1, 5, 5))[1]) == pytest.approx(1.0)


def test_tv_values():
    x = torch.zeros(2, 1, 4, 4)
    x[1, :, :, 2:] = 1.0  # vertical edge of height 4
    t = tv(x)
    assert t.shape == (2,)
    assert t.tolist() == [0.0, 4.0]
    # channels summed, eps smooth version >= exact and within eps * pixels
    x2 = torch.rand(3, 2, 5, 6)
    eps = 1e-2
    assert torch.all(tv(x2, eps) >= tv(x2))
    assert torch.all(tv(x2, eps) - tv(x2) <= eps * 2 * 5 * 6 + 1e-6)
    # diagonal gradient: isotropic norm
    y = torch.zeros(1, 1, 2, 2)
    y[0, 0, 0, 0] = 1.0
    assert float(tv(y)) == pytest.approx(math.sqrt(2.0))


def test_tv_eps_gradient_is_finite():
    x = torch.zeros(1, 1, 5, 5, requires_grad=True)
    tv(x, eps=1e-3).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_prox_tv_lam_zero_is_identity():
    v = torch.randn(2, 3, 8, 8)
    assert torch.equal(prox_tv(v, 0.0), v)
    assert torch.equal(prox_tv(v, torch.zeros(2)), v)


def test_prox_tv_constant_fixed_point():
    v = torch.full((2, 1, 9, 7), 0.37)
    torch.testing.assert_close(prox_tv(v, 0.5, n_iter=30), v)


def _prox_obj(u, v, lam):
    return 0.5 * (u - v).flatten(1).pow(2).sum(1) + lam * tv(u)


def test_prox_tv_optimality():
    torch.manual_seed(0)
    v = torch.randn(2, 2, 12, 12, dtype=torch.float64)
    lam = 0.3
    u = prox_tv(v, lam, n_iter=300)
    f_u = _prox_obj(u, v, lam)
    assert torch.all(f_u < _prox_obj(v, v, lam))
    # mean preserved (Neumann TV is shift invariant)
    torch.testing.assert_close(u.mean(dim=(2, 3)), v.mean(dim=(2, 3)))
    for s in range(5):
        g = torch.Generator().manual_seed(s)
        for scale in (1e-1, 1e-2):
            w = u + scale * torch.randn(u.shape, generator=g, dtype=u.dtype)
            assert torch.all(f_u <= _prox_obj(w, v, lam) + 1e-9)
    # prox optimality  v - u in lam * dTV(u):  <v - u, w - u> <= lam (TV(w) - TV(u))
    w = torch.randn_like(u)
    lhs = ((v - u) * (w - u)).flatten(1).sum(1)
    assert torch.all(lhs <= lam * (tv(w) - tv(u)) + 1e-6)


def test_prox_tv_batched_lam_and_tol():
    torch.manual_seed(0)
    v = torch.randn(3, 1, 10, 10, dtype=torch.float64)
    lam = torch.tensor([0.0, 0.1, 1.0], dtype=torch.float64)
    u = prox_tv(v, lam, n_iter=100)
    torch.testing.assert_close(u[0], v[0])
    torch.testing.assert_close(u[1:2], prox_tv(v[1:2], 0.1, n_iter=100))
    torch.testing.assert_close(u[2:3], prox_tv(v[2:3], 1.0, n_iter=100))
    assert tv(u[2:3]) < tv(u[1:2]) < tv(v[1:2])
    u_tol = prox_tv(v, lam, n_iter=2000, tol=1e-6)
    assert torch.allclose(u_tol, prox_tv(v, lam, n_iter=2000), atol=1e-3)


class _IdentityPhysics:
    def A(self, x):
        return x

    def A_adjoint(self, y):
        return y


def test_operator_norm_matches_deepinv():
    op = parallel_beam(24, 12, dtype=torch.float64)
    n2 = opnorm_sq(op, torch.zeros(1, 1, 24, 24, dtype=torch.float64), iterations=100)
    ref = float(op.compute_norm(torch.randn(1, 1, 24, 24, dtype=torch.float64), verbose=False,
                                squared=True, max_iter=300, tol=1e-8)) if not hasattr(op, "compute_sqnorm") else float(
        op.compute_sqnorm(torch.randn(1, 1, 24, 24, dtype=torch.float64), verbose=False, max_iter=300, tol=1e-8))
    assert float(n2) == pytest.approx(ref, rel=2e-3)
    # the same start vector for every sample: the estimate does not depend on the batch size
    nb = opnorm_sq(op, torch.zeros(3, 1, 24, 24, dtype=torch.float64), iterations=100)
    assert torch.equal(nb, n2.expand(3))


def _noisy_problem(n=24, views=12, seed=0):
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    x = torch.tensor(resize(shepp_logan_phantom(), (n, n), anti_aliasing=True),
                     dtype=torch.float32)[None, None]
    op = parallel_beam(n, views)
    ax = op.A(x)
    g = torch.Generator().manual_seed(seed)
    y = ax + 0.05 * ax.abs().mean() * torch.randn(ax.shape, generator=g)
    return op, x, y


def test_tv_reconstruct_beats_fbp_and_decreases_objective():
    op, x, y = _noisy_problem()
    alpha = 0.1  # errors measured: TV 0.72, FBP 1.14
    history = []
    rec = tv_reconstruct(op, y, alpha, iterations=300, observer=lambda k, u: history.append(
        (k, float(tv_objective(op, u, y, alpha)))), observe_every=25)
    ks = [k for k, _ in history]
    assert ks == list(range(25, 301, 25))
    objs = [o for _, o in history]
    assert objs[-1] < objs[0]
    assert all(b <= a * 1.01 for a, b in zip(objs[1:], objs[2:]))  # essentially monotone after start
    assert float(tv_objective(op, rec, y, alpha)) < float(tv_objective(op, op.A_dagger(y).clamp_min(0), y, alpha))
    err_tv = float((rec - x).norm())
    err_fbp = float((op.A_dagger(y) - x).norm())
    assert err_tv < 0.75 * err_fbp
    assert rec.min() >= 0


def test_tv_reconstruct_batched_matches_single():
    op, x, y = _noisy_problem(n=16, views=8)
    yb = torch.cat([y, 1.1 * y])
    alpha = torch.tensor([0.3, 0.6])
    rec = tv_reconstruct(op, yb, alpha, iterations=60)
    single = tv_reconstruct(op, yb[1:], 0.6, iterations=60)
    torch.testing.assert_close(rec[1:], single, rtol=1e-3, atol=1e-3)


def test_tv_reconstruct_generic_physics_and_observer_last():
    """Works for a non-CT LinearPhysics (denoising: A = I), observer called at the last iteration."""
    from deepinv.physics import Denoising

    torch.manual_seed(0)
    v = torch.randn(1, 1, 10, 10, dtype=torch.float64)
    calls = []
    rec = tv_reconstruct(Denoising(), v, 0.3, iterations=400, nonneg=False, observe_every=150,
                         observer=lambda k, u: calls.append(k))
    assert calls == [150, 300, 400]
    # TV denoising == prox of alpha TV
    torch.testing.assert_close(rec, prox_tv(v, 0.3, n_iter=1000), atol=2e-3, rtol=0)


def test_tv_reconstruct_errors():
    op, x, y = _noisy_problem(n=16, views=8)
    with pytest.raises(DipkitError):
        tv_reconstruct(op, y, -1.0, iterations=5)
    with pytest.raises(DipkitError):
        tv_reconstruct(op, y, 1.0, iterations=5, x0=torch.zeros(1, 1, 8, 8))


def test_auto_alpha_continues_from_the_validated_image_on_inpainting():
    """Regression: on 50 % random inpainting the α search (warm-started from large α down) validates
    images whose holes larger weights filled in; the final solve must start from that image, not from
    zeros (a cold solve at the chosen small α left the holes empty: PSNR ≈ the masked image's)."""
    from dipkit.baselines.tv_alpha import choose_alpha
    from dipkit.run.config import RunConfig
    from dipkit.metrics import psnr
    from dipkit.run import reconstruct
    from dipkit.tasks import get_task
    from tests.conftest import tiny_image

    problem = get_task("inpaint").simulate(tiny_image(32), missing=0.5, seed=0)
    masked = float(psnr(problem.y, problem.x_true))
    chosen, validated = choose_alpha(problem.physics, problem.y, return_estimate=True)
    assert validated.shape == problem.x_true.shape
    res = reconstruct(problem, RunConfig.from_dict({"method": "tv", "device": "cpu"}), quiet=True)
    assert res["params"]["alpha"] == pytest.approx(float(chosen[0]))
    assert res["psnr"] > masked + 8.0


# ---------------------------------------------------------------------------------------------
# choose_alpha: the ground-truth-free weight (issue 16)
# ---------------------------------------------------------------------------------------------
_OFF_GRID = tuple(10 ** (k + 0.5) for k in range(1, -6, -1))  # 31.6, 3.16, …, 3.16e-5


def _converged_misfit(op, y, alpha, steps=600):
    """Held-out misfit (fold 0) of a converged fit-view solve at ``alpha``."""
    from dipkit.baselines.tv_alpha import _HoldOut, _Path

    crit = _HoldOut(op, y, folds=1, fraction=0.05, seed=0)
    path = _Path(crit.path_physics, crit.path_y, nonneg=True, value=crit.value, rtol=0)
    path.solve(torch.tensor([10 * alpha]), 150, settle=False)
    return float(path.solve(torch.tensor([alpha]), steps, settle=False)[1])


def test_parabola_vertex():
    from dipkit.baselines.tv_alpha import _parabola_vertex

    u = tuple(torch.tensor([v], dtype=torch.float64) for v in (2.0, 1.0, 0.0))  # descending, as on the path
    f = tuple(torch.tensor([(v - 0.7) ** 2 + 1.0], dtype=torch.float64) for v in (2.0, 1.0, 0.0))
    assert float(_parabola_vertex(u, f)) == pytest.approx(0.7)
    concave = tuple(-v for v in f)
    assert math.isnan(float(_parabola_vertex(u, concave)))


def test_auto_alpha_refines_between_grid_points_where_the_misfit_minimum_is():
    """On a grid that straddles the held-out misfit's minimum (between 0.316 and 0.0316 here), the
    refinement returns a weight between the grid points, and its converged held-out misfit is
    lower than that of either neighbouring grid point (without refinement: a grid point)."""
    from dipkit.baselines.tv_alpha import choose_alpha

    op, x, y = _noisy_problem(n=24, views=12)
    a = float(choose_alpha(op, y, alphas=_OFF_GRID)[0])
    assert 0.04 < a < 0.25  # measured: 0.113 (well inside the bracket, not a grid point)
    v = _converged_misfit(op, y, a)
    assert v < _converged_misfit(op, y, 0.316) and v < _converged_misfit(op, y, 0.0316)
    assert min(abs(float(choose_alpha(op, y, alphas=_OFF_GRID, refine=False)[0]) / g - 1) for g in _OFF_GRID) < 1e-6


def test_auto_alpha_path_stops_once_the_misfit_rose_twice():
    """The warm-started path stops after two weights in a row above its least misfit (after a fall):
    on this problem after 0.00316, leaving 3.16e-4 and 3.16e-5 untried; patience=None tries all."""
    from dipkit.baselines.tv_alpha import choose_alpha

    op, x, y = _noisy_problem(n=24, views=12)
    trace = []
    choose_alpha(op, y, alphas=_OFF_GRID, polish=0, refine=False, trace=trace)
    values = [float(v[0]) for _, v, _ in trace]
    best = values.index(min(values))
    assert len(values) == best + 3 < len(_OFF_GRID)
    assert min(values) < values[0] and all(v > min(values) for v in values[best + 1:])
    full = []
    choose_alpha(op, y, alphas=_OFF_GRID, polish=0, refine=False, patience=None, trace=full)
    assert len(full) == len(_OFF_GRID)


def test_auto_alpha_path_does_not_stop_on_a_wobble_of_the_flat_start(monkeypatch):
    """Over the largest weights the image is nearly constant and the crude solves' values wobble (the
    values below are MRI 64²'s with two k-space lines held out): two rises there, after a dip to
    0.68 of the first value, must not stop the path — only a fall below a quarter of the largest
    value so far arms the rise count — so the path reaches the real minimum at 0.01."""
    from dipkit.core import tv_alpha

    wobble = {100.0: 0.0144, 31.6: 0.0099, 10.0: 0.0138, 3.16: 0.0104, 1.0: 0.0141, 0.316: 0.0207,
              0.1: 0.0046, 0.0316: 0.0025, 0.01: 0.0012, 0.00316: 0.0019, 0.001: 0.0031, 0.000316: 0.0042}

    class _Scripted:
        def __init__(self, physics, y, **kw):
            self.y, self.steps_run = y, 0

        def solve(self, alpha, steps, start=None, settle=True):
            a = float(alpha[0])
            v = next(val for key, val in wobble.items() if math.isclose(key, a, rel_tol=0.02))
            self.steps_run += int(steps)
            return torch.zeros_like(self.y), torch.full((alpha.numel(),), v, dtype=torch.float64)

        def snapshot(self):
            return {"x": torch.zeros(self.y.shape[0], 1, 4, 4)}

    monkeypatch.setattr(tv_alpha, "_Path", _Scripted)
    op, x, y = _noisy_problem(n=24, views=12)
    trace = []
    a = tv_alpha.choose_alpha(op, y, alphas=list(wobble), polish=0, refine=False, trace=trace, opnorm_sq=1.0)
    assert float(a[0]) == pytest.approx(0.01)
    assert len(trace) == 11  # stopped two weights after the minimum, not at 0.316


def test_auto_alpha_polishes_the_bracket_from_the_paths_snapshots():
    """After the path, the best weight and its neighbours are continued (``polish`` steps each,
    from the path's state at that weight); the choice is then made on those values."""
    from dipkit.baselines.tv_alpha import choose_alpha

    op, x, y = _noisy_problem(n=24, views=12)
    trace = []
    choose_alpha(op, y, alphas=_OFF_GRID, polish=40, refine=False, trace=trace)
    path = [r for r in trace if r[2] != 40]
    polished = [r for r in trace if r[2] == 40]
    assert len(polished) >= 3 and len(path) + len(polished) == len(trace)
    best = min(path, key=lambda r: float(r[1][0]))[0]
    assert any(float(r[0][0]) == pytest.approx(float(best[0])) for r in polished)


def test_holdout_folds_average_disjoint_splits():
    """folds=K: K disjoint hold-outs of one seed, V = the mean of the folds' held-out misfits."""
    from dipkit.baselines.tv_alpha import _HoldOut
    from dipkit.physics.split import ValidationSplit

    op, x, y = _noisy_problem(n=16, views=8)
    splits = [ValidationSplit(op, y, fraction=0.1, seed=3, fold=k) for k in range(3)]
    held = torch.stack([s.held_out for s in splits])
    assert int(held.sum(0).max()) == 1  # disjoint
    assert torch.equal(splits[0].held_out, ValidationSplit(op, y, fraction=0.1, seed=3).held_out)
    crit = _HoldOut(op, y, folds=3, fraction=0.1, seed=3)
    xs = torch.rand(3, *x.shape[1:], generator=torch.Generator().manual_seed(0))
    expected = sum(float(s.misfit(xs[k:k + 1])[0]) for k, s in enumerate(splits)) / 3
    assert float(crit.value(xs)[0]) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(DipkitError):
        ValidationSplit(op, y, fraction=0.3, fold=3)  # 4 × 30 % do not fit


def test_sure_estimates_the_denoising_mse_and_picks_its_minimum():
    """Denoising with a known σ: choose_alpha uses SURE, an unbiased estimate of the MSE (within its
    Monte-Carlo noise here) whose minimum is the PSNR-best weight. Regression: the probe b was drawn
    with the simulation's seed, i.e. it *was* the noise, and SURE overestimated the MSE by ~45 %."""
    from dipkit.baselines.tv_alpha import _Path, _Sure, choose_alpha
    from dipkit.tasks import get_task
    from tests.conftest import tiny_image

    import numpy as np

    p = get_task("denoise").simulate(np.repeat(tiny_image(32), 3, 0), seed=0)  # σ = 25/255, seed 0
    sigma = p.meta["noise_sigma"]
    crit = _Sure(p.physics, p.y, sigma=sigma, seed=0)
    noise = (p.y - p.x_true).flatten()
    assert abs(float(torch.corrcoef(torch.stack([noise, crit.b.flatten()]))[0, 1])) < 0.1
    grid = (0.3, 0.1, 0.03, 0.01)
    path = _Path(crit.path_physics, crit.path_y, nonneg=True, value=crit.value, rtol=0, adaptive=False)
    sure, mse = [], []
    for a in grid:
        xa, v = path.solve(torch.full((2,), a), 300, settle=False)
        sure.append(float(v[0]))
        mse.append(float((xa[:1] - p.x_true).pow(2).mean()))
    for s, m in zip(sure, mse):
        assert s == pytest.approx(m, rel=0.2)
    assert sure.index(min(sure)) == mse.index(min(mse))
    trace = []
    chosen = float(choose_alpha(p.physics, p.y, sigma=sigma, alphas=grid, trace=trace, refine=False)[0])
    assert chosen == pytest.approx(grid[mse.index(min(mse))])
    assert float(choose_alpha(p.physics, p.y, sigma=sigma, criterion="holdout", alphas=grid)[0]) > 0
    with pytest.raises(DipkitError):
        choose_alpha(p.physics, p.y, criterion="sure")  # needs σ


def test_auto_alpha_per_sample_weights_for_a_batch():
    """choose_alpha's contract: one weight per sample; a noisier sample gets a larger weight."""
    from dipkit.baselines.tv_alpha import choose_alpha

    op, x, y = _noisy_problem(n=24, views=12)
    noisy = op.A(x) + 4.0 * (y - op.A(x))
    a = choose_alpha(op, torch.cat([y, noisy]), alphas=_OFF_GRID)
    assert a.shape == (2,) and float(a[1]) > float(a[0])
    single = float(choose_alpha(op, y, alphas=_OFF_GRID)[0])
    assert float(a[0]) == pytest.approx(single, rel=0.25)


def test_tv_stops_once_converged_with_step_sizes_balanced():
    """TV (the method) stops when the iterate's relative change over CHECK_EVERY steps is ≤ tol;
    residual balancing changes τ and σ but keeps τσ (so the PDHG step condition)."""
    from dipkit.baselines.tv import TV
    from dipkit.engine import State, run

    op, x, y = _noisy_problem(n=16, views=8)
    m = TV(alpha=0.3, tol=1e-3)
    state = State(physics=op, y=y, max_steps=2000, generator=torch.Generator())
    run(m, state)
    assert 0 < state.step < 2000 and state.stop_reason.startswith("converged")
    full = tv_reconstruct(op, y, 0.3, iterations=2000)
    assert float((state.aux["x"] - full).norm() / full.norm()) < 0.02
    m0 = TV(alpha=0.3, tol=0.0)
    s0 = State(physics=op, y=y, max_steps=1, generator=torch.Generator())
    run(m0, s0)
    product = float(s0.aux["tau"] * s0.aux["sigma"])
    assert float(state.aux["tau"] * state.aux["sigma"]) == pytest.approx(product, rel=1e-5)
    assert float(state.aux["sigma"] / state.aux["tau"]) != pytest.approx(float(s0.aux["sigma"] / s0.aux["tau"]))


def test_shared_choices_search_once_per_operator_and_measurement(monkeypatch):
    """Inside ``shared_choices`` a second search with the same operator (or the same split's fit view),
    measurement and options returns the first one's weight and validated image without solving;
    another measurement, other options, or a call outside the block search again."""
    import dipkit.core.tv_alpha as ta
    from dipkit.physics.split import ValidationSplit

    op, x, y = _noisy_problem(n=24, views=12)
    calls = []
    real = ta._Path.solve
    monkeypatch.setattr(ta._Path, "solve", lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1])
    alone, alone_x = ta.choose_alpha(op, y, alphas=_OFF_GRID, return_estimate=True)
    n_one = len(calls)
    with ta.shared_choices():
        a1 = ta.choose_alpha(op, y, alphas=_OFF_GRID)
        a2, x2 = ta.choose_alpha(op, y.clone(), alphas=_OFF_GRID, return_estimate=True)  # equal, not the same
        assert len(calls) == 2 * n_one
        assert torch.equal(a1, alone) and torch.equal(a2, alone) and torch.equal(x2, alone_x)
        a2.mul_(0)  # the caller's copy: the next call is unaffected
        assert torch.equal(ta.choose_alpha(op, y, alphas=_OFF_GRID), alone) and len(calls) == 2 * n_one
        ta.choose_alpha(op, y + 0.01, alphas=_OFF_GRID)  # another measurement
        ta.choose_alpha(op, y, alphas=_OFF_GRID, fraction=0.1)  # other options
        assert len(calls) > 4 * n_one - 1
        split = ValidationSplit(op, y, fraction=0.05, seed=0)
        n = len(calls)
        b1 = ta.choose_alpha(split.fit_physics(), split.fit_y(), alphas=_OFF_GRID)
        m = len(calls)
        b2 = ta.choose_alpha(split.fit_physics(), split.fit_y(), alphas=_OFF_GRID)  # new objects, same view
        assert m > n and len(calls) == m and torch.equal(b1, b2)
        # what does not change the search is not compared: sigma under the hold-out (A is not the
        # identity here), ||A||^2 left out or given as the estimate the search makes
        from dipkit.physics.linalg import opnorm_sq as estimate

        norm = estimate(op, torch.zeros_like(op.A_adjoint(y)))
        assert torch.equal(ta.choose_alpha(op, y, alphas=_OFF_GRID, sigma=0.05, opnorm_sq=norm), alone)
        assert len(calls) == m
    n = len(calls)
    ta.choose_alpha(op, y, alphas=_OFF_GRID)
    assert len(calls) == n + n_one  # outside the block nothing is kept
