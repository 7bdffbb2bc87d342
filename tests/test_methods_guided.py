"""Self-guidance and Bayesian methods do what their Algorithm boxes say:

* aSeqDIP (CT paper Alg. 8): the next input is exactly the network output after N steps, the
  loss compares f_θ(z_{k-1}) with z_{k-1}, the estimate is z, z_0 = Aᵀy/max or y;
* Self-Guided DIP (Alg. 7): z is optimised with its own lr, its gradient is that of the loss,
  the N_η perturbed inputs go through the network in one batched forward, EMA output;
* SGLD: the Langevin noise has std √(2·lr·T), the weight prior is SGD weight decay, the
  posterior mean / variance after burn-in are the running mean / variance.
"""

import math

import pytest
import torch

from dipkit.engine import EMA, Callback, State, run
from dipkit.errors import DipkitError
from dipkit.methods import make_method
from dipkit.methods.aseqdip import ASeqDIP
from dipkit.methods.self_guided import SelfGuidedDIP
from dipkit.methods.sgld import SGLD, PosteriorMean
from dipkit.nets import build_net

TINY = {"scales": 3, "channels": 8}


def _state(problem, *, steps=6, batch=1, in_ch=1, seed=0):
    torch.manual_seed(seed)
    net = build_net("unet", in_ch, 1, **TINY)
    gen = torch.Generator().manual_seed(seed)
    _, h, w = problem.img_shape
    z = 0.1 * torch.randn((batch, in_ch, h, w), generator=gen)
    y = problem.y.repeat(batch, *[1] * (problem.y.ndim - 1))
    return State(physics=problem.physics, y=y, max_steps=steps, generator=gen, net=net, z=z)


def _clone_sd(state):
    return {k: (v.clone() if torch.is_tensor(v) else v) for k, v in state.state_dict().items()}


# ---------------------------------------------------------------------- aSeqDIP
class _OuterCheck(Callback):
    """Before each outer update: record f_θ(z_{k-1}) with the current θ; after it: compare."""

    def __init__(self, method):
        self.method, self.n_outer, self.z_prev = method, 0, None

    def on_step_end(self, state):
        m = self.method
        if self.z_prev is not None:
            assert torch.equal(state.z, self.z_prev)  # z changes only at outer updates
        self.z_prev = state.z.clone()
        assert state.estimate is state.z  # the estimate is z (Alg. 8 line 9)
        d = (state.x - state.z).pow(2).flatten(1).sum(1)
        assert torch.allclose(state.terms["autoencoder"], 0.5 * m.lam * state.opnorm_sq() * d, rtol=1e-4)
        if state.step % m.inner_steps == 0:
            with torch.no_grad():
                self.expected = state.net(state.z).clone()
            self.z_before = state.z.clone()

    def on_outer_end(self, state):
        assert torch.allclose(state.z, self.expected, atol=1e-6, rtol=0)
        assert not torch.allclose(state.z, self.z_before)
        assert state.estimate is state.z
        assert state.outer_step == state.step // self.method.inner_steps
        self.n_outer += 1
        self.z_prev = state.z.clone()


def test_aseqdip_next_input_is_network_output(ct_problem):
    m = ASeqDIP(lr=1e-2, inner_steps=3)
    st = _state(ct_problem, steps=10, batch=2)
    cb = _OuterCheck(m)
    run(m, st, [cb])
    assert cb.n_outer == 3  # K = ⌊10/3⌋; the last partial block leaves z = z_3
    assert st.estimate is st.z and torch.allclose(st.z, cb.expected, atol=1e-6, rtol=0)


def test_aseqdip_initial_input(ct_problem):
    st = _state(ct_problem)
    m = ASeqDIP(z0="adjoint")
    m.setup(st)
    aty = ct_problem.physics.A_adjoint(ct_problem.y)
    assert torch.allclose(st.z, aty / aty.abs().amax())  # z_0 = Aᵀy / max|Aᵀy|
    assert "opnorm_sq" in st.aux and float(st.opnorm_sq()) > 1  # ‖A‖² estimated once, cached
    # image-domain operator (y has the image shape): z_0 = y
    import deepinv as dinv

    y = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    den = State(physics=dinv.physics.Denoising(), y=y, max_steps=1, generator=torch.Generator(),
                net=build_net("unet", 1, 1, **TINY), z=torch.zeros(2, 1, 8, 8))
    ASeqDIP().setup(den)
    assert torch.equal(den.z, y) and den.z is not y
    # z0="input" keeps the run's input; a resumed run keeps its z
    st2 = _state(ct_problem)
    z_in = st2.z.clone()
    ASeqDIP(z0="input").setup(st2)
    assert torch.equal(st2.z, z_in)
    st2.z = z_in + 1
    ASeqDIP().setup(st2, resuming=True)
    assert torch.equal(st2.z, z_in + 1)
    with pytest.raises(DipkitError, match="channel"):
        ASeqDIP(z0="input").setup(_state(ct_problem, in_ch=3))
    with pytest.raises(DipkitError, match="image shape"):
        ASeqDIP(z0="y").setup(_state(ct_problem))


