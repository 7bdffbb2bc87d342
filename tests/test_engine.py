import torch

from dipkit.engine import EMA, Callback, LastIterate, State, observe, run
from dipkit.methods import Method


class _Linear:
    """A tiny linear 'physics' (identity) for engine tests."""

    def A(self, x):
        return x

    def A_adjoint(self, y):
        return y


class _Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_start(self, state):
        self.events.append(("start", state.step))

    def on_step_end(self, state):
        self.events.append(("step", state.step))

    def on_outer_end(self, state):
        self.events.append(("outer", state.step, state.outer_step))

    def on_end(self, state):
        self.events.append(("end", state.step))


class _Traced(Method):
    name = "traced-test"
    inner_steps = 3

    def __init__(self, *, lr: float = 1e-2):
        super().__init__(lr=lr)
        self.calls = []

    def setup(self, state, resuming=False):
        self.calls.append("setup")

    def forward(self, state):
        self.calls.append("forward")
        return super().forward(state)

    def loss(self, state, x):
        self.calls.append("loss")
        return super().loss(state, x)

    def before_update(self, state):
        self.calls.append("before_update")

    def after_update(self, state):
        self.calls.append("after_update")

    def outer_update(self, state):
        self.calls.append("outer")


def _state(steps=7):
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    g = torch.Generator().manual_seed(0)
    y = torch.rand(2, 1, 8, 8)
    return State(physics=_Linear(), y=y, max_steps=steps, generator=g, net=net, z=torch.rand(2, 1, 8, 8))


def test_hooks_called_in_order():
    m, cb, st = _Traced(), _Recorder(), _state(7)
    run(m, st, [cb])
    assert m.calls[0] == "setup"
    per_step = ["forward", "loss", "before_update", "after_update"]
    body = m.calls[1:]
    # 7 steps, outer updates after steps 3 and 6
    expected = []
    for k in range(1, 8):
        expected += per_step
        if k % 3 == 0:
            expected.append("outer")
    assert body == expected
    assert cb.events[0] == ("start", 0)
    assert cb.events[-1] == ("end", 7)
    assert ("outer", 3, 1) in cb.events and ("outer", 6, 2) in cb.events
    # on_step_end of step 3 comes before its outer update
    i = cb.events.index(("step", 3))
    assert cb.events[i + 1] == ("outer", 3, 1)
    assert st.step == 7 and st.outer_step == 2


def test_loss_terms_are_per_sample_and_detached():
    st = _state(2)
    run(_Traced(), st, [])
    assert st.terms["data"].shape == (2,)
    assert not st.terms["data"].requires_grad and not st.x.requires_grad


def test_stop_request_ends_run():
    class Stopper(Callback):
        def on_step_end(self, state):
            if state.step == 4:
                state.request_stop("test")

    cb = _Recorder()
    st = run(_Traced(), _state(50), [Stopper(), cb])
    assert st.step == 4 and st.stop_reason == "test"
    assert cb.events[-1] == ("end", 4)


def test_ema_output_rule():
    class S:
        estimate = None

    s = S()
    rule = EMA(0.5)
    rule.update(s, torch.tensor([2.0]))
    assert torch.equal(s.estimate, torch.tensor([2.0]))
    rule.update(s, torch.tensor([4.0]))
    assert torch.allclose(s.estimate, torch.tensor([3.0]))
    LastIterate().update(s, torch.tensor([7.0]))
    assert s.estimate.item() == 7.0


def test_resume_gives_same_result_as_uninterrupted():
    a = run(_Traced(), _state(10), [])
    st = _state(10)
    st.max_steps = 4
    m = _Traced()
    run(m, st, [])
    sd = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in st.state_dict().items()}
    b = _state(10)
    b.optimizer = m.make_optimizer(m.param_groups(b))
    b.load_state_dict(sd)
    run(_Traced(), b, [])
    assert b.step == 10
    assert torch.allclose(a.x, b.x, atol=1e-6)


def test_observe_adds_a_callback_to_every_run_in_its_block():
    seen = []

    def make(state, callbacks):
        seen.append((state, [type(c).__name__ for c in callbacks.callbacks]))
        cb = _Recorder()
        seen.append(cb)
        return cb

    own = _Recorder()
    st = _state(4)
    with observe(make), observe(lambda state, callbacks: None):  # nested; None adds nothing
        run(_Traced(), st, [own])
        st.max_steps = 6
        run(_Traced(), st, [own])  # a continued run: one observer per run call
    run(_Traced(), _state(2), [own])  # outside the block: not observed
    assert [s for s, _ in seen[0::2]] == [st, st] and seen[0][1] == ["_Recorder"]
    first, second = seen[1], seen[3]
    assert [e for e in first.events if e[0] != "outer"] == [("start", 0), *[("step", k) for k in range(1, 5)],
                                                            ("end", 4)]
    assert second.events[0] == ("start", 4) and second.events[-1] == ("end", 6)
    # observers come after the run's own callbacks
    assert own.events[-1] == ("end", 2) and len(seen) == 4
