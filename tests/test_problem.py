import json

import numpy as np
import pytest
import torch

from dipkit.errors import DipkitError
from dipkit.problem import Problem
from dipkit.tasks import get_task

from .conftest import tiny_image


@pytest.mark.parametrize("task", ["ct", "ct-fan"])
def test_save_load_round_trip_is_bit_identical(tmp_path, task):
    p = get_task(task).simulate(tiny_image(24), views=10, noise_level=0.05, seed=3)
    path = tmp_path / "p.npz"
    p.save(path)
    q = Problem.load(path)
    assert torch.equal(p.y, q.y) and torch.equal(p.x_true, q.x_true)
    assert q.spec == p.spec and q.meta == json.loads(json.dumps(p.meta))
    x = torch.rand(1, 1, 24, 24)
    assert torch.equal(p.physics.A(x), q.physics.A(x))
    assert torch.equal(p.physics.A_dagger(p.y), q.physics.A_dagger(q.y))


def test_noise_is_relative_and_seeded():
    t = get_task("ct")
    a = t.simulate(tiny_image(24), views=10, noise_level=0.02, seed=1)
    b = t.simulate(tiny_image(24), views=10, noise_level=0.02, seed=1)
    c = t.simulate(tiny_image(24), views=10, noise_level=0.02, seed=2)
    assert torch.equal(a.y, b.y) and not torch.equal(a.y, c.y)
    clean = a.physics.A(a.x_true)
    assert a.meta["noise_sigma"] == pytest.approx(0.02 * float(clean.abs().mean()), rel=1e-6)
    resid = (a.y - clean).std()
    assert float(resid) == pytest.approx(a.meta["noise_sigma"], rel=0.15)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04garbage"])
def test_load_bad_files(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(DipkitError):
        Problem.load(path)


def test_load_other_npz_and_missing(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(DipkitError, match="not a dipkit problem"):
        Problem.load(path)
    with pytest.raises(DipkitError, match="not found"):
        Problem.load(tmp_path / "missing.npz")


def test_load_rejects_nan_measurement(tmp_path, ct_problem):
    path = tmp_path / "p.npz"
    ct_problem.y[0, 0, 0, 0] = float("nan")
    ct_problem.save(path)
    with pytest.raises(DipkitError, match="NaN"):
        Problem.load(path)


def test_ct_rejects_bad_views():
    with pytest.raises(DipkitError):
        get_task("ct").simulate(tiny_image(16), views=0)
