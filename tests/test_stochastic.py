"""Stochastic DIP (``data.subset``): the data term over a random subset of measurement blocks."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from dipkit.run.config import RunConfig
from dipkit.errors import DipkitError
from dipkit.methods import METHODS
from dipkit.methods.base import data_fidelity
from dipkit.physics.split import ValidationSplit
from dipkit.physics.subsets import SubsetDataTerm, make_subset_term
from dipkit.run import reconstruct

from .conftest import TINY_NET, tiny_image

CASES = [("ct", 16, {"views": 4}, 4, "columns"), ("ct-fan", 16, {"views": 4}, 4, "columns"),
         ("mri", 16, {"acceleration": 4}, None, "columns"),
         ("mri-multicoil", 16, {"coils": 2, "acceleration": 4}, None, "columns"),
         ("inpaint", 8, {"missing": 0.5}, 8, "rows"), ("denoise", 8, {}, 8, "rows"),
         ("deblur", 8, {"kernel_std": 0.8, "kernel_size": 5}, 8, "rows")]


def _sim(task, n, **kw):
    from dipkit.tasks import get_task

    return get_task(task).simulate(tiny_image(n), seed=0, **kw)


def _mean_over_all_subsets(term, x):
    """The term and its gradient in x averaged over every k-subset of the blocks (exhaustive)."""
    subsets = list(itertools.combinations(range(term.n_blocks), term.k))
    total, grad = torch.zeros(x.shape[0], dtype=torch.float64), torch.zeros_like(x, dtype=torch.float64)
    for s in subsets:
        xx = x.clone().requires_grad_(True)
        val = term.term(xx, torch.tensor([s] * x.shape[0]))
        (g,) = torch.autograd.grad(val.sum(), xx)
        total += val.detach().double()
        grad += g.double()
    return total / len(subsets), grad / len(subsets)


def _full(physics, y, x):
    xx = x.clone().requires_grad_(True)
    val = data_fidelity(physics, xx, y)
    (g,) = torch.autograd.grad(val.sum(), xx)
    return val.detach().double(), g.double()


@pytest.mark.parametrize("task,n,kw,blocks,kind", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("split", [False, True], ids=["all-data", "val-split"])
def test_mean_over_all_subsets_is_the_full_term(task, n, kw, blocks, kind, split):
    p = _sim(task, n, **kw)
    physics, y = p.physics, p.y
    if split:  # the fit view of a validation split: unbiased for the fit term
        s = ValidationSplit(physics, y, fraction=0.2, seed=1)
        physics, y = s.fit_physics(), s.fit_y()
    term = SubsetDataTerm(physics, y, 0.5)
    assert term.describe()["block"] == kind
    if blocks is not None:
        assert term.n_blocks == blocks
    else:  # MRI: the sampled phase-encode columns only
        assert term.n_blocks == len(p.physics.spec["lines"]) < n
    assert term.k == round(term.n_blocks / 2) and term.scale == term.n_blocks / term.k
    x = torch.rand(1, *p.img_shape, generator=torch.Generator().manual_seed(0))
    mean, gmean = _mean_over_all_subsets(term, x)
    full, gfull = _full(physics, y, x)
    torch.testing.assert_close(mean, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gmean, gfull, rtol=1e-4, atol=1e-5 * float(gfull.abs().max()))
    # and one subset is not the full term (the estimate is stochastic)
    one = term.term(x, torch.tensor([list(range(term.k))])).double()
    assert not torch.allclose(one, full)


def test_held_out_entries_stay_out_of_every_subset_term():
    p = _sim("ct", 16, views=6)
    s = ValidationSplit(p.physics, p.y, fraction=0.2, seed=2)
    term = SubsetDataTerm(s.fit_physics(), s.fit_y(), 0.5)
    x = torch.rand(1, *p.img_shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
    # a held-out measurement value changes nothing: the term sees M A x and M y only
    y2 = p.y.clone()
    y2[..., s.held_out] += 100.0
    s2 = ValidationSplit(p.physics, y2, fraction=0.2, seed=2)
    assert torch.equal(s2.held_out, s.held_out)
    term2 = SubsetDataTerm(s2.fit_physics(), s2.fit_y(), 0.5)
    for chosen in itertools.combinations(range(6), 3):
        c = torch.tensor([chosen])
        a = term.term(x, c)
        assert torch.equal(a, term2.term(x, c))
        # and the held-out residual entries carry no weight: the term is the kept entries' sum
        r = (p.physics.A(x) - p.y).pow(2) * s.keep
        manual = 2.0 * 0.5 * r[..., list(chosen)].sum()
        torch.testing.assert_close(a.sum(), manual)


def test_run_with_val_split_never_sees_held_out_values(ct_problem, tiny_cfg):
    cfg = tiny_cfg("dip", iterations=12, lr=1e-2)
    cfg.early_stop.rule = "val:record"
    cfg.data.subset = 0.5
    a = reconstruct(ct_problem, cfg, quiet=True)
    from dipkit.run.runner import make_split

    held = make_split(ct_problem, cfg).held_out
    other = ct_problem.__class__(physics=ct_problem.physics, y=ct_problem.y.clone(), spec=ct_problem.spec,
                                 x_true=ct_problem.x_true, meta=dict(ct_problem.meta))
    other.y[..., held] += 50.0
    b = reconstruct(other, cfg, quiet=True)
    assert torch.equal(a.estimates["final"], b.estimates["final"])       # the fit is the same
    assert a.history["loss"] == b.history["loss"]
    assert a.history["val"] != b.history["val"]                          # the observer saw the change


def test_subset_one_is_the_full_gradient_run_bit_for_bit(ct_problem, tiny_cfg):
    assert make_subset_term(ct_problem.physics, ct_problem.y, 1.0) is None
    ref = reconstruct(ct_problem, tiny_cfg("dip", iterations=10, lr=1e-2), quiet=True)
    cfg = tiny_cfg("dip", iterations=10, lr=1e-2)
    cfg.set("data.subset", 1)
    one = reconstruct(ct_problem, cfg, quiet=True)
    assert torch.equal(ref.reconstruction, one.reconstruction)
    assert ref.history["loss"] == one.history["loss"]


def test_same_seed_same_run_and_the_subset_changes_the_run(ct_problem, tiny_cfg):
    def run(seed, subset):
        cfg = tiny_cfg("dip", iterations=10, lr=1e-2)
        cfg.seed = seed
        cfg.set("data.subset", subset)
        return reconstruct(ct_problem, cfg, quiet=True)

    a, b = run(0, 0.25), run(0, 0.25)
    assert torch.equal(a.reconstruction, b.reconstruction) and a.history["loss"] == b.history["loss"]
    assert a.config["data"]["subset"] == 0.25
    full, other_seed = run(0, 1.0), run(1, 0.25)
    assert not torch.equal(a.reconstruction, full.reconstruction)
    assert not torch.equal(a.reconstruction, other_seed.reconstruction)


def test_draw_is_uniform_k_subsets_from_the_run_generator():
    from dipkit.engine import State

    p = _sim("ct", 16, views=8)
    term = SubsetDataTerm(p.physics, p.y, 0.25)
    state = State(physics=p.physics, y=p.y.repeat(3, 1, 1, 1), max_steps=1,
                  generator=torch.Generator().manual_seed(0))
    counts = torch.zeros(8)
    for _ in range(400):
        c = term.draw(state)
        assert c.shape == (3, 2) and all(len(set(row.tolist())) == 2 for row in c)
        counts += torch.bincount(c.flatten(), minlength=8)
    assert counts.sum() == 2400 and counts.min() > 200 and counts.max() < 400  # ≈ 300 each
    again = State(physics=p.physics, y=p.y, max_steps=1, generator=torch.Generator().manual_seed(0))
    first = State(physics=p.physics, y=p.y, max_steps=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(term.draw(again), term.draw(first))


@pytest.mark.parametrize("mode,tol", [("loop", {"rtol": 1e-5, "atol": 1e-6}),
                                      # vectorised convolutions sum in another order: rounding
                                      ("stacked", {"rtol": 1e-4, "atol": 2e-5})])
def test_ensemble_members_draw_as_their_own_runs(ct_problem, tiny_cfg, mode, tol):
    cfg = tiny_cfg("dip", iterations=8, lr=1e-2)
    cfg.input.kind, cfg.ensemble, cfg.seed, cfg.ensemble_mode = "noise", 2, 3, mode
    cfg.data.subset = 0.5
    ens = reconstruct(ct_problem, cfg, quiet=True)
    assert ens["ensemble"]["mode"] == mode
    for b in range(2):
        one = tiny_cfg("dip", iterations=8, lr=1e-2)
        one.input.kind, one.seed, one.data.subset = "noise", 3 + b, 0.5
        single = reconstruct(ct_problem, one, quiet=True)
        torch.testing.assert_close(ens.members[b:b + 1], single.reconstruction, **tol)


@pytest.mark.parametrize("name", sorted(n for n in METHODS if METHODS[n].uses_network and METHODS[n].stochastic_data))
def test_every_network_method_runs_with_a_subset(ct_problem, tiny_cfg, name, request):
    cfg = tiny_cfg(name, iterations=4)
    if getattr(METHODS[name], "needs_pretrained", False):  # subspace-dip: tiny pre-trained weights
        cfg.net.options["weights"] = str(request.getfixturevalue("pretrained"))
        cfg.params["k"] = 3  # the tiny trajectory has 6 snapshots
    cfg.data.subset = 0.5
    res = reconstruct(ct_problem, cfg, quiet=True)
    assert torch.isfinite(res.reconstruction).all()


@pytest.mark.parametrize("value", [0, -0.5, 1.5, "abc", float("nan"), float("inf")])
def test_config_rejects_bad_subset(value):
    cfg = RunConfig()
    with pytest.raises(DipkitError) as err:
        cfg.set("data.subset", value)
        cfg.validate()
    assert "data.subset" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["tv", "fbp", "dip-admm-v1"])
def test_config_rejects_subset_for_methods_without_a_data_term_in_their_steps(name):
    cfg = RunConfig(method=name)
    cfg.set("data.subset", 0.5)
    with pytest.raises(DipkitError, match="data.subset < 1 needs a method"):
        cfg.validate()
    cfg = RunConfig(method="dip")
    cfg.set("data.subset", 0.5)
    cfg.validate()


def test_cli_run_with_subset(ct_problem_file, tmp_path, capsys):
    from dipkit.cli import main

    run = tmp_path / "run"
    net = [f"--set=net.{k}={v}" for k, v in TINY_NET.items()]
    assert main(["reconstruct", str(ct_problem_file), "--method", "dip", "--iterations", "6", "--device", "cpu",
                 "--set", "data.subset=0.25", *net, "--out", str(run), "--quiet"]) == 0
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["subset"] == 0.25
    assert json.loads((run / "metrics.json").read_text())["iterations"] == 6
    capsys.readouterr()
    assert main(["reconstruct", str(ct_problem_file), "--set", "data.subset=0", "--out", str(tmp_path / "bad"),
                 "--quiet", "--iterations", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.subset" in err[0]
