"""Sparse CT backend: the matrix reproduces deepinv's projector; adjoint, autograd, disk cache, specs."""

from __future__ import annotations

import copy
import json
import os
import warnings

import numpy as np
import pytest
import torch
from deepinv.physics import Tomography

from dipkit.errors import DipkitError
from dipkit.physics import sparse
from dipkit.physics.ct import default_backend, fan_beam, from_spec, parallel_beam

BUILDERS = {"parallel": parallel_beam, "fan": fan_beam}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets its own cache directory (never the home directory) and no shared matrices."""
    d = tmp_path / "cache"
    monkeypatch.setenv("DIPKIT_CACHE_DIR", str(d))
    sparse.clear_memory_cache()
    yield d
    sparse.clear_memory_cache()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def pair(geometry, n, views, dtype=torch.float32):
    """The same operator with both backends."""
    return (BUILDERS[geometry](n, views, dtype=dtype, backend="sparse"),
            BUILDERS[geometry](n, views, dtype=dtype, backend="deepinv"))


# ------------------------------------------------------------------------------ agreement
@pytest.mark.parametrize("geometry", ["parallel", "fan"])
@pytest.mark.parametrize("n", [16, 23])
@pytest.mark.parametrize("batch", [(1, 1), (2, 3)])  # mv and sparse.mm paths
def test_matches_deepinv_float32(geometry, n, batch):
    sp, dv = pair(geometry, n, 7)
    assert sp.backend == "sparse" and dv.backend == "deepinv"
    torch.manual_seed(n)
    x = torch.randn(*batch, n, n)
    y_sp, y_dv = sp.A(x), dv.A(x)
    assert y_sp.shape == y_dv.shape == (*batch, *sp.measurement_shape)
    assert y_sp.dtype == torch.float32
    assert rel(y_sp, y_dv) < 2e-5
    y = torch.randn_like(y_dv)
    assert rel(sp.A_adjoint(y), dv.A_adjoint(y)) < 2e-5


@pytest.mark.parametrize("geometry", ["parallel", "fan"])
@pytest.mark.parametrize("n", [16, 17])
def test_matches_deepinv_float64(geometry, n):
    """In float64 the sample points are deepinv's exactly: agreement to float64 rounding."""
    sp, dv = pair(geometry, n, 5, dtype=torch.float64)
    torch.manual_seed(0)
    x = torch.randn(2, 1, n, n, dtype=torch.float64)
    assert rel(sp.A(x), dv.A(x)) < 1e-12
    y = torch.randn(2, 1, *sp.measurement_shape, dtype=torch.float64)
    assert rel(sp.A_adjoint(y), dv.A_adjoint(y)) < 1e-12


@pytest.mark.parametrize("geometry", ["parallel", "fan"])
def test_batch_matches_single_bitwise(geometry):
    """Each image of a batch gets exactly the result it gets alone (like deepinv's operator)."""
    op = BUILDERS[geometry](16, 5, backend="sparse")
    x = torch.randn(3, 2, 16, 16)
    y = op.A(x)
    z = op.A_adjoint(y)
    for i in range(3):
        for j in range(2):
            assert torch.equal(y[i, j], op.A(x[i, j]))
            assert torch.equal(z[i, j], op.A_adjoint(y[i:i + 1, j:j + 1])[0, 0])


ODD_ANGLES = [0.0, 7.3, 33.1, 90.0, 91.5, 179.99, 250.0, 359.9]  # not equispaced, beyond 180


@pytest.mark.parametrize("geometry", ["parallel", "fan"])
def test_arbitrary_angle_list(geometry):
    """The builder takes any list of angles; checked against deepinv's Tomography built with it."""
    n = 20
    angles = torch.tensor(ODD_ANGLES, dtype=torch.float64)
    if geometry == "parallel":
        geom = sparse.RayGeometry.parallel(n, angles, dtype=torch.float64)
        ref = Tomography(angles=angles, img_width=n, circle=False, normalize=False,
                         adjoint_via_backprop=True, dtype=torch.float64)
    else:
        fp = {"source_radius": 41.0, "detector_radius": 17.5, "detector_spacing": 1.25,
              "n_detector_pixels": 45, "pixel_spacing": 28 / 29}
        geom = sparse.RayGeometry.fan(n, angles, dtype=torch.float64, **fp)
        ref = Tomography(angles=angles, img_width=n, circle=False, normalize=False,
                         adjoint_via_backprop=True, fan_beam=True, fan_parameters=dict(fp),
                         dtype=torch.float64)
    sm = sparse.system_matrix(geom)
    torch.manual_seed(3)
    x = torch.randn(1, 1, n, n, dtype=torch.float64)
    y_ref = ref.A(x)
    y = (sm.A @ x.reshape(-1)).reshape(y_ref.shape)
    assert rel(y, y_ref) < 1e-12
    rows, cols = sparse.sample_points(geom, [2, 5])
    assert rows.shape == cols.shape == (geom.n_detector_pixels, 2, sparse.padded_size(n))


