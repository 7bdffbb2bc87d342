"""Shared fixtures: tiny problems (≤ 32×32) and tiny networks, so the suite runs in minutes on 2 cores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

TINY_NET = {"scales": 3, "channels": 8}


def tiny_image(n: int = 32) -> np.ndarray:
    """A smooth phantom with edges: a disc and a square on a ramp, values in [0, 1]."""
    yy, xx = np.mgrid[0:n, 0:n] / (n - 1)
    img = 0.2 + 0.2 * xx
    img[(yy - 0.45) ** 2 + (xx - 0.4) ** 2 < 0.08] = 0.8
    img[int(0.6 * n):int(0.8 * n), int(0.55 * n):int(0.8 * n)] = 0.5
    return img[None].astype(np.float32)


@pytest.fixture
def ct_problem():
    from dipkit.tasks import get_task

    return get_task("ct").simulate(tiny_image(32), views=16, noise_level=0.02, seed=0)


@pytest.fixture
def ct_problem_file(tmp_path, ct_problem):
    path = tmp_path / "problem.npz"
    ct_problem.save(path)
    return path


@pytest.fixture
def tiny_cfg():
    from dipkit.run.config import RunConfig

    def make(method="dip", iterations=30, **params):
        cfg = RunConfig(method=method, iterations=iterations, device="cpu", log_every=5)
        cfg.early_stop.rule = None  # tests name their stopping rules (the default is 'auto' = val)
        cfg.net.options.update(TINY_NET)
        cfg.params.update(params)
        return cfg

    return make


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, _private_cache_dir):
    """Tiny pre-trained weights (+ trajectory, JSON) for the 32²/16-view CT problem of the fixtures, TINY_NET
    (8 steps, 6 trajectory snapshots): for warm starts and subspace-dip."""
    from dipkit.run.warmstart import pretrain

    out = tmp_path_factory.mktemp("pretrain") / "w.pt"
    pretrain(out, task="ct", size=32, task_options={"views": 16, "noise_level": 0.02}, net_options=TINY_NET,
             steps=8, checkpoints=6, lr=3e-3, quiet=True)
    return out


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Tests never write to the user's cache (the CT system matrices are cached on disk)."""
    import os

    old = os.environ.get("DIPKIT_CACHE_DIR")
    os.environ["DIPKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("dipkit-cache"))
    yield
    if old is None:
        os.environ.pop("DIPKIT_CACHE_DIR", None)
    else:
        os.environ["DIPKIT_CACHE_DIR"] = old
