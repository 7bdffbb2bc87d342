"""``--method auto``: successive halving, the choice by held-out misfit, --combine, the run directory,
the CLI and the bench row."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from dipkit.errors import DipkitError
from dipkit.run.auto import successive_halving
from dipkit.run.config import RunConfig
from dipkit.run.portfolio import AutoSelection, candidate_config, portfolio

from .conftest import TINY_NET


class _Fake:
    """A candidate whose misfit after k steps is ``a / (1 + k)`` (it improves with steps; smaller ``a`` is
    better at every budget)."""

    def __init__(self, name, a, stops_at=None):
        self.name, self.a, self.steps, self.stops_at, self.calls = name, a, 0, stops_at, []

    def advance(self, budget):
        self.calls.append(budget)
        target = budget if budget is not None else 10_000
        if self.stops_at is not None:
            target = min(target, self.stops_at)
        self.steps = max(self.steps, target)

    def score(self):
        return self.a / (1 + self.steps)

    def finished(self):
        return self.stops_at is not None and self.steps >= self.stops_at


def test_successive_halving_keeps_the_better_half_and_doubles_the_budget():
    cands = [_Fake(n, a) for n, a in [("e", 5.0), ("b", 2.0), ("d", 4.0), ("a", 1.0), ("c", 3.0)]]
    rungs = successive_halving(cands, advance=lambda c, b: c.advance(b), score=lambda c: c.score(),
                               finished=lambda c: c.finished(), min_steps=10, eta=2)
    assert [r["budget"] for r in rungs] == [10, 20, 40]
    assert [[c.name for c in r["kept"]] for r in rungs] == [["a", "b", "c"], ["a", "b"], ["a"]]
    assert [[c.name for c in r["dropped"]] for r in rungs] == [["d", "e"], ["c"], ["b"]]
    by = {c.name: c for c in cands}
    assert by["e"].steps == 10 and by["c"].steps == 20 and by["b"].steps == 40
    assert by["a"].calls == [10, 20, 40, None]  # the survivor runs to its own end
    # a candidate whose rule stopped it costs nothing more but keeps competing with its final score
    early = [_Fake("x", 0.5, stops_at=10), _Fake("y", 100.0), _Fake("z", 50.0)]
    rungs = successive_halving(early, advance=lambda c, b: c.advance(b), score=lambda c: c.score(),
                               finished=lambda c: c.finished(), min_steps=10, eta=2)
    assert [c.name for c in rungs[0]["kept"]] == ["x", "z"] and early[0].calls == [10]


def test_auto_config_is_checked_and_candidates_follow_the_run():
    cfg = RunConfig(method="auto", seed=3)
    cfg.net.options.update(TINY_NET)
    sel = cfg.validate()
    assert isinstance(sel, AutoSelection) and sel.labels is None and not sel.batchable
    dd = candidate_config(cfg, "dip-dd")
    assert dd.method == "dip" and dd.net.name == "deep-decoder" and dd.net.options == {} and dd.seed == 3
    tv = candidate_config(cfg, "tv")
    assert tv.early_stop.rule is None and candidate_config(cfg, "dip").early_stop.rule == "val"
    assert candidate_config(cfg, "dip").net.options == TINY_NET
    for bad in ({"auto.candidates": "dip,nosuch"}, {"auto.candidates": "dip,dip"}, {"lr": 1e-3},
                {"ensemble": 2}, {"early_stop.rule": "wmv"}, {"auto.eta": 1}, {"auto.refit": "always"},
                {"auto.combine": "stacked"}, {"auto.combine": 0}, {"validation.refit": True}):
        c = RunConfig(method="auto")
        for k, v in bad.items():
            c.set(k, v)
        with pytest.raises(DipkitError):
            c.validate()


def test_portfolios_per_task(ct_problem):
    assert portfolio(ct_problem)[0] == "tv" and "dip-tv-init" in portfolio(ct_problem)
    assert "aseqdip" not in portfolio(ct_problem)  # the lowest CT rows of defaults-128 (portfolio.PORTFOLIOS)
    # never past the first rung on CT in auto (portfolio.PORTFOLIOS): left out
    assert "dip-dd" not in portfolio(ct_problem)


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    """One tiny auto run with combine=2 (shared by the tests below)."""
    from dipkit.run import reconstruct
    from dipkit.tasks import get_task

    from .conftest import tiny_image

    problem = get_task("ct").simulate(tiny_image(32), views=16, noise_level=0.02, seed=0)
    cfg = RunConfig(method="auto", device="cpu", log_every=5, max_iterations=60)
    cfg.net.options.update(TINY_NET)
    cfg.set("auto.candidates", "tv,dip,dip-tv")
    cfg.set("auto.min_steps", 10)
    cfg.set("auto.combine", 2)
    cfg.set("auto.se", 0)  # the least misfit wins (the one-SE rule has tests of its own below)
    out = tmp_path_factory.mktemp("auto") / "run"
    res = reconstruct(problem, cfg, out, quiet=True)
    return problem, res, out


def test_auto_chooses_the_least_misfit_and_combine_averages(auto_run):
    problem, res, out = auto_run
    rows = list(csv.DictReader((out / "selection.csv").open()))
    assert {r["candidate"] for r in rows} == {"tv", "dip", "dip-tv"}
    misfits = {r["candidate"]: float(r["misfit"]) for r in rows}
    best = min(misfits, key=misfits.get)
    assert res["auto"]["chosen"] == best and rows[0]["candidate"] == best and rows[0]["rank"] == "1"
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    # each candidate is a complete run directory; combine=2 averages the two best
    two = sorted(misfits, key=misfits.get)[:2]
    recons = [np.load(out / "candidates" / c / "reconstruction.npy") for c in two]
    np.testing.assert_allclose(np.load(out / "reconstruction.npy"), (recons[0] + recons[1]) / 2, rtol=1e-6, atol=1e-6)
    assert res["auto"]["combine"]["candidates"] == two
    assert res["auto"]["refit"] == {}  # a combination's members are returned as their picks (no refit)
    # figures only for the network candidates in what is returned (the baseline's run draws its own)
    for c in ("dip", "dip-tv"):
        for fig in ("overview.png", "progress.png", "psnr_curve.png"):
            assert (out / "candidates" / c / fig).exists() == (c in res["auto"]["weights"]), (c, fig)
    assert (out / "candidates" / "tv" / "overview.png").exists()
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "auto" and m["auto"]["chosen"] == best and m["auto"]["total_steps"] > 0
    assert (out / "selection.md").read_text().count("\n|") >= 4
    # the wall time by stage adds up to the run's (the stages follow each other; nothing runs between them)
    t = m["auto"]["time_s"]
    assert list(t) == ["start", "baselines", "networks", "results", "combine", "pictures", "refit"]
    assert all(v >= 0 for v in t.values())
    assert sum(t.values()) == pytest.approx(m["auto"]["wall_time_s"], rel=0.05, abs=0.05)
    assert "Time by stage: start" in (out / "selection.md").read_text()


def test_auto_network_candidates_share_one_split_and_the_halving_is_recorded(auto_run):
    _, res, out = auto_run
    rungs = res["auto"]["rungs"]
    assert rungs and rungs[0]["budget"] == 10 and len(rungs[0]["kept"]) == 1 and len(rungs[0]["dropped"]) == 1
    splits = {json.dumps({k: v for k, v in json.loads((out / "candidates" / c / "metrics.json").read_text())
                          ["validation"].items() if k in ("fraction", "seed", "held_out")})
              for c in ("dip", "dip-tv")}
    assert len(splits) == 1


def test_auto_overwrite_replaces_the_candidates(auto_run, tmp_path):
    from dipkit.run.rundir import prepare_run_dir

    _, _, out = auto_run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    prepare_run_dir(copy, overwrite=True)
    assert not any(copy.iterdir())


def test_auto_time_limit_spent_before_a_network_candidate_ran(ct_problem):
    from dipkit.run import reconstruct

    cfg = RunConfig(method="auto", device="cpu", log_every=5, max_iterations=60, time_limit=1e-6)
    cfg.net.options.update(TINY_NET)
    cfg.set("auto.candidates", "tv,dip,dip-tv")
    res = reconstruct(ct_problem, cfg, None, quiet=True)  # the baseline ran (a few steps); no network candidate did
    rows = {r["candidate"]: r for r in res["auto"]["candidates"]}
    assert res["auto"]["chosen"] == "tv" and rows["dip"]["steps"] == 0 and rows["dip"]["misfit"] is None
    assert rows["dip-tv"]["status"].startswith("not run")


def test_auto_cli_and_bench_row(ct_problem_file, tmp_path):
    from dipkit.bench import run_bench
    from dipkit.cli import main

    rc = main(["reconstruct", str(ct_problem_file), "--method", "auto", "--set", "auto.candidates=tv,dip",
               "--set", "auto.min_steps=5", "--max-iterations", "20", "--set", "net.scales=3", "--set",
               "net.channels=8", "--combine", "1", "--out", str(tmp_path / "r"), "--quiet"])
    assert rc == 0 and (tmp_path / "r" / "selection.csv").is_file()
    bench = {"cases": [{"name": "ct", "task": "ct", "sample": "shepp-logan", "size": 24, "options": {"views": 12}}],
             "defaults": {"device": "cpu", "log_every": 5, "net": {"name": "unet", **TINY_NET}},
             "methods": [{"method": "tv"},
                         {"method": "auto", "params": {}, "iterations": 20}]}
    bench["methods"][1].pop("params")
    res = run_bench(bench, tmp_path / "b")
    assert not res["failed"]
    assert any(r["method"] == "auto" for r in res["results"])


def test_a_baseline_candidate_is_scored_on_the_fit_view_and_returns_its_solve_on_all_data(auto_run):
    from dipkit.run import reconstruct

    problem, res, out = auto_run
    m = json.loads((out / "candidates" / "tv" / "metrics.json").read_text())
    assert m["validation"] is None and m["auto_fit"]["validation"]["held_out"] > 0  # the fit view's score…
    rows = {r["candidate"]: r for r in csv.DictReader((out / "selection.csv").open())}
    assert float(rows["tv"]["misfit"]) == pytest.approx(m["auto_fit"]["misfit"], rel=1e-5)
    alone = reconstruct(problem, RunConfig(method="tv", device="cpu", log_every=5), None, quiet=True)
    np.testing.assert_allclose(np.load(out / "candidates" / "tv" / "reconstruction.npy"),  # … the solve on all data
                               alone.reconstruction[0].numpy(), rtol=1e-5, atol=1e-6)


class _Cand:
    """What :func:`one_se_choice` reads of a candidate."""

    def __init__(self, label, x, network):
        from types import SimpleNamespace

        self.label, self.method = label, SimpleNamespace(uses_network=network)
        self.result = SimpleNamespace(reconstruction=x)
        self.extra = {} if network else {"fit_estimate": x}


@pytest.mark.parametrize("split_kind", ["entries", "views"])
def test_entry_scores_average_to_the_misfit(ct_problem, split_kind):
    from dipkit.physics.split import ValidationSplit

    score = "raw" if split_kind == "entries" else "ramp"
    split = ValidationSplit(ct_problem.physics, ct_problem.y, fraction=0.2, split=split_kind, score=score)
    x = ct_problem.x_true * 0.9
    e = split.entry_scores(x)
    assert e.ndim == 1 and e.numel() >= split.n_held_out
    assert float(e.mean()) == pytest.approx(float(split.misfit(x)[0]), rel=1e-5)


def test_one_se_rule_keeps_the_baseline_unless_a_network_is_clearly_better(ct_problem):
    import torch

    from dipkit.physics.split import ValidationSplit
    from dipkit.run.auto import one_se_choice

    split = ValidationSplit(ct_problem.physics, ct_problem.y, fraction=0.2)
    x = ct_problem.x_true
    base = _Cand("tv", x * 0.7, network=False)
    # far better than the baseline on every held-out entry: the network is chosen
    clear = _Cand("dip", x.clone(), network=True)
    chosen, rec = one_se_choice([clear, base], split, 1.0)
    assert chosen is clear and rec["z"] < -1 and rec["preferred"] == "dip"
    # a hair better on average (noise-level differences): within one SE, the baseline is kept
    g = torch.Generator().manual_seed(0)
    close = _Cand("dip-tv", x * 0.7 + 1e-3 * torch.randn(x.shape, generator=g), network=True)
    d = split.entry_scores(close.result.reconstruction) - split.entry_scores(base.result.reconstruction)
    if float(d.mean()) > 0:  # make it the least misfit: flip the perturbation
        close.result.reconstruction = 2 * base.result.reconstruction - close.result.reconstruction
        d = split.entry_scores(close.result.reconstruction) - split.entry_scores(base.result.reconstruction)
    assert float(d.mean()) < 0
    z = float(d.mean()) / (float(d.std()) / d.numel() ** 0.5)
    chosen, rec = one_se_choice([close, base], split, abs(z) * 1.01)
    assert chosen is base and rec["best"] == "dip-tv" and rec["z"] == pytest.approx(z, rel=1e-6)
    chosen, _ = one_se_choice([close, base], split, abs(z) * 0.99)
    assert chosen is close
    # se = 0: the least misfit; a baseline that is best needs no rule
    assert one_se_choice([close, base], split, 0.0) == (close, None)
    assert one_se_choice([base, close], split, 1.0) == (base, None)


def test_stack_weights_are_the_least_squares_point_of_the_simplex():
    """Against brute force: the optimum of min ‖Σ w_c r_c‖² over the simplex is, on its support S, the
    equality-constrained solution w_S ∝ G_S⁻¹1 (feasible, least objective over all supports)."""
    import itertools

    import torch

    from dipkit.run.auto import stack_weights

    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 4, 5, 6):
        R = torch.randn(1, 300, generator=g) + 0.5 * torch.randn(n, 300, generator=g)
        w = stack_weights(R)
        G = R.double() @ R.double().T
        best = None
        for k in range(1, n + 1):
            for S in map(list, itertools.combinations(range(n), k)):
                ws = torch.linalg.solve(G[S][:, S], torch.ones(k, dtype=torch.float64))
                ws = ws / ws.sum()
                if bool((ws >= 0).all()):
                    full = torch.zeros(n, dtype=torch.float64)
                    full[S] = ws
                    if best is None or float(full @ G @ full) < float(best @ G @ best):
                        best = full
        assert float(w.sum()) == pytest.approx(1.0) and bool((w >= 0).all())
        torch.testing.assert_close(w, best, atol=1e-6, rtol=0)
    assert stack_weights(torch.randn(1, 10)).tolist() == [1.0]


def test_stacking_combines_candidates_that_err_in_opposite_directions(ct_problem):
    import torch

    from dipkit.physics.split import ValidationSplit
    from dipkit.run.auto import _stack

    split = ValidationSplit(ct_problem.physics, ct_problem.y, fraction=0.2)
    x = ct_problem.x_true
    shifted = torch.roll(x, shifts=(6, 6), dims=(-2, -1))  # a misplaced image: no help to the others
    low, high, far = _Cand("tv", x * 0.7, network=False), _Cand("dip", x * 1.3, network=True), \
        _Cand("dip-dd", shifted, network=True)
    fit_x = {"tv": x * 0.7, "dip": x * 1.3, "dip-dd": shifted}
    single = {k: float(split.misfit(v)[0]) for k, v in fit_x.items()}
    weights, rec = _stack([high, low, far], high, fit_x, split, 1.0)
    # the mean of 0.7x and 1.3x is x: about half each, far below either misfit, and clearly so (z ≪ −1)
    assert rec["used"] and weights.get("dip-dd", 0.0) < 0.1 and abs(weights["dip"] - weights["tv"]) < 0.1
    assert sum(weights.values()) == pytest.approx(1.0)
    assert rec["misfit"] < 0.5 * min(single.values()) and rec["z"] < -1 and rec["versus"] == "dip"
    # a combination that is only the chosen candidate (the others add nothing) is not "used"
    weights, rec = _stack([low, far], low, {"tv": x * 0.7, "dip-dd": shifted * 0.1}, split, 1.0)
    assert weights == {"tv": 1.0} and not rec["used"]


def test_auto_stack_returns_the_weighted_candidates_with_a_misfit_no_worse_than_any(ct_problem, tmp_path):
    from dipkit.run import reconstruct

    cfg = RunConfig(method="auto", device="cpu", log_every=5, max_iterations=60)
    cfg.net.options.update(TINY_NET)
    cfg.set("auto.candidates", "tv,dip,dip-tv")
    cfg.set("auto.min_steps", 10)
    cfg.set("auto.se", 0)
    res = reconstruct(ct_problem, cfg, tmp_path / "run", quiet=True)
    rec = res["auto"]["combine"]
    assert rec["kind"] == "stack" and sum(rec["weights"].values()) == pytest.approx(1.0)
    misfits = {r["candidate"]: r["misfit"] for r in res["auto"]["candidates"]}
    assert rec["misfit"] <= min(misfits.values()) * (1 + 1e-3)
    weights = res["auto"]["weights"]
    assert weights == (rec["weights"] if rec["used"] else {res["auto"]["chosen"]: 1.0})
    if not rec["used"]:  # the chosen candidate alone (refit when it is a network: tested below)
        return
    assert res["auto"]["refit"] == {}  # a stack's members are returned as their picks
    expected = sum(w * np.load(tmp_path / "run" / "candidates" / c / "reconstruction.npy") for c, w in weights.items())
    np.testing.assert_allclose(np.load(tmp_path / "run" / "reconstruction.npy"), expected, rtol=1e-5, atol=1e-6)
    assert "Stacking" in (tmp_path / "run" / "selection.md").read_text()


def test_auto_refits_the_chosen_network_on_all_data_for_its_pick(ct_problem, tmp_path):
    """Select, then refit: the returned network candidate is rerun on all the data for its pick's
    steps — the same as a run of that candidate without a split for that many steps — and (default
    ``auto.refit=mean``) the mean of its pick and the refit is returned."""
    from dipkit.run import reconstruct

    cfg = RunConfig(method="auto", device="cpu", log_every=5, max_iterations=40)
    cfg.net.options.update(TINY_NET)
    cfg.set("auto.candidates", "dip")
    cfg.set("schedule.kind", "constant")  # no rate reductions (a plateau's are replayed: test_validation)
    cfg.set("data_consistency", "off")  # the returned image as combined (its step to the data: test_consistency)
    res = reconstruct(ct_problem, cfg, tmp_path / "run", quiet=True)
    k = res["auto"]["candidates"][0]["pick_iteration"]
    refit = res["auto"]["refit"]["dip"]
    assert refit["iterations"] == k and refit["mode"] == "mean" and res["validation"]["refit"]["iterations"] == k
    alone = candidate_config(cfg, "dip")
    alone.iterations, alone.early_stop.rule = k, None
    ref = reconstruct(ct_problem, alone, quiet=True)
    cdir = tmp_path / "run" / "candidates" / "dip"
    refit_x = np.load(cdir / "refit.npy")
    np.testing.assert_allclose(refit_x.reshape(-1), ref.reconstruction.numpy().reshape(-1), rtol=1e-5, atol=1e-6)
    assert refit["psnr"] == pytest.approx(ref["psnr"], abs=1e-4)
    pick = np.load(cdir / "reconstruction.npy")  # the candidate's own directory keeps its pick on the fit view
    assert not np.allclose(pick.reshape(-1), refit_x.reshape(-1))
    np.testing.assert_allclose(res.reconstruction.numpy().reshape(-1), (pick.reshape(-1) + refit_x.reshape(-1)) / 2,
                               rtol=1e-5, atol=1e-6)
    assert "Refit on all the data" in (tmp_path / "run" / "selection.md").read_text()
    from dipkit.run.rundir import prepare_run_dir

    prepare_run_dir(tmp_path / "run", overwrite=True)  # --overwrite knows the refit's file
    assert not any((tmp_path / "run").iterdir())


def test_auto_refit_rechooses_what_the_run_chose_on_the_fit_view(ct_problem, tmp_path):
    """dip-tv's alpha="auto" is chosen on the data the run fits: the refit on all the data chooses it
    again on all the data, exactly as the candidate run alone with validation.refit does (the run's
    result records the fit view's weight as a number; the refit must not inherit it)."""
    from dipkit.run import reconstruct

    cfg = RunConfig(method="auto", device="cpu", log_every=5, max_iterations=40)
    cfg.net.options.update(TINY_NET)
    cfg.set("auto.candidates", "dip-tv")
    cfg.set("auto.refit", "replace")
    res = reconstruct(ct_problem, cfg, tmp_path / "auto", quiet=True)
    alone = candidate_config(cfg, "dip-tv")
    alone.validation.refit = True
    ref = reconstruct(ct_problem, alone, quiet=True)
    assert res["auto"]["refit"]["dip-tv"]["iterations"] == ref["validation"]["refit"]["iterations"]
    np.testing.assert_array_equal(res.reconstruction.numpy().reshape(-1), ref.reconstruction.numpy().reshape(-1))


def test_stacking_leaves_out_a_diverged_candidate(ct_problem):
    import torch

    from dipkit.physics.split import ValidationSplit
    from dipkit.run.auto import _stack

    split = ValidationSplit(ct_problem.physics, ct_problem.y, fraction=0.2)
    x = ct_problem.x_true
    low, high, bad = _Cand("tv", x * 0.7, network=False), _Cand("dip", x * 1.3, network=True), \
        _Cand("dip-dd", torch.full_like(x, float("nan")), network=True)
    weights, rec = _stack([high, low, bad], high, {"tv": x * 0.7, "dip": x * 1.3, "dip-dd": bad.result.reconstruction},
                          split, 1.0)
    assert rec["used"] and set(weights) == {"dip", "tv"}


def test_denoising_and_mri_portfolios():
    from dipkit.tasks import get_task

    from .conftest import tiny_image

    den = get_task("denoise").simulate(tiny_image(16), seed=0)
    assert portfolio(den) == ["tv", "dip", "dip-tv-init", "deepred", "dip-denoiser-admm"]
    blur = get_task("deblur").simulate(tiny_image(16), seed=0)
    assert "dip-dd" in portfolio(blur) and "dip-dd" not in portfolio(den)
    # MRI: both network candidates start from the TV image
    mri = get_task("mri").simulate(tiny_image(16), seed=0)
    assert portfolio(mri) == ["tv", "dip-tv-init", "dip-admm-v2-init"]
    cfg = candidate_config(RunConfig(method="auto"), "dip-admm-v2-init")
    assert cfg.method == "dip-admm-v2" and cfg.init.kind == "tv" and cfg.early_stop.rule == "val"


def test_auto_searches_tvs_weight_once_per_view(ct_problem, monkeypatch):
    """The ``tv`` candidate, ``dip-tv-init``'s TV start and ``dip-tv``'s weight search the same fit
    view: one search there, one on all the data (TV's returned solve, and the refit's start and weight
    when ``dip-tv-init`` is returned) — not one per use (``tv_alpha.shared_choices``)."""
    import dipkit.core.tv_alpha as ta
    from dipkit.run import reconstruct

    searches = []
    real = ta._Path.__init__
    monkeypatch.setattr(ta._Path, "__init__", lambda self, *a, **k: (searches.append(1), real(self, *a, **k))[1])
    cfg = RunConfig(method="auto", device="cpu", log_every=5, max_iterations=40)
    cfg.net.options.update(TINY_NET)
    for key, value in (("auto.candidates", "tv,dip-tv-init"), ("auto.min_steps", 10), ("init.steps", 5),
                       ("auto.se", 0), ("auto.combine", 1)):
        cfg.set(key, value)
    res = reconstruct(ct_problem, cfg, None, quiet=True)
    assert len(searches) == 2, res["auto"]["chosen"]
