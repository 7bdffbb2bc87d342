"""Bad input files never show a traceback: one line on stderr naming the file, exit code 2.

Every file dipkit reads as a problem, configuration, weights, checkpoint or measurement goes through
:mod:`dipkit.io.guard`; these tests feed the CLI (in process) files that are wrong in the ways files
are wrong, and fuzz the problem-file loader with random bytes, truncations and bit flips.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
import torch

from dipkit.cli import main
from dipkit.errors import DipkitError

from .conftest import tiny_image


def _one_line(capsys, code, path) -> str:
    """The CLI's stderr is one ``dipkit: error:`` line naming ``path``, and it exited with 2."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("dipkit: error:") and "Traceback" not in err, err
    assert os.path.basename(str(path)) in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def denoise_problem():
    from dipkit.tasks import get_task

    return get_task("denoise").simulate(tiny_image(8), seed=0)


@pytest.fixture
def good(tmp_path, denoise_problem):
    path = tmp_path / "good.npz"
    denoise_problem.save(path)
    return path


def _npz_with_header(path, header, y):
    np.savez(path, y=y, header=np.array(header if isinstance(header, str) else json.dumps(header)))
    return path


def _bad_problem(tmp_path, good, case):
    p = tmp_path / f"{case}.npz"
    spec = json.loads(str(np.load(good)["header"][()]))
    if case == "plain-npy":
        p = tmp_path / "array.npy"
        np.save(p, np.zeros((4, 4)))
    elif case == "plain-npy-named-npz":
        with open(p, "wb") as fh:
            np.save(fh, np.zeros((4, 4)))
    elif case == "random-bytes":
        p.write_bytes(np.random.default_rng(0).bytes(600))
    elif case == "zip-without-keys":
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("notes.txt", "not an array")
    elif case == "npz-without-keys":
        np.savez(p, a=np.arange(3.0))
    elif case == "truncated":
        data = good.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif case == "object-arrays":
        np.savez(p, y=np.array([{"a": 1}], dtype=object), header=np.array(json.dumps(spec)))
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "directory":
        p.mkdir()
    elif case == "header-not-json":
        _npz_with_header(p, "{not json", np.zeros((1, 1, 8, 8)))
    elif case == "header-bad-version":
        _npz_with_header(p, {**spec, "version": "one"}, np.zeros((1, 1, 8, 8)))
    elif case == "header-bad-meta":
        _npz_with_header(p, {**spec, "meta": [1, 2]}, np.zeros((1, 1, 8, 8)))
    elif case == "unknown-operator":
        _npz_with_header(p, {**spec, "operator": {"kind": "nope"}}, np.zeros((1, 1, 8, 8)))
    elif case == "measurement-shape":
        _npz_with_header(p, spec, np.zeros((1, 1, 8, 5)))
    elif case == "integer-measurement":
        _npz_with_header(p, spec, np.zeros((1, 1, 8, 8), dtype=np.int64))
    return p


PROBLEM_CASES = ["plain-npy", "plain-npy-named-npz", "random-bytes", "zip-without-keys", "npz-without-keys",
                 "truncated", "object-arrays", "empty", "directory", "header-not-json", "header-bad-version",
                 "header-bad-meta", "unknown-operator", "measurement-shape", "integer-measurement"]


@pytest.mark.parametrize("case", PROBLEM_CASES)
def test_reconstruct_bad_problem_file(tmp_path, capsys, good, case):
    path = _bad_problem(tmp_path, good, case)
    out = tmp_path / "run"
    code = main(["reconstruct", str(path), "--method", "fbp", "--out", str(out), "--quiet"])
    line = _one_line(capsys, code, path)
    assert not out.exists()
    if case == "object-arrays":
        assert "allow_pickle=False" in line
    if case.startswith("plain-npy"):
        assert ".npy" in line and "not an .npz archive" in line


@pytest.mark.parametrize("text", [
    "method: fbp\nwhatever: 3\n",  # an unknown key (taken as a method parameter)
    "method: fbp\nearly_stop: {bogus: 1}\n",  # an unknown key of a section
    "method: fbp\niterations: abc\n",  # a wrong type
    "method: fbp\nnet: 3\n",  # a section that is not a mapping
    "method: fbp\nvalidation: {fraction: [1, 2]}\n",
    "- a list\n- not a mapping\n",
    "method: [unclosed\n",  # not YAML
    b"\xff\xfe\x00 not utf-8",
], ids=["unknown-key", "unknown-section-key", "wrong-type", "section-not-mapping", "list-value", "top-level-list",
        "not-yaml", "not-utf8"])
def test_reconstruct_bad_config(tmp_path, capsys, good, text):
    cfg = tmp_path / "bad.yaml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "run"
    code = main(["reconstruct", str(good), "--config", str(cfg), "--out", str(out), "--quiet"])
    _one_line(capsys, code, cfg)
    assert not out.exists()


