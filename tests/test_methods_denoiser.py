"""The denoiser-prior family (issue 3): what each Algorithm box says.

* ADMM (CT paper Alg. 6): at every outer update u = D_σ(f_θ(z) + w), w ← w + f_θ(z) − u exactly;
* HQS (eqs. 32–33): μ_k increases, the denoiser gets σ_k = α/μ_k, there is no dual variable;
* with a "pixel" generator f_θ(z) = θ and the linear shrinkage denoiser D(v) = c·v, DIP+denoiser
  ADMM — and the thesis's v1/v2 and plug-and-play ADMM — converge to the closed-form minimiser of
  ½‖Ax − y‖² + (ρ̃/2)(1/c − 1)‖x‖², ρ̃ = ρ‖A‖² (the fixed point of ADMM with D = prox_{R/ρ̃});
* DeepRED (Alg. 5): the RED step is v − (v − D(v))/L, at the Nesterov-extrapolated point;
* the ``learned`` → ``tv`` fallback, checkpoint/resume of the deferred dual update of v1/v2.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from deepinv.physics import LinearPhysics
from torch import nn

from dipkit.engine import Callback, State, run
from dipkit.errors import DipkitError
from dipkit.methods import make_method
from dipkit.baselines.pnp_admm import PnPADMM
from dipkit.methods.denoiser_splitting import DIPDenoiserADMM, DIPDenoiserHQS
from dipkit.methods.red import DeepRED
from dipkit.methods.thesis_admm import DIPADMMv1, DIPADMMv2
from dipkit.physics.linalg import conjugate_gradient
from dipkit.physics.linalg import opnorm_sq as operator_norm_sq
from dipkit.priors.denoisers import DENOISERS, make_denoiser

torch.set_num_threads(1)
DT = torch.float64


# ------------------------------------------------------------------------------ tiny problem
class Pixel(nn.Module):
    """The "pixel" generator: f_θ(z) = θ."""

    def __init__(self, shape):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(shape, dtype=DT))

    def forward(self, z):
        return self.theta


SHAPE = (2, 1, 2, 3)  # B = 2 independent problems, n = 6 pixels, m = 5 measurements


@pytest.fixture
def tiny():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(5, 6, generator=g, dtype=DT)
    phys = LinearPhysics(A=lambda x: x.flatten(1) @ M.T, A_adjoint=lambda y: (y @ M).view(-1, *SHAPE[1:]))
    y = torch.randn(SHAPE[0], 5, generator=g, dtype=DT)
    return SimpleNamespace(M=M, physics=phys, y=y, norm_sq=float(torch.linalg.matrix_norm(M, 2) ** 2))


RHO, SIGMA, S = 1.0, 0.5, 1.0  # shrinkage D(v) = v / (1 + σ²/s²): c = 0.8, 1/c − 1 = σ²/s²
SHRINK = dict(denoiser="shrinkage", denoiser_options={"s": S}, denoiser_sigma=SIGMA)


def closed_form(tiny, opnorm_sq):
    """argmin ½‖Mx − y‖² + (ρ‖A‖²/2)(σ²/s²)‖x‖², per sample."""
    out = []
    for b in range(SHAPE[0]):
        r = RHO * float(opnorm_sq[b]) * SIGMA**2 / S**2
        out.append(torch.linalg.solve(tiny.M.T @ tiny.M + r * torch.eye(6, dtype=DT), tiny.M.T @ tiny.y[b]))
    return torch.stack(out).view(SHAPE)


def pixel_state(tiny, steps, lr):
    net = Pixel(SHAPE)
    st = State(physics=tiny.physics, y=tiny.y, max_steps=steps, generator=torch.Generator().manual_seed(0),
               net=net, z=torch.zeros(SHAPE, dtype=DT))
    st.optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    return st


# ------------------------------------------------------------------------------ helpers
class SpyDenoiser:
    """Wraps a denoiser and records its inputs and σ's."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, x, sigma):
        self.calls.append((x.clone(), sigma))
        return self.inner(x, sigma)

    def to(self, device):
        return self

    @property
    def name(self):
        return self.inner.name


