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
