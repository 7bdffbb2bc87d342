"""``dipkit bench``: config schema, grid, resume, failures, reports, executors (tiny: 16², ≤ 8 steps)."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

from dipkit.errors import DipkitError

TINY = {"device": "cpu", "log_every": 2, "net": {"name": "unet", "scales": 3, "channels": 8}}


def tiny_bench(**extra) -> dict:
    cfg = {
        "description": "tiny test grid",
        "seeds": [0, 1],
        "defaults": dict(TINY),
        "cases": [{"name": "ct16", "task": "ct", "sample": "shepp-logan", "size": 16,
                   "options": {"views": 8, "noise_level": 0.02}}],
        "methods": [
            {"method": "dip", "iterations": 6, "params": {"lr": 1e-2},
             "early_stop": {"rule": "wmv:record", "window": 2, "patience": 2}},
            {"method": "tv", "iterations": 6},
        ],
    }
    cfg.update(extra)
    return cfg


def write_cfg(tmp_path: Path, cfg: dict, name: str = "bench.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def run_cli(argv, monkeypatch):
    from dipkit import cli

    return cli.main(argv)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny grid (2 methods × 2 seeds × 1 case), run once through the CLI, shared by tests."""
    from dipkit import cli

    tmp = tmp_path_factory.mktemp("bench")
    cfg = write_cfg(tmp, tiny_bench())
    out = tmp / "out"
    rc = cli.main(["bench", str(cfg), "--out", str(out), "--quiet"])
    assert rc == 0
    return cfg, out


# ---------------------------------------------------------------------- outputs
def test_tiny_grid_writes_every_file(tiny_run):
    _, out = tiny_run
    for name in ("bench.yaml", "results.csv", "results.md", "runs.csv", "psnr_curves.png", "recon_ct16.png",
                 "report.html"):
        assert (out / name).is_file(), name
    inst = out / "cases" / "ct16" / "shepp-logan_sim0"
    assert (inst / "problem.npz").is_file() and (inst / "case.json").is_file() and (inst / "naive.npy").is_file()
    for label in ("dip", "tv"):
        for seed in (0, 1):
            d = inst / label / f"seed{seed}"
            for f in ("metrics.json", "config.yaml", "history.csv", "estimates.npz", "reconstruction.npy"):
                assert (d / f).is_file(), d / f
            assert yaml.safe_load((d / "config.yaml").read_text())["seed"] == seed
    runs = read_csv(out / "runs.csv")
    assert [(r["method"], r["seed"], r["status"]) for r in runs] == [
        ("dip", "0", "ok"), ("dip", "1", "ok"), ("tv", "0", "ok"), ("tv", "1", "ok")]
    res = read_csv(out / "results.csv")
    assert [(r["case"], r["method"], r["runs"], r["failed"]) for r in res] == [("ct16", "dip", "2", "0"),
                                                                               ("ct16", "tv", "2", "0")]
    for col in ("peak_psnr_mean", "peak_iter_mean", "final_psnr_mean", "ssim_mean", "wall_time_s_mean",
                "iterations_per_s_mean"):
        assert res[0][col] != "" and res[1][col] != "", col
    assert res[0]["es_iter_mean"] != "" and res[1]["es_psnr_mean"] == ""  # tv: no stopping rule
    md = (out / "results.md").read_text()
    assert "peak PSNR" in md and "ES PSNR" in md and "final PSNR" in md and "SSIM" in md and "it/s" in md
    assert md.count("| ct16 |") == 2 and "±" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<table>" in page and "tiny test grid" in page


def test_mean_std_match_the_runs(tiny_run):
    _, out = tiny_run
    runs = read_csv(out / "runs.csv")
    res = {r["method"]: r for r in read_csv(out / "results.csv")}
    for label in ("dip", "tv"):
        for col in ("peak_psnr", "final_psnr", "ssim", "wall_time_s"):
            vals = []
            for r in runs:
                if r["method"] == label:
                    m = json.loads((Path(r["run_dir"]) / "metrics.json").read_text())
                    vals.append({"peak_psnr": m["peak"]["psnr"], "final_psnr": m["final"]["psnr"],
                                 "ssim": m["ssim"], "wall_time_s": m["wall_time_s"]}[col])
            assert float(res[label][f"{col}_mean"]) == pytest.approx(statistics.fmean(vals), rel=1e-5, abs=1e-6)
            assert float(res[label][f"{col}_std"]) == pytest.approx(statistics.stdev(vals), rel=1e-5, abs=1e-6)