@pytest.mark.parametrize("text", [
    "cases: [{task: denoise, sample: camera}]\nmethods: [{method: fbp}]\nbogus: 1\n",
    "cases: [{task: denoise, sample: camera, size: [1]}]\nmethods: [{method: fbp}]\n",
    "cases: 3\nmethods: [{method: fbp}]\n",
    "defaults: {net: 5}\ncases: [{task: denoise, sample: camera}]\nmethods: [{method: fbp}]\n",
    "cases: [{task: denoise, sample: camera}\n",
], ids=["unknown-key", "wrong-type", "cases-not-list", "net-not-mapping", "not-yaml"])
def test_bench_bad_config(tmp_path, capsys, text):
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(text)
    code = main(["bench", str(cfg), "--out", str(tmp_path / "b"), "--quiet"])
    _one_line(capsys, code, cfg)


@pytest.mark.parametrize("case", ["list", "dict-of-ints", "junk-bytes", "npy", "truncated"])
def test_reconstruct_bad_weights(tmp_path, capsys, good, case):
    w = tmp_path / "w.pt"
    if case == "list":
        torch.save([1, 2, 3], w)
    elif case == "dict-of-ints":
        torch.save({"a": 1}, w)
    elif case == "junk-bytes":
        w.write_bytes(b"certainly not a torch file")
    elif case == "npy":
        with open(w, "wb") as fh:
            np.save(fh, np.zeros(3))
    else:
        torch.save({"conv.weight": torch.zeros(4, 4)}, w)
        w.write_bytes(w.read_bytes()[:200])
    code = main(["reconstruct", str(good), "--method", "dip", "--iterations", "2", "--set", f"net.weights={w}",
                 "--set", "net.scales=3", "--set", "net.channels=8", "--out", str(tmp_path / "run"), "--quiet"])
    _one_line(capsys, code, w)


@pytest.mark.parametrize("case", ["junk", "not-a-checkpoint", "damaged"])
def test_resume_bad_checkpoint(tmp_path, capsys, case):
    run = tmp_path / "run"
    run.mkdir()
    ckpt = run / "checkpoint.pt"
    if case == "junk":
        ckpt.write_bytes(b"\x00" * 64)
    elif case == "not-a-checkpoint":
        torch.save({"a": torch.zeros(2)}, ckpt)
    else:
        torch.save({"format": "dipkit-checkpoint", "version": 1, "request": 3, "problem": 5}, ckpt)
    code = main(["reconstruct", "--resume", str(run), "--quiet"])
    _one_line(capsys, code, ckpt)


def test_import_bad_measurement(tmp_path, capsys):
    sino = tmp_path / "sino.npz"
    np.savez(sino, sinogram=np.random.default_rng(0).random((12, 8)))
    sino.write_bytes(sino.read_bytes()[:100])
    code = main(["import", "--task", "ct", "--sinogram", str(sino), "--views", "8", "--out", str(tmp_path / "p.npz")])
    _one_line(capsys, code, sino)
    obj = tmp_path / "obj.npz"
    np.savez(obj, sinogram=np.array([None, 1], dtype=object))
    code = main(["import", "--task", "ct", "--sinogram", str(obj), "--views", "8", "--out", str(tmp_path / "p.npz")])
    assert "allow_pickle=False" in _one_line(capsys, code, obj)


# ---------------------------------------------------------------------- fuzz
def _mutants(data: bytes, rng) -> list[tuple[str, bytes]]:
    """40 files: random bytes (some with a zip or .npy magic in front), truncations, bit flips."""
    out = []
    for i in range(12):
        n = int(rng.integers(0, 3000))
        blob = rng.bytes(n)
        prefix = (b"", b"PK\x03\x04", b"\x93NUMPY")[i % 3]
        out.append((f"random{i}", prefix + blob))
    for i in range(14):
        cut = int(rng.integers(1, len(data)))
        out.append((f"cut{cut}", data[:cut]))
    for i in range(14):
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            pos = int(rng.integers(0, len(buf)))
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        out.append((f"flip{i}", bytes(buf)))
    return out


def test_fuzz_problem_loader(tmp_path, good):
    """Each mutant of a valid problem file either loads or raises a one-line DipkitError naming it."""
    from dipkit.problem import Problem

    rng = np.random.default_rng(18)
    loaded = 0
    for name, blob in _mutants(good.read_bytes(), rng):
        path = tmp_path / f"{name}.npz"
        path.write_bytes(blob)
        try:
            Problem.load(path)
            loaded += 1
        except DipkitError as exc:
            msg = str(exc)
            assert "\n" not in msg and path.name in msg, (name, msg)
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{name}: {type(exc).__name__}: {exc}")
    assert loaded < 40  # the mutants are mostly broken


def test_fuzz_other_readers(tmp_path):
    """Random bytes and bit flips given as weights, checkpoint or YAML config: DipkitError only."""
    from dipkit.run.config import load_config
    from dipkit.engine.checkpoint import load_checkpoint
    from dipkit.nets.weights import read_weights

    rng = np.random.default_rng(5)
    w = tmp_path / "w.pt"
    torch.save({"a.weight": torch.ones(3, 3), "a.bias": torch.zeros(3)}, w)
    data = w.read_bytes()
    for i, (name, blob) in enumerate(_mutants(data, rng)[::3]):
        path = tmp_path / f"m{i}.bin"
        path.write_bytes(blob)
        for reader in (read_weights, load_checkpoint, load_config):
            try:
                reader(path)
            except DipkitError as exc:
                assert "\n" not in str(exc) and path.name in str(exc), (name, reader.__name__, str(exc))
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"{reader.__name__} on {name}: {type(exc).__name__}: {exc}")
