"""What the tests share: paths, and helpers used by more than one test module (import
them with `from conftest import ...`; fixtures here are found by pytest)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
