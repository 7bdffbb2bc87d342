"""The network's layout (dipkit.nets.layout, the ``memory_format`` setting): channels-last on the
CPU changes no result beyond float rounding, keeps the state dict and the layout seen outside the
network; it applies to a single network and to loop-ensemble members, not to stacked members."""

from __future__ import annotations

import pytest
import torch

from dipkit.errors import DipkitError
from dipkit.nets import build_net
from dipkit.nets.layout import is_channels_last, use_channels_last
from dipkit.run import reconstruct
from dipkit.run.config import RunConfig
from dipkit.run.runner import build_state

from .conftest import TINY_NET


def test_channels_last_network_computes_the_same_and_keeps_its_state_dict():
    torch.manual_seed(0)
    net = build_net("unet", 3, 3, **TINY_NET)
    ref = build_net("unet", 3, 3, **TINY_NET)
    ref.load_state_dict(net.state_dict())
    use_channels_last(net)
    use_channels_last(net)  # idempotent: one pair of hooks
    assert len(net._forward_pre_hooks) == 1 and len(net._forward_hooks) == 1
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    z = torch.randn(1, 3, 32, 32, requires_grad=True)
    out, expected = net(z), ref(z)
    assert out.is_contiguous()  # RGB output: the usual layout outside the network
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    out.square().mean().backward()
    g = z.grad.clone()
    z.grad = None
    expected.square().mean().backward()
    torch.testing.assert_close(g, z.grad, rtol=1e-5, atol=1e-6)
    assert net.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(net.state_dict())  # loads across layouts both ways
    net.load_state_dict(ref.state_dict())


# aSeqDIP feeds the network's output back as its next input (z_{k+1} = f_θ(z_k)) on top of Adam, so
# the two layouts' float rounding grows fast: on an Intel Xeon (oneDNN) the reconstructions differed
# by 0 after 1 step, 5.9e-3 after 2 and 3, 7.8e-2 after 15 (on an AMD EPYC: < 1e-3 after 15). It is
# compared after 3 steps, each a whole aSeqDIP step (input update and inner fit), at 2e-2 against an
# image range of ~2.
@pytest.mark.parametrize("method,iterations,atol", [("dip", 15, 1e-3), ("dip-tv", 15, 1e-3), ("aseqdip", 3, 2e-2)])
def test_channels_last_run_equals_the_contiguous_run(ct_problem, tiny_cfg, method, iterations, atol):
    results = {}
    for fmt in ("contiguous", "channels_last"):
        cfg = tiny_cfg(method, iterations=iterations)
        cfg.memory_format = fmt
        results[fmt] = reconstruct(ct_problem, cfg, quiet=True).reconstruction
    torch.testing.assert_close(torch.as_tensor(results["channels_last"]), torch.as_tensor(results["contiguous"]),
                               rtol=1e-2, atol=atol)  # float rounding, grown by Adam over the steps


def test_memory_format_channels_last_converts_the_run_network_and_loop_members(ct_problem, tiny_cfg):
    from dipkit.run.resolve import resolve_config

    def net(**settings):
        cfg = tiny_cfg("dip")
        for k, v in settings.items():
            setattr(cfg, k, v)
        method = cfg.validate()
        return build_state(method, ct_problem, resolve_config(cfg, method, ct_problem), torch.device("cpu")).net

    assert not is_channels_last(net())  # the default: contiguous
    assert is_channels_last(net(memory_format="channels_last"))
    stacked = net(ensemble=2, memory_format="channels_last")  # stacked members: one [N, …] tensor per name, contiguous
    assert stacked.mode == "stacked" and not is_channels_last(stacked)
    loop = net(ensemble=2, ensemble_mode="loop", memory_format="channels_last")  # loop members: as their own runs
    assert all(is_channels_last(m) for m in loop.members)


def test_a_bad_memory_format_is_a_one_line_error():
    cfg = RunConfig(method="dip")
    cfg.set("memory_format", "nhwc")
    with pytest.raises(DipkitError, match="memory_format must be"):
        cfg.validate()
