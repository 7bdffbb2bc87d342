"""Pictures for every run, ground truth or not: progress.png and overview.png (CT, MRI, RGB), direct.npy,
``dipkit show`` (summary, pictures redrawn, show.html; bad input → one line, exit 2) and the bench's
misfit curves. Tiny problems (≤ 32², tens of steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from dipkit.cli import main

from .conftest import TINY_NET, tiny_image

NET = [f"--set=net.{k}={v}" for k, v in TINY_NET.items()]


def _png(path, min_bytes=5000):
    """A valid PNG of non-trivial size and pixel count."""
    from PIL import Image

    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    assert path.stat().st_size > min_bytes, (path, path.stat().st_size)
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] >= 300 and im.size[1] >= 200, im.size
    return path


def _cfg(tiny_cfg, rule="val:record", iterations=20, **params):
    cfg = tiny_cfg("dip", iterations=iterations, lr=1e-2, **params)
    cfg.early_stop.rule = rule
    return cfg


@pytest.mark.parametrize("ground_truth", [False, True])
def test_every_run_gets_progress_and_overview(ct_problem, tiny_cfg, tmp_path, ground_truth):
    from dipkit.baselines.naive import naive_reconstruction
    from dipkit.run import reconstruct

    if not ground_truth:
        ct_problem.x_true = None
    run = tmp_path / "run"
    res = reconstruct(ct_problem, _cfg(tiny_cfg), run, quiet=True)
    assert (res["psnr"] is not None) == ground_truth
    _png(run / "progress.png")
    _png(run / "overview.png")
    assert (run / "psnr_curve.png").is_file() == ground_truth
    direct = np.load(run / "direct.npy")
    np.testing.assert_allclose(direct, naive_reconstruction(ct_problem)[0].numpy(), rtol=1e-5, atol=1e-6)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_overview_for_ct_mri_and_rgb(tiny_cfg, tmp_path):
    """CT (FBP), MRI (complex → magnitude; direct = zero-filled [|x|, 0]) and an RGB image task each get
    an overview; an ensemble's adds the uncertainty panel (a wider figure)."""
    from PIL import Image

    from dipkit.run import reconstruct
    from dipkit.tasks import get_task

    img = tiny_image(16)
    rgb = np.concatenate([img, img[:, ::-1], 0.5 + 0 * img]).astype(np.float32)
    problems = {"ct": get_task("ct").simulate(img, views=8, noise_level=0.02, seed=0),
                "mri": get_task("mri").simulate(img, acceleration=2, seed=0),
                "rgb": get_task("inpaint").simulate(rgb, seed=0)}
    widths = {}
    for name, problem in problems.items():
        run = tmp_path / name
        reconstruct(problem, _cfg(tiny_cfg, iterations=10), run, quiet=True)
        _png(run / "overview.png")
        _png(run / "progress.png")
        direct = np.load(run / "direct.npy")
        assert direct.shape == tuple(problem.img_shape)
        with Image.open(run / "overview.png") as im:
            widths[name] = im.size[0]
    assert np.load(tmp_path / "mri" / "direct.npy")[1].max() == 0  # the magnitude in the real channel
    cfg = _cfg(tiny_cfg, iterations=10)
    cfg.ensemble = 2
    reconstruct(problems["ct"], cfg, tmp_path / "ens", quiet=True)
    assert (tmp_path / "ens" / "uncertainty.npy").is_file()
    with Image.open(_png(tmp_path / "ens" / "overview.png")) as im:
        assert im.size[0] > widths["ct"]  # direct, reconstruction, uncertainty, difference


def test_a_direct_method_has_an_overview_and_no_progress(ct_problem, tiny_cfg, tmp_path):
    from dipkit.run import reconstruct

    cfg = tiny_cfg("fbp")
    reconstruct(ct_problem, cfg, tmp_path / "fbp", quiet=True)
    _png(tmp_path / "fbp" / "overview.png", min_bytes=2000)
    assert not (tmp_path / "fbp" / "progress.png").exists()  # one history row: nothing to draw


def test_progress_marks_a_stop_and_a_rollback(tmp_path):
    """The picture is drawn from the history and metrics alone, with the marks of a stop and a rollback."""
    from dipkit.run.pictures import _marks, plot_progress

    steps = np.arange(5, 205, 5)
    history = {"step": steps, "loss": 1e3 / steps, "data": 1e3 / steps, "val": 1 + (steps - 100) ** 2 / 1e3,
               "lr": np.full(steps.shape, 1e-3), "rollbacks": (steps > 40).astype(float)}
    metrics = {"method": "dip", "task": "ct",
               "selections": {"val": {"rule": "val", "mode": "stop", "iteration": 100, "misfit": 1.0}},
               "stop": {"kind": "patience", "step": 200, "reason": "no new held-out minimum for 100 steps"},
               "rollbacks": [{"step": 42, "reason": "loss jump", "lr": 5e-4}]}
    labels = [label for _, _, label in _marks(metrics)]
    assert labels == ["val pick @ 100", "stop (patience) @ 200", "rollback (loss jump)"]
    assert plot_progress(tmp_path / "progress.png", history, metrics)
    _png(tmp_path / "progress.png")
    assert not plot_progress(tmp_path / "none.png", {"step": [1], "loss": [1.0]}, metrics)


