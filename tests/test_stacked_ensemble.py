"""Stacked ensembles (dipkit.nets.ensemble.StackedEnsemble, dipkit.run.ensembles): the members
vectorised equal the loop ensemble and the members' own runs; per-member rates; refusals; memory
chunks; the mode ``auto`` picks; resume."""

from __future__ import annotations

import copy
import json
import os
import types

import pytest
import torch
import torch.nn as nn

from dipkit.errors import DipkitError
from dipkit.nets.ensemble import Ensemble, StackedEnsemble, split_member_groups, stack_reason
from dipkit.run import reconstruct

from . import test_resume
from .conftest import TINY_NET
from .test_resume import _Killed, _same_run

interrupt = test_resume.interrupt  # the fixture that 'kills' a run after a checkpoint

#: stacked members' vectorised convolutions sum in another order than a member's own run: float32
#: rounding, grown by Adam over the steps (short runs keep it small)
TOL = {"rtol": 1e-4, "atol": 1e-4}


def _nets(n=3, dtype=torch.float32, **options):
    from dipkit.nets import build_net

    out = []
    for s in range(n):
        torch.manual_seed(s)
        out.append(build_net("unet", 2, 1, **{**TINY_NET, **options}).to(dtype))
    return out


def _ens_cfg(tiny_cfg, mode, *, n=3, iterations=20, **settings):
    cfg = tiny_cfg("dip", iterations=iterations, lr=1e-2)
    cfg.input.kind, cfg.input.perturb = "noise", 0.05
    cfg.ensemble, cfg.seed, cfg.ensemble_mode = n, 5, mode
    for k, v in settings.items():
        cfg.set(k, v)
    return cfg


# ---------------------------------------------------------------------- (a) whole runs
def test_stacked_ensemble_equals_the_loop_and_one_by_one_runs(ct_problem, tiny_cfg):
    """Same seeds → the same members (to float32 rounding) stacked, in the loop and one by one;
    metrics.json says how the members ran."""
    stacked = reconstruct(ct_problem, _ens_cfg(tiny_cfg, "stacked", **{"early_stop.rule": "val:record"}), quiet=True)
    loop = reconstruct(ct_problem, _ens_cfg(tiny_cfg, "loop", **{"early_stop.rule": "val:record"}), quiet=True)
    assert stacked["ensemble"]["mode"] == "stacked" and loop["ensemble"]["mode"] == "loop"
    assert stacked["ensemble"]["runs"] == 1 and stacked["ensemble"]["chunk"] == 3
    assert stacked["ensemble"]["loop_reason"] is None and stacked["ensemble"]["memory_gb"]["member"] > 0
    torch.testing.assert_close(stacked.members, loop.members, **TOL)
    assert not torch.equal(stacked.members[0], stacked.members[1])  # the members are seeded apart
    for b in range(3):
        one = _ens_cfg(tiny_cfg, "auto", n=1, **{"early_stop.rule": "val:record"})
        one.seed = 5 + b
        single = reconstruct(ct_problem, one, quiet=True)
        torch.testing.assert_close(stacked.members[b:b + 1], single.reconstruction, **TOL)
        torch.testing.assert_close(loop.members[b:b + 1], single.reconstruction, rtol=1e-5, atol=1e-6)
    assert ([m["iteration"] for m in stacked["ensemble"]["member_metrics"]]
            == [m["iteration"] for m in loop["ensemble"]["member_metrics"]])


def test_auto_mode_is_stacked_for_dip_and_written_to_metrics(ct_problem, tiny_cfg, tmp_path):
    cfg = _ens_cfg(tiny_cfg, "auto", n=2, iterations=4)
    reconstruct(ct_problem, cfg, tmp_path / "run", quiet=True)
    ens = json.loads((tmp_path / "run" / "metrics.json").read_text())["ensemble"]
    assert ens["mode"] == "stacked" and ens["loop_reason"] is None
    assert ens["chunk"] == 2 and ens["runs"] == 1 and set(ens["memory_gb"]) == {"member", "budget"}