def test_mean_std_helper():
    from dipkit.bench.report import METRICS, aggregate, mean_std

    assert mean_std([1.0, 2.0, None, 6.0]) == (3.0, pytest.approx(statistics.stdev([1, 2, 6])), 3)
    assert mean_std([5.0]) == (5.0, None, 1)
    assert mean_std([None]) == (None, None, 0)
    rows = [{"case": "c", "task": "ct", "instance": f"i{i}", "method": "m", "method_name": "dip", "seed": s,
             "status": "ok", "error": None, **{k: None for k, *_ in METRICS}}
            for i in range(2) for s in range(2)]
    for r, v in zip(rows, [20.0, 22.0, 24.0, 30.0]):
        r["final_psnr"] = v
    rows.append(dict(rows[0], seed=9, status="failed", final_psnr=None, error="boom"))
    (agg,) = aggregate(rows)
    assert agg["runs"] == 4 and agg["failed"] == 1 and agg["instances"] == 2 and agg["error"] == "boom"
    assert agg["final_psnr_mean"] == pytest.approx(24.0)
    assert agg["final_psnr_std"] == pytest.approx(statistics.stdev([20, 22, 24, 30]))


# ---------------------------------------------------------------------- resume
def test_resume_reruns_only_the_missing_run(tmp_path):
    from dipkit.bench import run_bench

    cfg = tiny_bench(methods=[{"method": "tv", "iterations": 4}, {"method": "fbp"}])
    path = write_cfg(tmp_path, cfg)
    out = tmp_path / "out"
    first = run_bench(path, out)
    assert len(first["ran"]) == 4 and not first["skipped"]
    inst = out / "cases" / "ct16" / "shepp-logan_sim0"
    problem_mtime = (inst / "problem.npz").stat().st_mtime_ns
    mtimes = {p: p.stat().st_mtime_ns for p in inst.glob("*/seed*/metrics.json")}
    victim = inst / "tv" / "seed1" / "metrics.json"
    victim.unlink()
    again = run_bench(path, out, resume=True)
    assert again["ran"] == [("ct16", "shepp-logan_sim0", "tv", 1)]
    assert len(again["skipped"]) == 3
    assert victim.is_file()
    assert (inst / "problem.npz").stat().st_mtime_ns == problem_mtime
    for p, t in mtimes.items():
        if p != victim:
            assert p.stat().st_mtime_ns == t, p
    assert len(read_csv(out / "runs.csv")) == 4
    # a changed case setting is simulated again and all its runs are redone
    cfg["cases"][0]["options"]["views"] = 9
    write_cfg(tmp_path, cfg)
    third = run_bench(path, out, resume=True)
    assert len(third["ran"]) == 4 and not third["skipped"]


# ---------------------------------------------------------------------- failures
def test_failed_run_is_recorded_and_the_grid_completes(tmp_path, monkeypatch):
    from dipkit.bench import run_bench
    from dipkit.methods import METHODS
    from dipkit.methods.dip import DIP

    class Exploding(DIP):
        """A test method that raises at run time when ``explode`` is set."""

        name = "exploding-test"

        def __init__(self, *, lr: float = 1e-2, explode: bool = False):
            super().__init__(lr=lr)
            self.explode = explode

        def setup(self, state, resuming=False):
            if self.explode:
                raise RuntimeError("boom at run time")

    monkeypatch.setitem(METHODS, "exploding-test", Exploding)
    cfg = tiny_bench(methods=[{"method": "exploding-test", "label": "bad", "iterations": 4,
                               "params": {"explode": True}, "seeds": [0]},
                              {"method": "exploding-test", "label": "good", "iterations": 4}])
    out = tmp_path / "out"
    res = run_bench(cfg, out)
    assert res["failed"] == [("ct16", "shepp-logan_sim0", "bad", 0)]
    bad = out / "cases" / "ct16" / "shepp-logan_sim0" / "bad" / "seed0"
    assert not (bad / "metrics.json").exists()
    assert "boom at run time" in (bad / "error.txt").read_text()
    runs = {(r["method"], r["seed"]): r for r in read_csv(out / "runs.csv")}
    assert runs[("bad", "0")]["status"] == "failed" and "boom at run time" in runs[("bad", "0")]["error"]
    assert runs[("good", "0")]["status"] == "ok" and runs[("good", "1")]["status"] == "ok"
    results = {r["method"]: r for r in read_csv(out / "results.csv")}
    assert results["bad"]["failed"] == "1" and results["bad"]["runs"] == "0"
    assert "boom at run time" in results["bad"]["error"]
    assert results["good"]["failed"] == "0" and results["good"]["final_psnr_mean"] != ""
    assert "Failed runs" in (out / "report.html").read_text()


