"""Tests for dipkit.nets: U-Net, DIP skip net, presets registry (CPU-sized)."""

from __future__ import annotations

import pytest
import torch

from dipkit.errors import DipkitError
from dipkit.nets import NETS, SkipNet, UNet, build_net, count_parameters, list_nets

# Small channel overrides per preset, so odd-size / batch tests stay fast.
TINY = {
    "unet": dict(channels=[4, 4, 8, 8, 8]),
    "unet-paper": dict(channels=4),
    "skip": dict(num_channels_down=4, num_channels_skip=2),
    "skip-small": dict(num_channels_down=[4, 4, 8, 8, 8], num_channels_skip=2),
    "deep-decoder": dict(channels=8, layers=3),
    "convdecoder": dict(channels=4, layers=3),
}
SIZES = [(31, 31), (32, 32), (17, 23), (1, 1), (2, 5)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add start-up cost (seconds on a loaded 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_registry_lists_all_presets():
    names = list_nets()
    assert set(names) == {"unet", "unet-paper", "skip", "skip-small", "deep-decoder", "convdecoder"} == set(NETS)
    assert all(isinstance(d, str) and d for d in names.values())
    assert set(TINY) == set(NETS)


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("size", SIZES)
def test_output_shape_tiny(name, size):
    torch.manual_seed(0)
    net = build_net(name, 2, 3, **TINY[name])
    out = net(torch.randn(2, 2, *size))
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(NETS))
def test_output_shape_real_presets_32(name):
    torch.manual_seed(0)
    net = build_net(name, 1, 1)
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 32))
    assert out.shape == (1, 1, 32, 32)
    assert torch.isfinite(out).all()


def test_unet_paper_parameter_count():
    net = build_net("unet-paper", 1, 1)
    n = count_parameters(net)
    assert 2_500_000 <= n <= 3_500_000
    assert n == 2_968_729
    assert net.channels == (128,) * 6 and net.skip_levels == (0, 1)
    assert count_parameters(net, trainable_only=True) == n


def test_unet_downsampling_sizes_odd_501():
    torch.manual_seed(0)
    net = UNet(1, 1, scales=6, channels=2, skip_levels=(0, 1), skip_channels=1)
    sizes = []
    hooks = [b.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-2])) for b in net.down]
    out = net(torch.randn(1, 1, 501, 3))
    for h in hooks:
        h.remove()
    assert sizes == [251, 126, 63, 32, 16]
    assert out.shape == (1, 1, 501, 3)


def _skip_params(c_enc: int, k: int) -> int:
    # conv1x1 (c_enc -> k, bias) + GroupNorm affine (2k) + extra 3x3 conv input channels (k*9*c_out)
    return c_enc * k + k + 2 * k


@pytest.mark.parametrize("levels", [(), (0,), (0, 1), (1, 3), (0, 1, 2, 3)])
def test_unet_skips_exactly_at_levels(levels):
    torch.manual_seed(0)
    c = 8
    net = UNet(1, 1, scales=5, channels=c, skip_levels=levels, skip_channels=3)
    present = tuple(lv for lv, blk in enumerate(net.up) if blk.skip_conv is not None)
    assert present == levels == net.skip_levels
    assert net.skip_channels == tuple(3 if lv in levels else 0 for lv in range(4))
    base = count_parameters(UNet(1, 1, scales=5, channels=c, skip_levels=()))
    per_skip = _skip_params(c, 3) + 3 * 9 * c
    assert count_parameters(net) - base == per_skip * len(levels)
    # the skip branches are used: their weights receive gradients
    net(torch.randn(1, 1, 16, 16)).square().mean().backward()
    for lv in levels:
        assert net.up[lv].skip_conv[0].weight.grad.abs().sum() > 0


def test_unet_skip_list_form_equals_levels_form():
    torch.manual_seed(3)
    a = UNet(1, 1, scales=4, channels=4, skip_levels=(0, 2), skip_channels=2)
    torch.manual_seed(3)
    b = UNet(1, 1, scales=4, channels=4, skip_channels=[2, 0, 2])
    assert a.skip_channels == b.skip_channels == (2, 0, 2)
    x = torch.randn(1, 1, 13, 13)
    assert torch.equal(a(x), b(x))


def test_paper_skips_are_at_two_lowest_resolutions():
    net = build_net("unet-paper", 1, 1)
    # decoder level 0 upsamples the coarsest feature; its skip comes from scale 4 (1/16 res)
    assert [blk.skip_conv is not None for blk in net.up] == [True, True, False, False, False]