@pytest.mark.parametrize("task", ["ct", "ct-fan"])
def test_aseqdip_auto_start_on_ct_is_the_fbp(task):
    """z0='auto' on CT (parallel and fan beam, also in a validation split's fit view) is the FBP:
    from the max-normalised adjoint aSeqDIP ended below the FBP (64² head CT, parallel 30 views:
    18.1 dB vs FBP 26.3; see the class docs), from the FBP above it."""
    from dipkit.physics.split import ValidationSplit
    from dipkit.tasks import get_task
    from tests.conftest import tiny_image

    p = get_task(task).simulate(tiny_image(16), views=12, noise_level=0.02, seed=0)
    st = _state(p)
    ASeqDIP().setup(st)
    fbp = p.physics.A_dagger(p.y)
    assert torch.allclose(st.z, fbp)
    aty = p.physics.A_adjoint(p.y)
    assert not torch.allclose(st.z, aty / aty.abs().amax(), atol=0.05)
    split = ValidationSplit(p.physics, p.y, fraction=0.1)
    fit = State(physics=split.fit_physics(), y=split.fit_y(), max_steps=1, generator=torch.Generator(),
                net=st.net, z=torch.zeros_like(st.z))
    ASeqDIP().setup(fit)
    assert torch.allclose(fit.z, split.fit_physics().A_dagger(split.fit_y()))


def test_aseqdip_fbp_initial_input(ct_problem):
    st = _state(ct_problem)
    ASeqDIP(z0="fbp").setup(st)
    fbp = ct_problem.physics.A_dagger(ct_problem.y)  # the operator's direct reconstruction (FBP)
    assert torch.allclose(st.z, fbp) and st.z is not ct_problem.y
    # FBP is in image units (unlike the max-normalised adjoint): close to the image's range
    assert 0.5 < float(st.z.max()) < 2.0


def test_aseqdip_history_peak_and_final_agree(ct_problem, tiny_cfg):
    """The last z update happens at the last step, after on_step_end: the history's last row,
    the peak and the final value must still all describe the returned estimate."""
    from dipkit.metrics import psnr
    from dipkit.run import reconstruct

    for steps, every in [(12, 4), (12, 6), (11, 4)]:  # last step: an outer update / none
        cfg = tiny_cfg("aseqdip", iterations=steps, lr=1e-2, inner_steps=2)
        cfg.log_every = every
        res = reconstruct(ct_problem, cfg, quiet=True)
        hist = res.history
        final = res["final"]["psnr"]
        assert hist["step"][-1] == steps
        assert hist["psnr"][-1] == pytest.approx(final, abs=1e-4)   # the last row is the returned z_K
        assert res["peak"]["psnr"] >= final - 1e-6
        assert res["peak"]["psnr"] == pytest.approx(max(hist["psnr"]), abs=1e-9)
        # the peak estimate is the one of the best row
        p_peak = float(psnr(res.estimates["peak"], ct_problem.x_true))
        assert p_peak == pytest.approx(res["peak"]["psnr"], abs=1e-4)
        # every row at an outer-update step describes z_k, not z_{k-1}
        assert len(hist["step"]) == len(set(hist["step"]))


def test_aseqdip_resume_matches_uninterrupted(ct_problem):
    a = _state(ct_problem, steps=8)
    run(ASeqDIP(lr=1e-2, inner_steps=2), a, [])
    part = _state(ct_problem, steps=5)
    m = ASeqDIP(lr=1e-2, inner_steps=2)
    run(m, part, [])
    b = _state(ct_problem, steps=8, seed=1)
    b.optimizer = m.make_optimizer(m.param_groups(b))
    b.load_state_dict(_clone_sd(part))
    run(ASeqDIP(lr=1e-2, inner_steps=2), b, [])
    assert torch.allclose(a.estimate, b.estimate, atol=1e-5)


# ---------------------------------------------------------------------- Self-Guided DIP
class _Calls:
    def __init__(self, net):
        self.shapes = []
        net.register_forward_hook(lambda mod, inp, out: self.shapes.append(tuple(inp[0].shape)))