# ---------------------------------------------------------------------- (b) the forward pass
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_stacked_forward_and_gradients_equal_the_loop_members(dtype, tol):
    nets = _nets(3, dtype)
    loop, stacked = Ensemble(copy.deepcopy(nets)), StackedEnsemble(copy.deepcopy(nets))
    assert len(stacked) == 3 and stacked.mode == "stacked" and loop.mode == "loop"
    assert all(p.shape[0] == 3 for p in stacked.parameters())
    assert len(list(stacked.parameters())) == len(list(nets[0].parameters()))
    torch.manual_seed(0)
    for k in (1, 2):  # k inputs per member, sample-major (as Self-Guided DIP passes them)
        z = torch.randn(3 * k, 2, 16, 16, dtype=dtype)
        a, b = loop(z), stacked(z)
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)
        for m in range(3):  # member m sees only its own rows
            torch.testing.assert_close(b[m * k:(m + 1) * k], nets[m](z[m * k:(m + 1) * k]), rtol=tol, atol=tol)
    loop.zero_grad(), stacked.zero_grad()
    z = torch.randn(3, 2, 16, 16, dtype=dtype)
    (loop(z) ** 2).sum().backward()
    (stacked(z) ** 2).sum().backward()
    for m in range(3):
        for (name, p), q in zip(loop.members[m].named_parameters(), stacked.stack.parameters()):
            torch.testing.assert_close(q.grad[m], p.grad, rtol=tol * 10, atol=tol * 10, msg=name)
    # a member's own state dict and networks back
    for m, net in enumerate(stacked.unstack()):
        assert stacked.member_state_dict(m).keys() == nets[m].state_dict().keys()
        torch.testing.assert_close(net(z[m:m + 1]), nets[m](z[m:m + 1]), rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="cannot be split"):
        stacked(torch.randn(4, 2, 16, 16, dtype=dtype))


# ---------------------------------------------------------------------- (c) per-member rates
class _LowerAt:
    """Lowers members' rates the way a schedule does (Schedule._apply) at given steps: a test driver."""

    def __init__(self, lowered: dict[int, dict[int, float]]):
        from dipkit.engine.schedule import Schedule

        class Lower(Schedule):
            def on_step_end(self, state):
                for b, f in lowered.get(state.step, {}).items():
                    self.factors[b] = f
                if state.step in lowered:
                    self._apply(state)

        self.cls = Lower


def _small_nets(n=3):
    out = []
    for s in range(n):
        torch.manual_seed(s)
        out.append(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1)).double())
    return out


OPTIMIZERS = {
    "adam": lambda g: torch.optim.Adam(g),
    "adamw": lambda g: torch.optim.AdamW(g, weight_decay=0.1),
    "sgd-momentum": lambda g: torch.optim.SGD(g, momentum=0.9),
    "sgd-nesterov": lambda g: torch.optim.SGD(g, momentum=0.9, nesterov=True, weight_decay=1e-3),
}


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_stacked_per_member_rates_equal_the_loops_separate_groups(opt_name):
    """Member 1's rate lowered at step 3 and member 2's at step 5 (a plateau schedule's changes):
    the stacked update (one group, member_lr, rescaled steps) equals the loop's (a group per member)."""
    from dipkit.engine.solver import _step

    nets = _small_nets()
    lowered = {3: {1: 0.25}, 5: {2: 0.5}}
    torch.manual_seed(1)
    z = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    target = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    out = {}
    for kind, net in (("loop", Ensemble(copy.deepcopy(nets))), ("stacked", StackedEnsemble(copy.deepcopy(nets))),
                      ("unchanged", StackedEnsemble(copy.deepcopy(nets)))):
        groups = split_member_groups([{"params": list(net.parameters()), "lr": 0.05}], net)
        opt = OPTIMIZERS[opt_name](groups)
        if kind == "stacked":
            assert len(opt.param_groups) == 1 and opt.param_groups[0]["member_lr"] == [0.05] * 3
        sched = _LowerAt(lowered if kind != "unchanged" else {}).cls(check_every=1)
        st = types.SimpleNamespace(optimizer=opt, y=target, step=0, metrics={})
        sched.on_start(st)
        for step in range(1, 9):
            opt.zero_grad()
            ((net(z) - target) ** 2).mean(dim=(1, 2, 3)).sum().backward()  # each member's own mean
            _step(opt)
            st.step = step
            sched.on_step_end(st)
        if kind == "stacked":
            g = opt.param_groups[0]
            assert g["member_lr"] == [0.05, 0.0125, 0.025] and g["lr"] == 0.05
            torch.testing.assert_close(st.metrics["lr"], torch.tensor([0.05, 0.0125, 0.025], dtype=torch.float64))
        out[kind] = [[p.detach().clone() for p in m.parameters()] for m in net.unstack()] if kind != "loop" else \
            [[p.detach().clone() for p in m.parameters()] for m in net.members]
    for b in range(3):
        for p, q in zip(out["loop"][b], out["stacked"][b]):
            torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-12)
    # the test sees the rates: members 1 and 2 moved otherwise without the changes, member 0 alike
    for b, same in ((0, True), (1, False), (2, False)):
        diff = max(float((p - q).abs().max()) for p, q in zip(out["stacked"][b], out["unchanged"][b]))
        assert (diff < 1e-12) == same, (b, diff)


