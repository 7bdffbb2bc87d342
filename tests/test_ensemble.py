"""Ensembles: N independently seeded runs as one batched engine run, mean and uncertainty map."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dipkit.errors import DipkitError
from dipkit.run import reconstruct


#: how close an ensemble's members are to their own runs: the loop bit for bit (to float tolerance);
#: stacked members' vectorised convolutions sum in another order (rounding, grown over the steps)
TOL = {"loop": {"rtol": 1e-5, "atol": 1e-6}, "stacked": {"rtol": 1e-4, "atol": 2e-5}}


@pytest.mark.parametrize("mode", ["loop", "stacked"])
@pytest.mark.parametrize("perturb", [0.0, 0.05])
def test_ensemble_of_n_equals_n_separate_runs(ct_problem, tiny_cfg, perturb, mode):
    cfg = tiny_cfg("dip", iterations=12, lr=1e-2)
    cfg.input.kind, cfg.input.perturb = "noise", perturb
    cfg.ensemble, cfg.seed, cfg.ensemble_mode = 3, 5, mode
    ens = reconstruct(ct_problem, cfg, quiet=True)
    assert ens.members.shape == (3, *ct_problem.x_true.shape[1:])
    assert ens["ensemble"]["mode"] == mode
    for b in range(3):
        one = tiny_cfg("dip", iterations=12, lr=1e-2)
        one.input.kind, one.input.perturb, one.seed = "noise", perturb, 5 + b
        single = reconstruct(ct_problem, one, quiet=True)
        torch.testing.assert_close(ens.members[b:b + 1], single.reconstruction, **TOL[mode])
    torch.testing.assert_close(ens.reconstruction, ens.members.mean(0, keepdim=True))
    torch.testing.assert_close(ens.uncertainty, ens.members.std(0, keepdim=True))
    assert [m["seed"] for m in ens["ensemble"]["member_metrics"]] == [5, 6, 7]


def test_ensemble_writes_uncertainty_and_calibration(ct_problem, tiny_cfg, tmp_path):
    cfg = tiny_cfg("dip", iterations=10, lr=1e-2)
    cfg.ensemble = 2
    cfg.early_stop.rule = "val:record"
    res = reconstruct(ct_problem, cfg, tmp_path / "run", quiet=True)
    d = tmp_path / "run"
    std = np.load(d / "uncertainty.npy")
    assert std.shape == ct_problem.x_true.shape[1:] and (std >= 0).all() and std.max() > 0
    assert (d / "uncertainty.png").is_file() and (d / "calibration.png").is_file()
    with np.load(d / "members.npz") as z:
        assert z["members"].shape == (2, *ct_problem.x_true.shape[1:])
    m = json.loads((d / "metrics.json").read_text())
    assert m["ensemble"]["members"] == 2 and len(m["ensemble"]["member_metrics"]) == 2
    assert m["uncertainty"]["calibration"]["bins"] and m["uncertainty"]["mean_std"] > 0
    assert res["validation"]["iteration"] is None   # one pick per member: see member_metrics
    assert all(mm["iteration"] is not None for mm in m["ensemble"]["member_metrics"])


def test_sgld_writes_its_posterior_std(ct_problem, tiny_cfg, tmp_path):
    cfg = tiny_cfg("sgld", iterations=12, burn_in=4)
    res = reconstruct(ct_problem, cfg, tmp_path / "run", quiet=True)
    std = np.load(tmp_path / "run" / "uncertainty.npy")
    assert res.uncertainty is not None and std.shape == ct_problem.x_true.shape[1:]


def test_ensemble_needs_a_network_method(ct_problem):
    from dipkit.run.config import RunConfig

    cfg = RunConfig(method="tv", ensemble=2, device="cpu")
    with pytest.raises(DipkitError, match="ensemble"):
        reconstruct(ct_problem, cfg, quiet=True)


@pytest.mark.parametrize("method,params", [("self-guided", {"lr": 1e-2, "n_eta": 2}), ("sgld", {"burn_in": 4})])
def test_ensemble_equals_separate_runs_for_methods_with_per_step_randomness(ct_problem, tiny_cfg, method, params):
    """Each member draws its per-step noise (input noise η, Langevin noise) from its own generator."""
    cfg = tiny_cfg(method, iterations=8, **params)
    cfg.input.kind = "fbp"
    cfg.ensemble = 2
    ens = reconstruct(ct_problem, cfg, quiet=True)
    for b in range(2):
        one = tiny_cfg(method, iterations=8, **params)
        one.input.kind, one.seed = "fbp", b
        single = reconstruct(ct_problem, one, quiet=True)
        torch.testing.assert_close(ens.members[b:b + 1], single.reconstruction, rtol=1e-5, atol=1e-6)