class OuterProbe(Callback):
    """Records aux before (at the step that triggers an outer update) and after each outer update,
    and the fresh network output f_θ(z) there."""

    def __init__(self, method):
        self.method, self.before, self.after, self.x = method, [], [], []

    def on_step_end(self, state):
        if state.step % self.method.inner_steps == 0:
            self.before.append({k: v.clone() for k, v in state.aux.items()})
            with torch.no_grad():
                self.x.append(state.net(state.z).detach().clone())

    def on_outer_end(self, state):
        self.after.append({k: v.clone() for k, v in state.aux.items()})


def ct_state(ct_problem, steps, seed=0):
    from dipkit.nets import build_net

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = build_net("unet", 1, 1, scales=3, channels=8).to(ct_problem.y.dtype)
    z = 0.1 * torch.randn((1, 1, 32, 32), generator=g)
    return State(physics=ct_problem.physics, y=ct_problem.y, max_steps=steps, generator=g, net=net, z=z)


# ------------------------------------------------------------------------------ ADMM (Alg. 6)
def test_admm_dual_update_is_exact_at_each_outer_update(ct_problem):
    m = DIPDenoiserADMM(denoiser="tv", inner_steps=5, lr=1e-2, denoiser_sigma=0.05)
    st = ct_state(ct_problem, 15)
    probe = OuterProbe(m)
    run(m, st, [probe])
    assert len(probe.after) == 3 and st.outer_step == 3
    assert torch.count_nonzero(probe.before[0]["u"]) == 0 and torch.count_nonzero(probe.before[0]["w"]) == 0
    for before, after, x in zip(probe.before, probe.after, probe.x):
        u = make_denoiser("tv")(x + before["w"], 0.05)                # line 9: u = D_σ(x + w)
        torch.testing.assert_close(after["u"], u, rtol=0, atol=1e-6)
        torch.testing.assert_close(after["w"], before["w"] + x - after["u"], rtol=0, atol=1e-7)  # line 10
    # the loss couples f_θ(z) to u − w with weight ρ‖A‖²/2, and the output is an EMA
    assert set(st.terms) == {"data", "split"} and m.ema == 0.9


def test_admm_pixel_generator_reaches_closed_form(tiny):
    m = DIPDenoiserADMM(rho=RHO, inner_steps=10, ema=None, **SHRINK)
    st = pixel_state(tiny, 800, lr=1.0 / (2 * tiny.norm_sq))  # SGD, lr = 1/(‖A‖² + ρ̃)
    run(m, st)
    opn = st.aux["opnorm_sq"]
    torch.testing.assert_close(opn, torch.full((2,), tiny.norm_sq, dtype=DT), rtol=1e-4, atol=0)
    x_star = closed_form(tiny, opn)
    torch.testing.assert_close(st.estimate, x_star, rtol=0, atol=1e-6)
    torch.testing.assert_close(st.aux["u"], x_star, rtol=0, atol=1e-6)  # consensus u = x
    # fixed point of the dual: w = x (1 − c)/c = x σ²/s²
    torch.testing.assert_close(st.aux["w"], x_star * SIGMA**2 / S**2, rtol=0, atol=1e-6)


def test_pnp_admm_reaches_the_same_fixed_point(tiny):
    p = PnPADMM(rho=RHO, cg_iterations=8, **SHRINK)
    u = p.solve(tiny.physics, tiny.y, iterations=150)
    opn = operator_norm_sq(tiny.physics, torch.zeros(SHAPE, dtype=DT))
    torch.testing.assert_close(u, closed_form(tiny, opn), rtol=0, atol=1e-9)


def test_pnp_admm_observer_and_default_iterations(ct_problem):
    seen = []
    x = make_method("pnp-admm", denoiser="tv").reconstruct(
        ct_problem, iterations=6, observer=lambda i, x: seen.append(i), observe_every=4)
    assert seen == [4, 6] and x.shape == ct_problem.x_true.shape and torch.isfinite(x).all()


