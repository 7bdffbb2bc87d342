"""Denoisers behind ``D(x, sigma)``: classical (nlm, wavelet, bm3d), learned (shipped), drunet, training."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from dipkit.errors import DipkitError
from dipkit.priors import _load_optional_denoisers
from dipkit.priors.denoisers import DENOISERS, make_denoiser

from .conftest import tiny_image

_load_optional_denoisers()

SIGMA = 25 / 255
#: tested separately: drunet needs a weights file; bm3d's binary takes seconds per 32×32 image
SEPARATE = {"drunet", "bm3d"}
ALL = sorted(n for n in DENOISERS if n not in SEPARATE)


def _make(name, **opts):
    try:
        return make_denoiser(name, **opts)
    except DipkitError as exc:
        if "pip install" in str(exc):  # optional dependency missing (bm3d, PyWavelets)
            pytest.skip(str(exc))
        raise


def _psnr(x, ref):
    return float(10 * torch.log10(1.0 / ((x - ref) ** 2).mean()))


def _noisy(ref, sigma=SIGMA, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ref + sigma * torch.randn(ref.shape, generator=g, dtype=ref.dtype)


@pytest.fixture(scope="module")
def clean():
    return torch.from_numpy(tiny_image(32))[None]  # [1, 1, 32, 32]


def test_expected_denoisers_registered():
    assert {"tv", "shrinkage", "nlm", "wavelet", "bm3d", "learned", "drunet"} <= set(DENOISERS)
    for cls in DENOISERS.values():
        assert cls.description and cls.__doc__


@pytest.mark.parametrize("name", ALL)
def test_shape_dtype_and_denoises(name, clean):
    d = _make(name)
    noisy = _noisy(clean)
    out = d(noisy, SIGMA)
    assert out.shape == noisy.shape and out.dtype == noisy.dtype
    assert torch.isfinite(out).all()
    if name != "shrinkage":  # shrinkage towards 0 with s = 1 is nearly the identity
        assert _psnr(out, clean) > _psnr(noisy, clean) + 1.0
    out64 = d(noisy.double(), SIGMA)
    assert out64.dtype == torch.float64 and out64.shape == noisy.shape


@pytest.mark.parametrize("name", ALL)
def test_batch_and_sigma_forms(name, clean):
    d = _make(name)
    x = torch.cat([_noisy(clean, seed=1), _noisy(clean, 15 / 255, seed=2)])  # B = 2
    sig = torch.tensor([SIGMA, 15 / 255])
    out_t = d(x, sig)
    assert out_t.shape == x.shape
    for i in range(2):  # a [B] tensor acts per sample
        single = d(x[i:i + 1], float(sig[i]))
        assert torch.allclose(out_t[i:i + 1], single, atol=1e-5)
    out_f = d(x, SIGMA)  # float: same σ for every sample
    assert torch.allclose(out_f, d(x, torch.full((2,), SIGMA)), atol=1e-5)
    assert torch.allclose(out_f, d(x, torch.tensor(SIGMA)), atol=1e-5)


@pytest.mark.slow
def test_bm3d_batch(clean):
    d = _make("bm3d")
    x = torch.cat([_noisy(clean, seed=1), _noisy(clean, 15 / 255, seed=2)])  # B = 2
    out = d(x, torch.tensor([SIGMA, 15 / 255]))
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(2):
        assert _psnr(out[i], clean[0]) > _psnr(x[i], clean[0]) + 1.0


def test_bm3d_missing_package_message(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bm3d", None)  # import bm3d -> ImportError
    with pytest.raises(DipkitError, match="pip install bm3d"):
        make_denoiser("bm3d")


@pytest.mark.parametrize("name", ["nlm", "wavelet", "learned"])
def test_rgb_per_channel(name, clean):
    d = _make(name)
    x = _noisy(clean.expand(1, 3, 32, 32).contiguous())
    out = d(x, SIGMA)
    assert out.shape == x.shape
    assert torch.allclose(out[:, 1:2], d(x[:, 1:2], SIGMA), atol=1e-5)


def test_learned_beats_noisy_on_held_out_crop():
    from dipkit.io import load_sample
    from dipkit.priors.train import HELD_OUT

    assert "camera" in HELD_OUT
    ref = torch.from_numpy(load_sample("camera", channels="gray"))[None][..., 200:264, 200:264]
    noisy = _noisy(ref)
    out = make_denoiser("learned")(noisy, SIGMA)
    assert _psnr(out, ref) > _psnr(noisy, ref) + 5.0


def test_learned_is_differentiable_and_frozen(clean):
    d = make_denoiser("learned")
    assert d.differentiable
    x = _noisy(clean).requires_grad_(True)
    d(x, SIGMA).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(not p.requires_grad for p in d.net.parameters())


def test_shipped_weights_and_record():
    from importlib import resources

    data = resources.files("dipkit").joinpath("data")
    pt, meta = data.joinpath("denoiser_dncnn.pt"), data.joinpath("denoiser_dncnn.json")
    assert pt.is_file() and meta.is_file()
    with resources.as_file(pt) as p:
        assert p.stat().st_size < 4 * 2**20
        state = torch.load(p, weights_only=True)
    assert all(torch.is_tensor(v) for v in state.values())
    rec = json.loads(meta.read_text())
    assert rec["command"].startswith("dipkit train-denoiser")
    assert rec["steps"] > 0 and rec["wall_time_s"] > 0 and "seed" in rec and rec["arch"]
    assert not set(rec["held_out"]) & set(rec["images"])


def test_drunet_missing_weights_raise():
    with pytest.raises(DipkitError, match="does not exist"):
        make_denoiser("drunet", weights="missing.pt")
    with pytest.raises(DipkitError, match="weights=PATH"):
        make_denoiser("drunet")


def test_drunet_loads_a_state_dict(tmp_path, clean):
    from deepinv.models import DRUNet

    torch.manual_seed(0)
    net = DRUNet(in_channels=1, out_channels=1, nc=(4, 8, 8, 8), nb=1, pretrained=None)
    path = tmp_path / "drunet.pth"
    torch.save(net.state_dict(), path)
    d = make_denoiser("drunet", weights=str(path))
    x = torch.cat([_noisy(clean), _noisy(clean, seed=3)])
    out = d(x, torch.tensor([SIGMA, 0.05]))
    assert out.shape == x.shape and out.dtype == x.dtype
    with torch.no_grad():
        ref = net(x[:1], SIGMA)
    assert torch.allclose(out[:1], ref, atol=1e-5)
    assert d(x.expand(2, 3, 32, 32).contiguous(), SIGMA).shape == (2, 3, 32, 32)  # gray weights per channel


def test_unknown_denoiser_and_bad_options_raise():
    with pytest.raises(DipkitError, match="unknown denoiser"):
        make_denoiser("no-such-denoiser")
    with pytest.raises(DipkitError, match="bad options"):
        make_denoiser("nlm", strength=3)
    with pytest.raises(DipkitError):
        make_denoiser("learned", weights="missing.pt")


def _train_args(tmp_path, *extra):
    from dipkit.cli import train

    p = argparse.ArgumentParser()
    train.add_arguments(p)
    return p.parse_args(["--out", str(tmp_path / "w.pt"), "--steps", "3", "--patch-size", "16",
                         "--batch-size", "2", "--images", "mr", "--scales", "1", "--log-every", "0", "--no-eval",
                         *extra])


def test_train_entry_point_writes_reloadable_weights(tmp_path, capsys):
    from dipkit.cli import train

    assert train.DESCRIPTION and train.TRAIN_DENOISER.run is train.run
    args = _train_args(tmp_path, "--depth", "3", "--features", "4")
    assert train.run(args) == 0
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    assert set(state) and all(torch.is_tensor(v) for v in state.values())
    rec = json.loads((tmp_path / "w.json").read_text())
    assert rec["steps"] == 3 and rec["arch"] == {"depth": 3, "features": 4}
    assert rec["command"].startswith("dipkit train-denoiser") and "--steps 3" in rec["command"]
    d = make_denoiser("learned", weights=str(tmp_path / "w.pt"))
    assert d(torch.rand(1, 1, 16, 16), 0.1).shape == (1, 1, 16, 16)
    # same seed, same weights
    args2 = _train_args(tmp_path / "again", "--depth", "3", "--features", "4")
    train.run(args2)
    state2 = torch.load(tmp_path / "again" / "w.pt", weights_only=True)
    assert all(torch.equal(state[k], state2[k]) for k in state)


def test_train_refuses_held_out_images(tmp_path):
    from dipkit.cli import train

    args = _train_args(tmp_path)
    args.images = ["mr", "camera"]
    with pytest.raises(DipkitError, match="held apart"):
        train.run(args)
    assert not (tmp_path / "w.pt").exists()


def test_sigma_zero_is_identity_for_numpy_denoisers(clean):
    for name in ("nlm", "wavelet"):
        d = _make(name)
        x = _noisy(clean)
        assert torch.allclose(d(x, 0.0), x)
    assert np.isfinite(_psnr(make_denoiser("learned")(clean, 0.0), clean))