def test_self_guided_one_batched_forward(ct_problem):
    st = _state(ct_problem, batch=2)
    m = SelfGuidedDIP(n_eta=3)
    m.setup(st)
    calls = _Calls(st.net)
    x = m.forward(st)
    assert calls.shapes == [(6, 1, 32, 32)]  # one forward of B·N_η inputs
    assert x.shape == (2, 1, 32, 32)
    zs = m.perturbed_inputs(st).reshape(2, 3, 1, 32, 32)
    eta = zs - st.z.detach().unsqueeze(1)
    m_b = 0.5 * st.z.detach().abs().flatten(1).amax(1)
    assert (eta >= 0).all() and (eta <= m_b.view(2, 1, 1, 1, 1)).all()  # η ~ U(0, max|z|/2)
    assert not torch.allclose(eta[:, 0], eta[:, 1])  # fresh noise per copy


def test_self_guided_gradient_wrt_z_is_the_loss_gradient(ct_problem):
    st = _state(ct_problem)
    m = SelfGuidedDIP(lam=0.1, n_eta=2, clip=None)
    m.setup(st)
    groups = m.param_groups(st)
    assert groups[1]["params"][0] is st.z and st.z.requires_grad and groups[1]["lr"] == m.lr
    g0 = st.generator.get_state()
    x = m.forward(st)
    terms = m.loss(st, x)
    sum(terms.values()).sum().backward()
    grad = st.z.grad.clone()
    # the same objective written out (Alg. 7 line 4), same noise
    st.generator.set_state(g0)
    z = st.z.detach().clone().requires_grad_(True)
    eta = torch.rand((1, 2, 1, 32, 32), generator=st.generator) * 0.5 * z.detach().abs().max()
    xt = st.net((z.unsqueeze(1) + eta).reshape(2, 1, 32, 32)).mean(0, keepdim=True)
    r = ct_problem.physics.A(xt) - ct_problem.y
    obj = 0.5 * r.pow(2).sum() + 0.5 * 0.1 * st.opnorm_sq() * (xt - z).pow(2).sum()
    (ref,) = torch.autograd.grad(obj, z)
    assert grad.abs().max() > 0
    assert torch.allclose(grad, ref, rtol=1e-3, atol=1e-4 * ref.abs().max())


def test_self_guided_updates_z_with_its_own_lr_and_ema(ct_problem):
    st = _state(ct_problem, steps=4)
    z0 = st.z.clone()
    m = SelfGuidedDIP(lr=1e-3, lr_z=1e-2)
    run(m, st, [])
    assert st.optimizer.param_groups[1]["lr"] == 1e-2
    step = (st.z.detach() - z0).abs()
    assert 1e-3 < step.max() < 4 * 1e-2 * 3  # Adam moves z by about lr_z per step
    assert isinstance(m.output, EMA) and m.output.beta == 0.99
    frozen = _state(ct_problem, steps=2)
    z1 = frozen.z.clone()
    run(SelfGuidedDIP(lr=1e-3, lr_z=1e-12), frozen, [])
    assert torch.allclose(frozen.z.detach(), z1, atol=1e-9)


def test_self_guided_rejects_multichannel_input(ct_problem):
    with pytest.raises(DipkitError, match="channel"):
        SelfGuidedDIP().setup(_state(ct_problem, in_ch=3))


def test_self_guided_clip_is_per_sample_for_z(ct_problem):
    st = _state(ct_problem, batch=2)
    m = SelfGuidedDIP(clip=1.0)
    m.setup(st)
    st.z.grad = torch.stack([torch.full((1, 32, 32), 10.0), torch.full((1, 32, 32), 1e-4)])
    m.before_update(st)
    norms = st.z.grad.flatten(1).norm(dim=1)
    assert norms[0] == pytest.approx(1.0, rel=1e-4) and norms[1] == pytest.approx(1e-4 * 32, rel=1e-4)