def test_conjugate_gradient_solves_spd_system_per_sample():
    g = torch.Generator().manual_seed(1)
    Q = torch.randn(2, 6, 6, generator=g, dtype=DT)
    H = Q @ Q.transpose(1, 2) + 0.5 * torch.eye(6, dtype=DT)
    b = torch.randn(2, 6, generator=g, dtype=DT)
    x = conjugate_gradient(lambda v: (H @ v.unsqueeze(-1)).squeeze(-1), b, torch.zeros_like(b), 12)
    torch.testing.assert_close(x, torch.linalg.solve(H, b), rtol=0, atol=1e-8)
    # a converged sample (b = 0) stays exactly at 0: no 0/0
    x0 = conjugate_gradient(lambda v: v, torch.zeros(1, 3, dtype=DT), torch.zeros(1, 3, dtype=DT), 3)
    assert torch.equal(x0, torch.zeros(1, 3, dtype=DT))


# ------------------------------------------------------------------------------ thesis v1 / v2
@pytest.mark.parametrize("cls,steps,lr_scale,extra", [(DIPADMMv2, 400, 0.5, {}),
                                                      (DIPADMMv1, 200, 1.0, {"ista_steps": 5}),
                                                      (DIPADMMv1, 200, 1.0, {"ista_steps": 3, "fista": True})])
def test_thesis_admm_pixel_generator_reaches_closed_form(tiny, cls, steps, lr_scale, extra):
    """The same fixed point: v2's θ-step sees the data term, v1's only the coupling term (its
    ISTA step uses D at σ' = σ √(ρ/(1 + ρ)) for the Gaussian shrinkage denoiser)."""
    m = cls(rho=RHO, ema=None, **SHRINK, **extra)
    st = pixel_state(tiny, steps, lr=lr_scale / tiny.norm_sq)
    run(m, st)
    x_star = closed_form(tiny, st.aux["opnorm_sq"])
    torch.testing.assert_close(st.estimate, x_star, rtol=0, atol=1e-8)
    torch.testing.assert_close(st.net.theta.detach(), x_star, rtol=0, atol=1e-8)
    assert cls is DIPADMMv2 or math.isclose(m.ista_sigma(), SIGMA * math.sqrt(RHO / (1 + RHO)))


class BiasedDenoiser:
    """A Gaussian-type denoiser that is not the identity as σ → 0 (like the shipped DnCNN): shrinkage
    plus a constant bias; it declares the σ below which it is not a useful denoiser."""

    name = "biased-test"
    sigma_floor = 0.1

    def __init__(self, bias=0.05):
        self.bias, self.calls = bias, []

    def __call__(self, x, sigma):
        self.calls.append(sigma)
        return x / (1.0 + sigma**2) + self.bias

    def to(self, device):
        return self


@pytest.mark.parametrize("cls,extra", [(DIPADMMv2, {}), (DIPADMMv1, {"ista_steps": 5})])
def test_thesis_admm_skips_a_denoiser_below_its_sigma_floor(tiny, cls, extra):
    """Below the denoiser's sigma_floor the prox is the identity: the biased denoiser is never
    called and the run is exactly the run with an exact identity prox (shrinkage at σ = 0)."""
    def go(denoiser, sigma):
        m = cls(rho=RHO, ema=None, denoiser="shrinkage", denoiser_sigma=sigma, **extra)
        if denoiser is not None:
            m.D = denoiser
        st = pixel_state(tiny, 30, lr=0.5 / tiny.norm_sq)
        return m, run(m, st)

    biased = BiasedDenoiser()
    with pytest.warns(UserWarning, match="floor"):
        m, st = go(biased, 0.05)                     # v2: σ = 0.05; v1: σ' = 0.05·√½ — both < 0.1
    assert biased.calls == [] and m.prox_sigma() < biased.sigma_floor
    _, ref = go(None, 0.0)                          # D(x, 0) = x exactly
    torch.testing.assert_close(st.aux["x"], ref.aux["x"], rtol=0, atol=1e-12)
    torch.testing.assert_close(st.estimate, ref.estimate, rtol=0, atol=1e-12)
    # above the floor the denoiser is called, at the box's σ (v1: σ' = σ (ρ/(1+ρ))^{1/p}, p = 2)
    above = BiasedDenoiser()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m2, st2 = go(above, 0.5)
    sig = 0.5 if cls is DIPADMMv2 else 0.5 * math.sqrt(RHO / (1 + RHO))
    assert above.calls and all(s == pytest.approx(sig) for s in above.calls)
    assert len(above.calls) == 30 * extra.get("ista_steps", 1)
    # the bias shows in the result: x_{t+1} = D(·) carries +0.05
    assert not torch.allclose(st2.aux["x"], ref.aux["x"], atol=1e-3)


