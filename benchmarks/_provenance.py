"""Where a benchmark result came from: the short git commit of the checkout a script runs in
(shared by the benchmark scripts that write ``benchmarks/results/`` files)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit() -> str:
    """The short commit of this checkout, or ``"unknown"`` outside git."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
