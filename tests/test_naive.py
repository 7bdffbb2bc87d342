"""The ``naive`` baseline: each task's documented direct reconstruction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dipkit.errors import DipkitError
from dipkit.methods import METHODS, make_method
from dipkit.baselines.naive import Naive, naive_reconstruction
from dipkit.metrics import psnr
from dipkit.problem import Problem
from dipkit.tasks import get_task

from .conftest import tiny_image

N = 24


def sim(task, image=None, **kw):
    return get_task(task).simulate(tiny_image(N) if image is None else image, seed=0, **kw)


def test_registered_direct_method():
    assert METHODS["naive"] is Naive and not Naive.uses_network
    assert Naive.default_iterations is None and not Naive.hyperparameters()
    assert isinstance(make_method("naive"), Naive)


def test_ct_is_fbp():
    p = sim("ct", views=12)
    assert torch.equal(naive_reconstruction(p), p.physics.A_dagger(p.y))


@pytest.mark.parametrize("task,kw", [("mri", {}), ("mri-multicoil", {"coils": 3})])
def test_mri_is_zero_filled_magnitude(task, kw):
    p = sim(task, **kw)
    x = naive_reconstruction(p)
    zf = p.physics.A_adjoint(p.y)  # zero-filled (coil-combined) inverse FFT, complex
    assert x.shape == (1, 2, N, N)
    assert torch.allclose(x[:, 0], zf.pow(2).sum(1).sqrt(), atol=1e-7)
    assert torch.equal(x[:, 1], torch.zeros_like(x[:, 1]))
    if task == "mri":  # explicitly: |IFFT(zero-filled k-space)| with deepinv's centred orthonormal FFT
        k = torch.complex(p.y[:, 0], p.y[:, 1])
        img = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
        assert torch.allclose(x[:, 0], img.abs(), atol=1e-6)
    # the magnitude is at least as close to a real non-negative truth as the complex image
    assert float(psnr(x, p.x_true)) >= float(psnr(zf, p.x_true))


def test_denoise_is_y():
    p = sim("denoise")
    assert torch.equal(naive_reconstruction(p), p.y)


@pytest.mark.parametrize("kw", [{"missing": 0.5}, {"box_ratio": 0.25}])
def test_inpaint_is_masked_y(kw):
    p = sim("inpaint", noise_std=0.05, **kw)
    x = naive_reconstruction(p)
    m = p.physics.mask
    assert torch.equal(x, m * p.y) and torch.equal(x * (1 - m), torch.zeros_like(x))


def test_deblur_is_adjoint():
    p = sim("deblur")
    assert torch.equal(naive_reconstruction(p), p.physics.A_adjoint(p.y))


def test_superres_is_bicubic_upsampling():
    # bicubic filter, factor 2: deepinv samples at 2i + 0.5, as F.interpolate assumes
    p = sim("superres", factor=2, filter="bicubic")
    ref = F.interpolate(p.y, scale_factor=2, mode="bicubic", align_corners=False)
    assert torch.allclose(naive_reconstruction(p), ref, atol=1e-5)
    # plain decimation, factor 4: samples at 4i; bicubic (Keys) interpolation goes through them
    q = sim("superres", factor=4, filter="none")
    x = naive_reconstruction(q)
    assert x.shape == (1, 1, N, N)
    assert torch.allclose(x[..., ::4, ::4], q.y, atol=1e-5)
    # a constant image stays constant; RGB keeps its channels
    c = sim("superres", np.full((3, N, N), 0.25, np.float32), factor=4)
    assert torch.allclose(naive_reconstruction(c), torch.full((1, 3, N, N), 0.25), atol=1e-5)
    # on the operator's own grid it beats torch's default alignment for factor 4
    d = sim("superres", factor=4)
    default = F.interpolate(d.y, scale_factor=4, mode="bicubic", align_corners=False)
    assert float(psnr(naive_reconstruction(d), d.x_true)) > float(psnr(default, d.x_true))


@pytest.mark.parametrize("task,kw", [("ct", {"views": 8}), ("mri", {}), ("mri-multicoil", {"coils": 2}),
                                     ("denoise", {}), ("inpaint", {}), ("deblur", {}), ("superres", {"factor": 2})])
def test_batch_and_image_shape(task, kw):
    p = sim(task, **kw)
    b = Problem(physics=p.physics, y=p.y.repeat(2, *([1] * (p.y.ndim - 1))), spec=p.spec,
                x_true=p.x_true.repeat(2, 1, 1, 1), meta=p.meta)
    x = naive_reconstruction(b)
    assert x.shape == (2, *p.img_shape) and torch.equal(x[0], x[1])
    # batch sizes 1 and 2 may take different convolution kernels (deblur): equal to float32 rounding
    torch.testing.assert_close(x[:1], naive_reconstruction(p), rtol=1e-6, atol=1e-6)


def test_through_the_runner(tiny_cfg):
    from dipkit.run import reconstruct

    p = sim("deblur")
    res = reconstruct(p, tiny_cfg("naive", iterations=None), quiet=True)
    assert torch.equal(res.reconstruction, p.physics.A_adjoint(p.y))
    assert res["iterations"] is None and res["psnr"] == pytest.approx(float(psnr(res.reconstruction, p.x_true)))


def test_unknown_operator_raises():
    p = sim("denoise")
    q = Problem(physics=p.physics, y=p.y, spec={"kind": "something"}, x_true=p.x_true, meta=p.meta)
    with pytest.raises(DipkitError, match="no direct reconstruction"):
        naive_reconstruction(q)
