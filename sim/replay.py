"""Replay: run a recorded trace's scenario and seed again and compare, record by record.

    outcome = replay("run.trace")
    if outcome.divergence: print(outcome.divergence)   # the first record that differs

The header says what was run (seed, scenario, Python version, git commit); a run on
another Python or commit may legitimately differ, and `notes` say so.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, field

from .runner import Result, git_commit, run
from .scenario import parse
from .trace import Divergence, TraceReader


@dataclass
class Replayed:
    path: str
    seed: int
    result: Result | None  # None when the replay diverged
    divergence: Divergence | None
    recorded_hash: str | None
    notes: list[str] = field(default_factory=list)


def replay(path: str) -> Replayed:
    """Re-run the trace at `path`; raises `TraceError` for a file that is not a trace or
    is damaged (truncated, altered), `ScenarioError` if its scenario no longer checks."""
    reader = TraceReader(path)
    try:
        reader.verify()
        header = reader.header
        notes = []
        if header.get("python") != platform.python_version():
            notes.append(f"recorded with Python {header.get('python')}, replayed with "
                         f"{platform.python_version()}: random streams may differ")
        commit = git_commit()
        if header.get("git") and header["git"] != commit:
            notes.append(f"recorded at commit {header['git']}, replayed at {commit}")
        scenario = parse(header["scenario"], header.get("path", path))
        try:
            result = run(scenario, header["seed"], expect=reader)
        except Divergence as divergence:
            return Replayed(path, header["seed"], None, divergence, None, notes)
        footer = reader.footer or {}
        return Replayed(path, header["seed"], result, None, footer.get("hash"), notes)
    finally:
        reader.close()
