"""The library type-checks and lints clean, as configured in pyproject.toml: mypy and ruff
on actors/, supervision/, storage/ and sim/. A failure shows their own output."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["actors", "supervision", "storage", "sim"]


@pytest.mark.parametrize("tool", [["mypy"], ["ruff", "check"]], ids=["mypy", "ruff"])
def test_the_library_passes(tool):
    done = subprocess.run([sys.executable, "-m", *tool, *PACKAGES], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(tool)} found problems:\n{done.stdout}{done.stderr}"
