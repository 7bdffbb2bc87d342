"""Tests for dipkit.io: readers, DICOM windowing, samples, resizing, atomic writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dipkit import io as dio
from dipkit.errors import DipkitError


def _pydicom_file(name: str) -> Path | None:
    """A DICOM test file bundled inside the installed pydicom, or None (never downloads)."""
    import pydicom

    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    return path if path.is_file() else None


def _require(name: str) -> Path:
    path = _pydicom_file(name)
    if path is None:
        pytest.skip(f"{name} is not bundled with the installed pydicom")
    return path


def _no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- raster formats


def test_png_8bit_gray(tmp_path):
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(arr).save(tmp_path / "g.png")
    img = dio.read_image(tmp_path / "g.png")
    assert img.shape == (1, 16, 16) and img.dtype == np.float32
    np.testing.assert_allclose(img[0], arr / 255.0, atol=1e-7)


def test_png_16bit_gray(tmp_path):
    arr = np.linspace(0, 65535, 64 * 32).astype(np.uint16).reshape(64, 32)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    img = dio.read_image(tmp_path / "g16.png")
    assert img.shape == (1, 64, 32)
    np.testing.assert_allclose(img[0], arr / 65535.0, atol=1e-6)
    assert img.max() == pytest.approx(1.0)


def test_png_rgb_and_rgba(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    img = dio.read_image(tmp_path / "c.png")
    assert img.shape == (3, 12, 20)
    np.testing.assert_allclose(img, np.moveaxis(rgb, -1, 0) / 255.0, atol=1e-7)

    rgba = np.concatenate([rgb, np.full((12, 20, 1), 7, np.uint8)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    img_a = dio.read_image(tmp_path / "a.png")
    assert img_a.shape == (3, 12, 20)  # alpha dropped
    np.testing.assert_allclose(img_a, img, atol=1e-7)


def test_jpeg(tmp_path):
    arr = np.full((32, 48, 3), (200, 100, 50), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "p.jpg", quality=95)
    img = dio.read_image(tmp_path / "p.jpg")
    assert img.shape == (3, 32, 48)
    np.testing.assert_allclose(img.mean(axis=(1, 2)), [200 / 255, 100 / 255, 50 / 255], atol=0.02)


def test_tiff_uint16_and_float32(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    u16 = (np.arange(40 * 30) * 50).astype(np.uint16).reshape(40, 30)
    tifffile.imwrite(tmp_path / "u.tif", u16)
    img = dio.read_image(tmp_path / "u.tif")
    assert img.shape == (1, 40, 30)
    np.testing.assert_allclose(img[0], u16 / 65535.0, atol=1e-6)

    f32 = np.linspace(-0.5, 2.0, 20 * 10, dtype=np.float32).reshape(20, 10)
    tifffile.imwrite(tmp_path / "f.tiff", f32)
    img_f = dio.read_image(tmp_path / "f.tiff")
    np.testing.assert_array_equal(img_f[0], f32)  # float taken as is

    rgb = np.random.default_rng(1).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    img_rgb = dio.read_image(tmp_path / "rgb.tif")
    np.testing.assert_allclose(img_rgb, np.moveaxis(rgb, -1, 0) / 255.0, atol=1e-7)


def test_tiff_stack_takes_middle(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    stack = np.stack([np.full((6, 7), v, np.float32) for v in (0.1, 0.2, 0.3, 0.4, 0.5)])
    tifffile.imwrite(tmp_path / "s.tif", stack)
    img = dio.read_image(tmp_path / "s.tif")
    assert img.shape == (1, 6, 7)
    np.testing.assert_allclose(img, 0.3)


def test_npy_variants(tmp_path):
    f = np.random.default_rng(2).normal(size=(10, 12)).astype(np.float64)
    np.save(tmp_path / "f.npy", f)
    img = dio.read_image(tmp_path / "f.npy")
    assert img.shape == (1, 10, 12) and img.dtype == np.float32
    np.testing.assert_allclose(img[0], f.astype(np.float32))  # not rescaled or clipped

    u8 = np.arange(120, dtype=np.uint8).reshape(10, 12)
    np.save(tmp_path / "u.npy", u8)
    np.testing.assert_allclose(dio.read_image(tmp_path / "u.npy")[0], u8 / 255.0, atol=1e-7)

    chw = np.random.default_rng(3).random((3, 5, 6)).astype(np.float32)
    np.save(tmp_path / "chw.npy", chw)
    np.testing.assert_array_equal(dio.read_image(tmp_path / "chw.npy"), chw)

    hwc = np.random.default_rng(4).random((5, 6, 4)).astype(np.float32)
    np.save(tmp_path / "hwc.npy", hwc)
    np.testing.assert_array_equal(dio.read_image(tmp_path / "hwc.npy"), np.moveaxis(hwc[..., :3], -1, 0))

    one = np.random.default_rng(5).random((1, 5, 6)).astype(np.float32)
    np.save(tmp_path / "one.npy", one)
    assert dio.read_image(tmp_path / "one.npy").shape == (1, 5, 6)


def test_channel_conversion(tmp_path):
    rgb = np.zeros((3, 2, 2), np.float32)
    rgb[0, 0, 0] = 1.0  # pure red
    rgb[1, 0, 1] = 1.0  # pure green
    rgb[2, 1, 0] = 1.0  # pure blue
    rgb[:, 1, 1] = 1.0  # white
    np.save(tmp_path / "rgb.npy", rgb)
    gray = dio.read_image(tmp_path / "rgb.npy", channels="gray")
    assert gray.shape == (1, 2, 2)
    np.testing.assert_allclose(gray[0], [[0.299, 0.587], [0.114, 1.0]], atol=1e-6)

    g = np.random.default_rng(6).random((4, 4)).astype(np.float32)
    np.save(tmp_path / "g.npy", g)
    as_rgb = dio.read_image(tmp_path / "g.npy", channels="rgb")
    assert as_rgb.shape == (3, 4, 4)
    for c in range(3):
        np.testing.assert_array_equal(as_rgb[c], g)
    assert dio.read_image(tmp_path / "rgb.npy", channels="auto").shape == (3, 2, 2)
    with pytest.raises(DipkitError, match="channels"):
        dio.read_image(tmp_path / "g.npy", channels="cmyk")


# ---------------------------------------------------------------- DICOM


def test_dicom_ct_hu_window_matches_hand_computation():
    import pydicom

    path = _require("CT_small.dcm")
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array.astype(np.float64)
    hu = raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept)

    img, info = dio.read_image_with_info(path)
    assert img.shape == (1,) + raw.shape and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    assert info["modality"] == "CT" and info["window_mode"] == "ct-default"
    level, width = dio.DEFAULT_CT_WINDOW
    assert info["window"] == [level, width]
    for r, c in [(0, 0), (64, 64), (30, 100), (100, 20), (127, 127)]:
        expected = min(max((hu[r, c] - (level - width / 2)) / width, 0.0), 1.0)
        assert img[0, r, c] == pytest.approx(expected, abs=1e-6)

    # user window (narrow soft-tissue window): clipping happens and matches by hand
    img2, info2 = dio.read_image_with_info(path, window=(40, 400))
    assert info2["window_mode"] == "user"
    expected = np.clip((hu - (40 - 200)) / 400, 0, 1)
    np.testing.assert_allclose(img2[0], expected, atol=1e-6)

    img3 = dio.read_image(path, window="auto")
    assert img3.min() == pytest.approx(0.0) and img3.max() == pytest.approx(1.0)
    np.testing.assert_allclose(img3[0], (hu - hu.min()) / (hu.max() - hu.min()), atol=1e-6)

    with pytest.raises(DipkitError, match="WindowCenter"):
        dio.read_image(path, window="file")  # CT_small has no window in the file
    with pytest.raises(DipkitError, match="window"):
        dio.read_image(path, window=(40, 0))
    with pytest.raises(DipkitError, match="window"):
        dio.read_image(path, window="bone")


def test_dicom_mr_min_max():
    import pydicom

    path = _require("MR_small.dcm")
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    img, info = dio.read_image_with_info(path)
    assert info["window_mode"] == "min-max" and info["modality"] == "MR"
    np.testing.assert_allclose(img[0], (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-6)
    img_f, info_f = dio.read_image_with_info(path, window="file")
    assert info_f["window"] == [600.0, 1600.0]
    assert 0 <= img_f.min() and img_f.max() <= 1


def test_dicom_jpeg2000_decodes():
    from PIL import features

    candidates = [n for n in ("MR_small_jp2klossless.dcm", "JPEG2000.dcm") if _pydicom_file(n)]
    if not candidates:
        pytest.skip("no JPEG 2000 DICOM file is bundled with the installed pydicom")
    if not features.check("jpg_2000"):
        pytest.skip("this Pillow build has no JPEG 2000 (OpenJPEG) support")
    for name in candidates:
        img = dio.read_image(_pydicom_file(name))
        assert img.ndim == 3 and img.shape[0] == 1
        assert np.isfinite(img).all() and 0 <= img.min() and img.max() <= 1
    lossless, plain = _pydicom_file("MR_small_jp2klossless.dcm"), _pydicom_file("MR_small.dcm")
    if lossless and plain:
        np.testing.assert_array_equal(dio.read_image(lossless), dio.read_image(plain))


def test_dicom_jpeg_baseline_color_and_multiframe():
    path = _pydicom_file("SC_rgb_jpeg_dcmtk.dcm")
    if path is not None:
        img = dio.read_image(path)  # YBR_FULL JPEG baseline -> RGB
        assert img.shape == (3, 100, 100) and 0 <= img.min() and img.max() <= 1
        assert dio.read_image(path, channels="gray").shape == (1, 100, 100)
    path = _pydicom_file("SC_rgb_rle_2frame.dcm")
    if path is not None:
        img, info = dio.read_image_with_info(path)
        assert info["frame"] == 1 and info["n_frames"] == 2
        assert img.shape == (3, 100, 100)


def test_dicom_detected_by_content_and_monochrome1(tmp_path):
    import pydicom

    src = _require("CT_small.dcm")
    ref = dio.read_image(src)
    shutil.copy(src, tmp_path / "scan")  # no extension: DICM magic
    np.testing.assert_array_equal(dio.read_image(tmp_path / "scan"), ref)
    shutil.copy(src, tmp_path / "wrong.png")  # misleading extension
    np.testing.assert_array_equal(dio.read_image(tmp_path / "wrong.png"), ref)

    ds = pydicom.dcmread(src)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "mono1.dcm")
    np.testing.assert_allclose(dio.read_image(tmp_path / "mono1.dcm"), 1.0 - ref, atol=1e-6)


def test_dicom_without_pixel_data(tmp_path):
    path = _pydicom_file("rtplan.dcm")
    if path is None:
        pytest.skip("rtplan.dcm is not bundled")
    with pytest.raises(DipkitError, match="no pixel data"):
        dio.read_image(path)


# ---------------------------------------------------------------- errors


def test_errors_missing_and_unreadable(tmp_path):
    with pytest.raises(DipkitError, match="no such file"):
        dio.read_image(tmp_path / "nope.png")
    (tmp_path / "fake.png").write_text("this is not a png\n")
    with pytest.raises(DipkitError, match="fake.png"):
        dio.read_image(tmp_path / "fake.png")
    (tmp_path / "fake.dcm").write_text("not dicom either\n")
    with pytest.raises(DipkitError, match="fake.dcm"):
        dio.read_image(tmp_path / "fake.dcm")
    (tmp_path / "notes.xyz").write_text("hello\n")
    with pytest.raises(DipkitError, match="unknown image format"):
        dio.read_image(tmp_path / "notes.xyz")
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(DipkitError, match="empty"):
        dio.read_image(tmp_path / "zero.png")
    with pytest.raises(DipkitError, match="directory"):
        dio.read_image(tmp_path)


def test_errors_bad_npy(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 5), np.float32))
    with pytest.raises(DipkitError, match=r"empty.npy.*empty"):
        dio.read_image(tmp_path / "empty.npy")
    a = np.ones((8, 8), np.float32)
    a[2, 3] = np.nan
    np.save(tmp_path / "nan.npy", a)
    with pytest.raises(DipkitError, match=r"nan.npy.*NaN"):
        dio.read_image(tmp_path / "nan.npy")
    a[2, 3] = np.inf
    np.save(tmp_path / "inf.npy", a)
    with pytest.raises(DipkitError, match=r"inf.npy.*Inf"):
        dio.read_image(tmp_path / "inf.npy")
    np.save(tmp_path / "4d.npy", np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(DipkitError, match="shape"):
        dio.read_image(tmp_path / "4d.npy")
    np.save(tmp_path / "5ch.npy", np.zeros((5, 8, 9), np.float32))
    with pytest.raises(DipkitError, match="shape"):
        dio.read_image(tmp_path / "5ch.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DipkitError, match="obj.npy"):
        dio.read_image(tmp_path / "obj.npy")


def test_error_messages_are_one_line(tmp_path):
    (tmp_path / "fake.png").write_text("junk\n" * 10)
    with pytest.raises(DipkitError) as exc:
        dio.read_image(tmp_path / "fake.png")
    assert "\n" not in str(exc.value)


def test_errors_sources_and_samples():
    with pytest.raises(DipkitError, match="valid samples: .*shepp-logan"):
        dio.load_sample("no-such-sample")
    with pytest.raises(DipkitError, match="exactly one"):
        dio.load_image_source("x.png", "camera", size=None)
    with pytest.raises(DipkitError, match="exactly one"):
        dio.load_image_source(None, None, size=None)
    with pytest.raises(DipkitError, match="no file"):
        dio.sample_path("camera")


# ---------------------------------------------------------------- samples


@pytest.mark.parametrize("name", list(dio.list_samples()))
def test_every_sample_loads(name):
    img = dio.load_sample(name)
    assert img.dtype == np.float32 and img.ndim == 3 and img.shape[0] in (1, 3)
    assert np.isfinite(img).all()
    assert img.min() >= 0.0 and img.max() <= 1.0
    assert img.max() > img.min()
    assert dio.SAMPLES[name].kind and dio.SAMPLES[name].description


def test_sample_registry_basics():
    names = dio.list_samples()
    for required in ("shepp-logan", "camera", "astronaut", "ct", "mr"):
        assert required in names
    assert dio.load_sample("astronaut").shape[0] == 3
    assert dio.load_sample("astronaut", channels="gray").shape[0] == 1
    assert dio.load_sample("camera", channels="rgb").shape[0] == 3
    assert dio.load_sample("Shepp_Logan").shape == (1, 400, 400)
    for name in ("ct", "mr"):
        p = dio.sample_path(name)
        assert p.is_file() and p.suffix == ".dcm"
        np.testing.assert_array_equal(dio.read_image(p), dio.load_sample(name))


def test_load_image_source(tmp_path):
    img, meta = dio.load_image_source(None, "ct", size=64)
    assert img.shape == (1, 64, 64)
    assert meta["source"] == "sample" and meta["sample"] == "ct"
    assert meta["original_shape"] == [1, 128, 128] and meta["resized"] is True
    assert meta["window"] == list(dio.DEFAULT_CT_WINDOW)
    assert meta["pixel_spacing"][0] == pytest.approx(meta["original_pixel_spacing"][0] * 2)

    img, meta = dio.load_image_source(None, "astronaut", size=None, channels="gray")
    assert img.shape == (1, 512, 512) and meta["resized"] is False
    assert meta["original_shape"] == [3, 512, 512]

    np.save(tmp_path / "x.npy", np.random.default_rng(7).random((30, 40)).astype(np.float32))
    img, meta = dio.load_image_source(str(tmp_path / "x.npy"), None, size=16)
    assert img.shape == (1, 16, 16)
    assert meta["source"] == "file" and meta["format"] == "npy"
    assert meta["original_shape"] == [1, 30, 40] and meta["shape"] == [1, 16, 16]
    with pytest.raises(DipkitError, match="size"):
        dio.load_image_source(None, "camera", size=0)


# ---------------------------------------------------------------- resize


def test_resize_preserves_mean_and_shape():
    img = dio.load_sample("camera")
    small = dio.resize_image(img, 64)
    assert small.shape == (1, 64, 64) and small.dtype == np.float32
    assert abs(float(small.mean()) - float(img.mean())) < 0.01
    assert small.min() >= 0.0 and small.max() <= 1.0  # bilinear: no overshoot

    # anti-aliasing: a fine checkerboard shrinks to (almost) flat gray
    checker = (np.indices((256, 256)).sum(axis=0) % 2).astype(np.float32)[None]
    out = dio.resize_image(checker, 32)
    assert abs(float(out.mean()) - 0.5) < 0.01
    assert float(out.std()) < 0.05

    rgb = dio.load_sample("astronaut")
    assert dio.resize_image(rgb, 100).shape == (3, 100, 100)
    assert dio.resize_image(small, 128).shape == (1, 128, 128)  # upsampling


def test_resize_center_crops_non_square():
    img = np.zeros((1, 10, 20), np.float32)
    img[:, :, 5:15] = 1.0  # the central 10x10 square is all ones
    out = dio.resize_image(img, 10)
    np.testing.assert_array_equal(out, np.ones((1, 10, 10), np.float32))
    assert dio.resize_image(img, 5).shape == (1, 5, 5)
    np.testing.assert_allclose(dio.resize_image(img, 5), 1.0, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None])
def test_resize_rejects_bad_size(bad):
    with pytest.raises(DipkitError, match="size"):
        dio.resize_image(np.zeros((1, 4, 4), np.float32), bad)


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_failure_keeps_old_content(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with dio.atomic_write(target) as fh:
            fh.write(b"new partial data")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert _no_temp_files(tmp_path)

    fresh = tmp_path / "fresh.json"
    with pytest.raises(RuntimeError):
        with dio.atomic_write(fresh, "w") as fh:
            fh.write("{")
            raise RuntimeError("midway")
    assert not fresh.exists()
    assert _no_temp_files(tmp_path)

    class Unserializable:
        pass

    with pytest.raises(TypeError):
        dio.save_json(target, {"x": Unserializable()})
    assert target.read_bytes() == b"old"
    assert _no_temp_files(tmp_path)


def test_atomic_write_success_and_permissions(tmp_path):
    target = tmp_path / "sub" / "dir" / "a.txt"  # parents are created
    with dio.atomic_write(target, "w") as fh:
        fh.write("héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"
    assert target.stat().st_mode & 0o777 == 0o666 & ~dio._umask()  # not mkstemp's 0o600
    assert _no_temp_files(target.parent)
    with pytest.raises(ValueError):
        with dio.atomic_write(target, "a"):
            pass
    with pytest.raises(DipkitError, match="directory"):
        with dio.atomic_write(tmp_path, "w"):
            pass


def test_save_helpers_roundtrip(tmp_path):
    arr = np.random.default_rng(8).random((3, 5, 6)).astype(np.float32)
    dio.save_npy(tmp_path / "a.npy", arr)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), arr)

    dio.save_png(tmp_path / "rgb.png", arr)
    back = dio.read_image(tmp_path / "rgb.png")
    assert back.shape == (3, 5, 6)
    np.testing.assert_allclose(back, arr, atol=0.5 / 255 + 1e-6)

    dio.save_png(tmp_path / "g.png", np.array([[-1.0, 0.0], [5.0, 10.0]]), vmin=0, vmax=10)
    g = np.asarray(Image.open(tmp_path / "g.png"))
    assert g.tolist() == [[0, 0], [128, 255]]
    with pytest.raises(DipkitError):
        dio.save_png(tmp_path / "bad.png", np.zeros((2, 3, 4, 5)))

    dio.save_json(tmp_path / "m.json", {"psnr": float("nan"), "v": np.float32(1.5),
                                         "inf": float("inf"), "t": (1, 2), "a": np.arange(3)})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text) == {"psnr": None, "v": 1.5, "inf": None, "t": [1, 2], "a": [0, 1, 2]}
    assert "NaN" not in text and '\n  "psnr": null' in text

    yaml = pytest.importorskip("yaml")
    dio.save_yaml(tmp_path / "c.yaml", {"b": 1, "a": [np.int64(2), 3.5], "p": tmp_path})
    loaded = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert loaded == {"b": 1, "a": [2, 3.5], "p": str(tmp_path)}
    assert list(loaded) == ["b", "a", "p"]

    dio.save_text(tmp_path / "t.txt", "line1\nline2")
    assert (tmp_path / "t.txt").read_text() == "line1\nline2"
    assert _no_temp_files(tmp_path)


def test_save_figure(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    dio.save_figure(tmp_path / "f.png", fig, dpi=50)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dio.save_figure(tmp_path / "f.pdf", fig)
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    with pytest.raises(DipkitError, match="unsupported extension"):
        dio.save_figure(tmp_path / "f.xyz", fig)
    assert not (tmp_path / "f.xyz").exists()
    assert _no_temp_files(tmp_path)
