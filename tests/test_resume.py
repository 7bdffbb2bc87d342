"""Resumable runs: checkpoints, ``--resume`` bit for bit (a SIGKILLed subprocess, and in-process
interruptions for every kind of run state), ``bench --resume`` from checkpoints, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dipkit.errors import DipkitError

from .conftest import TINY_NET

SRC = str(Path(__file__).resolve().parents[1] / "src")


class _Killed(BaseException):
    """Stands for SIGKILL in-process (not an Exception, so nothing on the way catches it)."""


@pytest.fixture
def interrupt(monkeypatch):
    """``interrupt(step, nth=1)``: the next run 'dies' right after writing its ``nth`` checkpoint at a
    step ≥ ``step`` (the checkpoint module's testing hook, with os.kill raising instead of killing pytest)."""
    import dipkit.engine.checkpoint as ck

    calls = []

    def fake_kill(pid, sig):
        calls.append(sig)
        if len(calls) >= calls_needed[0]:
            raise _Killed()

    calls_needed = [1]
    monkeypatch.setattr(ck.os, "kill", fake_kill)

    def arm(step, nth=1):
        calls.clear()
        calls_needed[0] = nth
        monkeypatch.setenv(ck.KILL_ENV, str(step))

    yield arm
    monkeypatch.delenv(ck.KILL_ENV, raising=False)


def _arrays(run: Path) -> dict:
    out = {"reconstruction": np.load(run / "reconstruction.npy")}
    with np.load(run / "estimates.npz") as z:
        out.update({f"est_{k}": np.array(z[k]) for k in z.files})
    if (run / "members.npz").exists():
        with np.load(run / "members.npz") as z:
            out["members"] = np.array(z["members"])
    return out


def _same_run(a: Path, b: Path) -> None:
    """Bit-identical arrays and history of two run directories."""
    xa, xb = _arrays(a), _arrays(b)
    assert xa.keys() == xb.keys()
    for k in xa:
        assert xa[k].tobytes() == xb[k].tobytes(), k
    assert (a / "history.csv").read_text() == (b / "history.csv").read_text()
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for m in (ma, mb):  # the memory available to an ensemble is measured by each run (a resumed one keeps its plan)
        if m.get("ensemble") and m["ensemble"].get("memory_gb"):
            m["ensemble"]["memory_gb"].pop("budget")
    for key in ("iterations", "psnr", "ssim", "peak", "final", "early_stop", "selections", "validation",
                "stop_reason", "params", "request", "ensemble", "rollbacks"):
        assert ma.get(key) == mb.get(key), key


# ---------------------------------------------------------------------- SIGKILL, through the CLI
def test_sigkilled_run_resumes_bit_for_bit(ct_problem_file, tmp_path, capsys):
    """A `dipkit reconstruct` subprocess killed with SIGKILL after the checkpoint of step 30 is resumed
    with `--resume` in a new process; reconstruction.npy equals the uninterrupted run's byte for byte
    (the reference runs in-process: one thread, as the subprocesses)."""
    from dipkit.cli import main

    args = [str(ct_problem_file), "--method", "dip", "--iterations", "60", "--seed", "3", "--device", "cpu",
            "--early-stop", "wmv:record", "--set", "es.window=4", "--set", "lr=1e-2", "--set", "ema=0.9",
            "--set", "input.perturb=0.05", "--set", "log_every=5", "--checkpoint-every", "10", "--quiet",
            *[f"--set=net.{k}={v}" for k, v in TINY_NET.items()]]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("DIPKIT_KILL_AFTER_CHECKPOINT", None)

    def cli(argv, **extra):
        return subprocess.run([sys.executable, "-m", "dipkit.cli", "reconstruct", *argv], capture_output=True,
                              text=True, env={**env, **extra}, timeout=300)

    ref, run = tmp_path / "ref", tmp_path / "run"
    assert torch.get_num_threads() == 1
    assert main(["reconstruct", *args, "--out", str(ref)]) == 0
    r = cli([*args, "--out", str(run)], DIPKIT_KILL_AFTER_CHECKPOINT="30")
    assert r.returncode == -9, (r.returncode, r.stderr)  # SIGKILL
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["runs"]["main"]["state"]["step"] == 30
    # a killed run's directory is not overwritten by accident
    capsys.readouterr()
    assert main(["reconstruct", *args, "--out", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err
    r = cli(["--resume", str(run), "--quiet"])
    assert r.returncode == 0, r.stderr
    assert (run / "reconstruction.npy").read_bytes() == (ref / "reconstruction.npy").read_bytes()
    _same_run(ref, run)
    m = json.loads((run / "metrics.json").read_text())
    assert m["resumed_at"] == [30] and m["iterations"] == 60
    assert not (run / "checkpoint.pt").exists()  # removed once the run is complete
    assert main(["reconstruct", "--resume", str(run)]) == 2
    assert "already complete" in capsys.readouterr().err


# ---------------------------------------------------------------------- in-process, every kind of state
CASES = {
    # EMA output, WMV window, input perturbation (per-step generator draws)
    "dip-ema-wmv": ("dip", {"ema": 0.9, "lr": 1e-2}, {"early_stop.rule": "wmv:record", "early_stop.window": 4,
                                                       "input.perturb": 0.05}),
    # WMV stopping the run (its window, g_min, k_min carried over the interruption)
    "wmv-stop": ("dip", {"lr": 1e-2, "ema": None}, {"early_stop.rule": "wmv", "early_stop.window": 3, "early_stop.patience": 8,
                                       "early_stop.delta": 1.0}),
    # z optimised (a leaf in the optimiser), outer EMA, uniform noise per step
    "self-guided": ("self-guided", {"lr": 1e-2, "n_eta": 2}, {"input.kind": "noise"}),
    # z replaced by the outer update
    "aseqdip": ("aseqdip", {"lr": 1e-2}, {}),
    # SGD + Langevin noise from the generator, posterior mean/variance in aux
    "sgld": ("sgld", {"lr": 0.05, "burn_in": 10}, {}),
    # aux variables (u, w) of a splitting method with a TV prox
    "dip-denoiser-admm": ("dip-denoiser-admm", {"lr": 1e-2, "denoiser": "tv"}, {}),
    # two members, each with its own generator
    "ensemble": ("dip", {"lr": 1e-2}, {"ensemble": 2, "input.perturb": 0.05, "early_stop.rule": "wmv:record",
                                       "early_stop.window": 4}),
    # stochastic DIP: a random subset of views per step from the run's generator
    "stochastic": ("dip", {"lr": 1e-2}, {"data.subset": 0.5, "input.perturb": 0.05}),
    # a classical baseline (aux variables, no optimiser)
    "tv": ("tv", {"alpha": 0.5}, {}),
    # the val rule's trailing mean (its buffer of the last evaluations carried over the interruption)
    "val-smooth": ("dip", {"lr": 1e-2}, {"early_stop.rule": "val:record", "early_stop.smooth": 4}),
    # a network fitted to the TV image first (not redone on resume) and the warm-up of its rate
    "init-tv": ("dip-tv", {"lr": 1e-2, "alpha_fraction": 1.0}, {"init.kind": "tv", "init.steps": 20,
                                                               "schedule.warmup": 20}),
}


def _cfg(tiny_cfg, method, params, settings, iterations=30):
    cfg = tiny_cfg(method, iterations=iterations, **params)
    cfg.seed = 1
    for k, v in settings.items():
        cfg.set(k, v)
    cfg.checkpoint.every = 5
    return cfg


@pytest.mark.parametrize("case", list(CASES))
def test_interrupted_run_resumes_bit_for_bit(case, ct_problem, tiny_cfg, tmp_path, interrupt):
    from dipkit.run import reconstruct

    method, params, settings = CASES[case]
    ref = reconstruct(ct_problem, _cfg(tiny_cfg, method, params, settings), tmp_path / "ref", quiet=True)
    interrupt(15)
    with pytest.raises(_Killed):
        reconstruct(ct_problem, _cfg(tiny_cfg, method, params, settings), tmp_path / "run", quiet=True)
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and not (tmp_path / "run" / "metrics.json").exists()
    os.environ.pop("DIPKIT_KILL_AFTER_CHECKPOINT")
    res = reconstruct(ct_problem, _cfg(tiny_cfg, method, params, settings), tmp_path / "run", quiet=True,
                      resume=True)
    assert res["resumed_at"] == [15]
    assert torch.equal(res.reconstruction, ref.reconstruction)
    _same_run(tmp_path / "ref", tmp_path / "run")


@pytest.mark.parametrize("nth", [2, 4])
def test_val_rule_with_refit_resumes_in_either_phase(ct_problem, tiny_cfg, tmp_path, interrupt, nth):
    """The val rule (held-out split) stops the main run (at 20, selecting 15); the refit reruns on all
    data for 15 steps. Interrupted in the main run (2nd checkpoint: step 10) or in the refit (4th
    checkpoint: the refit's step 5, after the main run's at 5, 10, 15)."""
    from dipkit.run import reconstruct

    def cfg():
        return _cfg(tiny_cfg, "dip", {"lr": 1e-2, "ema": None}, {"early_stop.rule": "val", "early_stop.patience": 3,
                                                        "early_stop.patience_scale": 0, "early_stop.smooth": 1,
                                                    "validation.refit": True, "validation.split": "entries"},
                    iterations=40)  # entries: the held-out split whose val curve these step counts describe

    ref = reconstruct(ct_problem, cfg(), tmp_path / "ref", quiet=True)
    assert ref["iterations"] == 20 and ref["validation"]["refit"]["iterations"] == 15
    interrupt(5, nth)
    with pytest.raises(_Killed):
        reconstruct(ct_problem, cfg(), tmp_path / "run", quiet=True)
    phase = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["phase"]
    os.environ.pop("DIPKIT_KILL_AFTER_CHECKPOINT")
    res = reconstruct(ct_problem, cfg(), tmp_path / "run", quiet=True, resume=True)
    assert torch.equal(res.reconstruction, ref.reconstruction)
    _same_run(tmp_path / "ref", tmp_path / "run")
    assert phase == ("main" if nth == 2 else "refit")


def test_checkpoint_holds_only_tensors_and_plain_containers(ct_problem, tiny_cfg, tmp_path):
    """weights_only loading works, and the file has what a resume needs."""
    from dipkit.run import reconstruct

    cfg = _cfg(tiny_cfg, "dip", {"lr": 1e-2}, {"early_stop.rule": "val,wmv:record", "early_stop.window": 4},
               iterations=10)
    cfg.checkpoint.keep = True
    reconstruct(ct_problem, cfg, tmp_path / "run", quiet=True)
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["format"] == "dipkit-checkpoint" and ck["phase"] == "main"
    run = ck["runs"]["main"]
    assert run["state"]["step"] == 5
    assert set(run["state"]) >= {"net", "optimizer", "z", "aux", "estimate", "generator", "rng", "step"}
    assert set(run["callbacks"]["rules"]) == {"val", "wmv"} and run["callbacks"]["recorder"]["steps"] == [5]
    assert ck["split"]["seed"] == 0 and ck["split"]["held_out"].dtype == torch.bool
    assert ck["request"]["early_stop"]["rule"] == "val,wmv:record" and ck["config"]["iterations"] == 10
    assert ck["problem"]["fingerprint"] == ct_problem.fingerprint()


def test_resume_refuses_another_configuration_or_problem(ct_problem, tiny_cfg, tmp_path, interrupt):
    from dipkit.run import reconstruct
    from dipkit.tasks import get_task

    from .conftest import tiny_image

    interrupt(5)
    with pytest.raises(_Killed):
        reconstruct(ct_problem, _cfg(tiny_cfg, "dip", {"lr": 1e-2}, {}), tmp_path / "run", quiet=True)
    os.environ.pop("DIPKIT_KILL_AFTER_CHECKPOINT")
    with pytest.raises(DipkitError, match="another configuration"):
        reconstruct(ct_problem, _cfg(tiny_cfg, "dip", {"lr": 2e-2}, {}), tmp_path / "run", quiet=True, resume=True)
    other = get_task("ct").simulate(tiny_image(32), views=16, noise_level=0.02, seed=9)
    with pytest.raises(DipkitError, match="another problem"):
        reconstruct(other, _cfg(tiny_cfg, "dip", {"lr": 1e-2}, {}), tmp_path / "run", quiet=True, resume=True)
    with pytest.raises(DipkitError, match="nothing to resume"):
        reconstruct(ct_problem, _cfg(tiny_cfg, "dip", {"lr": 1e-2}, {}), tmp_path / "none", quiet=True, resume=True)
    # other checkpoint settings are fine
    cfg = _cfg(tiny_cfg, "dip", {"lr": 1e-2}, {})
    cfg.checkpoint.every = 0
    assert reconstruct(ct_problem, cfg, tmp_path / "run", quiet=True, resume=True)["resumed_at"] == [5]


def test_auto_checkpoints_only_for_long_runs(ct_problem, tiny_cfg, tmp_path, monkeypatch):
    """Auto mode: a run expected to last under a minute writes no checkpoint after the start; a
    'long' one (threshold lowered) writes them, every AUTO_INTERVAL_S worth of steps (aligned to k)."""
    import dipkit.engine.checkpoint as ck
    from dipkit.run import reconstruct

    cfg = tiny_cfg("dip", iterations=20, lr=1e-2)
    res = reconstruct(ct_problem, cfg, tmp_path / "short", quiet=True)
    assert res["checkpoint"] == {"every": None, "written": 0}
    monkeypatch.setattr(ck, "AUTO_MIN_RUN_S", 0.0)
    monkeypatch.setattr(ck, "AUTO_INTERVAL_S", 1e-6)
    res = reconstruct(ct_problem, cfg, tmp_path / "long", quiet=True)
    assert res["checkpoint"]["every"] == 5 and res["checkpoint"]["written"] == 2  # steps 10 and 15
    assert not (tmp_path / "long" / "checkpoint.pt").exists()


def test_checkpoint_every_is_aligned_to_the_history_interval():
    from dipkit.engine.checkpoint import Checkpointer

    assert Checkpointer("x", dict, every=7, align=5).every == 10
    assert Checkpointer("x", dict, every=0, align=5).every == 0
    assert Checkpointer("x", dict, every=None, align=5).auto


def test_cli_checkpoint_flags(ct_problem_file, tmp_path, capsys):
    from dipkit.cli import main

    net = [f"--set=net.{k}={v}" for k, v in TINY_NET.items()]
    run = tmp_path / "run"
    assert main(["reconstruct", str(ct_problem_file), "--iterations", "10", "--set", "log_every=5", *net,
                 "--device", "cpu", "--checkpoint-every", "5", "--keep-checkpoint", "--out", str(run), "--quiet"]) == 0
    assert (run / "checkpoint.pt").is_file()
    m = json.loads((run / "metrics.json").read_text())
    assert m["checkpoint"] == {"every": 5, "written": 1} and m["request"]["checkpoint"]["keep"] is True
    assert main(["reconstruct", "--resume", str(run), "--method", "tv"]) == 2
    assert "own settings" in capsys.readouterr().err
    assert main(["reconstruct", str(ct_problem_file), "--checkpoint-every", "-1", "--out", str(tmp_path / "x")]) == 2
    assert main(["reconstruct", "--out", str(tmp_path / "y")]) == 2
    assert main(["reconstruct", "--resume", str(tmp_path / "nothing")]) == 2
    assert "nothing to resume" in capsys.readouterr().err


# ---------------------------------------------------------------------- bench --resume
def test_bench_resume_continues_an_interrupted_run_from_its_checkpoint(tmp_path, interrupt, monkeypatch):
    import dipkit.engine.checkpoint as ck
    from dipkit.bench import run_bench

    from .test_bench import tiny_bench

    # bench runs checkpoint in auto mode: make every run 'long' (a checkpoint every k = 2 steps)
    monkeypatch.setattr(ck, "AUTO_MIN_RUN_S", 0.0)
    monkeypatch.setattr(ck, "AUTO_INTERVAL_S", 1e-6)

    def grid():
        return tiny_bench(seeds=[0], methods=[{"method": "dip", "iterations": 12, "params": {"lr": 1e-2}}])

    ref = run_bench(grid(), tmp_path / "ref")
    assert not ref["failed"]
    interrupt(8)
    with pytest.raises(_Killed):
        run_bench(grid(), tmp_path / "out")
    run = tmp_path / "out" / "cases" / "ct16" / "shepp-logan_sim0" / "dip" / "seed0"
    assert (run / "checkpoint.pt").is_file() and not (run / "metrics.json").exists()
    os.environ.pop("DIPKIT_KILL_AFTER_CHECKPOINT")
    again = run_bench(grid(), tmp_path / "out", resume=True)
    assert again["ran"] == [("ct16", "shepp-logan_sim0", "dip", 0)] and not again["failed"]
    m = json.loads((run / "metrics.json").read_text())
    assert m["resumed_at"] == [8]
    refrun = tmp_path / "ref" / "cases" / "ct16" / "shepp-logan_sim0" / "dip" / "seed0"
    assert (run / "reconstruction.npy").read_bytes() == (refrun / "reconstruction.npy").read_bytes()
    # a complete run is reused; without --resume the run is redone from scratch
    third = run_bench(grid(), tmp_path / "out", resume=True)
    assert third["skipped"] and not third["ran"]
    fourth = run_bench(grid(), tmp_path / "out")
    assert len(fourth["ran"]) == 1
    assert json.loads((run / "metrics.json").read_text())["resumed_at"] == []