# ------------------------------------------------------------------------------ adjoint, autograd
@pytest.mark.parametrize("geometry", ["parallel", "fan"])
@pytest.mark.parametrize("n", [15, 24])
def test_adjoint_identity(geometry, n):
    op = BUILDERS[geometry](n, 6, dtype=torch.float64, backend="sparse")
    torch.manual_seed(1)
    x = torch.randn(2, 2, n, n, dtype=torch.float64)
    ax = op.A(x)
    y = torch.randn_like(ax)
    lhs, rhs = (ax * y).sum(), (x * op.A_adjoint(y)).sum()
    assert abs(float(lhs - rhs)) <= 1e-12 * float(ax.norm() * y.norm())
    op32 = BUILDERS[geometry](n, 6, backend="sparse")
    ax32 = op32.A(x.float())
    lhs, rhs = (ax32 * y.float()).sum(), (x.float() * op32.A_adjoint(y.float())).sum()
    assert abs(float(lhs - rhs)) <= 1e-5 * float(ax32.norm() * y.norm())


@pytest.mark.parametrize("geometry", ["parallel", "fan"])
def test_autograd_matches_deepinv(geometry):
    n = 18
    sp, dv = pair(geometry, n, 5, dtype=torch.float64)
    torch.manual_seed(2)
    x0 = torch.rand(2, 1, n, n, dtype=torch.float64)
    y = torch.randn(2, 1, *sp.measurement_shape, dtype=torch.float64)
    grads = []
    for op in (sp, dv):
        x = x0.clone().requires_grad_()
        loss = ((op.A(x) - y) ** 2).sum() + (op.A_adjoint(op.A(x)) * x0).sum()
        loss.backward()
        grads.append(x.grad)
    assert rel(grads[0], grads[1]) < 1e-12
    # float32, the usual case
    sp, dv = pair(geometry, n, 5)
    grads = []
    for op in (sp, dv):
        x = x0.float().clone().requires_grad_()
        ((op.A(x) - y.float()) ** 2).sum().backward()
        grads.append(x.grad)
    assert rel(grads[0], grads[1]) < 1e-4


def test_gradcheck_and_double_backward():
    op = parallel_beam(6, 3, dtype=torch.float64, backend="sparse")
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 1, *op.measurement_shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op.A, (x,))
    assert torch.autograd.gradcheck(op.A_adjoint, (y,))
    assert torch.autograd.gradgradcheck(lambda t: (op.A(t) ** 2).sum(), (x,))


def test_fbp_uses_sparse_adjoint():
    sp, dv = pair("parallel", 24, 12)
    x = torch.rand(1, 1, 24, 24)
    y = dv.A(x)
    assert rel(sp.A_dagger(y), dv.A_dagger(y)) < 2e-5
    sp, dv = pair("fan", 24, 12)
    assert rel(sp.A_dagger(dv.A(x)), dv.A_dagger(dv.A(x))) < 1e-6  # dipkit's own fan FBP