def test_stacked_run_with_a_lowered_member_rate_equals_loop_and_own_runs(ct_problem, tiny_cfg):
    """The engine's stacked step with per-member rates (a DIP run, member 1's rate halved at step 8)
    equals the loop ensemble's and the member's own run with its rate halved at that step."""
    from dipkit.engine import run
    from dipkit.run.resolve import resolve_config
    from dipkit.run.runner import build_state

    def final(mode, seeds, lowered):
        cfg = _ens_cfg(tiny_cfg, "auto", n=len(seeds), iterations=16)
        method = cfg.validate()
        resolved = resolve_config(cfg, method, ct_problem)
        state = build_state(method, ct_problem, resolved, torch.device("cpu"), seeds=seeds, mode=mode)
        assert len(seeds) == 1 or state.net.mode == mode
        run(method, state, [_LowerAt({8: lowered}).cls(check_every=1)])
        return state.estimate

    stacked = final("stacked", [5, 6, 7], {1: 0.5})
    torch.testing.assert_close(stacked, final("loop", [5, 6, 7], {1: 0.5}), **TOL)
    for b in range(3):
        own = final(None, [5 + b], {0: 0.5} if b == 1 else {})
        torch.testing.assert_close(stacked[b:b + 1], own, **TOL)
    assert not torch.allclose(stacked[1:2], final(None, [6], {}), atol=1e-3)  # the halving mattered


def test_self_healing_rolls_a_stacked_ensemble_back_as_the_loop(ct_problem, tiny_cfg):
    """A NaN at step 7: the stacked run restores its snapshot (stacked tensors, optimiser state with the
    members' rates) and halves every member's rate, as the loop does."""
    from .test_healing import Faulty

    out = {}
    for mode in ("stacked", "loop"):
        cfg = _ens_cfg(tiny_cfg, mode, n=2, iterations=15)
        cfg.params = {}
        out[mode] = reconstruct(ct_problem, cfg, quiet=True, method=Faulty(at=7))
        assert out[mode]["rollbacks"] == [{"step": 7, "reason": "non-finite loss", "lr": 5e-3}]
        assert out[mode]["ensemble"]["mode"] == mode
    torch.testing.assert_close(out["stacked"].members, out["loop"].members, **TOL)
    assert torch.isfinite(out["stacked"].members).all()


# ---------------------------------------------------------------------- (d) optimisers that couple members
class _LBFGSDip:
    """DIP with L-BFGS (a line search over all parameters at once: not elementwise)."""

    @staticmethod
    def make():
        from dipkit.methods.dip import DIP

        class LBFGSDip(DIP):
            def make_optimizer(self, groups):
                return torch.optim.LBFGS(groups, lr=1.0)

        return LBFGSDip(lr=1e-2)


