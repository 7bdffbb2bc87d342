"""Warm starts and Subspace DIP (CT paper §5.1–5.2): the ellipse phantoms, `dipkit pretrain`, loading
weights (`net.weights`), and `subspace-dip` moving θ only within span(M U) around θ₀."""

import json

import pytest
import torch

from dipkit.errors import DipkitError
from tests.conftest import TINY_NET
from tests.test_resume import _Killed, _same_run, interrupt  # noqa: F401  (fixture)


def test_ellipses_are_seeded_and_in_range():
    from dipkit.phantoms import random_ellipses

    a = random_ellipses(3, 24, generator=torch.Generator().manual_seed(5))
    b = random_ellipses(3, 24, generator=torch.Generator().manual_seed(5))
    c = random_ellipses(3, 24, generator=torch.Generator().manual_seed(6))
    assert a.shape == (3, 1, 24, 24) and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) == 0.0 and float(a.amax(dim=(1, 2, 3)).min()) == 1.0
    assert not torch.equal(a[0], a[1])  # different phantoms within a batch
    with pytest.raises(DipkitError):
        random_ellipses(0, 24, generator=torch.Generator())


def test_pretrain_writes_weights_trajectory_and_record(pretrained):
    from dipkit.nets.subspace import read_trajectory, trajectory_path
    from dipkit.nets.weights import read_weights

    rec = json.loads(pretrained.with_suffix(".json").read_text())
    assert rec["task"] == "ct" and rec["steps"] == 8 and rec["seed"] == 0 and rec["lr"] == 3e-3
    assert rec["net"] == {"name": "unet", "options": TINY_NET, "in_channels": 1, "out_channels": 1,
                          "parameters": rec["net"]["parameters"]}
    assert rec["input_kind"] == "fbp" and rec["dipkit_version"] and rec["final_loss"] > 0
    assert rec["command"].startswith("dipkit pretrain --task ct --size 32 --views 16")
    traj = read_trajectory(trajectory_path(pretrained))
    assert traj["theta"].shape[0] == 6 and traj["steps"][-1] == 8
    sd = read_weights(pretrained)
    flat = torch.cat([sd[n].reshape(-1) for n in traj["names"]])
    assert torch.equal(flat, traj["theta"][-1])  # the last snapshot is the saved weights


def test_weights_reload_bit_identically(tmp_path):
    from dipkit.nets import build_net
    from dipkit.nets.weights import save_weights

    torch.manual_seed(0)
    a = build_net("unet", 1, 1, **TINY_NET)
    save_weights(tmp_path / "a.pt", a)
    torch.manual_seed(1)
    b = build_net("unet", 1, 1, weights=str(tmp_path / "a.pt"), **TINY_NET)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    z = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(a(z), b(z))


def test_weights_that_do_not_fit_are_one_line_errors(tmp_path, pretrained):
    from dipkit.nets import build_net

    with pytest.raises(DipkitError, match=r"tensor '.*' is missing") as e:
        build_net("unet", 1, 1, weights=str(pretrained), scales=4, channels=8)
    assert "\n" not in str(e.value)
    with pytest.raises(DipkitError, match=r"tensor '.*' has shape"):
        build_net("unet", 1, 1, weights=str(pretrained), scales=3, channels=4)
    with pytest.raises(DipkitError, match="not found"):
        build_net("unet", 1, 1, weights=str(tmp_path / "none.pt"), **TINY_NET)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DipkitError, match="cannot read"):
        build_net("unet", 1, 1, weights=str(tmp_path / "junk.pt"), **TINY_NET)


def test_run_starts_from_the_weights(pretrained, ct_problem, tiny_cfg):
    """A DIP run with net.weights starts from them: its first output is the pre-trained network's."""
    from dipkit.nets import build_net
    from dipkit.run import reconstruct

    cfg = tiny_cfg("dip", iterations=1, lr=1e-12, ema=None)
    cfg.net.options["weights"] = str(pretrained)
    res = reconstruct(ct_problem, cfg, quiet=True)
    net = build_net("unet", 1, 1, weights=str(pretrained), **TINY_NET)
    with torch.no_grad():
        want = net(ct_problem.physics.A_dagger(ct_problem.y))
    assert torch.allclose(res.reconstruction, want, atol=1e-5)
    cfg.net.options["weights"] = str(pretrained) + ".missing"
    with pytest.raises(DipkitError, match="net.weights"):
        cfg.validate()


def _subspace_state(problem, cfg, steps):
    from dipkit.engine import run
    from dipkit.run.runner import build_state, resolve_config

    method = cfg.validate()
    resolved = resolve_config(cfg, method, problem)
    state = build_state(method, problem, resolved, torch.device("cpu"))
    run(method, state, [])
    assert state.step == steps
    return method, state