def test_thesis_admm_default_prox_is_tv():
    from dipkit.priors.denoisers import TVDenoiser
    from dipkit.priors.learned import LearnedDenoiser

    for name in ("dip-admm-v1", "dip-admm-v2"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            m = make_method(name)
            assert m.denoiser == "tv" and isinstance(m.D, TVDenoiser)
        assert m.sigma_floor() == 0.0                                       # TV → identity as σ → 0
        assert m.denoise(torch.ones(1, 1, 4, 4), 0.0).allclose(torch.ones(1, 1, 4, 4))
    assert LearnedDenoiser.sigma_floor == 0.01
    # with the learned denoiser, the default σ (0.002) is below its floor: identity, with a warning
    m = DIPADMMv2(denoiser="learned")
    assert m.sigma_floor() == 0.01
    x = torch.rand(1, 1, 8, 8)
    assert torch.equal(m.denoise(x, m.denoiser_sigma), x)
    assert not torch.allclose(m.denoise(x, 0.02), x, atol=1e-4)


def test_v2_dual_follows_box_order(tiny):
    """x_{t+1} = D(G(θ_t) − u_t); u_{t+1} = u_t + x_{t+1} − G(θ_{t+1}) (applied at the next forward)."""
    m = DIPADMMv2(rho=RHO, ema=None, **SHRINK)
    spy = SpyDenoiser(m.D)
    m.D = spy
    st = pixel_state(tiny, 3, lr=0.1 / tiny.norm_sq)
    thetas, aux = [], []

    class Rec(Callback):
        def on_step_end(self, state):
            thetas.append(state.net.theta.detach().clone())
            aux.append({k: v.clone() for k, v in state.aux.items()})

    run(m, st, [Rec()])
    G0 = torch.zeros(SHAPE, dtype=DT)
    torch.testing.assert_close(spy.calls[0][0], G0)                       # x_1 = D(G(θ_0) − u_0), u_0 = 0
    u1 = aux[0]["u"] + aux[0]["x"] - thetas[0]                             # u_1 = u_0 + x_1 − G(θ_1)
    torch.testing.assert_close(aux[1]["u"], u1)
    torch.testing.assert_close(spy.calls[1][0], thetas[0] - u1)            # x_2 = D(G(θ_1) − u_1)


def test_thesis_admm_resume_matches_uninterrupted_run(tiny):
    def fresh(steps):
        m = DIPADMMv2(rho=RHO, ema=0.9, lr=0.05, **SHRINK)
        net = Pixel(SHAPE)
        st = State(physics=tiny.physics, y=tiny.y, max_steps=steps, generator=torch.Generator().manual_seed(0),
                   net=net, z=torch.zeros(SHAPE, dtype=DT))
        return m, st

    m, full = fresh(12)
    run(m, full)
    m1, half = fresh(5)
    run(m1, half)
    sd = half.state_dict()
    m2, resumed = fresh(12)
    resumed.optimizer = m2.make_optimizer(m2.param_groups(resumed))
    resumed.load_state_dict(sd)
    run(m2, resumed)
    for k in ("x", "u"):
        torch.testing.assert_close(resumed.aux[k], full.aux[k], rtol=0, atol=1e-12)
    torch.testing.assert_close(resumed.estimate, full.estimate, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ HQS
def test_hqs_schedule_increases_and_sets_denoiser_strength(ct_problem):
    m = DIPDenoiserHQS(denoiser="tv", inner_steps=5, mu=0.1, mu_max=1.6, alpha=0.02, lr=1e-2)
    sched = m.schedule(20)
    assert len(sched) == 4 and all(b > a for a, b in zip(sched, sched[1:]))
    assert math.isclose(sched[0], 0.1) and math.isclose(sched[-1], 1.6)
    assert math.isclose(m.schedule(22)[-1], 1.6) and len(m.schedule(22)) == 5   # K = ⌈N/N_sub⌉
    spy = SpyDenoiser(m.D)
    m.D = spy
    st = ct_state(ct_problem, 20)
    probe = OuterProbe(m)
    run(m, st, [probe])
    assert "w" not in st.aux                                               # no dual variable
    assert [s for _, s in spy.calls] == pytest.approx([0.02 / mu for mu in sched])   # σ_k = α/μ_k
    for (inp, sigma), x, after in zip(spy.calls, probe.x, probe.after):
        torch.testing.assert_close(inp, x)                                 # u = D_{α/μ_k}(f_θ(z)), no dual
        torch.testing.assert_close(after["u"], make_denoiser("tv")(x, sigma), rtol=0, atol=1e-6)
    # the coupling weight follows μ_k: the split term at the last step uses μ_{K−1}‖A‖²
    x = st.x
    expect = 0.5 * sched[-1] * st.aux["opnorm_sq"] * (x - probe.before[-1]["u"]).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(st.terms["split"], expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("denoiser,p", [("tv", 1), ("shrinkage", 2)])
def test_hqs_sigma_follows_the_prox_power(ct_problem, denoiser, p):
    """σ_k = (α/μ_k)^{1/p}: D(·, σ) = prox_{σ^p J} is prox_{(α/μ_k) J} of line (33)."""
    from dipkit.priors.denoisers import prox_power

    alpha = 4e-4
    m = DIPDenoiserHQS(denoiser=denoiser, inner_steps=4, mu=0.01, mu_max=0.2, alpha=alpha, lr=1e-2)
    assert prox_power(m.D) == p
    spy = SpyDenoiser(m.D)
    m.D = spy
    run(m, ct_state(ct_problem, 16))
    sched = m.schedule(16)
    sig = [s for _, s in spy.calls]
    assert len(sig) == 4
    assert sig == pytest.approx([(alpha / mu) ** (1.0 / p) for mu in sched], rel=1e-12)
    assert [s**p for s in sig] == pytest.approx([alpha / mu for mu in sched], rel=1e-9)   # prox weight α/μ_k


def test_hqs_default_sigma_range_for_the_learned_denoiser():
    """The defaults (α = 4e-5 = ρσ² of ADMM's defaults, μ: 0.01 → 0.2) give the learned denoiser
    σ_k from √(4e-3) ≈ 0.063 to √(2e-4) ≈ 0.014, above its floor, and σ = 0.02 at μ = 0.1."""
    from dipkit.priors.learned import LearnedDenoiser

    m = DIPDenoiserHQS()
    assert m.denoiser == "learned" and m.alpha == pytest.approx(4e-5)
    adm = DIPDenoiserADMM()
    assert m.alpha == pytest.approx(adm.rho * adm.denoiser_sigma**2)
    sig = [math.sqrt(m.alpha / mu) for mu in m.schedule(3000)]
    assert sig[0] == pytest.approx(0.0632, abs=1e-4) and sig[-1] == pytest.approx(0.01414, abs=1e-4)
    assert min(sig) > LearnedDenoiser.sigma_floor and max(sig) < 55 / 255
    assert math.sqrt(m.alpha / 0.1) == pytest.approx(adm.denoiser_sigma)


def test_hqs_rejects_decreasing_schedule():
    with pytest.raises(DipkitError):
        make_method("dip-denoiser-hqs", mu=2.0, mu_max=1.0, denoiser="tv")


# ------------------------------------------------------------------------------ DeepRED (Alg. 5)
def test_red_step_uses_x_minus_D_x():
    m = DeepRED(denoiser="shrinkage", denoiser_options={"s": 1.0}, denoiser_sigma=0.5, L=1.2)
    v = torch.randn(2, 1, 4, 4, dtype=DT)
    D = m.D(v, 0.5)
    torch.testing.assert_close(m.red_step(v), v - (v - D) / 1.2)
    torch.testing.assert_close(m.red_step(v), D / 1.2 - ((1 - 1.2) / 1.2) * v)   # the box's line 10
    # for a denoiser with a symmetric Jacobian, x − D(x) is the gradient of J(x) = ½ xᵀ(x − D(x))
    x = v.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((0.5 * x * (x - m.D(x, 0.5))).sum(), x)
    torch.testing.assert_close(g, v - D)


def test_deepred_outer_update_is_nesterov_extrapolated_red_step(ct_problem):
    m = DeepRED(denoiser="tv", inner_steps=4, lr=1e-2, denoiser_sigma=0.05)
    spy = SpyDenoiser(m.D)
    m.D = spy
    st = ct_state(ct_problem, 12)
    probe = OuterProbe(m)
    run(m, st, [probe])
    t = [DeepRED.t(k) for k in range(4)]
    assert t[0] == 1.0 and math.isclose(t[1], (1 + math.sqrt(5)) / 2)
    xs = probe.x
    v = [xs[0], xs[1] + (t[1] - 1) / t[2] * (xs[1] - xs[0]), xs[2] + (t[2] - 1) / t[3] * (xs[2] - xs[1])]
    for k in range(3):
        torch.testing.assert_close(spy.calls[k][0], v[k])                 # D at the extrapolated point
        torch.testing.assert_close(probe.after[k]["u"], v[k] - (v[k] - spy.inner(v[k], 0.05)) / m.L)
        torch.testing.assert_close(probe.after[k]["x_prev"], xs[k])
    assert set(st.terms) == {"data", "red"}


# ------------------------------------------------------------------------------ denoiser choice
def test_learned_falls_back_to_tv_when_unavailable(monkeypatch):
    from dipkit.priors import _load_optional_denoisers

    _load_optional_denoisers()
    monkeypatch.delitem(DENOISERS, "learned", raising=False)
    monkeypatch.setattr("dipkit.priors._load_optional_denoisers", lambda: None)
    m = make_method("dip-denoiser-admm")   # cheap: the denoiser is built on first use (setup)
    assert m.denoiser == "learned"
    with pytest.warns(UserWarning, match="learned"):
        m.D
    assert m.denoiser == "tv" and m.config()["denoiser"] == "tv"


def test_explicit_denoisers_and_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = make_method("pnp-admm", denoiser="shrinkage", denoiser_options={"s": 2.0})
    assert m.denoiser == "shrinkage" and m.D.s == 2.0
    with pytest.raises(DipkitError, match="unknown denoiser"):
        make_method("deepred", denoiser="no-such-denoiser")
    with pytest.raises(DipkitError):
        make_method("dip-denoiser-admm", rho=0.0, denoiser="tv")
    with pytest.raises(DipkitError):
        make_method("deepred", L=1.0, denoiser="tv")


def test_operator_norm_estimate(tiny, ct_problem):
    opn = operator_norm_sq(tiny.physics, torch.zeros(SHAPE, dtype=DT))
    assert opn.shape == (2,)
    torch.testing.assert_close(opn, torch.full((2,), tiny.norm_sq, dtype=DT), rtol=1e-4, atol=0)
    a = operator_norm_sq(ct_problem.physics, ct_problem.x_true)
    assert torch.equal(a, operator_norm_sq(ct_problem.physics, ct_problem.x_true))   # deterministic
    assert 300 < float(a) < 1200   # ≈ 500 at 32², 16 views