def test_a_non_elementwise_optimiser_is_refused_on_stacked_members(ct_problem, tiny_cfg):
    from dipkit.engine import run
    from dipkit.nets.ensemble import check_stacked_optimizer
    from dipkit.run.ensembles import choose_mode, optimizer_reason
    from dipkit.run.resolve import resolve_config
    from dipkit.run.runner import build_state, run_method

    method = _LBFGSDip.make()
    assert "LBFGS" in optimizer_reason(method) and optimizer_reason(tiny_cfg("dip").validate()) is None
    nets = _nets(2)
    cfg = _ens_cfg(tiny_cfg, "auto", n=2, iterations=3)
    mode, why = choose_mode(method, cfg, nets)
    assert mode == "loop" and "LBFGS" in why  # auto falls back to the loop
    cfg.ensemble_mode = "stacked"
    with pytest.raises(DipkitError, match="ensemble_mode=stacked is not possible here: its optimiser LBFGS"):
        run_method(ct_problem, cfg, method=method, quiet=True)
    # the engine refuses it too (a stacked network built by hand)
    resolved = resolve_config(cfg, method, ct_problem)
    state = build_state(method, ct_problem, resolved, torch.device("cpu"), mode="stacked")
    with pytest.raises(DipkitError, match="LBFGS couples the stacked ensemble members") as err:
        run(method, state)
    assert "\n" not in str(err.value)
    with pytest.raises(DipkitError, match="couples"):
        check_stacked_optimizer(torch.optim.Rprop(state.net.parameters()), state.net)
    check_stacked_optimizer(torch.optim.Rprop(nets[0].parameters()), nets[0])  # one network: fine


# ---------------------------------------------------------------------- (e) what cannot be stacked
def test_stack_reason_refuses_what_vmap_cannot_run_per_member():
    from dipkit.nets import build_net

    assert stack_reason(_nets(2)) is None
    assert "one member" in stack_reason(_nets(1))
    differ = [*_nets(1), *_nets(1, channels=4)]
    assert "architectures differ" in stack_reason(differ)
    drop = [nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout(0.1)) for _ in range(2)]
    assert "dropout" in stack_reason(drop)
    assert "checkpointing" in stack_reason(_nets(2, checkpointing=True))
    torch.manual_seed(0)
    decoders = [build_net("deep-decoder", 2, 1) for _ in range(2)]
    assert "keeps per-member state" in stack_reason(decoders)
    with pytest.raises(DipkitError, match="cannot be stacked: the members' architectures differ"):
        StackedEnsemble(differ)


def test_a_network_that_cannot_be_stacked_runs_in_the_loop(ct_problem, tiny_cfg):
    cfg = tiny_cfg("dip", iterations=3, lr=1e-2)
    cfg.net.name, cfg.net.options = "deep-decoder", {}
    cfg.ensemble = 2
    res = reconstruct(ct_problem, cfg, quiet=True)
    assert res["ensemble"]["mode"] == "loop" and "DeepDecoder" in res["ensemble"]["loop_reason"]
    cfg.ensemble_mode = "stacked"
    with pytest.raises(DipkitError, match="ensemble_mode=stacked is not possible here: DeepDecoder"):
        reconstruct(ct_problem, cfg, quiet=True)


def test_bf16_autocast_stacks_only_where_it_reaches_the_vectorised_network(ct_problem, tiny_cfg):
    """precision=bf16: stacked only where autocast lowers the vectorised convolutions (CUDA), else
    the loop (the CPU in the PyTorch versions seen), so the members run in the precision asked for."""
    cfg = tiny_cfg("dip", iterations=2, lr=1e-2)
    cfg.ensemble, cfg.precision = 2, "bf16"
    res = reconstruct(ct_problem, cfg, quiet=True)
    nets = _nets(2)
    z = torch.randn(2, 2, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = StackedEnsemble(copy.deepcopy(nets))(z), Ensemble(nets)(z)
    assert ref.dtype == torch.bfloat16
    if res["ensemble"]["mode"] == "stacked":
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)
    else:
        assert out.dtype != torch.bfloat16 and "autocast does not reach" in res["ensemble"]["loop_reason"]


@pytest.mark.parametrize("key,value,match", [("ensemble_mode", "vector", "ensemble_mode must be auto, stacked or loop"),
                                             ("ensemble_memory_gb", -1, "ensemble_memory_gb must be a positive"),
                                             ("ensemble_memory_gb", "lots", "bad value for 'ensemble_memory_gb'")])