@pytest.mark.parametrize("params", [{"k": 4}, {"k": 3, "leverage": 0.3, "optimizer": "lbfgs"}])
def test_subspace_moves_theta_only_within_span(params, pretrained, ct_problem, tiny_cfg):
    from dipkit.nets.subspace import flat_parameters

    cfg = tiny_cfg("subspace-dip", iterations=6, **params)
    cfg.net.options["weights"] = str(pretrained)
    method, state = _subspace_state(ct_problem, cfg, 6)
    aux = state.aux
    theta0, idx, u = aux["subspace/theta0"], aux["subspace/idx"], aux["subspace/U"]
    _, _, theta = flat_parameters(state.net)  # the network's parameters are kept at θ(γ)
    d = theta - theta0
    assert float(d.norm()) > 1e-6  # it moved
    outside = torch.ones_like(d, dtype=torch.bool)
    outside[idx] = False
    assert float(d[outside].abs().sum()) == 0.0  # nothing outside the mask M
    coef = torch.linalg.lstsq(u.double(), d[idx].double().unsqueeze(1)).solution
    resid = d[idx].double() - (u.double() @ coef).squeeze(1)
    assert float(resid.norm()) <= 1e-5 * float(d.norm())  # θ − θ₀ ∈ span(M U)
    from dipkit.methods.base import data_fidelity

    gamma = aux["subspace/gamma"].detach()
    with torch.no_grad():  # the optimiser (Adam, or L-BFGS with its line search) lowered L(γ)
        l0, l1 = (float(data_fidelity(state.physics, method.network_at(state, state.z, g), state.y).sum())
                  for g in (torch.zeros_like(gamma), gamma))
    assert l1 < 0.9 * l0
    if "leverage" not in params:
        assert torch.allclose(u.T @ u, torch.eye(u.shape[1]), atol=1e-4)  # orthonormal basis
        assert idx.numel() == theta.numel()
    else:
        assert idx.numel() == int(torch.tensor(0.3 * theta.numel()).ceil())


def test_subspace_needs_weights_or_a_trajectory(ct_problem_file, tiny_cfg, capsys):
    from dipkit.cli import main

    with pytest.raises(DipkitError, match="needs a pre-trained network"):
        tiny_cfg("subspace-dip").validate()
    with pytest.raises(DipkitError, match=r"k must be in \[1, K-1\]"):
        from dipkit.nets.subspace import subspace_basis

        subspace_basis(torch.randn(5, 40), 5)
    assert main(["reconstruct", str(ct_problem_file), "--method", "subspace-dip", "--iterations", "2",
                 "--out", str(ct_problem_file.parent / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "net.weights" in err


def test_pretrain_cli_end_to_end(tmp_path, ct_problem_file, capsys):
    from dipkit.cli import main

    w = tmp_path / "cli" / "w.pt"
    args = ["pretrain", "--like", str(ct_problem_file), "--steps", "3", "--checkpoints", "3", "--quiet",
            "--set", "net.scales=3", "--set", "net.channels=8", "--out", str(w)]
    assert main(args) == 0
    assert w.is_file() and w.with_name("w.trajectory.pt").is_file() and w.with_suffix(".json").is_file()
    assert "wrote" in capsys.readouterr().out
    assert not list(w.parent.glob(".*.tmp"))  # atomic writes leave no temporary files
    rec = json.loads(w.with_suffix(".json").read_text())
    assert rec["like"] == str(ct_problem_file.resolve()) or rec["like"].endswith("problem.npz")
    assert main(["reconstruct", str(ct_problem_file), "--method", "subspace-dip", "--iterations", "3",
                 "--set", "net.scales=3", "--set", "net.channels=8", "--set", f"net.weights={w}",
                 "--set", "k=2", "--early-stop", "none", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["iterations"] == 3 and metrics["params"]["k"] == 2
    assert main(["pretrain", "--like", str(ct_problem_file), "--views", "8", "--out", str(w)]) == 2
    assert main(["pretrain", "--task", "ct", "--set", "lr=1", "--out", str(w)]) == 2


def test_python_api_pretrain_and_solve_with_weights(pretrained, ct_problem):
    import dipkit

    assert dipkit.pretrain is dipkit.run.warmstart.pretrain
    net = {"name": "unet", "weights": str(pretrained), **TINY_NET}
    res = dipkit.solve(ct_problem.y, ct_problem.physics, method="subspace-dip", net=net, iterations=3, k=2,
                       x_true=ct_problem.x_true, early_stop="none")
    assert res["iterations"] == 3 and res.reconstruction.shape == ct_problem.x_true.shape
    assert res.config["net"]["options"]["weights"] == str(pretrained)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_subspace_run_resumes_bit_for_bit(optimizer, pretrained, ct_problem, tiny_cfg, tmp_path, interrupt):
    import os

    from dipkit.run import reconstruct

    def cfg():
        c = tiny_cfg("subspace-dip", iterations=20, k=3, optimizer=optimizer)
        c.net.options["weights"] = str(pretrained)
        c.checkpoint.every = 5
        return c

    ref = reconstruct(ct_problem, cfg(), tmp_path / "ref", quiet=True)
    interrupt(10)
    with pytest.raises(_Killed):
        reconstruct(ct_problem, cfg(), tmp_path / "run", quiet=True)
    os.environ.pop("DIPKIT_KILL_AFTER_CHECKPOINT")
    res = reconstruct(ct_problem, cfg(), tmp_path / "run", quiet=True, resume=True)
    assert res["resumed_at"] == [10]
    _same_run(tmp_path / "ref", tmp_path / "run")



def test_subspace_lbfgs_refuses_a_stochastic_data_term_and_stays_fp32_under_auto(pretrained, tiny_cfg):
    from dipkit.precision import resolve_precision

    cfg = tiny_cfg("subspace-dip", optimizer="lbfgs")
    cfg.net.options["weights"] = str(pretrained)
    cfg.data.subset = 0.5
    with pytest.raises(DipkitError, match="needs the full term"):
        cfg.validate()
    cfg.params["optimizer"] = "adam"
    method = cfg.validate()
    assert method.stochastic_data and not method.bf16_safe
    assert resolve_precision("auto", "cpu", method=method) == "fp32"
