"""Seeds as one batched engine run (dipkit.run.batched, bench ``batch_seeds``) = the runs one by one."""

from __future__ import annotations

import json

import pytest
import torch

from dipkit.errors import DipkitError

from .conftest import TINY_NET


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread (small problems; restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ct16():
    from dipkit.tasks import get_task

    from .conftest import tiny_image

    return get_task("ct").simulate(tiny_image(16), views=12, noise_level=0.02, seed=0)


def _cfg(method="dip", iterations=40, **params):
    from dipkit.run.config import RunConfig

    cfg = RunConfig(method=method, iterations=iterations, device="cpu", log_every=5)
    cfg.net.options.update(TINY_NET)
    cfg.early_stop.rule = "val,wmv:record"
    cfg.early_stop.window, cfg.early_stop.patience = 5, 5
    cfg.params.update(params)
    return cfg


def test_batched_seeds_equal_one_by_one(ct16, tmp_path):
    """Same seeds → same reconstructions, stop steps, selections and histories (members that stop
    early are frozen at their own stop step)."""
    from dipkit.run.batched import reconstruct_seeds
    from dipkit.run.config import RunConfig
    from dipkit.run import reconstruct

    cfg = _cfg("aseqdip", iterations=50)
    seeds = [0, 3]
    outs = [tmp_path / f"b{s}" for s in seeds]
    batched = reconstruct_seeds(ct16, cfg, seeds, outs)
    stops = set()
    for s, rb, out in zip(seeds, batched, outs):
        c = RunConfig.from_dict(cfg.to_dict())
        c.seed = s
        r1 = reconstruct(ct16, c, tmp_path / f"s{s}", quiet=True)
        # fused Adam (dipkit.core.optim) rounds the last elements of a tensor (its scalar tail) differently,
        # and the stacked members' tensors end elsewhere than the single run's: ~1e-7 per update, which
        # 50 aSeqDIP steps grow to ~1e-4 (it was bit-for-bit with the per-tensor Adam)
        assert torch.allclose(rb.reconstruction, r1.reconstruction, atol=5e-4)
        assert rb["iterations"] == r1["iterations"]
        stops.add(r1["iterations"])
        assert rb["early_stop"]["iteration"] == r1["early_stop"]["iteration"]
        assert rb["selections"]["wmv"]["iteration"] == r1["selections"]["wmv"]["iteration"]
        assert rb["stop_reason"] == r1["stop_reason"]
        assert rb.history["step"] == r1.history["step"]
        assert rb["psnr"] == pytest.approx(r1["psnr"], abs=1e-2)
        m = json.loads((out / "metrics.json").read_text())
        assert m["batched"]["seeds"] == seeds and m["request"]["seed"] == s
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / f"s{s}").iterdir())
    assert len(stops) == 2  # the val rule stops the seeds at different steps


def test_baselines_are_not_batched(ct16):
    from dipkit.run.batched import reconstruct_seeds

    with pytest.raises(DipkitError, match="cannot batch"):
        reconstruct_seeds(ct16, _cfg("tv", iterations=3), [0, 1])


def test_bench_batch_seeds_matches_one_by_one(tmp_path):
    from dipkit.bench import run_bench
    from dipkit.bench.config import parse_bench_config
    from dipkit.bench.grid import group_runs, plan_runs

    from .test_bench import tiny_bench

    cfg = tiny_bench(seeds=[0, 1, 2])
    plan = plan_runs(parse_bench_config(cfg), tmp_path)
    assert [[(s.label, s.seed) for s in g] for g in group_runs(plan)] == [
        [("dip", 0), ("dip", 1), ("dip", 2)], [("tv", 0)], [("tv", 1)], [("tv", 2)]]
    plan2 = plan_runs(parse_bench_config(dict(cfg, batch_seeds=2)), tmp_path)
    assert [len(g) for g in group_runs(plan2)] == [2, 1, 1, 1, 1]
    with pytest.raises(DipkitError, match="batch_seeds"):
        parse_bench_config(dict(cfg, batch_seeds=0))
    cfg = dict(cfg, seeds=[0, 1], methods=cfg["methods"][:1])  # dip only: tv runs one by one anyway
    a = run_bench(cfg, tmp_path / "batched")
    b = run_bench(dict(cfg, batch_seeds=False), tmp_path / "single")
    assert not a["failed"] and not b["failed"]
    key = lambda r: (r["method"], r["seed"])  # noqa: E731
    for ra, rb in zip(sorted(a["rows"], key=key), sorted(b["rows"], key=key)):
        assert ra["psnr"] == pytest.approx(rb["psnr"], abs=1e-4)
    m = json.loads((a["out"] / "cases/ct16/shepp-logan_sim0/dip/seed1/metrics.json").read_text())
    assert m["batched"]["seeds"] == [0, 1]