def test_bad_ensemble_settings_are_one_line_errors(tiny_cfg, key, value, match):
    cfg = tiny_cfg("dip")
    cfg.ensemble = 2
    with pytest.raises(DipkitError, match=match) as err:
        cfg.set(key, value)
        cfg.validate()
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------- (f) memory chunks
def test_member_chunks_are_even():
    from dipkit.run.ensembles import member_chunks

    assert member_chunks(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert member_chunks(4, 4) == [(0, 4)] and member_chunks(4, 10) == [(0, 4)]
    assert member_chunks(3, 1) == [(0, 1), (1, 2), (2, 3)] and member_chunks(3, 0) == [(0, 1), (1, 2), (2, 3)]


def test_memory_chunks_equal_the_unchunked_ensemble(ct_problem, tiny_cfg, tmp_path):
    """A budget for 2 of 3 members: runs of 2 and 1 members (seeds kept), joined as one run's result."""
    settings = {"early_stop.rule": "val:record", "log_every": 5}
    whole = reconstruct(ct_problem, _ens_cfg(tiny_cfg, "auto", iterations=15, **settings), quiet=True)
    member = whole["ensemble"]["memory_gb"]["member"]
    cfg = _ens_cfg(tiny_cfg, "auto", iterations=15, **settings)
    cfg.ensemble_memory_gb = 2.5 * member
    chunked = reconstruct(ct_problem, cfg, tmp_path / "run", quiet=True)
    ens = chunked["ensemble"]
    assert (ens["mode"], ens["chunk"], ens["runs"]) == ("stacked", 2, 2)
    assert ens["memory_gb"]["budget"] == pytest.approx(2.5 * member, rel=1e-2)
    torch.testing.assert_close(chunked.members, whole.members, **TOL)
    torch.testing.assert_close(chunked.reconstruction, whole.reconstruction, **TOL)
    assert [m["seed"] for m in ens["member_metrics"]] == [5, 6, 7]
    assert ([m["iteration"] for m in ens["member_metrics"]]
            == [m["iteration"] for m in whole["ensemble"]["member_metrics"]])
    assert chunked["iterations"] == whole["iterations"] == 15
    assert chunked.history["step"] == whole.history["step"]
    for col in ("psnr", "loss"):
        assert chunked.history[col] == pytest.approx(whole.history[col], rel=1e-3), col
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (m["ensemble"]["chunk"], m["ensemble"]["runs"]) == (2, 2)
    # one member per run: the members' own runs
    cfg.ensemble_memory_gb = 1e-12
    ones = reconstruct(ct_problem, cfg, quiet=True)
    assert (ones["ensemble"]["chunk"], ones["ensemble"]["runs"]) == (1, 3)
    torch.testing.assert_close(ones.members, whole.members, **TOL)


def test_batched_seeds_run_in_memory_chunks(ct_problem, tiny_cfg):
    """dipkit bench's batched seeds: stacked, and in consecutive batches when they do not fit."""
    from dipkit.run.batched import reconstruct_seeds

    cfg = tiny_cfg("dip", iterations=10, lr=1e-2)
    whole = reconstruct_seeds(ct_problem, cfg, [0, 1, 2])
    assert [r["batched"]["mode"] for r in whole] == ["stacked"] * 3
    assert [r["batched"]["seeds"] for r in whole] == [[0, 1, 2]] * 3
    cfg.ensemble_memory_gb = 1e-12
    parts = reconstruct_seeds(ct_problem, cfg, [0, 1, 2])
    assert [r["batched"]["seeds"] for r in parts] == [[0], [1], [2]]
    for a, b in zip(whole, parts):
        torch.testing.assert_close(a.reconstruction, b.reconstruction, **TOL)


# ---------------------------------------------------------------------- (g) the mode auto picks
@pytest.mark.parametrize("name,expected", [("dip", "stacked"), ("aseqdip", "stacked"), ("sgld", "loop"),
                                           ("self-guided", "loop"), ("linearised-dip", "loop")])
def test_auto_mode_follows_the_methods_stack_members(tiny_cfg, name, expected):
    from dipkit.run.ensembles import choose_mode

    cfg = tiny_cfg(name)
    method = cfg.validate()
    mode, why = choose_mode(method, cfg, _nets(2))
    assert mode == expected
    assert (why is None) == (expected == "stacked")
    if expected == "loop":
        assert method.stack_members is False and "reaches into its members" in why
        cfg.ensemble_mode = "stacked"
        with pytest.raises(DipkitError, match="ensemble_mode=stacked is not possible here"):
            choose_mode(method, cfg, _nets(2))
    cfg.ensemble_mode = "loop"
    assert choose_mode(method, cfg, _nets(2)) == ("loop", None)


def test_a_loop_method_ensemble_records_its_mode(ct_problem, tiny_cfg):
    cfg = tiny_cfg("sgld", iterations=4, burn_in=2)
    cfg.ensemble = 2
    res = reconstruct(ct_problem, cfg, quiet=True)
    assert res["ensemble"]["mode"] == "loop" and res["ensemble"]["loop_reason"] == "sgld reaches into its members"


# ---------------------------------------------------------------------- (h) resume
@pytest.mark.parametrize("budget", [None, "chunks"])
def test_interrupted_stacked_ensemble_resumes_bit_for_bit(ct_problem, tiny_cfg, tmp_path, interrupt, budget):
    """A stacked ensemble (one run; or memory chunks of 2 + 1 members, interrupted in the second
    chunk) resumes from its checkpoint: the same arrays, history and plan as the uninterrupted run."""
    def cfg():
        c = _ens_cfg(tiny_cfg, "auto", iterations=20, **{"early_stop.rule": "wmv:record", "early_stop.window": 4})
        c.checkpoint.every = 5
        if budget:
            c.ensemble_memory_gb = 2.5e-9 * member_bytes
        return c

    member_bytes = 0.0
    if budget:
        probe = reconstruct(ct_problem, _ens_cfg(tiny_cfg, "auto", iterations=1), quiet=True)
        member_bytes = probe["ensemble"]["memory_gb"]["member"] * 1e9
    ref = reconstruct(ct_problem, cfg(), tmp_path / "ref", quiet=True)
    assert ref["ensemble"]["runs"] == (2 if budget else 1) and ref["ensemble"]["mode"] == "stacked"
    # the checkpoint of step 10 (steps 5, 10, 15 are written; the hook counts those at steps ≥ 10): chunks:
    # main's at 10 and 15, then main.1's at 10
    interrupt(10, nth=3 if budget else 1)
    with pytest.raises(_Killed):
        reconstruct(ct_problem, cfg(), tmp_path / "run", quiet=True)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["ensemble"]["mode"] == "stacked" and ckpt["phase"] == ("main.1" if budget else "main")
    # the stacked tensors [members, …] (chunks: the first run's two members; the second runs one network)
    assert any(k.startswith("stack.") for k in ckpt["runs"]["main"]["state"]["net"])
    assert ckpt["runs"][ckpt["phase"]]["state"]["step"] == 10
    os.environ.pop("DIPKIT_KILL_AFTER_CHECKPOINT")
    res = reconstruct(ct_problem, cfg(), tmp_path / "run", quiet=True, resume=True)
    assert torch.equal(res.reconstruction, ref.reconstruction) and torch.equal(res.members, ref.members)
    _same_run(tmp_path / "ref", tmp_path / "run")


def test_a_checkpoint_keeps_its_ensemble_mode(ct_problem, tiny_cfg, tmp_path, interrupt):
    """A loop-mode run resumes in the loop even though auto would stack now (the plan is the checkpoint's)."""
    def cfg(mode):
        c = _ens_cfg(tiny_cfg, mode, n=2, iterations=10)
        c.checkpoint.every = 5
        return c

    ref = reconstruct(ct_problem, cfg("loop"), tmp_path / "ref", quiet=True)
    interrupt(5)
    with pytest.raises(_Killed):
        reconstruct(ct_problem, cfg("loop"), tmp_path / "run", quiet=True)
    os.environ.pop("DIPKIT_KILL_AFTER_CHECKPOINT")
    res = reconstruct(ct_problem, cfg("loop"), tmp_path / "run", quiet=True, resume=True)
    assert res["ensemble"]["mode"] == "loop" and torch.equal(res.members, ref.members)
    # another mode is another configuration: not resumed from this checkpoint
    interrupt(5)
    with pytest.raises(_Killed):
        reconstruct(ct_problem, cfg("loop"), tmp_path / "run2", quiet=True)
    os.environ.pop("DIPKIT_KILL_AFTER_CHECKPOINT")
    with pytest.raises(DipkitError, match="another configuration"):
        reconstruct(ct_problem, cfg("stacked"), tmp_path / "run2", quiet=True, resume=True)