def test_self_guided_penalty_each_realisation(ct_problem):
    """penalty="each": (λ/2)‖A‖²·mean_i ‖f_θ(z+η_i) − z‖² (CT paper code) = the box's penalty on the
    mean plus the spread of the realisations; its gradient is that of the written-out objective."""
    lam, n = 0.1, 3
    st = _state(ct_problem, batch=2)
    each = SelfGuidedDIP(lam=lam, n_eta=n, clip=None, penalty="each")
    each.setup(st)
    each.param_groups(st)
    g0 = st.generator.get_state()
    zs = each.perturbed_inputs(st).detach()
    st.generator.set_state(g0)
    x = each.forward(st)
    terms = each.loss(st, x)
    with torch.no_grad():
        outs = st.net(zs).reshape(2, n, 1, 32, 32)
        z = st.z.detach()
        w = 0.5 * lam * st.opnorm_sq()
        per = (outs - z.unsqueeze(1)).pow(2).flatten(2).sum(2)          # [B, N_η]
        mean_pen = (outs.mean(1) - z).pow(2).flatten(1).sum(1)
        spread = (outs - outs.mean(1, keepdim=True)).pow(2).flatten(2).sum(2).mean(1)
    assert torch.allclose(x, outs.mean(1), atol=1e-6)                    # the output is still the mean
    assert torch.allclose(terms["self_guidance"], w * per.mean(1), rtol=1e-5)
    assert torch.allclose(terms["self_guidance"], w * (mean_pen + spread), rtol=1e-4)
    assert bool((spread > 0).all())                                     # so "each" > "mean" here
    # the default ("mean") penalises the mean output only (Alg. 7 line 4), with the same noise
    mean = SelfGuidedDIP(lam=lam, n_eta=n, clip=None)
    st.generator.set_state(g0)
    t_mean = mean.loss(st, mean.forward(st))
    assert torch.allclose(t_mean["self_guidance"], w * mean_pen, rtol=1e-5)
    assert torch.allclose(t_mean["data"], terms["data"])
    # gradient w.r.t. z of the "each" objective, written out
    sum(terms.values()).sum().backward()
    grad = st.z.grad.clone()
    zz = st.z.detach().clone().requires_grad_(True)
    eta = (zs.reshape(2, n, 1, 32, 32) - z.unsqueeze(1))
    o = st.net((zz.unsqueeze(1) + eta).reshape(2 * n, 1, 32, 32)).reshape(2, n, 1, 32, 32)
    r = ct_problem.physics.A(o.mean(1)) - st.y
    obj = 0.5 * r.pow(2).sum() + (w.view(2, 1) * (o - zz.unsqueeze(1)).pow(2).flatten(2).sum(2)).mean(1).sum()
    (ref,) = torch.autograd.grad(obj, zz)
    assert torch.allclose(grad, ref, rtol=1e-3, atol=1e-4 * ref.abs().max())


def test_self_guided_penalty_each_runs(ct_problem):
    st = _state(ct_problem, steps=3)
    m = SelfGuidedDIP(lr=1e-3, penalty="each")
    run(m, st, [])
    assert m.config()["penalty"] == "each" and torch.isfinite(st.estimate).all()


# ---------------------------------------------------------------------- SGLD
class _ZeroLossSGLD(SGLD):
    name = "sgld-zero-loss-test"

    def loss(self, state, x):
        return {"data": 0.0 * x.flatten(1).sum(1)}


def _params(net):
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_sgld_noise_has_the_documented_scale(ct_problem):
    lr, T = 0.05, 0.02
    st = _state(ct_problem, steps=1)
    before = _params(st.net)
    m = _ZeroLossSGLD(lr=lr, T=T, lam=0.0)
    run(m, st, [])
    delta = _params(st.net) - before
    assert isinstance(st.optimizer, torch.optim.SGD)
    assert m.noise_std == pytest.approx(math.sqrt(2 * lr * T))
    assert delta.numel() > 2000
    assert delta.std().item() == pytest.approx(math.sqrt(2 * lr * T), rel=0.05)
    assert abs(delta.mean().item()) < 4 * math.sqrt(2 * lr * T / delta.numel())
    # k steps: a random walk with std √(k·2·lr·T); same seed, same noise
    st3 = _state(ct_problem, steps=3)
    run(_ZeroLossSGLD(lr=lr, T=T, lam=0.0), st3, [])
    d3 = _params(st3.net) - before
    assert d3.std().item() == pytest.approx(math.sqrt(3 * 2 * lr * T), rel=0.05)
    st_again = _state(ct_problem, steps=1)
    run(_ZeroLossSGLD(lr=lr, T=T, lam=0.0), st_again, [])
    assert torch.equal(_params(st_again.net), _params(st.net))


def test_sgld_weight_prior_is_weight_decay_and_T0_is_sgd(ct_problem):
    lr, lam = 0.1, 0.5
    st = _state(ct_problem, steps=1)
    before = _params(st.net)
    run(_ZeroLossSGLD(lr=lr, T=0.0, lam=lam), st, [])
    # ∇(λ‖θ‖²) = 2λθ:  θ ← θ − lr·2λ·θ, no noise at T = 0
    assert torch.allclose(_params(st.net), before * (1 - 2 * lr * lam), atol=1e-7)


