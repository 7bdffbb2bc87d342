"""Every CLI verb, and every bad-input case: one line on stderr, exit code 2, nothing written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dipkit.cli import main

from .conftest import TINY_NET, tiny_image

NET = [f"--set=net.{k}={v}" for k, v in TINY_NET.items()]


def _err_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("dipkit: error:") and "Traceback" not in err[0]
    return err[0]


@pytest.fixture
def image_npy(tmp_path):
    p = tmp_path / "img.npy"
    np.save(p, tiny_image(32)[0])
    return p


def test_simulate_and_reconstruct(tmp_path, image_npy, capsys):
    prob = tmp_path / "p.npz"
    assert main(["simulate", "--task", "ct", "--image", str(image_npy), "--size", "32", "--views", "12",
                 "--noise-level", "0.02", "--seed", "1", "--out", str(prob)]) == 0
    assert prob.exists()
    run = tmp_path / "run"
    assert main(["reconstruct", str(prob), "--method", "dip", "--iterations", "12", "--seed", "0",
                 "--device", "cpu", "--early-stop", "wmv:record", "--set", "es.window=3", "--set", "lr=1e-2",
                 *NET, "--set", "log_every=4", "--out", str(run), "--quiet"]) == 0
    for name in ["reconstruction.npy", "reconstruction.png", "config.yaml", "history.csv", "psnr_curve.png",
                 "metrics.json", "estimates.npz"]:
        assert (run / name).exists(), name
    m = json.loads((run / "metrics.json").read_text())
    for key in ["method", "task", "iterations", "wall_time_s", "iterations_per_s", "psnr", "ssim", "peak",
                "early_stop"]:
        assert key in m
    assert m["method"] == "dip" and m["task"] == "ct" and m["iterations"] == 12
    assert set(m["peak"]) == {"psnr", "iteration"}
    assert set(m["early_stop"]) >= {"rule", "iteration", "psnr", "ssim"}
    lines = (run / "history.csv").read_text().splitlines()
    assert lines[0] == "step,loss,data,psnr,ssim"
    assert [int(r.split(",")[0]) for r in lines[1:]] == [4, 8, 12]
    assert np.load(run / "reconstruction.npy").shape == (1, 32, 32)
    # rerun from the written config gives the same reconstruction
    run2 = tmp_path / "run2"
    assert main(["reconstruct", str(prob), "--config", str(run / "config.yaml"), "--out", str(run2), "--quiet"]) == 0
    assert np.array_equal(np.load(run / "reconstruction.npy"), np.load(run2 / "reconstruction.npy"))


def test_simulate_sample_fan_and_baselines(tmp_path):
    prob = tmp_path / "p.npz"
    assert main(["simulate", "--task", "ct-fan", "--sample", "shepp-logan", "--size", "24", "--views", "10",
                 "--out", str(prob)]) == 0
    for method in ["fbp", "tv"]:
        run = tmp_path / method
        extra = ["--set", "iterations=20"] if method == "tv" else []
        assert main(["reconstruct", str(prob), "--method", method, *extra, "--out", str(run), "--quiet"]) == 0
        m = json.loads((run / "metrics.json").read_text())
        assert m["method"] == method and m["psnr"] is not None
        assert m["early_stop"] is None
    assert json.loads((tmp_path / "fbp" / "metrics.json").read_text())["iterations"] is None


def test_listing_verbs(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ["dip", "fbp", "tv"]:
        assert f"\n{name} " in "\n" + out
    assert "ref:" in out
    assert main(["samples"]) == 0
    assert "shepp-logan" in capsys.readouterr().out
    assert main(["nets"]) == 0
    assert "unet-paper" in capsys.readouterr().out


def test_demo_runs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--iterations", "6", "--device", "cpu", "--quiet"]) == 0
    assert (out / "summary.md").exists() and (out / "dip" / "metrics.json").exists()
    assert (out / "auto" / "selection.csv").exists()
    text = capsys.readouterr().out
    assert str(out) in text and "Winner: " in text and "Winner: " in (out / "summary.md").read_text()


def test_demo_bench_runs_the_quick_preset(tmp_path, monkeypatch, capsys):
    import dipkit.bench as bench

    seen = {}

    def fake_run_bench(config, out, **kw):
        seen["config"], seen["out"] = config, out
        return {"failed": []}

    monkeypatch.setattr(bench, "run_bench", fake_run_bench)
    assert main(["demo", "--bench", "--out", str(tmp_path / "d"), "--quiet"]) == 0
    assert seen["config"] == bench.preset_path("quick") and seen["out"] == tmp_path / "d" / "bench"
    assert "bench" in capsys.readouterr().out


@pytest.fixture
def nan_npy(tmp_path):
    p = tmp_path / "nan.npy"
    a = tiny_image(16)[0]
    a[3, 3] = np.nan
    np.save(p, a)
    return p


@pytest.fixture
def inf_npy(tmp_path):
    p = tmp_path / "inf.npy"
    a = tiny_image(16)[0]
    a[3, 3] = np.inf
    np.save(p, a)
    return p


SIM = ["simulate", "--task", "ct", "--size", "16", "--views", "8"]


@pytest.mark.parametrize("argv_fn", [
    lambda t, f: [*SIM, "--image", str(t / "missing.png"), "--out", str(t / "o.npz")],
    lambda t, f: [*SIM, "--image", str(f["text_png"]), "--out", str(t / "o.npz")],
    lambda t, f: ["simulate", "--task", "nope", "--sample", "camera", "--out", str(t / "o.npz")],
    lambda t, f: [*SIM, "--sample", "nope", "--out", str(t / "o.npz")],
    lambda t, f: ["simulate", "--task", "ct", "--sample", "camera", "--views", "0", "--out", str(t / "o.npz")],
    lambda t, f: ["simulate", "--task", "ct", "--sample", "camera", "--size", "-3", "--out", str(t / "o.npz")],
    lambda t, f: [*SIM, "--sample", "camera", "--noise-level", "-0.1", "--out", str(t / "o.npz")],
    lambda t, f: [*SIM, "--image", str(f["nan"]), "--out", str(t / "o.npz")],
    lambda t, f: [*SIM, "--image", str(f["inf"]), "--out", str(t / "o.npz")],
    lambda t, f: [*SIM, "--image", str(f["nan"]), "--sample", "camera", "--out", str(t / "o.npz")],
], ids=["missing-image", "unreadable-image", "unknown-task", "unknown-sample", "zero-views", "negative-size",
        "negative-noise", "nan-image", "inf-image", "image-and-sample"])
def test_simulate_bad_input(tmp_path, capsys, argv_fn, nan_npy, inf_npy):
    text_png = tmp_path / "text.png"
    text_png.write_text("hello")
    argv = argv_fn(tmp_path, {"nan": nan_npy, "inf": inf_npy, "text_png": text_png})
    assert main(argv) == 2
    _err_line(capsys)
    assert not (tmp_path / "o.npz").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".") or p.endswith(".tmp")]


def _bad_problem_files(tmp_path, ct_problem):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.npz"
    ct_problem.save(corrupt)
    data = corrupt.read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    other = tmp_path / "other.npz"
    np.savez(other, a=np.arange(3))
    png = tmp_path / "image.npz"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    nan = tmp_path / "nan.npz"
    ct_problem.y[0, 0, 1, 1] = float("inf")
    ct_problem.save(nan)
    return {"empty": empty, "corrupt": corrupt, "other": other, "png": png, "inf-measurement": nan,
            "missing": tmp_path / "missing.npz"}


@pytest.mark.parametrize("case", ["empty", "corrupt", "other", "png", "inf-measurement", "missing"])
def test_reconstruct_bad_problem(tmp_path, capsys, ct_problem, case):
    path = _bad_problem_files(tmp_path, ct_problem)[case]
    out = tmp_path / "run"
    assert main(["reconstruct", str(path), "--method", "fbp", "--out", str(out), "--quiet"]) == 2
    _err_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("extra", [
    ["--method", "nope"],
    ["--iterations", "0"],
    ["--iterations", "-5"],
    ["--set", "nope=1"],
    ["--set", "input.bogus=1"],
    ["--set", "net.bogus=1"],
    ["--set", "net.name=nope"],
    ["--early-stop", "nope"],
    ["--config", "MISSING.yaml"],
    ["--config", "BADKEY.yaml"],
    ["--config", "NOTYAML.yaml"],
], ids=["unknown-method", "zero-iterations", "negative-iterations", "unknown-param", "unknown-input-key",
        "unknown-net-option", "unknown-net", "unknown-rule", "missing-config", "config-unknown-key", "config-not-yaml"])
def test_reconstruct_bad_options(tmp_path, capsys, ct_problem_file, extra):
    (tmp_path / "BADKEY.yaml").write_text("method: dip\nwhatever: 3\n")
    (tmp_path / "NOTYAML.yaml").write_text("a: [unclosed\n")
    extra = [str(tmp_path / e) if e.endswith(".yaml") else e for e in extra]
    out = tmp_path / "run"
    assert main(["reconstruct", str(ct_problem_file), *extra, "--out", str(out), "--quiet", "--iterations", "2"]
                if "--iterations" not in extra else
                ["reconstruct", str(ct_problem_file), *extra, "--out", str(out), "--quiet"]) == 2
    _err_line(capsys)
    assert not out.exists()


def test_entry_point_subprocess_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dipkit.cli", "reconstruct", str(tmp_path / "missing.npz"),
                        "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "dipkit.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "reconstruct" in r.stdout
