"""Every registered method: a short smoke run on a tiny problem lowers the error vs its input,
the same seed gives the same result, and `dipkit methods` lists it with its reference."""

import pytest
import torch

from dipkit.methods import METHODS
from dipkit.metrics import psnr
from dipkit.run import reconstruct

#: per-method overrides for the 30-step smoke run (fast learning rates for tiny problems)
SMOKE = {name: ({"lr": 1e-2} if "lr" in cls.hyperparameters() else {}) for name, cls in METHODS.items()}
SMOKE["subspace-dip"] = {"k": 4, "lr": 0.3}


def _cfg(tiny_cfg, name, iterations=30, request=None):
    cfg = tiny_cfg(name, iterations=iterations, **SMOKE[name])
    if getattr(METHODS[name], "needs_pretrained", False):  # e.g. subspace-dip: tiny pre-trained weights
        cfg.net.options["weights"] = str(request.getfixturevalue("pretrained"))
    return cfg


@pytest.mark.parametrize("name", sorted(METHODS))
def test_smoke_lowers_error_vs_input(name, ct_problem, tiny_cfg, request):
    """30 steps with default settings (fast lr): the error falls from the first recorded estimate
    (step 5) to the end; a baseline with iterations beats the FBP."""
    res = reconstruct(ct_problem, _cfg(tiny_cfg, name, request=request), quiet=True)
    x = res.reconstruction
    assert x.shape == ct_problem.x_true.shape and torch.isfinite(x).all()
    final = float(psnr(x, ct_problem.x_true))
    if METHODS[name].uses_network:
        assert final > res.history["psnr"][0] + 1.0
    elif METHODS[name].default_iterations is not None:  # iterative baselines
        fbp = ct_problem.physics.A_dagger(ct_problem.y)
        assert final > float(psnr(fbp, ct_problem.x_true))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_same_seed_same_result(name, ct_problem, tiny_cfg, request):
    a = reconstruct(ct_problem, _cfg(tiny_cfg, name, 8, request), quiet=True)
    b = reconstruct(ct_problem, _cfg(tiny_cfg, name, 8, request), quiet=True)
    assert torch.equal(a.reconstruction, b.reconstruction)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_listed_with_reference(name, capsys):
    from dipkit.cli import main

    cls = METHODS[name]
    assert cls.description and cls.reference and cls.__doc__
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert f"\n{name} " in "\n" + out and cls.reference in out
