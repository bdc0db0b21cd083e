"""A full disk, for real: a small tmpfs mounted by the test, filled by a child node.

In every mode the child must live through it (no SIGBUS from a writable map over a
sparse file), the write that did not fit must fail with `StoreFull`, everything written
before must still read back (the node keeps serving reads), and once space is freed
writes succeed again and survive a reopen. Needs root (to mount); skipped otherwise.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).resolve().parent / "storage_full_child.py"
ROOT = Path(__file__).resolve().parent.parent
SIZE = "8m"  # the child's ballast (5 MiB) plus a store that grows its map by doubling


@pytest.fixture
def small_fs(tmp_path):
    mount = tmp_path / "fs"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a small tmpfs to fill: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr.strip()}")
    try:
        yield str(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


@pytest.mark.parametrize("mode", ["sync", "process", "none"])
def test_a_full_disk_fails_the_write_that_did_not_fit_and_the_node_lives_on(small_fs, mode):
    child = subprocess.run([sys.executable, str(CHILD), small_fs, mode], capture_output=True,
                           text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.returncode != -signal.SIGBUS, f"mode {mode}: the node died of SIGBUS"
    assert child.returncode == 0, f"mode {mode}: exit {child.returncode}: {child.stderr[-2000:]}"
    lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in child.stdout.splitlines())
    acked = int(lines["acked"])
    assert lines["failed"] == "StoreFull", lines  # the store's own error, not a generic I/O one
    assert 5 <= acked < 400, lines  # it filled up, after some writes went through
    assert int(lines["read"]) == acked, lines  # everything acknowledged reads back, node up
    assert lines["after"] == "ok", lines  # space freed: writing works again
    assert int(lines["reopened"]) == acked + 1, lines  # and nothing was lost
    assert "ok" in lines
