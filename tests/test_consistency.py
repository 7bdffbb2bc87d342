"""Data consistency on noiseless measurements (dipkit.run.consistency): the projection onto
{x : A x = y} by CGLS, when it applies, and what a run and ``auto`` record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dipkit.errors import DipkitError
from dipkit.run.config import RunConfig
from dipkit.run.consistency import data_consistency, project_onto_data
from dipkit.tasks import get_task

from .conftest import TINY_NET, tiny_image


def _problem(task, **kw):
    return get_task(task).simulate(tiny_image(32), seed=0, **kw)


def _err(x, p):
    return float((x - p.x_true.reshape(x.shape)).norm())


@pytest.mark.parametrize("task,kw", [("inpaint", {"missing": 0.5}), ("mri", {"noise_std": 0.0})])
def test_projection_replaces_the_measured_entries_when_a_at_is_the_identity(task, kw):
    p = _problem(task, **kw)
    x = torch.rand(p.physics.A_adjoint(p.y).shape, generator=torch.Generator().manual_seed(1))
    out, info = project_onto_data(p.physics, p.y, x)
    assert info["iterations"] == 1 and info["residual_after"] < 1e-6 < info["residual_before"]
    # one CGLS step is x + Aᵀ(y − A x): the measured entries become y, the others keep x
    np.testing.assert_allclose(out.numpy(), (x + p.physics.A_adjoint(p.y - p.physics.A(x))).numpy(), atol=1e-6)
    if task == "inpaint":
        m = p.physics.A(torch.ones_like(x)) > 0.5
        assert torch.equal(out[~m], x[~m])
        torch.testing.assert_close(out[m], p.y.reshape(out.shape)[m])


@pytest.mark.parametrize("task,kw", [("ct", {"views": 8, "noise_std": 0.0}), ("deblur", {"noise_std": 0.0}),
                                     ("superres", {"factor": 2})])
def test_every_cgls_iterate_is_closer_to_the_truth_than_the_image(task, kw):
    """x_true lies in {A x = y}; CGLS from 0 stays in the row space and its error falls at every step,
    so the bound ‖P(x) − x_true‖ ≤ ‖x − x_true‖ holds for any iteration cap — and tightens with it."""
    p = _problem(task, **kw)
    assert p.noise_sigma == 0.0
    x = torch.rand(p.physics.A_adjoint(p.y).shape, generator=torch.Generator().manual_seed(2))
    errors = [_err(x, p)]
    for k in (1, 2, 4, 8, 30):
        out, info = project_onto_data(p.physics, p.y, x, iterations=k)
        assert info["iterations"] <= k
        errors.append(_err(out, p))
    assert all(b <= a * (1 + 1e-5) for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.9 * errors[0]
    assert info["residual_after"] < 0.1 * info["residual_before"]


def test_data_consistency_modes_and_noise_levels():
    clean, noisy = _problem("inpaint", missing=0.5), _problem("inpaint", missing=0.5, noise_std=0.05)
    x = torch.full(clean.physics.A_adjoint(clean.y).shape, 0.5)
    out, rec = data_consistency(clean, x, "auto")
    assert rec["applied"] and rec["noise_sigma"] == 0.0 and rec["step"] == 1.0 and _err(out, clean) < _err(x, clean)
    assert rec["psnr_before"] is not None
    same, rec = data_consistency(clean, x, "off")
    assert rec is None and same is x
    noisy.meta.pop("noise_sigma")  # an unknown noise level: nothing is tried
    assert noisy.noise_sigma is None
    same, rec = data_consistency(noisy, x, "auto")
    assert rec is None and same is x
    out, rec = data_consistency(noisy, x, "on")  # asked for: the full projection whatever the noise
    assert rec["applied"] and "asked" in rec["reason"] and rec["step"] == 1.0
    with pytest.raises(DipkitError, match="data_consistency"):
        data_consistency(clean, x, "always")
    with pytest.raises(DipkitError, match="data_consistency must be"):
        RunConfig(method="tv", data_consistency="yes").validate()


def test_with_noise_the_step_is_shrunk_by_its_estimated_noise_share():
    """x + (1 − N/‖v‖²)·v with N = E‖A⁺η‖² estimated from σ: taken when the step is mostly signal (an
    image off the data by a smooth error, super-resolution), refused when it is mostly noise (the
    truth itself, CT: the step would be A⁺η alone)."""
    from dipkit.run.consistency import noise_share

    p = _problem("superres", factor=2, noise_std=0.01)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    x = p.x_true + 0.2 * (xx + yy)[None, None]  # off the data by a smooth (row-space) error
    full, _ = project_onto_data(p.physics, p.y, x)
    share = noise_share(p.physics, p.y, x, full - x, p.noise_sigma)
    assert 0 < share < 0.1
    same, rec = data_consistency(p, x, "auto")  # a single method's default: noiseless data only
    assert rec is None and same is x
    out, rec = data_consistency(p, x, "shrink")
    assert rec["applied"] and rec["noise_share"] == pytest.approx(share) and rec["step"] == pytest.approx(1 - share)
    torch.testing.assert_close(out, x + (1 - share) * (full - x))
    assert _err(out, p) < 0.5 * _err(x, p)
    assert rec["residual_after"] < rec["residual_before"]
    ct = _problem("ct", views=8, noise_std=0.05)
    same, rec = data_consistency(ct, ct.x_true.clone(), "shrink")
    assert not rec["applied"] and rec["noise_share"] > 0.5 and "mostly noise" in rec["reason"]
    torch.testing.assert_close(same, ct.x_true)


def _cfg(method, **sets):
    cfg = RunConfig(method=method, device="cpu", log_every=5, iterations=30)
    cfg.net.options.update(TINY_NET)
    for k, v in sets.items():
        cfg.set(k, v)
    return cfg


def test_a_run_on_noiseless_data_returns_the_projected_pick_and_records_it(tmp_path):
    from dipkit.run import reconstruct

    p = _problem("inpaint", missing=0.5)
    res = reconstruct(p, _cfg("dip", **{"early_stop.rule": "none"}), tmp_path / "on", quiet=True)
    dc = res["data_consistency"]
    assert dc["applied"] and dc["iterations"] == 1
    assert res["psnr"] > dc["psnr_before"]  # the observed pixels are now exact
    m = p.physics.A(torch.ones_like(res.reconstruction)) > 0.5
    recon = np.load(tmp_path / "on" / "reconstruction.npy")[None]
    np.testing.assert_allclose(recon[m.numpy()], p.y.reshape(recon.shape)[m.numpy()], atol=1e-6)
    # the iterates are the run's: its last one (estimates.npz final, no rule) is the image before the projection
    pick = np.load(tmp_path / "on" / "estimates.npz")["final"][None]
    assert not np.allclose(pick[m.numpy()], recon[m.numpy()], atol=1e-3)
    np.testing.assert_array_equal(pick[~m.numpy()], recon[~m.numpy()])
    off = reconstruct(p, _cfg("dip", data_consistency="off", **{"early_stop.rule": "none"}), None, quiet=True)
    assert "data_consistency" not in off and off["psnr"] == pytest.approx(dc["psnr_before"], abs=1e-4)
    assert json.loads((tmp_path / "on" / "metrics.json").read_text())["data_consistency"]["applied"]


def test_auto_ranks_the_fitted_candidates_and_projects_what_it_returns(tmp_path):
    from dipkit.run import reconstruct

    p = _problem("inpaint", missing=0.5)
    cfg = RunConfig(method="auto", device="cpu", log_every=5, max_iterations=40)
    cfg.net.options.update(TINY_NET)
    cfg.set("auto.candidates", "tv,dip")
    cfg.set("auto.min_steps", 10)
    res = reconstruct(p, cfg, tmp_path / "a", quiet=True)
    assert res["data_consistency"]["applied"]
    m = (p.physics.A(torch.ones_like(res.reconstruction)) > 0.5).numpy()
    recon = np.load(tmp_path / "a" / "reconstruction.npy")[None]
    np.testing.assert_allclose(recon[m], p.y.numpy().reshape(recon.shape)[m], atol=1e-6)
    # the network candidate's directory holds its pick as fitted (not projected): its misfit ranked it
    cand = np.load(tmp_path / "a" / "candidates" / "dip" / "reconstruction.npy")[None]
    assert not np.allclose(cand[m], recon[m], atol=1e-3)
    assert "Returned image projected onto the data" in (tmp_path / "a" / "selection.md").read_text()
    misfits = {r["candidate"]: r["misfit"] for r in res["auto"]["candidates"]}
    assert all(v is not None and v > 0 for v in misfits.values())


def test_data_consistency_off_and_on_read_as_yaml_booleans_are_accepted():
    for text, mode in (("off", "off"), ("on", "on"), ("auto", "auto"), ("shrink", "shrink")):
        for method in ("tv", "auto"):
            cfg = RunConfig(method=method)
            cfg.set("data_consistency", text)
            cfg.validate()
            assert cfg.data_consistency == mode


def test_cli_data_consistency_flag_and_summary(tmp_path, capsys):
    from dipkit.cli import main

    f = tmp_path / "inp.npz"
    _problem("inpaint", missing=0.5).save(f)
    assert main(["reconstruct", str(f), "--method", "tv", "--out", str(tmp_path / "a")]) == 0
    assert "projected onto the data (noiseless)" in capsys.readouterr().out
    assert main(["reconstruct", str(f), "--method", "tv", "--data-consistency", "off", "--out",
                 str(tmp_path / "b")]) == 0
    assert "projected" not in capsys.readouterr().out
    assert "data_consistency" not in json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert main(["reconstruct", str(f), "--method", "tv", "--data-consistency", "always"]) != 0


def test_method_auto_takes_the_shrunk_step_on_noisy_data_by_default(tmp_path):
    from dipkit.run import reconstruct

    p = _problem("superres", factor=2, noise_std=0.01)
    cfg = RunConfig(method="auto", device="cpu", log_every=5, max_iterations=30)
    cfg.net.options.update(TINY_NET)
    cfg.set("auto.candidates", "tv,dip")
    cfg.set("auto.min_steps", 10)
    res = reconstruct(p, cfg, None, quiet=True)
    assert res["data_consistency"]["mode"] == "shrink" and res["data_consistency"]["noise_share"] is not None
    cfg.set("data_consistency", "off")
    assert "data_consistency" not in reconstruct(p, cfg, None, quiet=True)
