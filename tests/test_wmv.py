import math

import torch

from dipkit.engine import Callback, State, run
from dipkit.methods import Method
from dipkit.stopping import WMV, parse_rule, running_variance, select_iteration


def test_select_iteration_on_u_shaped_sequence():
    g = [(k - 40) ** 2 + 1.0 for k in range(200)]  # minimum at 40
    k_min, stopped = select_iteration(g, patience=30, delta=1.0)
    assert (k_min, stopped) == (40, True)


def test_select_iteration_relative_threshold_and_no_stop():
    # a slow decrease of 0.5% per step: with delta = 0.99 a new minimum needs a 1% decrease,
    # i.e. three steps, so patience 2 stops at once while patience 3 follows the decrease
    g = [100.0 * (0.995**k) for k in range(50)]
    k_min, stopped = select_iteration(g, patience=2, delta=0.99)
    assert k_min == 0 and stopped
    k_min, stopped = select_iteration(g, patience=3, delta=0.99)
    assert k_min == 48 and not stopped
    k_min, stopped = select_iteration(g, patience=100, delta=1.0)
    assert k_min == 49 and not stopped


def test_running_variance_matches_definition():
    w = torch.randn(5, 2, 1, 4, 4)
    v = running_variance(w)
    mean = w.mean(0)
    ref = torch.stack([sum(((w[i, b] - mean[b]) ** 2).sum() for i in range(5)) / 5 for b in range(2)])
    assert torch.allclose(v, ref, atol=1e-5)


class _Seq(Method):
    """A 'method' whose estimate follows a prescribed sequence: x_k = c_k · pattern_k (no learning)."""

    name = "seq-test"

    def __init__(self, *, lr: float = 0.0):
        super().__init__(lr=lr)

    def param_groups(self, state):
        return []

    def forward(self, state):
        k = state.step + 1
        # oscillation amplitude is U-shaped in k with its valley at k = 60
        amp = abs(k - 60) / 60 + 0.01
        sign = 1.0 if k % 2 else -1.0
        return torch.full_like(state.y, 0.5) + sign * amp

    def loss(self, state, x):
        return {"data": (x - state.y).pow(2).flatten(1).sum(1)}


def _state(steps):
    return State(physics=None, y=torch.zeros(1, 1, 4, 4), max_steps=steps, generator=torch.Generator())


def _expected_kmin(window, steps, patience):
    xs = [_Seq().forward(type("S", (), {"step": k, "y": torch.zeros(1, 1, 4, 4)})()) for k in range(steps)]
    g = [float(running_variance(torch.stack(xs[k - window + 1:k + 1]))) for k in range(window - 1, steps)]
    return select_iteration(g, patience=patience, delta=1.0, start=window)


def test_wmv_callback_selects_valley_and_stops():
    cb = WMV(window=4, patience=20, delta=1.0, mode="stop", check_every=5)
    st = run(_Seq(), _state(400), [cb])
    k_ref, stopped = _expected_kmin(4, 400, 20)
    assert stopped and cb.iteration == k_ref
    assert 55 <= cb.iteration <= 66  # the valley of the amplitude
    assert st.stop and "wmv" in st.stop_reason
    assert cb.iteration + 20 < st.step <= cb.iteration + 20 + 5
    # the stored estimate is the iterate at k_min
    assert torch.allclose(cb.estimate, _Seq().forward(type("S", (), {"step": cb.iteration - 1, "y": st.y})()))


def test_wmv_record_mode_runs_to_the_end_and_freezes_selection():
    cb = WMV(window=4, patience=20, delta=1.0, mode="record")
    st = run(_Seq(), _state(300), [cb])
    assert st.step == 300 and not st.stop
    k_ref, _ = _expected_kmin(4, 300, 20)
    assert cb.iteration == k_ref


class _TwoSeq(_Seq):
    """Network output x_k: oscillation with its valley at k = 60 (as _Seq); the method's estimate
    (its iterate, e.g. a smoothed one) oscillates with its valley at k = 30."""

    name = "two-seq-test"

    def iterate(self, state):
        k = state.step
        amp = abs(k - 30) / 30 + 0.01
        return torch.full_like(state.y, 0.25) + (1.0 if k % 2 else -1.0) * amp


def test_wmv_source_output_measures_the_network_output_but_selects_the_estimate():
    out = WMV(window=4, patience=200, mode="record", source="output")
    est = WMV(window=4, patience=200, mode="record")
    assert est.source == "estimate"
    st = run(_TwoSeq(), _state(150), [out, est])
    assert st.step == 150
    k_out, _ = _expected_kmin(4, 150, 200)                   # the valley of the output sequence
    assert out.iteration == k_out and 55 <= out.iteration <= 66
    assert 25 <= est.iteration <= 36                          # the valley of the estimate sequence
    # both return the method's estimate at their selected step
    s = type("S", (), {"y": st.y})
    for cb in (out, est):
        s.step = cb.iteration
        assert torch.allclose(cb.estimate, _TwoSeq().iterate(s))
    import pytest

    with pytest.raises(ValueError, match="source"):
        WMV(source="ema")


def _half_then_resume(make_cb, steps, split, method=_Seq):
    first = make_cb()
    a = _state(split)
    run(method(), a, [first])
    sd_state, sd_cb = a.state_dict(), first.state_dict()
    b = _state(steps)
    b.load_state_dict(sd_state)
    second = make_cb()
    second.load_state_dict(sd_cb)
    run(method(), b, [second])
    return second, b


def test_wmv_resumed_run_selects_as_the_uninterrupted_one():
    """The valley (k ≈ 60) is reached after the checkpoint at step 50, with a window that spans it:
    a resumed run must continue with the restored window, g_min and k_min."""
    for mode, kw in [("record", {}), ("stop", {"check_every": 5}), ("record", {"source": "output"})]:
        def make():
            return WMV(window=8, patience=20, delta=1.0, mode=mode, **kw)

        full = make()
        st_full = run(_TwoSeq() if kw.get("source") else _Seq(), _state(120), [full])
        res, st_res = _half_then_resume(make, 120, 50, _TwoSeq if kw.get("source") else _Seq)
        assert full.iteration is not None and full.iteration > 50
        assert res.iteration == full.iteration, mode
        assert torch.equal(res.estimate, full.estimate)
        assert st_res.step == st_full.step and st_res.stop == st_full.stop
    # a fresh (not restored) callback still starts from an empty window when reused
    cb = WMV(window=4, patience=20, mode="record")
    run(_Seq(), _state(100), [cb])
    first = cb.iteration
    run(_Seq(), _state(100), [cb])
    assert cb.iteration == first


def test_parse_rule():
    assert parse_rule("wmv") == ("wmv", "stop")
    assert parse_rule("wmv:record") == ("wmv", "record")
    assert parse_rule(None) == (None, "stop")
    import pytest

    from dipkit.errors import DipkitError

    with pytest.raises(DipkitError):
        parse_rule("nope")
    with pytest.raises(DipkitError):
        parse_rule("wmv:maybe")
