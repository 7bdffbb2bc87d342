"""The Python API for any operator: dipkit.solve, DIPReconstructor (deepinv.test), outside operators
in problems (save/load), fbp/naive by least squares, user networks, devices."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dipkit
from dipkit.errors import DipkitError

from .conftest import TINY_NET, tiny_image

SMALL = {"net": {"name": "unet", **TINY_NET}, "log_every": 5}


def _inpainting(n=16):
    import deepinv as dinv

    torch.manual_seed(0)
    x = torch.from_numpy(tiny_image(n))[None]
    physics = dinv.physics.Inpainting((1, n, n), mask=0.7, rng=torch.Generator().manual_seed(0))
    return physics, x, physics(x)


class MatrixOp:
    """A plain object with A and A_adjoint (no deepinv, no spec): a random 0.6-undersampled matrix."""

    def __init__(self, n=16, m=150):
        g = torch.Generator().manual_seed(1)
        self.M = torch.randn(m, n * n, generator=g) / n
        self.n = n

    def A(self, x):
        return (x.reshape(x.shape[0], -1) @ self.M.T)[:, None]

    def A_adjoint(self, y):
        return (y[:, 0] @ self.M).reshape(y.shape[0], 1, self.n, self.n)


def test_solve_with_a_deepinv_operator_inside_no_grad(tmp_path):
    physics, x, y = _inpainting()
    with torch.no_grad():
        res = dipkit.solve(y, physics, "dip", iterations=20, x_true=x, lr=1e-2, out_dir=tmp_path / "run", **SMALL)
    assert isinstance(res, dipkit.RunResult) and res.reconstruction.shape == (1, 1, 16, 16)
    assert res["task"] == "external" and res["iterations"] == 20 and res["psnr"] is not None
    assert res.history["step"] == [5, 10, 15, 20]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["problem_file"] is None and m["problem_sha256"] is None and m["device"] == "cpu"
    # not more than the measurement's fit after 20 steps, but it learned something
    assert res.history["loss"][-1] < res.history["loss"][0]


def test_solve_is_seeded_and_equals_reconstruct_on_an_equivalent_problem():
    physics, x, y = _inpainting()
    a = dipkit.solve(y, physics, "dip", iterations=10, seed=2, lr=1e-2, **SMALL)
    b = dipkit.solve(y, physics, "dip", iterations=10, seed=2, lr=1e-2, **SMALL)
    assert torch.equal(a.reconstruction, b.reconstruction)
    problem = dipkit.Problem.external(physics, y)
    cfg = dipkit.RunConfig(method="dip", iterations=10, seed=2, device="cpu", params={"lr": 1e-2})
    cfg.update(SMALL)
    c = dipkit.reconstruct(problem, cfg, quiet=True)
    assert torch.equal(a.reconstruction, c.reconstruction)


def test_any_object_with_A_and_A_adjoint_and_the_least_squares_baselines():
    from dipkit.baselines.naive import LSQ_ITERATIONS
    from dipkit.physics.linalg import conjugate_gradient

    op = MatrixOp()
    x = torch.from_numpy(tiny_image(16))[None]
    y = op.A(x)
    aty = op.A_adjoint(y)
    lsq = conjugate_gradient(lambda v: op.A_adjoint(op.A(v)), aty, torch.zeros_like(aty), LSQ_ITERATIONS)
    for method in ("naive", "fbp"):
        res = dipkit.solve(y, op, method, x_true=x)
        assert torch.equal(res.reconstruction, lsq), method
        assert res["iterations"] is None
    res = dipkit.solve(y, op, "tv", iterations=10, alpha=0.01)
    assert res.reconstruction.shape == (1, 1, 16, 16)
    res = dipkit.solve(y, op, "dip", iterations=5, lr=1e-2, **SMALL)
    assert torch.isfinite(res.reconstruction).all()


def test_solve_errors_are_one_line():
    op = MatrixOp()
    y = op.A(torch.rand(1, 1, 16, 16))
    with pytest.raises(DipkitError, match="one measurement"):
        dipkit.solve(torch.cat([y, y]), op, "dip")
    with pytest.raises(DipkitError, match="A and A_adjoint"):
        dipkit.solve(y, object(), "dip")
    with pytest.raises(DipkitError, match="unknown method"):
        dipkit.solve(y, op, "nope")
    with pytest.raises(DipkitError, match="A_dagger"):
        dipkit.solve(y, op, "dip", iterations=2, input={"kind": "fbp"})
    with pytest.raises(DipkitError, match="NaN"):
        dipkit.solve(y * float("nan"), op, "dip")


def test_an_operator_on_another_device_is_an_error_not_a_move():
    op = MatrixOp()
    y = op.A(torch.rand(1, 1, 16, 16))
    op.M = op.M.to("meta")  # an operator whose tensors live elsewhere
    with pytest.raises(DipkitError, match="cannot move an operator it did not build"):
        dipkit.solve(y, op, "dip", device="cpu")
    problem = dipkit.Problem.external(MatrixOp(), y)
    assert problem.to("cpu") is problem  # the device it is on is not a move
    problem.physics.M = problem.physics.M.to("meta")
    with pytest.raises(DipkitError, match="cannot move"):
        problem.to("cpu")


def test_a_dipkit_operator_keeps_its_spec(ct_problem):
    """A dipkit-built operator has a spec: FBP is the real one, and the auto input is the FBP."""
    res = dipkit.solve(ct_problem.y, ct_problem.physics, "fbp")
    assert torch.equal(res.reconstruction, ct_problem.physics.A_dagger(ct_problem.y))
    assert res["task"] == "ct"


def test_user_network_and_its_input_channels():
    physics, x, y = _inpainting()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 1, 3, padding=1))

        def forward(self, z):
            return self.body(z)

    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    res = dipkit.solve(y, physics, "dip", iterations=10, net=net, lr=1e-2, log_every=5)
    assert res["net"] == {"module": "Net", "parameters": sum(p.numel() for p in net.parameters())}
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the user's module is untouched
    assert res.reconstruction.shape == (1, 1, 16, 16)
    with pytest.raises(DipkitError, match="expects 3 input channel"):
        dipkit.solve(y, physics, "dip", iterations=2, net=net, input={"kind": "adjoint"})
    with pytest.raises(DipkitError, match="ensemble"):
        dipkit.solve(y, physics, "dip", iterations=2, net=net, ensemble=2)
    wrong = torch.nn.Conv2d(3, 2, 3, padding=1)
    with pytest.raises(DipkitError, match="image is"):
        dipkit.solve(y, physics, "dip", iterations=2, net=wrong)


def test_external_problem_save_and_load(tmp_path):
    physics, x, y = _inpainting()
    problem = dipkit.Problem.external(physics, y, x_true=x)
    path = problem.save(tmp_path / "p.npz")
    with pytest.raises(DipkitError, match=r"outside operator .*Problem.load\(path, physics=op\)") as exc:
        dipkit.Problem.load(path)
    assert "\n" not in str(exc.value)
    back = dipkit.Problem.load(path, physics=physics)
    assert back.is_external and torch.equal(back.y, y) and torch.equal(back.x_true, x)
    assert back.img_shape == (1, 16, 16) and back.file_sha256 and back.file.endswith("p.npz")
    cfg = dipkit.RunConfig(method="dip", iterations=5, device="cpu", params={"lr": 1e-2})
    cfg.update(SMALL)
    res = dipkit.reconstruct(back, cfg, tmp_path / "run", quiet=True)
    assert res["problem_sha256"] == back.file_sha256
    # the CLI cannot supply the operator: one line
    from dipkit.cli import main

    assert main(["reconstruct", str(path), "--out", str(tmp_path / "cli")]) == 2
    # a problem with a spec takes no operator
    from dipkit.tasks import get_task

    ct = get_task("ct").simulate(tiny_image(16), views=8, noise_level=0.02, seed=0)
    ct.save(tmp_path / "ct.npz")
    with pytest.raises(DipkitError, match="describes its own operator"):
        dipkit.Problem.load(tmp_path / "ct.npz", physics=physics)


def test_dip_reconstructor_in_deepinv_test():
    import deepinv as dinv
    from torch.utils.data import DataLoader, Dataset

    n = 16
    imgs = torch.stack([torch.from_numpy(tiny_image(n)), torch.from_numpy(tiny_image(n)).flip(-1),
                        torch.from_numpy(tiny_image(n)).transpose(-1, -2)])

    class Images(Dataset):
        def __len__(self):
            return len(imgs)

        def __getitem__(self, i):
            return imgs[i]

    loader = DataLoader(Images(), batch_size=2, shuffle=False)
    physics = dinv.physics.Inpainting((1, n, n), mask=0.8, rng=torch.Generator().manual_seed(0))
    model = dipkit.DIPReconstructor("dip", iterations=15, lr=1e-2, **SMALL)
    assert isinstance(model, dinv.models.Reconstructor)
    out = dinv.test(model, loader, physics, online_measurements=True, show_progress_bar=False, verbose=False,
                    plot_images=False)
    assert "PSNR" in out and np.isfinite(out["PSNR"])
    assert len(model.results) == 1  # the last batch: one image
    with pytest.raises(DipkitError, match="unknown"):
        dipkit.DIPReconstructor("dip", nope=1)


def test_import_dipkit_stays_light():
    import subprocess
    import sys

    code = "import sys, dipkit; dipkit.__dir__(); assert 'torch' not in sys.modules, 'torch imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert {"solve", "DIPReconstructor", "RunResult"} <= set(dir(dipkit))
