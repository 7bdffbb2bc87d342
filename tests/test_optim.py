"""dipkit.core.optim.adam: the fused kernel where it applies, the same update as Adam's algorithm."""

import math

import torch

from dipkit.core.optim import adam


def _reference_adam(theta, grads, lr, betas=(0.9, 0.999), eps=1e-8):
    """Kingma & Ba (2015), Algorithm 1, with PyTorch's placement of ε (outside the bias-corrected root)."""
    m = torch.zeros_like(theta, dtype=torch.float64)
    v = torch.zeros_like(theta, dtype=torch.float64)
    x = theta.double().clone()
    for t, g in enumerate(grads, start=1):
        g = g.double()
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat = m / (1 - betas[0] ** t)
        x = x - lr * m_hat / ((v / (1 - betas[1] ** t)).sqrt() + eps)
    return x


def test_adam_is_fused_on_cpu_float_parameters_and_follows_the_algorithm():
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(37, generator=g)
    grads = [torch.randn(37, generator=g) * 10.0 ** -k for k in range(6)]
    p = torch.nn.Parameter(theta.clone())
    opt = adam([{"params": [p], "lr": 1e-2}])
    assert opt.defaults["fused"] is True
    for gr in grads:
        p.grad = gr.clone()
        opt.step()
    assert torch.allclose(p.detach().double(), _reference_adam(theta, grads, 1e-2), atol=1e-6)


def test_adam_falls_back_where_fused_does_not_apply_and_keeps_explicit_options():
    q = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))
    assert not adam([q], lr=1e-3).defaults.get("fused")
    r = torch.nn.Parameter(torch.zeros(3))
    opt = adam([r], lr=1e-3, foreach=True)
    assert opt.defaults["foreach"] is True and not opt.defaults.get("fused")
    assert math.isclose(opt.param_groups[0]["lr"], 1e-3)