# ---------------------------------------------------------------------- CLI and validation
def test_list_shows_the_presets(capsys, monkeypatch):
    from dipkit.bench import list_presets

    presets = list_presets()
    for name in ("quick", "ct-paper", "ct-paper-gpu", "aseqdip-paper", "aseqdip-paper-gpu"):
        assert name in presets and presets[name]
    assert run_cli(["bench", "--list"], monkeypatch) == 0
    text = capsys.readouterr().out
    assert "quick" in text and "ct-paper-gpu" in text and presets["quick"] in text


def test_presets_parse():
    from dipkit.bench import list_presets, load_bench_config, preset_path

    for name in list_presets():
        bench = load_bench_config(preset_path(name))
        assert bench.cases and bench.methods and bench.description
        bench.validate_names()  # every method, task, option, net and input named exists


def test_unknown_preset_and_keys_raise(tmp_path, monkeypatch, capsys):
    from dipkit.bench import parse_bench_config, preset_path

    with pytest.raises(DipkitError, match="unknown bench preset"):
        preset_path("no-such-preset")
    assert run_cli(["bench", "--preset", "no-such-preset", "--out", str(tmp_path / "o")], monkeypatch) == 2
    assert "unknown bench preset" in capsys.readouterr().err
    bad = [({"colour": 1}, "unknown key"),
           ({"defaults": {"iterationz": 3}}, "unknown key"),
           ({"cases": [{"task": "ct", "sample": "ct", "viewz": 3}]}, "unknown key"),
           ({"methods": [{"method": "dip", "paramz": {}}]}, "unknown key"),
           ({"methods": [{"method": "dip", "input": {"kindd": "noise"}}]}, "unknown key"),
           ({"cases": [{"task": "ct"}]}, "image source"),
           ({"methods": [{"method": "dip"}, {"method": "dip"}]}, "repeated method label"),
           ({"methods": [{"method": "dip", "cases": ["nope*"]}]}, "matches no case"),
           ({"seeds": "zero"}, "integer")]
    for patch, msg in bad:
        with pytest.raises(DipkitError, match=msg):
            parse_bench_config(tiny_bench(**patch))
    # names checked against the registries when the bench starts
    from dipkit.bench import run_bench

    for patch, msg in [({"methods": [{"method": "no-such-method"}]}, "unknown method"),
                       ({"cases": [{"task": "no-such-task", "sample": "ct"}]}, "unknown task"),
                       ({"cases": [{"task": "ct", "sample": "ct", "options": {"acceleration": 4}}]}, "does not take"),
                       ({"methods": [{"method": "dip", "params": {"lr2": 1}}]}, "unknown parameter"),
                       ({"methods": [{"method": "dip", "net": {"bogus": 1}}]}, "unknown option")]:
        with pytest.raises(DipkitError, match=msg):
            run_bench(tiny_bench(**patch), tmp_path / "x")
    # CLI: bad usage is a one-line error, exit 2
    cfg = write_cfg(tmp_path, tiny_bench(colour=1))
    assert run_cli(["bench", str(cfg), "--out", str(tmp_path / "o")], monkeypatch) == 2
    assert "unknown key" in capsys.readouterr().err
    assert run_cli(["bench", "--out", str(tmp_path / "o")], monkeypatch) == 2
    assert run_cli(["bench", str(cfg)], monkeypatch) == 2
    assert run_cli(["bench", str(cfg), "--out", str(tmp_path / "o"), "--executor", "ray", "--workers", "2"],
                   monkeypatch) == 2
    from dipkit.bench import make_executor

    with pytest.raises(DipkitError, match="unknown executor"):
        make_executor("slurm")
    with pytest.raises(DipkitError, match="threads"):
        make_executor("local", threads=0)


