from dipkit.run import reconstruct


def test_fbp_and_tv_runs(ct_problem, tiny_cfg):
    f = reconstruct(ct_problem, tiny_cfg("fbp"), quiet=True)
    assert f["iterations"] is None and f["psnr"] is not None
    t = reconstruct(ct_problem, tiny_cfg("tv", alpha=0.5, iterations=100), quiet=True)
    assert t["iterations"] == 100
    assert t["psnr"] > f["psnr"]
    assert t.history["step"][-1] == 100
    assert {"data", "tv"} <= set(t.history)



def test_tv_keeps_the_imaginary_part_of_complex_mri_images():
    """TV's x ≥ 0 applies to real images only: on MRI (real/imaginary channels) it is off by default."""
    import math

    import torch

    from dipkit.methods import make_method
    from dipkit.problem import Problem
    from dipkit.tasks import get_task

    from .conftest import tiny_image

    p0 = get_task("mri").simulate(tiny_image(), acceleration=2, seed=0)
    # a complex image with a constant phase of −0.6 rad: negative imaginary part
    mag = p0.x_true[:, :1]
    x = torch.cat([mag * math.cos(-0.6), mag * math.sin(-0.6)], dim=1)
    p = Problem(physics=p0.physics, y=p0.physics.A(x), spec=p0.spec, x_true=x, meta=dict(p0.meta))
    x_auto = make_method("tv", alpha=0.01).reconstruct(p, iterations=100)
    x_pos = make_method("tv", alpha=0.01, nonneg=True).reconstruct(p, iterations=100)
    assert bool((x_pos >= 0).all()) and bool((x_auto[:, 1] < -0.1).any())
    err = lambda z: float(torch.linalg.vector_norm(z - x))  # noqa: E731
    assert err(x_auto) < 0.5 * err(x_pos)
