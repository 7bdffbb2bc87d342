"""The generic registry, the method index, and a start-up that imports neither torch nor deepinv."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dipkit.errors import DipkitError
from dipkit.registry import Registry


def test_registry_lookup_listing_and_errors():
    reg = Registry("widget", hint="run 'dipkit widgets'")

    @reg.register
    class A:
        name, description = "a", "the first"

    reg.register(object(), name="b", description="the second")
    assert list(reg) == ["a", "b"] and reg["a"] is A and "a" in reg and len(reg) == 2
    assert reg.describe() == {"a": "the first", "b": "the second"}
    with pytest.raises(DipkitError, match=r"unknown widget 'c' \(choose from a, b; run 'dipkit widgets'\)"):
        reg["c"]
    with pytest.raises(ValueError, match="registered twice"):
        reg.register(object(), name="a")
    assert reg.get("c", None) is None


def test_registry_loader_runs_once_on_a_miss():
    calls = []
    reg = Registry("thing", loader=lambda: (calls.append(1), reg.register(object(), name="late")))
    assert "late" in reg and calls == [1]
    assert "other" not in reg and calls == [1]


def test_method_index_matches_the_classes():
    from dipkit.methods import METHODS

    for name, entry in METHODS.index.items():
        cls = METHODS[name]
        assert cls.__module__ == entry["module"], name
        for field in ("description", "reference", "algorithm"):
            assert getattr(cls, field) == entry[field], (name, field)
    assert set(METHODS.index) == set(METHODS)   # every shipped method is indexed


@pytest.mark.parametrize("argv", [["--help"], ["methods"], ["nets"], ["samples"]])
def test_startup_imports_no_torch(argv):
    code = ("import sys, contextlib, io\n"
            "from dipkit.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n"
            f"        main({argv!r})\n"
            "    except SystemExit:\n"
            "        pass\n"
            "heavy = [m for m in ('torch', 'deepinv') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