def test_case_grid_expansion(tmp_path):
    from dipkit.bench import parse_bench_config

    img = tmp_path / "slice.npy"
    import numpy as np

    np.save(img, np.zeros((8, 8), np.float32))
    cfg = tiny_bench(cases=[{"name": "ct", "task": "ct", "samples": ["ct", "shepp-logan"], "image": "slice.npy",
                             "options": {"views": [8, 12], "noise_level": 0.02}, "noise_seeds": [0, 1]}],
                     methods=[{"method": "dip", "iterations": 1e3, "params": {"lr": "1e-3"}, "cases": ["*views8"]}])
    bench = parse_bench_config(cfg, base_dir=tmp_path)
    assert [c.name for c in bench.cases] == ["ct-views8", "ct-views12"]
    assert [c.options["views"] for c in bench.cases] == [8, 12]
    assert [i.name for i in bench.cases[0].instances] == ["ct_sim0", "ct_sim1", "shepp-logan_sim0",
                                                         "shepp-logan_sim1", "slice_sim0", "slice_sim1"]
    assert bench.cases[0].instances[-1].image == str(img.resolve())
    (m,) = bench.methods
    assert m.applies_to("ct-views8") and not m.applies_to("ct-views12")
    run = m.run_config(3)
    assert run.seed == 3 and run.iterations == 1000 and run.net.options == {"scales": 3, "channels": 8}
    # a different network drops the default net's options
    cfg["methods"] = [{"method": "dip", "net": {"name": "skip-small"}}]
    assert parse_bench_config(cfg).methods[0].run_config(0).net.options == {}
    # YAML reads 1e-4 as a number
    p = tmp_path / "b.yaml"
    p.write_text("cases: [{task: ct, sample: ct}]\nmethods: [{method: dip, params: {lr: 1e-4}}]\n")
    from dipkit.bench import load_bench_config

    assert load_bench_config(p).methods[0].run["params"]["lr"] == 1e-4


@pytest.mark.slow
def test_local_workers_match_in_process(tiny_run, tmp_path):
    """--workers 2 (spawned processes) gives the same metrics as the in-process run."""
    from dipkit.bench import run_bench

    cfg, out = tiny_run
    bench = yaml.safe_load(cfg.read_text())
    bench["methods"] = [m for m in bench["methods"] if m["method"] == "tv"]  # 2 runs, 1 per worker
    res = run_bench(bench, tmp_path / "out", workers=2)
    assert len(res["ran"]) == 2 and not res["failed"]
    _compare_runs(out, tmp_path / "out")


def _compare_runs(a: Path, b: Path) -> None:
    """Every run of ``b`` has the metrics of the same run in ``a``."""
    key = ("case", "instance", "method", "seed")
    ra = {tuple(r[k] for k in key): r for r in read_csv(a / "runs.csv")}
    rb = read_csv(b / "runs.csv")
    assert rb and all(tuple(r[k] for k in key) in ra for r in rb)
    for y in rb:
        x = ra[tuple(y[k] for k in key)]
        assert y["status"] == "ok"
        for col in ("peak_psnr", "peak_iter", "es_iter", "final_psnr", "ssim"):
            if x[col] == "":
                assert y[col] == ""
            else:
                assert float(y[col]) == pytest.approx(float(x[col]), abs=1e-3), (x["method"], x["seed"], col)


def test_ray_resources_request_a_gpu_for_cuda_runs():
    from dipkit.bench.executors import ray_resources

    def job(device):
        return {"cfg": {"device": device}}

    assert ray_resources(job("cuda"), 0)["num_gpus"] == 1
    assert ray_resources(job("cuda:1"), 4)["num_gpus"] == 1
    assert ray_resources(job("auto"), 2)["num_gpus"] == 1
    assert ray_resources(job("auto"), 0)["num_gpus"] == 0
    assert ray_resources(job("cpu"), 8) == {"num_gpus": 0, "num_cpus": 1}


@pytest.mark.slow
def test_ray_executor_matches_local(tiny_run, tmp_path):
    ray = pytest.importorskip("ray")
    from dipkit.bench import RayExecutor, run_bench

    cfg, out = tiny_run
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        res = run_bench(cfg, tmp_path / "out", executor_obj=RayExecutor())
    finally:
        ray.shutdown()
    assert len(res["ran"]) == 4 and not res["failed"]
    _compare_runs(out, tmp_path / "out")
