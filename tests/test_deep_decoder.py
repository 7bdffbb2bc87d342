"""The deep decoder and ConvDecoder presets (dipkit.nets.deep_decoder): sizes, parameter counts, inputs, runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dipkit.errors import DipkitError
from dipkit.nets import NETS, build_net, count_parameters, list_nets
from dipkit.nets.deep_decoder import (ConvDecoder, DeepDecoder, channels_for_parameters,
                                      deep_decoder_parameters)

from .conftest import tiny_image

PRESETS = ["deep-decoder", "convdecoder"]
SIZES = [(31, 31), (17, 23), (1, 1), (2, 5), (64, 63)]


def test_presets_registered_with_lr_and_description():
    names = list_nets()
    for name in PRESETS:
        assert name in names and names[name]
        assert NETS[name].lr == pytest.approx(1e-2)
    assert isinstance(build_net("deep-decoder", 1, 1), DeepDecoder)
    assert isinstance(build_net("convdecoder", 1, 1), ConvDecoder)


@pytest.mark.parametrize("kw", [
    dict(),                                                     # the paper's 6 x 64, 1x1
    dict(channels=5, layers=3),
    dict(channels=7, layers=4, kernel_size=3),
    dict(channels=3, layers=1, kernel_size=5),
])
@pytest.mark.parametrize("out_channels", [1, 3])
def test_documented_parameter_count(kw, out_channels):
    net = DeepDecoder(1, out_channels, **kw)
    expected = deep_decoder_parameters(net.channels, net.layers, net.kernel_size, out_channels)
    assert count_parameters(net) == expected == net.num_parameters
    k, d, s = net.channels, net.layers, net.kernel_size
    assert expected == d * (s * s * k * k + 2 * k) + k * out_channels


def test_preset_parameter_counts():
    assert count_parameters(build_net("deep-decoder", 3, 3)) == 25_536     # Heckel & Hand's 6 x 64 RGB
    assert count_parameters(build_net("deep-decoder", 1, 1)) == 25_408
    assert count_parameters(build_net("convdecoder", 1, 1)) == 46_432


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("budget", [500, 2000, 4096, 30_000])
def test_params_option_sizes_by_budget(name, budget):
    net = build_net(name, 1, 1, params=budget)
    n = count_parameters(net)
    assert n <= budget
    bigger = deep_decoder_parameters(net.channels + 1, net.layers, net.kernel_size, 1)
    assert bigger > budget            # the largest network within the budget
    assert channels_for_parameters(budget, net.layers, net.kernel_size, 1) == net.channels


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("seed", ["random", "input"])
def test_output_shape_any_size(name, size, seed):
    torch.manual_seed(0)
    net = build_net(name, 2, 3, channels=4, seed=seed)
    out = net(torch.randn(2, 2, *size))
    assert out.shape == (2, 3, *size) and torch.isfinite(out).all()


def test_sizes_halve_and_geometric_seed():
    net = DeepDecoder(1, 1, channels=2, layers=6)
    assert net.sizes(501, 64) == [(16, 4), (32, 4), (63, 8), (126, 16), (251, 32), (501, 64)]
    assert net.sizes(32, 3) == [(4, 3), (4, 3), (4, 3), (8, 3), (16, 3), (32, 3)]   # a seed side ≥ min(4, side)
    geo = DeepDecoder(1, 1, channels=2, layers=4, seed_size=8)
    hs = [h for h, _ in geo.sizes(64, 64)]
    assert hs == [8, 16, 32, 64]
    out = geo(torch.randn(1, 1, 64, 64))
    assert out.shape == (1, 1, 64, 64)


def test_own_seed_reproducible_and_in_state_dict():
    torch.manual_seed(3)
    a = DeepDecoder(1, 1, channels=4, layers=3)
    z = torch.randn(1, 1, 12, 12)
    ya = a(z)
    # the own seed ignores z's values; it depends on the global seed at construction only
    assert torch.equal(a(torch.randn(1, 1, 12, 12)), ya)
    torch.manual_seed(3)
    assert torch.equal(DeepDecoder(1, 1, channels=4, layers=3)(z), ya)
    torch.manual_seed(4)
    b = DeepDecoder(1, 1, channels=4, layers=3)
    assert not torch.equal(b(z), ya)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b(z), ya)                 # weights and seed travel in the state_dict
    assert count_parameters(a) == a.num_parameters   # the seed is no parameter


def test_input_seed_depends_on_z_and_samples_are_independent():
    torch.manual_seed(0)
    net = DeepDecoder(1, 1, channels=4, layers=3, seed="input").double()
    z = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    out = net(z)
    assert not torch.allclose(out[0], out[1])
    for b in range(3):
        assert torch.allclose(net(z[b:b + 1]), out[b:b + 1], atol=1e-12)
    # scale-free: the seed is normalised
    assert torch.allclose(net(5 * z), out, atol=1e-9)


@pytest.mark.parametrize("kw, message", [
    (dict(channels=4, params=1000), "either channels or params"),
    (dict(params=3), "below the smallest network"),
    (dict(kernel_size=2), "odd"),
    (dict(layers=0), "layers must be an integer"),
    (dict(channels="many"), "channels must be an integer"),
    (dict(upsample="cubic"), "unknown upsample"),
    (dict(seed="fbp"), "unknown seed"),
    (dict(seed_size=0), "seed_size"),
])
def test_bad_options_raise(kw, message):
    with pytest.raises(DipkitError, match=message):
        build_net("deep-decoder", 1, 1, **kw)


def test_runs_through_runner_and_lowers_error(ct_problem):
    from dipkit.run.config import RunConfig
    from dipkit.run import reconstruct

    cfg = RunConfig(method="dip", iterations=80, device="cpu", log_every=10)
    cfg.net.name = "deep-decoder"
    cfg.net.options.update(channels=16, layers=4)
    res = reconstruct(ct_problem, cfg, quiet=True)
    assert res["params"]["lr"] == pytest.approx(1e-2)           # the preset's learning rate
    psnr = res.history["psnr"]
    assert psnr[-1] > psnr[0] + 3


@pytest.mark.parametrize("name", PRESETS)
def test_cli_reconstruct_rgb_odd_size(tmp_path, name):
    from dipkit.cli import main
    from dipkit.tasks import get_task

    img = np.repeat(tiny_image(32)[:, :17, :23], 3, axis=0) * np.array([1.0, 0.8, 0.6])[:, None, None]
    problem = get_task("denoise").simulate(img.astype(np.float32), noise_std=0.1, seed=0)
    path = tmp_path / "p.npz"
    problem.save(path)
    out = tmp_path / "run"
    assert main(["reconstruct", str(path), "--iterations", "6", "--device", "cpu", "--set", f"net.name={name}",
                 "--set", "net.channels=4", "--quiet", "--out", str(out)]) == 0
    assert np.load(out / "reconstruction.npy").shape == (3, 17, 23)