def test_skipnet_skips_at_configured_levels():
    torch.manual_seed(0)
    net = SkipNet(2, 1, num_channels_down=[4, 4, 4], num_channels_skip=[3, 0, 2])
    kinds = [type(m).__name__ for m in net.skip]
    assert kinds == ["Sequential", "Identity", "Sequential"]
    assert net(torch.randn(1, 2, 9, 11)).shape == (1, 1, 9, 11)
    no_skip = SkipNet(2, 1, num_channels_down=[4, 4, 4], num_channels_skip=0)
    assert count_parameters(net) > count_parameters(no_skip)


def test_skipnet_paper_defaults():
    net = build_net("skip", 32, 3)
    assert net.num_channels_down == net.num_channels_up == (128,) * 5
    assert net.num_channels_skip == (4,) * 5
    assert count_parameters(net) == 2_217_831


@pytest.mark.parametrize("name", sorted(NETS))
def test_same_seed_same_output(name):
    x = torch.randn(1, 1, 17, 17)
    outs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        outs.append(build_net(name, 1, 1, **TINY[name])(x))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


@pytest.mark.parametrize("name", sorted(NETS))
def test_batch_samples_independent(name):
    torch.manual_seed(0)
    net = build_net(name, 1, 1, **TINY[name]).double()  # float64: no kernel rounding noise
    x = torch.randn(3, 1, 15, 12, dtype=torch.float64)
    full = net(x)
    single = torch.cat([net(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(full, single, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(NETS))
def test_float64(name):
    torch.manual_seed(0)
    net = build_net(name, 1, 1, **TINY[name]).double()
    out = net(torch.randn(1, 1, 11, 10, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (1, 1, 11, 10)


def test_skipnet_instance_norm_matches_batchnorm_for_one_sample():
    x = torch.randn(1, 2, 16, 16)
    torch.manual_seed(1)
    a = SkipNet(2, 1, num_channels_down=4, depth=3, norm="instance")
    torch.manual_seed(1)
    b = SkipNet(2, 1, num_channels_down=4, depth=3, norm="batch")
    torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)


def test_sigmoid_out():
    torch.manual_seed(0)
    out = build_net("unet", 1, 1, channels=4, sigmoid_out=True)(torch.randn(1, 1, 8, 8) * 10)
    assert out.min() >= 0 and out.max() <= 1


def test_unknown_name_and_keyword_raise():
    with pytest.raises(DipkitError, match="unet-paper"):
        build_net("resnet", 1, 1)
    with pytest.raises(DipkitError, match="skip_levels"):
        build_net("unet", 1, 1, num_layers=3)
    with pytest.raises(DipkitError, match="num_channels_skip"):
        build_net("skip", 1, 1, channels=3)


def test_invalid_configs_raise():
    with pytest.raises(DipkitError):
        UNet(1, 1, scales=3, channels=4, skip_levels=(5,))
    with pytest.raises(DipkitError):
        UNet(1, 1, scales=3, channels=4, skip_levels=(0,), skip_channels=[1, 1])
    with pytest.raises(DipkitError):
        UNet(1, 1, scales=3, channels=[4, 4])
    with pytest.raises(DipkitError):
        build_net("unet", 1, 1, upsample="cubic")
    with pytest.raises(DipkitError):
        SkipNet(1, 1, num_channels_down=[4, 4], num_channels_skip=[1, 1, 1])
    with pytest.raises(DipkitError):
        build_net("skip", 1, 1, norm="layer")
    with pytest.raises(DipkitError):
        build_net("unet", 2, 1)(torch.randn(1, 1, 8, 8))  # wrong channel count


def test_overrides_change_depth():
    net = build_net("unet-paper", 1, 1, scales=3, channels=4)
    assert len(net.down) == 2 and net.skip_levels == (0, 1)
    net = build_net("skip", 1, 1, depth=2, num_channels_down=4)
    assert net.depth == 2 and len(net.down) == 2


@pytest.mark.parametrize("name", sorted(NETS))
def test_tiny_fit_reduces_mse(name):
    torch.manual_seed(0)
    net = build_net(name, 2, 1, **TINY[name])
    z = torch.rand(1, 2, 16, 16) * 0.1
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    target = ((xx**2 + yy**2) < 0.4).float()[None, None]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = torch.mean((net(z) - target) ** 2)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_unet_activation_checkpointing_gives_the_same_gradients():
    import torch

    from dipkit.nets import build_net

    grads = []
    for ck in (False, True):
        torch.manual_seed(0)
        net = build_net("unet", 1, 1, scales=3, channels=8, checkpointing=ck)
        x = torch.randn(1, 1, 17, 19)
        net(x).pow(2).sum().backward()
        grads.append([p.grad for p in net.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))
