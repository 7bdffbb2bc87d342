"""The matrix-free Jacobian spectrum (dipkit.analysis.jacobian) against a dense SVD, and ``dipkit analyze``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from dipkit.analysis import JacobianOperator, jacobian_svd
from dipkit.cli import main
from dipkit.errors import DipkitError
from dipkit.nets import UNet


class DenseOperator:
    """A dense matrix as a physics stub: ``A(x)``, ``A_adjoint(y)`` on ``[1, C, H, W]`` images."""

    def __init__(self, mat: torch.Tensor, img_shape):
        self.mat, self.img_shape = mat, tuple(img_shape)

    def A(self, x):
        return (x.reshape(x.shape[0], -1) @ self.mat.T).reshape(x.shape[0], 1, -1)

    def A_adjoint(self, y):
        return (y.reshape(y.shape[0], -1) @ self.mat).reshape(y.shape[0], *self.img_shape)


def tiny_net_and_input(size=8, seed=0):
    """A 2-layer (two-scale) U-Net without skips, float64, and its input."""
    torch.manual_seed(seed)
    net = UNet(1, 1, channels=[4, 4], skip_levels=()).double()
    z = torch.randn(1, 1, size, size, dtype=torch.float64)
    return net, z


def dense_jacobian(net, z) -> torch.Tensor:
    """J = ∂f_θ(z)/∂θ formed explicitly, [n, p], columns in named_parameters order."""
    params = {n: p.detach() for n, p in net.named_parameters()}
    jac = jacrev(lambda p: functional_call(net, p, (z,)).reshape(-1))(params)
    return torch.cat([jac[n].reshape(z[0].numel() // z.shape[1], -1) for n in params], dim=1)


def _check_against_dense(spec, mat, k):
    U, S, Vh = torch.linalg.svd(mat, full_matrices=False)
    vals = spec.values
    assert torch.allclose(vals, S[:k], rtol=1e-4, atol=0)
    left = spec.left.reshape(k, -1)
    for i in range(k):
        gap = min(abs(S[i] - S[j]) for j in range(k + 1) if j != i) / S[0]
        if gap < 1e-3:  # a (nearly) repeated value: its vectors are not unique
            continue
        assert abs(float(left[i] @ U[:, i])) == pytest.approx(1.0, abs=1e-6)
        assert abs(float(spec.right[i] @ Vh[i])) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("method", ["lanczos", "randomized"])
def test_spectrum_matches_dense_svd(method):
    net, z = tiny_net_and_input()
    J = dense_jacobian(net, z)
    assert J.shape[0] == 64 and J.shape[1] == sum(p.numel() for p in net.parameters())
    k = 6
    kw = {"power_iters": 6} if method == "randomized" else {}
    spec = jacobian_svd(net, z, k, method=method, **kw)
    _check_against_dense(spec, J, k)
    assert spec.images.shape == (k, 1, 8, 8)
    assert torch.equal(spec.images.reshape(k, -1), spec.left.reshape(k, -1))
    tol = 1e-6 if method == "lanczos" else 1e-2  # Lanczos' Krylov space is exact here; the randomised is not
    assert (spec.residuals < tol * spec.values[0]).all()
    assert torch.allclose(spec.output0, net(z)[0].detach())


def test_spectrum_with_operator_matches_dense_svd():
    net, z = tiny_net_and_input()
    J = dense_jacobian(net, z)
    gen = torch.Generator().manual_seed(1)
    mat = torch.randn(40, 64, generator=gen, dtype=torch.float64)
    op = DenseOperator(mat, (1, 8, 8))
    k = 5
    spec = jacobian_svd(net, z, k, physics=op)
    _check_against_dense(spec, mat @ J, k)
    assert spec.with_operator and spec.left.shape == (k, 1, 40)
    # the image directions are J v_i, normalised
    jv = spec.right @ J.T
    jv = jv / jv.norm(dim=1, keepdim=True)
    assert torch.allclose(spec.images.reshape(k, -1), jv, atol=1e-8)


def test_operator_products_are_adjoint():
    net, z = tiny_net_and_input()
    op = JacobianOperator(net, z)
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(op.p, generator=gen, dtype=torch.float64)
    u = torch.randn(op.n, generator=gen, dtype=torch.float64)
    assert float(op.matvec(v) @ u) == pytest.approx(float(v @ op.rmatvec(u)), rel=1e-10)


def test_rank_deficient_and_bad_arguments():
    net, z = tiny_net_and_input(size=2)  # n = 4 pixels: at most 4 values
    spec = jacobian_svd(net, z, 10)
    assert spec.values.shape[0] == 4 and spec.info["found"] == 4
    with pytest.raises(DipkitError, match="k must be"):
        jacobian_svd(net, z, 0)
    with pytest.raises(DipkitError, match="unknown method"):
        jacobian_svd(net, z, 2, method="power")
    with pytest.raises(DipkitError, match="one input"):
        jacobian_svd(net, torch.cat([z, z]), 2)


@pytest.mark.parametrize("with_operator", [False, True])
def test_cli_analyze_jacobian(tmp_path, ct_problem_file, with_operator, capsys):
    out = tmp_path / "jac"
    argv = ["analyze", "jacobian", str(ct_problem_file), "--k", "3", "--iters", "8", "--seed", "1",
            "--set", "net.scales=3", "--set", "net.channels=4", "--input", "noise", "--out", str(out)]
    assert main(argv + (["--with-operator"] if with_operator else [])) == 0
    rows = (out / "spectrum.csv").read_text().splitlines()
    assert rows[0] == "index,sigma,ntk_eigenvalue,residual" and len(rows) == 4
    sig = [float(r.split(",")[1]) for r in rows[1:]]
    assert sig == sorted(sig, reverse=True) and sig[-1] > 0
    assert np.load(out / "eigenimages.npy").shape == (3, 1, 32, 32)
    assert np.load(out / "initial_output.npy").shape == (1, 32, 32)
    assert (out / "left_vectors.npy").exists() == with_operator
    for name in ["spectrum.png", "eigenimages.png", "summary.json"]:
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["operator"] == ("A·J" if with_operator else "J") and summary["input"] == "noise"
    assert summary["values"] == pytest.approx(sig, rel=1e-6)
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["analyze"], "choose an analysis"),
    (["analyze", "jacobian", "PROBLEM", "--out", "x", "--set", "lr=1"], "only net.* and input.*"),
    (["analyze", "jacobian", "PROBLEM", "--out", "x", "--net", "nope"], "unknown network"),
    (["analyze", "jacobian", "PROBLEM", "--out", "x", "--k", "0"], "positive integer"),
])
def test_cli_analyze_errors(tmp_path, ct_problem_file, argv, message, capsys):
    argv = [str(ct_problem_file) if a == "PROBLEM" else str(tmp_path / a) if a == "x" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dipkit: error:") and message in err[0], err
    assert not (tmp_path / "x").exists()
