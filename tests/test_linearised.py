"""Linearised DIP (dipkit.methods.linearised) against gradient descent on the dense linearised model and
against vanilla DIP."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, jacrev

from dipkit.engine import Callback, State, run
from dipkit.errors import DipkitError
from dipkit.methods import make_method
from dipkit.nets import UNet


class DenseOperator:
    """A dense matrix as a physics stub on ``[B, 1, H, W]`` images (measurements ``[B, 1, m]``)."""

    def __init__(self, mat: torch.Tensor, img_shape):
        self.mat, self.img_shape = mat, tuple(img_shape)

    def A(self, x):
        return (x.reshape(x.shape[0], -1) @ self.mat.T).reshape(x.shape[0], 1, -1)

    def A_adjoint(self, y):
        return (y.reshape(y.shape[0], -1) @ self.mat).reshape(y.shape[0], *self.img_shape)


def setup_problem(seed=0, size=8, m=40):
    torch.manual_seed(seed)
    net = UNet(1, 1, channels=[4, 4], skip_levels=()).double()   # a two-layer (two-scale) net
    z = torch.randn(1, 1, size, size, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed + 1)
    mat = torch.randn(m, size * size, generator=gen, dtype=torch.float64) / size
    x_true = torch.rand(1, 1, size, size, generator=gen, dtype=torch.float64)
    op = DenseOperator(mat, (1, size, size))
    y = op.A(x_true)
    return net, z, op, y


def make_state(net, z, op, y, steps):
    return State(physics=op, y=y, max_steps=steps, generator=torch.Generator().manual_seed(0), net=net, z=z)


def flat(net):
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def dense_jacobian(net, z):
    params = {n: p.detach() for n, p in net.named_parameters()}
    jac = jacrev(lambda p: functional_call(net, p, (z,)).reshape(-1))(params)
    return torch.cat([jac[n].reshape(z.numel(), -1) for n in params], dim=1)


def test_gd_steps_equal_gradient_descent_on_dense_linear_model():
    net, z, op, y = setup_problem()
    J = dense_jacobian(net, z)
    f0 = net(z).detach().reshape(-1)
    theta0 = flat(net)
    A = op.mat
    method = make_method("linearised-dip", step=0.5, power_iters=200)
    state = run(method, make_state(net, z, op, y, steps=3))
    tau = state.aux["linearised_tau"]
    # τ = step / ‖AJ‖², the power iteration's ‖AJ‖² against the dense one
    smax = torch.linalg.matrix_norm(A @ J, ord=2)
    assert float(tau) == pytest.approx(0.5 / float(smax) ** 2, rel=1e-6)
    # three steps of θ ← θ − τ Jᵀ Aᵀ (A (f0 + J(θ − θ0)) − y), with the dense J
    theta = theta0.clone()
    for _ in range(3):
        x = f0 + J @ (theta - theta0)
        theta = theta - float(tau) * J.T @ (A.T @ (A @ x - y.reshape(-1)))
    assert torch.allclose(flat(net), theta, rtol=1e-10, atol=1e-12)
    # θ0 is kept in state.aux (checkpointed with the run)
    kept = torch.cat([state.aux["theta0/" + n].reshape(-1) for n, _ in net.named_parameters()])
    assert torch.equal(kept, theta0)


def test_output_is_the_taylor_model():
    net, z, op, y = setup_problem()
    J = dense_jacobian(net, z)
    f0 = net(z).detach().reshape(-1)
    theta0 = flat(net)
    method = make_method("linearised-dip", optimizer="adam", lr=1e-2)
    state = run(method, make_state(net, z, op, y, steps=4))
    x_lin = method.fresh_output(state).reshape(-1)
    assert torch.allclose(x_lin, f0 + J @ (flat(net) - theta0), atol=1e-10)
    assert not torch.allclose(x_lin, net(z).detach().reshape(-1), atol=1e-6)   # not the network itself


@pytest.mark.parametrize("optimizer", ["adam", "gd"])
def test_small_steps_match_vanilla_dip_to_first_order(optimizer):
    """With step size η, the linearised and the vanilla iterates agree to O(η²) per step: the first one
    exactly (the same gradient at θ0), the difference after a few steps shrinks like η² while the
    displacement shrinks like η."""

    def iterates(name, lr, steps=4):
        net, z, op, y = setup_problem()
        if name == "dip":
            method = make_method("dip", lr=lr)
            if optimizer == "gd":
                method.make_optimizer = lambda groups: torch.optim.SGD(groups)
        else:
            method = make_method("linearised-dip", optimizer=optimizer, lr=lr)
            if optimizer == "gd":  # an absolute step, the same as the DIP's: overwrite τ
                method._curvature = lambda state, names: torch.tensor([1.0 / lr], dtype=torch.float64)
                method.step = 1.0
        xs = []

        class Grab(Callback):
            def on_step_end(self, state):
                xs.append(state.x.clone())
                if state.step == 1:
                    xs.append(flat(state.net))   # θ1

        x0 = net(z).detach()
        run(method, make_state(net, z, op, y, steps=steps), [Grab()])
        return x0, xs[:1] + xs[2:], xs[1]

    ratios = []
    for lr in (1e-5, 1e-6):
        x0, dip, theta1_dip = iterates("dip", lr)
        _, lin, theta1_lin = iterates("lin", lr)
        assert torch.allclose(dip[0], lin[0], atol=1e-12)      # the outputs at θ0 agree exactly,
        # and so does the first step (up to Adam's lr·g/(|g| + ε) of the rounding noise of zero gradients,
        # e.g. of a convolution bias before a normalisation)
        assert torch.allclose(theta1_dip, theta1_lin, rtol=1e-10, atol=1e-6 * lr)
        move = (dip[-1] - x0).norm()
        diff = (dip[-1] - lin[-1]).norm()
        assert diff < 0.05 * move
        ratios.append(float(diff / move))
    assert ratios[1] < 0.2 * ratios[0]                        # the relative gap is O(η)


def test_runs_through_runner_and_lowers_loss(ct_problem, tiny_cfg):
    from dipkit.run import reconstruct

    res = reconstruct(ct_problem, tiny_cfg("linearised-dip", iterations=20), quiet=True)
    loss = res.history["loss"]
    assert loss[-1] < 0.5 * loss[0]
    assert res["params"]["optimizer"] == "gd" and res["params"]["step"] == 1.0


def test_ensemble_members_are_separate_runs(ct_problem, tiny_cfg):
    """Each member has its own θ0 and its own τ = step/‖A J_b‖²: member b is the run with seed + b."""
    from dipkit.run.runner import build_state, resolve_config

    def final(ensemble, seed, steps=8):
        cfg = tiny_cfg("linearised-dip", iterations=steps)
        cfg.ensemble, cfg.seed = ensemble, seed
        method = cfg.validate()
        state = build_state(method, ct_problem, resolve_config(cfg, method, ct_problem), torch.device("cpu"))
        return run(method, state)

    both = final(2, 0)
    for b in range(2):
        one = final(1, b)
        assert torch.allclose(both.aux["linearised_tau"][b], one.aux["linearised_tau"][0])
        assert torch.allclose(both.estimate[b], one.estimate[0], atol=1e-5)


def test_bf16_is_refused_with_one_line(ct_problem, tiny_cfg):
    from dipkit.run import reconstruct

    cfg = tiny_cfg("linearised-dip", iterations=2)
    cfg.precision = "bf16"
    with pytest.raises(DipkitError, match="full precision"):
        reconstruct(ct_problem, cfg, quiet=True)


@pytest.mark.parametrize("params, message", [
    (dict(optimizer="sgd"), "optimizer must be"),
    (dict(step=0), "step must be a positive"),
    (dict(power_iters=0), "power_iters"),
])
def test_bad_parameters(params, message):
    with pytest.raises(DipkitError, match=message):
        make_method("linearised-dip", **params)
