"""Tasks beyond CT (mri, mri-multicoil, denoise, inpaint, deblur, superres) and their operators:
adjoint tests, bit-identical save/load, gray and RGB images, noise options, bad options, the CLI,
and that naive / tv / dip run on every task."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dipkit.errors import DipkitError
from dipkit.physics import build_physics
from dipkit.problem import Problem
from dipkit.tasks import SIMULATE_OPTIONS, TASKS, get_task

from .conftest import tiny_image

N = 24  # image size of most tests (divisible by 2, 4 and 8)

#: small, fast options per task (plus the CT tasks, for the round trip)
OPTS = {
    "ct": {"views": 8},
    "ct-fan": {"views": 8},
    "mri": {},
    "mri-multicoil": {"coils": 3},
    "denoise": {},
    "inpaint": {"missing": 0.4},
    "deblur": {},
    "superres": {"factor": 2},
}
NEW_TASKS = ["mri", "mri-multicoil", "denoise", "inpaint", "deblur", "superres"]


def gray(n: int = N) -> np.ndarray:
    return tiny_image(n)


def rgb(n: int = N) -> np.ndarray:
    g = tiny_image(n)[0]
    return np.stack([g, g[::-1].copy(), 0.5 * g.T]).astype(np.float32)


def simulate(task, image=None, **kw):
    return get_task(task).simulate(gray() if image is None else image, **{**OPTS[task], **kw})


# ---------------------------------------------------------------------- operators
def _operators(dtype):
    from dipkit.physics.mri import CartesianMRI, MultiCoilCartesianMRI, cartesian_lines
    from dipkit.physics.restoration import BlurOp, DownsamplingOp, IdentityOp, InpaintingOp

    lines = cartesian_lines(15, 3, seed=1)
    kw = {"dtype": dtype}
    return {
        "mri": CartesianMRI([13, 15], lines, **kw),
        "mri-multicoil": MultiCoilCartesianMRI([13, 15], lines, 4, **kw),
        "denoising": IdentityOp([3, 13, 15], **kw),
        "inpainting-box": InpaintingOp([3, 13, 15], mask="box", box_ratio=0.25, **kw),
        "inpainting-random": InpaintingOp([1, 13, 15], mask="random", missing=0.5, seed=2, **kw),
        "blur": BlurOp([3, 13, 15], kernel_std=1.3, **kw),
        "blur-reflect": BlurOp([1, 13, 15], kernel_std=1.0, kernel_size=5, padding="reflect", **kw),
        "downsampling-bicubic": DownsamplingOp([3, 16, 12], factor=2, **kw),
        "downsampling-gaussian": DownsamplingOp([1, 16, 16], factor=2, filter="gaussian", **kw),
        "downsampling-none": DownsamplingOp([1, 16, 12], factor=4, filter="none", **kw),
        "downsampling-sinc-reflect": DownsamplingOp([3, 16, 16], factor=2, filter="sinc", padding="reflect", **kw),
    }


OPERATOR_NAMES = list(_operators(torch.float32))


def _img_shape(op):
    return (2, *op.spec["img_size"]) if op.spec["kind"].startswith("mri") else tuple(op.spec["img_size"])


@pytest.mark.parametrize("name", OPERATOR_NAMES)
def test_adjoint(name):
    """<A u, v> = <u, A^T v> in float64 for a batch of 2 (real dot product of the 2-channel
    representation for MRI, which is the real part of the complex one)."""
    op = _operators(torch.float64)[name]
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, *_img_shape(op), generator=g, dtype=torch.float64)
    au = op.A(u)
    v = torch.randn(au.shape, generator=g, dtype=torch.float64)
    atv = op.A_adjoint(v)
    assert atv.shape == u.shape and au.dtype == atv.dtype == torch.float64
    lhs, rhs = (au * v).flatten(1).sum(1), (u * atv).flatten(1).sum(1)
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["mri", "mri-multicoil"])
def test_mri_adjoint_is_complex_adjoint(name):
    """As complex operators: <A u, v>_C = <u, A^H v>_C (real and imaginary parts), and A is C-linear."""
    from deepinv.utils.mixins import MRIMixin

    op = _operators(torch.float64)[name]
    c = MRIMixin.to_torch_complex
    g = torch.Generator().manual_seed(1)
    u = torch.randn(1, *_img_shape(op), generator=g, dtype=torch.float64)
    au = op.A(u)
    v = torch.randn(au.shape, generator=g, dtype=torch.float64)
    lhs = (c(au) * c(v).conj()).sum()
    rhs = (c(u) * c(op.A_adjoint(v)).conj()).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10)
    iu = MRIMixin.from_torch_complex(1j * c(u))  # A(i u) = i A(u)
    assert torch.allclose(c(op.A(iu)), 1j * c(au), atol=1e-12)


@pytest.mark.parametrize("name", OPERATOR_NAMES)
def test_operator_rebuilds_from_spec(name):
    for dtype in (torch.float32, torch.float64):
        op = _operators(dtype)[name]
        spec = json.loads(json.dumps(op.spec))
        again = build_physics(spec, dtype=dtype)
        x = torch.rand(1, *_img_shape(op), dtype=dtype)
        assert op.A(x).dtype == dtype
        assert torch.equal(op.A(x), again.A(x)) and torch.equal(op.A_adjoint(op.A(x)), again.A_adjoint(op.A(x)))


def test_unit_norm_mri_and_birdcage_maps():
    from dipkit.physics.mri import birdcage_maps

    s = birdcage_maps(5, 16, 12)
    assert s.shape == (5, 16, 12) and np.allclose((np.abs(s) ** 2).sum(0), 1.0)
    assert np.array_equal(s, birdcage_maps(5, 16, 12))
    op = _operators(torch.float64)["mri"]
    x = torch.randn(1, *_img_shape(op), dtype=torch.float64)
    y = op.A(x)  # ||M F x|| <= ||x||; A A^H = M (a projection)
    assert float(y.norm()) <= float(x.norm()) + 1e-9
    assert torch.allclose(op.A(op.A_adjoint(y)), y, atol=1e-12)


@pytest.mark.parametrize("spec", [
    {"kind": "mri", "img_size": [8, 8]},
    {"kind": "mri", "img_size": [8, 8], "lines": [9]},
    {"kind": "mri", "img_size": [8, 8], "lines": [1], "extra": 1},
    {"kind": "mri-multicoil", "img_size": [8, 8], "lines": [1], "coils": 0},
    {"kind": "inpainting", "img_size": [1, 8, 8], "mask": "disc"},
    {"kind": "blur", "img_size": [1, 8, 8], "kernel_std": -1.0, "kernel_size": 3},
    {"kind": "downsampling", "img_size": [1, 8, 8], "factor": 3},
    {"kind": "downsampling", "img_size": [1, 8, 8], "factor": 2, "filter": "lanczos"},
])
def test_bad_specs_raise(spec):
    with pytest.raises(DipkitError):
        build_physics(spec)


# ---------------------------------------------------------------------- problems
@pytest.mark.parametrize("task", list(OPTS))
def test_save_load_round_trip_is_bit_identical(tmp_path, task):
    from dipkit.baselines.naive import naive_reconstruction

    p = simulate(task, seed=3)
    path = tmp_path / "p.npz"
    p.save(path)
    q = Problem.load(path)
    assert torch.equal(p.y, q.y) and torch.equal(p.x_true, q.x_true)
    assert q.spec == json.loads(json.dumps(p.spec)) and q.meta == json.loads(json.dumps(p.meta))
    assert q.img_shape == p.img_shape
    x = torch.rand(1, *p.img_shape)
    assert torch.equal(p.physics.A(x), q.physics.A(x))
    assert torch.equal(p.physics.A_adjoint(p.y), q.physics.A_adjoint(q.y))
    assert torch.equal(naive_reconstruction(p), naive_reconstruction(q))


@pytest.mark.parametrize("task", NEW_TASKS)
def test_float64_problem_reloads_as_float64(tmp_path, task):
    from dipkit.tasks import mri, restoration

    fn = {"mri": mri.simulate_mri, "mri-multicoil": mri.simulate_mri, "denoise": restoration.simulate_denoise,
          "inpaint": restoration.simulate_inpaint, "deblur": restoration.simulate_deblur,
          "superres": restoration.simulate_superres}[task]
    p = fn(gray(16), dtype=torch.float64, **OPTS[task])
    assert p.y.dtype == p.x_true.dtype == torch.float64
    p.save(tmp_path / "p.npz")
    q = Problem.load(tmp_path / "p.npz")
    assert q.y.dtype == torch.float64
    assert torch.equal(q.physics.A(q.x_true), p.physics.A(p.x_true))


@pytest.mark.parametrize("task", NEW_TASKS)
def test_gray_and_rgb(task):
    """Every task takes a gray image; the restoration tasks keep RGB; the MRI tasks refuse it
    (the CLI converts to gray for them: Task.channels == "gray")."""
    p = simulate(task)
    c_img = 2 if task.startswith("mri") else 1
    assert p.img_shape == (c_img, N, N) and p.x_true.shape == (1, c_img, N, N)
    assert p.meta["img_shape"] == [c_img, N, N] and p.meta["task"] == task
    assert torch.isfinite(p.y).all() and p.y.dtype == torch.float32
    assert p.y.shape[0] == 1 and p.physics.A(p.x_true).shape == p.y.shape
    if TASKS[task].channels == "gray":
        with pytest.raises(DipkitError, match="1-channel"):
            simulate(task, rgb())
    else:
        q = simulate(task, rgb())
        assert q.img_shape == (3, N, N) and torch.equal(q.x_true[0], torch.from_numpy(rgb()))
        assert q.physics.A(q.x_true).shape == q.y.shape and q.y.shape[1] == 3
        assert torch.isfinite(q.y).all()


def test_mri_convention_complex_two_channels():
    p = simulate("mri")
    assert torch.equal(p.x_true[:, 1], torch.zeros_like(p.x_true[:, 1]))
    assert torch.equal(p.x_true[:, :1], torch.from_numpy(gray())[None])
    q = simulate("mri-multicoil")
    assert q.y.shape == (1, 2, 3, N, N)


@pytest.mark.parametrize("acc,mask_type", [(4, "random"), (8, "random"), (4, "equispaced"), (8, "equispaced")])
def test_mri_masks(acc, mask_type):
    from dipkit.physics.mri import cartesian_lines

    w = 64
    lines = cartesian_lines(w, acc, mask_type=mask_type, seed=5)
    assert len(lines) == round(w / acc) and lines == sorted(set(lines))
    nc = round((0.08 if acc < 8 else 0.04) * w)
    assert set(range(w // 2 - nc // 2, w // 2 - nc // 2 + nc)) <= set(lines)  # fully sampled centre
    assert lines == cartesian_lines(w, acc, mask_type=mask_type, seed=5)
    if mask_type == "random":
        assert lines != cartesian_lines(w, acc, mask_type=mask_type, seed=6)
    else:  # equispaced: outer gaps differ by at most 1 (away from the centre block)
        outer = [j for j in lines if not (w // 2 - nc // 2 <= j < w // 2 - nc // 2 + nc)]
        left = [j for j in outer if j < w // 2]
        gaps = np.diff(left)
        assert gaps.max() - gaps.min() <= 1
    p = get_task("mri").simulate(gray(w), acceleration=acc, mask_type=mask_type, seed=5)
    assert p.spec["lines"] == lines and p.meta["acceleration"] == pytest.approx(w / len(lines))
    mask = p.physics.mask[0, 0]
    assert torch.equal(mask.sum(0), torch.tensor([float(w) if j in lines else 0.0 for j in range(w)]))


def test_inpaint_masks():
    p = simulate("inpaint", rgb(), missing=0.3, seed=4)
    m = p.physics.mask[0]
    assert torch.equal(m[0], m[1]) and torch.equal(m[0], m[2])  # same pixels in every channel
    assert int((m[0] == 0).sum()) == round(0.3 * N * N)
    assert torch.equal(p.y * (1 - m), torch.zeros_like(p.y))
    assert not torch.equal(m, simulate("inpaint", missing=0.3, seed=5).physics.mask[0, 0].expand_as(m))
    b = simulate("inpaint", missing=None, box_ratio=0.25)
    hole = (b.physics.mask[0, 0] == 0)
    assert b.spec["mask"] == "box" and int(hole.sum()) == 12 * 12  # round(24 * 0.5)^2, centred
    assert bool(hole[6:18, 6:18].all())
    default = get_task("inpaint").simulate(gray())
    assert default.spec == {**b.spec} and default.meta["noise_sigma"] == 0.0


def test_deblur_and_superres_parameters():
    p = simulate("deblur", kernel_std=1.0)
    assert p.spec["kernel_size"] == 7 and p.physics.filter.shape[-2:] == (7, 7)
    assert float(p.physics.filter.sum()) == pytest.approx(1.0, abs=1e-6)
    assert simulate("deblur", kernel_std=1.0, kernel_size=3).spec["kernel_size"] == 3
    s = simulate("superres", rgb(), factor=4, filter="bilinear")
    assert s.y.shape == (1, 3, N // 4, N // 4) and s.spec["filter"] == "bilinear"


# ---------------------------------------------------------------------- noise
@pytest.mark.parametrize("task", NEW_TASKS)
def test_noise_std_and_level(task):
    clean = simulate(task, noise_std=0.0, seed=1)  # (the seed also draws random masks)
    support = (clean.physics.A(torch.ones_like(clean.x_true)) != 0) if task in ("mri", "mri-multicoil", "inpaint") \
        else torch.ones_like(clean.y, dtype=torch.bool)
    if task.startswith("mri"):  # the mask of the k-space entries
        m = clean.physics.mask if task == "mri" else clean.physics.mask[:, :, None]
        support = m.expand_as(clean.y).bool()
    assert clean.meta["noise_sigma"] == 0.0 and torch.equal(clean.y, clean.physics.A(clean.x_true) * support)

    p = simulate(task, noise_std=0.05, seed=1)
    assert p.meta["noise_sigma"] == 0.05 and p.meta["noise_std"] == 0.05 and p.meta["noise_level"] is None
    resid = (p.y - clean.y)[support]
    assert float(resid.std()) == pytest.approx(0.05, rel=0.2)
    assert torch.equal((p.y - clean.y)[~support], torch.zeros_like(p.y[~support]))  # unmeasured stay 0
    assert torch.equal(p.y, simulate(task, noise_std=0.05, seed=1).y)
    assert not torch.equal(p.y, simulate(task, noise_std=0.05, seed=2).y)

    r = simulate(task, noise_level=0.1, seed=1)
    expected = 0.1 * float(clean.y.abs()[support].mean())
    assert r.meta["noise_sigma"] == pytest.approx(expected, rel=1e-5) and r.meta["noise_level"] == 0.1
    with pytest.raises(DipkitError, match="not both"):
        simulate(task, noise_std=0.1, noise_level=0.1)


def test_noise_defaults():
    assert simulate("denoise").meta["noise_sigma"] == pytest.approx(25 / 255)
    assert simulate("deblur").meta["noise_sigma"] == pytest.approx(0.01)
    assert simulate("mri").meta["noise_sigma"] == pytest.approx(0.01)
    assert simulate("superres").meta["noise_sigma"] == 0.0
    assert simulate("inpaint").meta["noise_sigma"] == 0.0


def test_ct_noise_std():
    p = simulate("ct", noise_std=0.3, seed=1)
    assert p.meta["noise_sigma"] == 0.3 and p.meta["noise_level"] is None
    assert simulate("ct").meta["noise_level"] == 0.02  # default stays relative 2 %
    with pytest.raises(DipkitError, match="not both"):
        simulate("ct", noise_std=0.1, noise_level=0.1)


@pytest.mark.parametrize("task,kw", [
    ("mri", {"acceleration": 1}),
    ("mri", {"acceleration": 0.5}),
    ("mri", {"acceleration": float("nan")}),
    ("mri", {"acceleration": 100}),
    ("mri", {"mask_type": "radial"}),
    ("mri", {"center_fraction": 1.0}),
    ("mri", {"center_fraction": -0.1}),
    ("mri-multicoil", {"coils": 0}),
    ("denoise", {"noise_std": -0.1}),
    ("denoise", {"noise_level": float("nan")}),
    ("inpaint", {"missing": 1.0}),
    ("inpaint", {"missing": -0.1}),
    ("inpaint", {"missing": None, "box_ratio": 0.0}),
    ("inpaint", {"missing": None, "box_ratio": 1.0}),
    ("inpaint", {"missing": 0.2, "box_ratio": 0.2}),
    ("deblur", {"kernel_std": 0.0}),
    ("deblur", {"kernel_size": 4}),
    ("deblur", {"kernel_size": 25}),
    ("superres", {"factor": 5}),
    ("superres", {"factor": 1}),
    ("superres", {"filter": "lanczos"}),
])
def test_bad_options_raise(task, kw):
    with pytest.raises(DipkitError):
        simulate(task, **kw)


def test_bad_images_raise():
    bad = gray()
    bad[0, 0, 0] = np.nan
    for task in NEW_TASKS:
        with pytest.raises(DipkitError, match="NaN"):
            get_task(task).simulate(bad, **OPTS[task])


# ---------------------------------------------------------------------- CLI
@pytest.mark.parametrize("task,flags", [
    ("ct", ["--views", "8", "--noise-std", "0.5"]),
    ("mri", ["--acceleration", "8", "--mask-type", "equispaced", "--noise-std", "0"]),
    ("mri-multicoil", ["--coils", "4", "--acceleration", "4", "--center-fraction", "0.1"]),
    ("denoise", ["--noise-std", str(15 / 255)]),
    ("inpaint", ["--box-ratio", "0.1"]),
    ("inpaint", ["--missing", "0.5", "--noise-level", "0.01"]),
    ("deblur", ["--kernel-std", "1.2", "--kernel-size", "7"]),
    ("superres", ["--factor", "2", "--filter", "gaussian"]),
])
def test_cli_simulate(tmp_path, capsys, task, flags):
    from dipkit.cli import main

    out = tmp_path / "p.npz"
    assert main(["simulate", "--task", task, "--sample", "camera", "--size", "32", *flags, "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    p = Problem.load(out)
    assert p.task == task and p.img_shape[1:] == (32, 32) and p.meta["source"]["sample"] == "camera"


def test_cli_simulate_rgb_and_errors(tmp_path, capsys):
    from dipkit.cli import main

    out = tmp_path / "p.npz"
    assert main(["simulate", "--task", "deblur", "--sample", "astronaut", "--size", "32", "--out", str(out)]) == 0
    assert Problem.load(out).img_shape == (3, 32, 32)
    assert main(["simulate", "--task", "mri", "--sample", "astronaut", "--size", "32", "--out", str(out)]) == 0
    assert Problem.load(out).img_shape == (2, 32, 32)  # converted to gray, then complex
    capsys.readouterr()
    for flags in (["--task", "mri", "--factor", "2"], ["--task", "superres", "--factor", "3"],
                  ["--task", "denoise", "--noise-std", "0.1", "--noise-level", "0.1"],
                  ["--task", "mri", "--acceleration", "1"], ["--task", "inpaint", "--missing", "1"]):
        assert main(["simulate", *flags, "--sample", "camera", "--size", "32", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("dipkit: error:") and "Traceback" not in err


def test_simulate_options_are_documented():
    for name, task in TASKS.items():
        assert set(task.options) <= set(SIMULATE_OPTIONS), name
        assert "noise_std" in task.options and "noise_level" in task.options, name


# ---------------------------------------------------------------------- methods on every task
@pytest.mark.parametrize("task", NEW_TASKS)
def test_naive_tv_dip_run_on_every_task(task, tiny_cfg):
    from dipkit.metrics import psnr
    from dipkit.run import reconstruct

    p = simulate(task, seed=0)
    res = {}
    for method, iters, params in (("naive", None, {}), ("tv", 60, {"alpha": 0.02}), ("dip", 8, {"lr": 1e-2})):
        r = reconstruct(p, tiny_cfg(method, iterations=iters, **params), quiet=True)
        x = r.reconstruction
        assert x.shape == (1, *p.img_shape) and torch.isfinite(x).all(), method
        res[method] = float(psnr(x, p.x_true))
    if task != "inpaint":  # a random-pixel hole: TV fills it, naive leaves zeros; everywhere TV wins
        assert res["tv"] > res["naive"]


def test_tv_on_complex_mri_data():
    """tv_reconstruct works on the 2-channel complex representation (single and multi-coil) and
    beats the zero-filled reconstruction; the imaginary part stays near zero for a real image."""
    from dipkit.baselines.tv import tv_reconstruct
    from dipkit.baselines.naive import naive_reconstruction
    from dipkit.metrics import psnr

    for task in ("mri", "mri-multicoil"):
        p = simulate(task, seed=0)
        x = tv_reconstruct(p.physics, p.y, 0.02, iterations=100)
        assert x.shape == p.x_true.shape
        assert float(psnr(x, p.x_true)) > float(psnr(naive_reconstruction(p), p.x_true)) + 3
        assert float(x[:, 1].abs().max()) < 0.1
