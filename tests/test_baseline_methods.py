from dipkit.runner import reconstruct


def test_fbp_and_tv_runs(ct_problem, tiny_cfg):
    f = reconstruct(ct_problem, tiny_cfg("fbp"), quiet=True)
    assert f["iterations"] is None and f["psnr"] is not None
    t = reconstruct(ct_problem, tiny_cfg("tv", alpha=0.5, iterations=100), quiet=True)
    assert t["iterations"] == 100
    assert t["psnr"] > f["psnr"]
    assert t.history["step"][-1] == 100
    assert {"data", "tv"} <= set(t.history)