def test_show_prints_the_summary_and_writes_show_html(ct_problem_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["reconstruct", str(ct_problem_file), "--method", "dip", "--iterations", "12", "--set", "log_every=3",
                 "--early-stop", "val:record", "--device", "cpu", "--quiet", *NET, "--out", str(run)]) == 0
    capsys.readouterr()
    # a run directory from before the pictures: show draws them (the direct image from the problem file)
    for name in ("progress.png", "overview.png", "direct.npy"):
        (run / name).unlink()
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    m = json.loads((run / "metrics.json").read_text())
    for text in ("method", "dip", "task", "ct", "steps", "12", "stopped", "val pick", "PSNR", "wall time",
                 "show.html"):
        assert text in out, text
    assert f"step {m['selections']['val']['iteration']}" in out
    _png(run / "progress.png")
    _png(run / "overview.png")
    page = (run / "show.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "val pick" in page and "<table>" in page
    # --redraw rewrites the pictures; a second show rewrites show.html (a run file: --overwrite removes it)
    before = (run / "overview.png").stat().st_mtime_ns
    assert main(["show", str(run), "--redraw"]) == 0
    assert (run / "overview.png").stat().st_mtime_ns >= before
    assert main(["reconstruct", str(ct_problem_file), "--method", "fbp", "--quiet", "--overwrite",
                 "--out", str(run)]) == 0
    assert not (run / "show.html").exists() and not (run / "progress.png").exists()


def test_show_without_ground_truth(ct_problem, tiny_cfg, tmp_path, capsys, monkeypatch):
    from dipkit.run import reconstruct

    ct_problem.x_true = None
    reconstruct(ct_problem, _cfg(tiny_cfg, iterations=10), tmp_path / "run", quiet=True)
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    assert main(["show", str(tmp_path / "run"), "--open"]) == 0
    out = capsys.readouterr().out
    assert "no ground truth" in out and "PSNR " not in out
    assert opened == [(tmp_path / "run" / "show.html").resolve().as_uri()]


@pytest.mark.parametrize("what", ["empty", "missing", "file", "incomplete"])
def test_show_refuses_what_is_not_a_run_dir(tmp_path, capsys, what):
    target = tmp_path / "x"
    if what == "empty":
        target.mkdir()
    elif what == "file":
        target.write_text("hello")
    elif what == "incomplete":
        target.mkdir()
        (target / "checkpoint.pt").write_bytes(b"")
    assert main(["show", str(target)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dipkit: error:") and "Traceback" not in captured.err, err
    assert not (target / "show.html").exists() if target.is_dir() else True


def test_bench_report_has_misfit_curves(tmp_path):
    from dipkit import cli

    cfg = {"seeds": [0], "defaults": {"device": "cpu", "log_every": 2, "net": {"name": "unet", **TINY_NET}},
           "cases": [{"name": "ct16", "task": "ct", "sample": "shepp-logan", "size": 16,
                      "options": {"views": 8, "noise_level": 0.02}}],
           "methods": [{"method": "dip", "iterations": 6, "params": {"lr": 1e-2}, "early_stop": {"rule": "val:record"}},
                       {"method": "fbp"}]}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert cli.main(["bench", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out = tmp_path / "out"
    _png(out / "misfit_curves.png")
    _png(out / "psnr_curves.png")
    page = (out / "report.html").read_text()
    assert "Held-out misfit vs iteration" in page and page.count("data:image/png;base64,") == 3
    run = next((out / "cases" / "ct16").glob("*/dip/seed0"))
    _png(run / "progress.png")
    _png(run / "overview.png")


def test_pictures_never_cost_a_run(ct_problem, tiny_cfg, tmp_path, monkeypatch):
    """A figure that fails is a warning; the run's results and metrics.json are written."""
    from dipkit.run import reconstruct

    def boom(*a, **k):
        raise RuntimeError("no figure today")

    monkeypatch.setattr("dipkit.run.pictures.plot_overview", boom)
    with pytest.warns(RuntimeWarning, match="overview.png"):
        reconstruct(ct_problem, _cfg(tiny_cfg, iterations=10), tmp_path / "run", quiet=True)
    assert (tmp_path / "run" / "metrics.json").is_file() and (tmp_path / "run" / "progress.png").is_file()
    assert torch.isfinite(torch.from_numpy(np.load(tmp_path / "run" / "reconstruction.npy"))).all()