def test_operator_copies_and_dtype_moves():
    op = fan_beam(16, 4)
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(copy.deepcopy(op).A(x), op.A(x))
    assert torch.equal(op.clone().A(x), op.A(x))
    d = copy.deepcopy(op).to(torch.float64)  # moves (converts) the matrix buffers too
    assert d._sparse_A_val.dtype == torch.float64 and d.A(x.double()).dtype == torch.float64
    assert "angles" in op.state_dict() and not any("sparse" in k for k in op.state_dict())
    with pytest.raises(ValueError):
        op.A(torch.rand(1, 1, 15, 15))
    with pytest.raises(ValueError):
        op.A_adjoint(torch.rand(1, 1, 3, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_cuda_moves_matrices():
    op = parallel_beam(16, 5, backend="sparse")
    x = torch.rand(1, 1, 16, 16)
    ref = op.A(x)
    op = op.to("cuda")
    assert op._sparse_A_val.is_cuda and op._sparse_AT_crow.is_cuda
    assert rel(op.A(x.cuda()).cpu(), ref) < 1e-5
    assert parallel_beam(16, 5, device="cuda").backend == "deepinv"


# ------------------------------------------------------------------------------ backend choice, specs
def test_default_backend_and_spec():
    assert default_backend("cpu") == "sparse" and default_backend("cuda") == "deepinv"
    op = parallel_beam(16, 5)
    assert op.backend == "sparse" and "backend" not in op.spec  # old specs build the same operator
    assert "backend" not in fan_beam(16, 5).spec
    assert parallel_beam(16, 5, backend="deepinv").spec["backend"] == "deepinv"
    assert parallel_beam(16, 5, dtype=torch.float16).backend == "deepinv"  # no sparse half
    with pytest.raises(DipkitError, match="backend"):
        parallel_beam(16, 5, backend="gpu")
    with pytest.raises(DipkitError, match="backend"):
        from_spec({"kind": "ct", "geometry": "fan", "img_size": 16, "views": 5, "backend": "x"})
    with pytest.raises(DipkitError, match="float32 or float64"):
        fan_beam(16, 5, backend="sparse", dtype=torch.float16)


@pytest.mark.parametrize("geometry", ["parallel", "fan"])
@pytest.mark.parametrize("backend", [None, "sparse", "deepinv"])
def test_from_spec_reproduces_operator(geometry, backend):
    op = BUILDERS[geometry](17, 6, backend=backend)
    spec = json.loads(json.dumps(op.spec))
    sparse.clear_memory_cache()  # the copy comes from the disk cache (or is rebuilt), not shared
    op2 = from_spec(spec)
    assert op2.backend == op.backend and op2.spec == op.spec
    x = torch.rand(2, 1, 17, 17)
    assert torch.equal(op.A(x), op2.A(x))
    y = torch.rand(2, 1, *op.measurement_shape)
    assert torch.equal(op.A_adjoint(y), op2.A_adjoint(y))
    assert torch.equal(op.A_dagger(y), op2.A_dagger(y))


def test_bad_geometry_messages():
    for bad in (
        lambda: sparse.RayGeometry.parallel(1, [0.0]),
        lambda: sparse.RayGeometry.parallel(8, []),
        lambda: sparse.RayGeometry.parallel(8, [0.0, float("nan")]),
        lambda: sparse.RayGeometry.parallel(8, "abc"),
        lambda: sparse.RayGeometry.parallel(8, [0.0], dtype=torch.int32),
        lambda: sparse.RayGeometry.fan(8, [0.0], source_radius=10.0, detector_radius=5.0,
                                       detector_spacing=-1.0, n_detector_pixels=9, pixel_spacing=1.0),
        lambda: sparse.RayGeometry.fan(8, [0.0], source_radius=10.0, detector_radius=5.0,
                                       detector_spacing=1.0, n_detector_pixels=1, pixel_spacing=1.0),
        lambda: sparse.RayGeometry.fan(8, [0.0], source_radius=10.0, detector_radius=-12.0,
                                       detector_spacing=1.0, n_detector_pixels=9, pixel_spacing=1.0),
    ):
        with pytest.raises(DipkitError) as info:
            bad()
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------ cache
def geom16(views=5, **kw):
    return sparse.RayGeometry.parallel(16, np.arange(views) * (180.0 / views), **kw)


def same(a: sparse.SystemMatrix, b: sparse.SystemMatrix) -> bool:
    return all(torch.equal(getattr(a.A_parts, k), getattr(b.A_parts, k))
               and torch.equal(getattr(a.AT_parts, k), getattr(b.AT_parts, k))
               for k in ("crow", "col", "val"))


def test_cache_second_build_loads_from_disk(cache, monkeypatch):
    g = geom16()
    first = sparse.system_matrix(g)
    assert first.source == "built" and first.path.is_file()
    assert first.path.parent.parent == cache and first.path.suffix == ".npz"
    shared = sparse.system_matrix(g)
    assert shared.source == "memory" and shared.A_parts.val is first.A_parts.val
    sparse.clear_memory_cache()

    def no_build(geom):
        raise AssertionError("the cached matrix should have been loaded")

    monkeypatch.setattr(sparse, "build_matrix", no_build)
    second = sparse.system_matrix(g)
    assert second.source == "disk" and same(first, second)
    assert second.A_parts.crow.dtype == torch.int32 and second.A_parts.col.dtype == torch.int32
    assert second.A_parts.val.dtype == torch.float32


def test_operators_share_matrices():
    a, b = parallel_beam(16, 5), parallel_beam(16, 5)
    assert a._sparse_A_val.data_ptr() == b._sparse_A_val.data_ptr()


def test_different_geometries_get_different_files(cache):
    geoms = [
        geom16(5), geom16(6), geom16(5, dtype=torch.float64),
        sparse.RayGeometry.parallel(17, np.arange(5) * 36.0),
        sparse.RayGeometry.parallel(16, [0.0, 36.0, 72.0, 108.0, 144.5]),
        fan_beam(16, 5).ray_geometry,
        fan_beam(16, 5, detector_spacing=1.4).ray_geometry,
    ]
    paths = {sparse.matrix_path(g) for g in geoms}
    assert len(paths) == len(geoms)
    for g in geoms:
        sparse.system_matrix(g)
    assert len(list((cache / "ct-matrix").glob("*.npz"))) >= len(geoms)


def _corrupt_truncate(path, other):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_random(path, other):
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def _corrupt_wrong_key(path, other):
    path.write_bytes(other.read_bytes())  # another geometry's (valid) file under this name


def _corrupt_values(path, other):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["val"] = arrays["val"].copy()
    arrays["val"][3] += 1.0  # checksum no longer matches
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _corrupt_indices(path, other):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["col"] = arrays["col"].copy()
    arrays["col"][0] = 10**6  # out of range (checksum recomputed, so only the range check sees it)
    arrays["checksum"] = np.array(sparse._checksum(arrays))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


@pytest.mark.parametrize("corrupt", [_corrupt_truncate, _corrupt_random, _corrupt_wrong_key,
                                     _corrupt_values, _corrupt_indices])
def test_corrupt_cache_file_is_rebuilt(corrupt):
    g, other = geom16(5), geom16(7)
    good = sparse.system_matrix(g)
    other_path = sparse.system_matrix(other).path
    sparse.clear_memory_cache()
    corrupt(good.path, other_path)
    with pytest.warns(UserWarning, match="invalid"):
        again = sparse.system_matrix(g)
    assert again.source == "built" and same(good, again)
    sparse.clear_memory_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sparse.system_matrix(g).source == "disk"  # the file was overwritten with a good one
    # operators never see the problem either
    corrupt(good.path, other_path)
    sparse.clear_memory_cache()
    with pytest.warns(UserWarning, match="invalid"):
        op = parallel_beam(16, 5)
    x = torch.rand(1, 1, 16, 16)
    assert rel(op.A(x), parallel_beam(16, 5, backend="deepinv").A(x)) < 2e-5


def test_unwritable_cache_dir_builds_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("DIPKIT_CACHE_DIR", str(blocker / "cache"))  # cannot be created, even by root
    with pytest.warns(UserWarning, match="cannot write the CT matrix cache"):
        op = fan_beam(16, 5)
    assert op.backend == "sparse"
    x = torch.rand(1, 1, 16, 16)
    assert rel(op.A(x), fan_beam(16, 5, backend="deepinv").A(x)) < 2e-5


def test_read_only_cache_dir(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    monkeypatch.setenv("DIPKIT_CACHE_DIR", str(ro))
    g = geom16(5)
    made = sparse.system_matrix(g)  # a valid file exists before the directory becomes read-only
    sparse.clear_memory_cache()
    for d in (ro, ro / "ct-matrix"):
        d.chmod(0o555)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # root can still write; others get the warning
            assert sparse.system_matrix(g).source == "disk"
            op = parallel_beam(16, 6)  # not cached yet: built (in memory if not writable)
        x = torch.rand(1, 1, 16, 16)
        assert rel(op.A(x), parallel_beam(16, 6, backend="deepinv").A(x)) < 2e-5
        if not os.access(ro / "ct-matrix", os.W_OK):
            assert not sparse.matrix_path(op.ray_geometry).exists()
    finally:
        for d in (ro / "ct-matrix", ro):
            d.chmod(0o755)
    assert made.path.is_file()


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("DIPKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sparse.cache_dir() == tmp_path / "xdg" / "dipkit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sparse.cache_dir() == tmp_path / "home" / ".cache" / "dipkit"


def test_cache_file_loads_without_pickle(cache):
    path = sparse.system_matrix(geom16()).path
    with np.load(path, allow_pickle=False) as z:
        key = json.loads(str(z["key"][()]))
    assert key["format"] == sparse.FORMAT_VERSION and key["kind"] == "parallel"
    assert key["img_size"] == 16 and len(key["angles"]) == 5 and "deepinv" in key


# ------------------------------------------------------------------------------ general geometries
@pytest.mark.parametrize("n", [32, 31])
@pytest.mark.parametrize("circle", [True, False])
def test_general_parallel_reproduces_skimage_radon(n, circle):
    """skimage.transform.radon is our general parallel geometry with the axis at pixel
    (N//2, N//2), the axis on detector cell n_det//2 and the same angles (see
    dipkit.importers.ct): equal to float64 rounding, not just close."""
    from skimage.transform import radon

    rng = np.random.default_rng(n)
    img = rng.random((n, n))
    rr, cc = np.mgrid[:n, :n] - n // 2
    img[rr**2 + cc**2 > (n // 2 - 2) ** 2] = 0  # radon(circle=True) needs zeros outside the disc
    theta = np.sort(rng.uniform(0, 180, 11))
    sino = radon(img, theta=theta, circle=circle)
    nd = sino.shape[0]
    geom = sparse.RayGeometry.general("parallel", n, theta, n_detector_pixels=nd,
                                      cor_offset=nd // 2 - (nd - 1) / 2, center=(n // 2, n // 2),
                                      dtype=torch.float64)
    y = (sparse.build_matrix(geom) @ img.reshape(-1)).reshape(nd, -1)
    assert np.abs(y - sino).max() < 1e-12 * np.abs(sino).max()


def _gaussian_projections(geom, angles, center, r0, c0, sigma):
    """Exact line integrals of exp(-|p - p0|^2 / 2 sigma^2) (x right, y up), per detector cell."""
    t = geom.detector_positions()
    xc, yc = c0 - center[1], -(r0 - center[0])
    out = np.zeros((t.size, len(angles)))
    for v, th in enumerate(np.deg2rad(angles)):
        if geom.kind == "parallel":
            d = t - (xc * np.cos(th) + yc * np.sin(th))
        else:  # distance from the ray source (-R_s, 0) -> detector cell (R_d, t) in the rotated frame
            rs, rd = geom.source_radius, geom.detector_radius
            x, y = np.cos(th) * xc + np.sin(th) * yc, np.sin(th) * xc - np.cos(th) * yc
            d = ((x + rs) * t - y * (rs + rd)) / np.sqrt((rs + rd) ** 2 + t * t)
        out[:, v] = np.sqrt(2 * np.pi) * sigma * np.exp(-d * d / (2 * sigma**2)) * geom.scale
    return out


@pytest.mark.parametrize("geometry", ["parallel", "fan"])
def test_general_geometry_matches_analytic_line_integrals(geometry):
    """Angles beyond 180 deg, detector spacing, COR offset, a moved axis, a pixel size: the operator
    gives the line integrals of an off-centre Gaussian (1 % model error; a wrong angle sign: 80 %)."""
    n, sigma, r0, c0 = 40, 2.5, 15.0, 23.0
    ii, jj = np.mgrid[:n, :n]
    img = np.exp(-((ii - r0) ** 2 + (jj - c0) ** 2) / (2 * sigma**2))
    angles = [0.0, 17.0, 45.0, 90.0, 133.0, 200.0, 311.0]
    center, p = [18.0, 20.5], 0.7
    kw = dict(angles=angles, dtype=torch.float64, pixel_size=p, cor_offset=1.1 * p,
              detector_spacing=0.9 * p, center=center, backend="sparse")
    if geometry == "parallel":
        op = parallel_beam(n, n_detector_pixels=80, **kw)
    else:
        op = fan_beam(n, n_detector_pixels=120, source_radius=70 * p, detector_radius=35 * p, **kw)
    assert op.ray_geometry.is_general and op.ray_geometry.scale == p
    y = op.A(torch.tensor(img)[None, None])[0, 0].numpy()
    expected = _gaussian_projections(op.ray_geometry, angles, center, r0, c0, sigma)
    assert np.linalg.norm(y - expected) < 0.02 * np.linalg.norm(expected)


def test_general_geometry_backend_and_cache_key():
    g = parallel_beam(16, 5, cor_offset=0.5)
    assert g.backend == "sparse" and g.ray_geometry.is_general
    assert "center" in g.ray_geometry.key() and "scale" in g.ray_geometry.key()
    legacy = parallel_beam(16, 5).ray_geometry
    assert not legacy.is_general and "center" not in legacy.key()  # old cache files stay valid
    assert sparse.matrix_path(g.ray_geometry) != sparse.matrix_path(legacy)
    for make in (lambda: parallel_beam(16, 5, detector_spacing=2.0, backend="deepinv"),
                 lambda: fan_beam(16, 5, cor_offset=1.0, backend="deepinv")):
        with pytest.raises(DipkitError, match="only backend='sparse'"):
            make()
    with pytest.raises(DipkitError, match="float32 or float64"):
        parallel_beam(16, 5, pixel_size=0.5, dtype=torch.float16)
    with pytest.raises(DipkitError, match="source distance"):
        fan_beam(16, 5, source_radius=8.0, cor_offset=0.0)
