"""The pure helpers of benchmarks/time_to_quality.py, on synthetic traces, and its replay of deepinv's DIP loop."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_quality.py"
_spec = importlib.util.spec_from_file_location("time_to_quality", _PATH)
ttq = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("time_to_quality", ttq)  # dataclasses look their module up
_spec.loader.exec_module(ttq)

# (wall s, CPU s, steps, returned PSNR, raw PSNR): rises to 30 dB, dips (a later pick), ends at 29.8
TRACE = [(0.0, 0.0, 0, None, 10.0), (1.0, 1.8, 10, 20.0, 20.0), (2.0, 3.9, 20, 29.6, 29.6),
         (3.0, 5.5, 30, 30.0, 30.0), (4.0, 7.9, 40, 29.0, 28.0), (5.0, 9.0, 40, 29.8, None)]


def test_best_and_time_to_within_half_a_db_of_it():
    assert ttq.best_psnr(TRACE) == 30.0
    assert ttq.time_to_within(TRACE) == (2.0, 3.9)  # 29.6 ≥ 30 − 0.5
    assert ttq.time_to_within(TRACE, margin=0.1) == (3.0, 5.5)
    assert ttq.best_psnr([(0.0, 0.0, 0, None, None)]) is None and ttq.time_to_within([]) is None


def test_time_to_a_target():
    assert ttq.time_to(TRACE, 25.0) == (2.0, 3.9)
    assert ttq.time_to(TRACE, 20.0) == (1.0, 1.8)  # reaching it exactly counts
    assert ttq.time_to(TRACE, 30.5) is None and ttq.time_to(TRACE, None) is None


def test_summary_cpu_share_and_medians():
    s = ttq.summarise(TRACE, 31.0)
    assert s["best_psnr"] == 30.0 and s["psnr"] == 29.8 and (s["wall_s"], s["cpu_s"]) == (5.0, 9.0)
    assert (s["within_wall_s"], s["within_cpu_s"]) == (2.0, 3.9)
    assert s["target_wall_s"] is None and s["target_cpu_s"] is None
    assert ttq.cpu_share(9.0, 5.0, 2) == pytest.approx(0.9) and ttq.cpu_share(1.0, 0.0, 2) is None
    runs = [{"t": 1.0}, {"t": None}, {"t": 3.0}]
    assert ttq.median_over(runs, "t") == (2.0, 2)
    assert ttq._reached([{"w": 1.0, "c": 2.0}, {"w": None, "c": None}], "w", "c") == "1.0 / 2.0 (1 of 2)"
    assert ttq._reached([{"w": None, "c": None}], "w", "c") == "not reached"


def test_deepinv_replay_is_deepinv_forward():
    pytest.importorskip("deepinv")
    import deepinv as dinv

    physics = dinv.physics.Denoising()
    y = torch.rand(1, 1, 16, 16)

    def model():
        torch.manual_seed(0)
        return ttq.deepinv_model((1, 16, 16), channels=8, iterations=3)

    reference = model()
    torch.manual_seed(1)  # the input z is drawn from the global generator
    expected = reference(y, physics)
    seen = []
    dip = model()
    torch.manual_seed(1)
    x, steps = ttq.deepinv_fit(dip, y, physics, every=1, on_output=lambda k, out: seen.append(k))
    assert steps == 3 and seen == [0, 1, 2]
    torch.testing.assert_close(x, expected)
