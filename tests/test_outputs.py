"""Outputs users expect: float TIFF, HU and DICOM for CT from DICOM, magnitude/phase for MRI, the
version and problem SHA-256 in metrics.json, and no stale files (non-empty --out refused, --overwrite)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from dipkit.cli import main

from .conftest import TINY_NET

NET = [f"--set=net.{k}={v}" for k, v in TINY_NET.items()]


@pytest.fixture(scope="module")
def dicom_ct(tmp_path_factory):
    """A 32² CT problem simulated from the bundled DICOM slice (CT_small.dcm, 128² → 32²)."""
    d = tmp_path_factory.mktemp("dicom")
    path = d / "ct.npz"
    assert main(["simulate", "--task", "ct", "--sample", "ct", "--size", "32", "--views", "12", "--out", str(path)]) == 0
    return path


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dipkit: error:"), err
    return err[0]


def test_tiff_hu_and_dicom_for_ct_from_dicom(dicom_ct, tmp_path):
    import pydicom
    import tifffile

    from dipkit.io.samples import sample_path

    run = tmp_path / "run"
    assert main(["reconstruct", str(dicom_ct), "--method", "fbp", "--dicom", "--out", str(run), "--quiet"]) == 0
    recon = np.load(run / "reconstruction.npy")
    tif = tifffile.imread(run / "reconstruction.tif")
    assert tif.dtype == np.float32 and np.array_equal(tif, recon[0])
    m = json.loads((run / "metrics.json").read_text())
    assert m["dipkit_version"] and m["problem_sha256"] == hashlib.sha256(dicom_ct.read_bytes()).hexdigest()
    # HU: the window (40, 2000) inverted
    hu = np.load(run / "reconstruction_hu.npy")
    np.testing.assert_allclose(hu, -960.0 + 2000.0 * recon, rtol=0, atol=1e-3)
    # DICOM: HU values, geometry from the source, new identifiers
    ds = pydicom.dcmread(run / "reconstruction.dcm")
    source = pydicom.dcmread(sample_path("ct"), stop_before_pixels=True)
    values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.abs(values - hu[0]).max() <= 0.5 + 1e-3
    assert ds.Modality == "CT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Rows == ds.Columns == 32
    for uid in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID"):
        assert getattr(ds, uid) != getattr(source, uid, None), uid
    assert str(ds.PatientName) == "" and ds.PatientID == ""
    spacing = float(source.PixelSpacing[0])
    np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [spacing * 4] * 2, rtol=1e-5)
    # the first pixel of the 4×-downsampled image is centred 1.5 source pixels from the source's first
    expected = [float(v) + 1.5 * spacing for v in source.ImagePositionPatient[:2]] + [float(source.ImagePositionPatient[2])]
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], expected, atol=1e-4)
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert float(ds.SliceThickness) == float(source.SliceThickness)
    assert m["task"] == "ct"


def test_dicom_needs_a_dicom_ct_source(ct_problem_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reconstruct", str(ct_problem_file), "--method", "fbp", "--dicom", "--out", str(out), "--quiet"]) == 2
    assert "DICOM" in _err(capsys) and not out.exists()
    # without --dicom: TIFF, no HU (not from DICOM)
    assert main(["reconstruct", str(ct_problem_file), "--method", "fbp", "--out", str(out), "--quiet"]) == 0
    assert (out / "reconstruction.tif").is_file() and not (out / "reconstruction_hu.npy").exists()


def test_mri_magnitude_and_phase(tmp_path):
    from dipkit.run import reconstruct
    from dipkit.tasks import get_task

    from .conftest import tiny_image

    problem = get_task("mri").simulate(tiny_image(16), acceleration=2, seed=0)
    from dipkit.run.config import RunConfig

    res = reconstruct(problem, RunConfig(method="naive", device="cpu"), tmp_path / "run", quiet=True)
    recon = np.load(tmp_path / "run" / "reconstruction.npy")
    assert recon.shape == (2, 16, 16) and res.is_complex
    mag = np.load(tmp_path / "run" / "reconstruction_magnitude.npy")
    phase = np.load(tmp_path / "run" / "reconstruction_phase.npy")
    np.testing.assert_allclose(mag[0], np.hypot(recon[0], recon[1]), rtol=1e-6)
    np.testing.assert_allclose(phase[0], np.arctan2(recon[1], recon[0]), rtol=1e-6)
    assert (tmp_path / "run" / "reconstruction_magnitude.png").is_file()
    import tifffile

    assert tifffile.imread(tmp_path / "run" / "reconstruction.tif").shape == (2, 16, 16)


def test_non_empty_out_is_refused_and_overwrite_leaves_no_stale_files(ct_problem_file, tmp_path, capsys):
    run = tmp_path / "run"
    base = ["reconstruct", str(ct_problem_file), "--method", "dip", "--iterations", "4", "--set", "log_every=2",
            "--device", "cpu", "--quiet", *NET]
    assert main([*base, "--ensemble", "2", "--out", str(run)]) == 0
    assert (run / "uncertainty.npy").is_file() and (run / "members.npz").is_file()
    before = (run / "metrics.json").read_text()
    assert main([*base, "--out", str(run)]) == 2
    assert "not empty" in _err(capsys) and (run / "metrics.json").read_text() == before
    assert main([*base, "--out", str(run), "--overwrite"]) == 0
    assert not (run / "uncertainty.npy").exists() and not (run / "members.npz").exists()  # the old run's files
    assert json.loads((run / "metrics.json").read_text())["ensemble"] is None
    # --overwrite never deletes what a run does not write
    (run / "notes.txt").write_text("mine")
    assert main([*base, "--out", str(run), "--overwrite"]) == 2
    assert "notes.txt" in _err(capsys) and (run / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    assert main([*base, "--out", str(tmp_path / "file")]) == 2
    _err(capsys)


def test_library_and_bench_manage_their_run_dirs(ct_problem, tiny_cfg, tmp_path):
    """The library default replaces the old run (bench, tune and the demo rerun into their dirs)."""
    from dipkit.errors import DipkitError
    from dipkit.run import reconstruct

    cfg = tiny_cfg("dip", iterations=4, lr=1e-2)
    cfg.ensemble = 2
    reconstruct(ct_problem, cfg, tmp_path / "run", quiet=True)
    cfg.ensemble = 1
    reconstruct(ct_problem, cfg, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "members.npz").exists()
    with pytest.raises(DipkitError, match="not empty"):
        reconstruct(ct_problem, cfg, tmp_path / "run", quiet=True, overwrite=False)