def test_sgld_data_term_value_and_normalised_gradient(ct_problem):
    st = _state(ct_problem)
    m = SGLD()
    m.setup(st)
    x = torch.rand(1, 1, 32, 32, requires_grad=True)
    terms = m.loss(st, x)
    r = ct_problem.physics.A(x) - ct_problem.y
    assert torch.allclose(terms["data"], 0.5 * r.pow(2).sum().reshape(1))
    (g,) = torch.autograd.grad(terms["data"].sum(), x)
    ref = ct_problem.physics.A_adjoint(r.detach()) / (st.opnorm_sq() * x[0].numel())
    assert torch.allclose(g, ref, rtol=1e-4, atol=1e-8)


def test_posterior_mean_and_variance_after_burn_in():
    rule = PosteriorMean(burn_in=3)
    st = State(physics=None, y=torch.zeros(1), max_steps=10, generator=torch.Generator())
    xs = [torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(i)) for i in range(10)]
    for k, x in enumerate(xs, start=1):
        st.step = k
        rule.update(st, x)
        if k <= 3:
            assert torch.equal(st.estimate, x)  # burn-in: the last iterate
    post = torch.stack(xs[3:])
    assert torch.allclose(st.estimate, post.mean(0), atol=1e-6)
    assert torch.allclose(st.aux["posterior_var"], post.var(0, unbiased=False), atol=1e-6)


def test_sgld_run_records_posterior_mean(ct_problem):
    st = _state(ct_problem, steps=6)

    class _Xs(Callback):
        def __init__(self):
            self.xs = []

        def on_step_end(self, state):
            self.xs.append(state.x.clone())

    cb = _Xs()
    run(SGLD(lr=0.1, burn_in=2), st, [cb])
    assert torch.allclose(st.estimate, torch.stack(cb.xs[2:]).mean(0), atol=1e-6)
    assert st.aux["posterior_var"].shape == st.estimate.shape
    assert "posterior_var" in st.state_dict()["aux"]


def test_sgld_burn_in_follows_the_step_budget(ct_problem):
    """Default burn-in: half the run; an explicit burn-in that leaves no sample is refused."""

    class _Xs(Callback):
        def __init__(self):
            self.xs = []

        def on_step_end(self, state):
            self.xs.append(state.x.clone())

    st, cb = _state(ct_problem, steps=8), _Xs()
    m = SGLD(lr=0.1)
    assert m.burn_in is None and m.config()["burn_in"] is None
    run(m, st, [cb])
    assert m.output.burn_in == 4                                     # ⌊8/2⌋
    assert torch.allclose(st.estimate, torch.stack(cb.xs[4:]).mean(0), atol=1e-6)
    assert not torch.allclose(st.estimate, cb.xs[-1])                # a mean, not the last iterate
    assert m.burn_in_for(10000) == 5000 and SGLD(burn_in=7).burn_in_for(8) == 7
    with pytest.raises(DipkitError, match="burn_in"):
        run(SGLD(lr=0.1, burn_in=8), _state(ct_problem, steps=8), [])
    with pytest.raises(DipkitError, match="burn_in"):
        SGLD(burn_in=5000).burn_in_for(1000)


def test_registry_names_and_bad_parameters():
    assert type(make_method("self-guided")) is SelfGuidedDIP
    assert type(make_method("aseqdip")) is ASeqDIP
    assert type(make_method("sgld")) is SGLD
    assert make_method("aseqdip").inner_steps == 2 and make_method("aseqdip").lam == 0.1
    for name, bad in [("aseqdip", {"z0": "fbp-typo"}), ("aseqdip", {"inner_steps": 0}),
                      ("self-guided", {"alpha": 1.0}), ("self-guided", {"noise": "laplace"}),
                      ("self-guided", {"penalty": "sum"}), ("sgld", {"T": -1.0}), ("sgld", {"burn_in": -1})]:
        with pytest.raises(DipkitError):
            make_method(name, **bad)


def test_aseqdip_default_rate_is_the_presets_capped_at_1e_3(ct_problem):
    from dipkit.run.config import RunConfig
    from dipkit.run.runner import resolve_config

    for net, want in (("unet", 1e-3), ("unet-paper", 1e-4)):
        cfg = RunConfig(method="aseqdip")
        cfg.net.name = net
        method = cfg.validate()
        assert resolve_config(cfg, method, ct_problem).params["lr"] == pytest.approx(want)
    cfg = RunConfig(method="aseqdip", params={"lr": 3e-3})  # an explicit rate is kept
    assert resolve_config(cfg, cfg.validate(), ct_problem).params["lr"] == pytest.approx(3e-3)
