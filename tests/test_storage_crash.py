"""SIGKILL a real node at random moments; every acknowledged write must come back, untorn.

The child (storage_crash_child.py) runs a real-time node in `sync` mode that persists
counters (snapshot style) and ledgers (event sourced, two events per write, snapshots
every 4 events) and prints every acknowledgement. The test kills it with SIGKILL after a
random number of acknowledgements, restarts it on the same files and checks what it
recovers against what was acknowledged: at least every acknowledged write, at most the
one write per key that was in flight, each value whole.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from conftest import BOUND
from storage_servers import checked

CHILD = Path(__file__).resolve().parent / "storage_crash_child.py"
COUNTERS, LEDGERS, KILLS = 6, 3, 8


def start(path: str, errors: Path) -> subprocess.Popen:
    with open(errors, "a") as err:  # a file, not a pipe: a chatty child never blocks
        return subprocess.Popen([sys.executable, str(CHILD), path, str(COUNTERS), str(LEDGERS)],
                                stdout=subprocess.PIPE, stderr=err, text=True)


def read_recovered(child: subprocess.Popen, errors: Path) -> tuple[list[int], list[list[int]]]:
    counters, ledgers = [0] * COUNTERS, [[] for _ in range(LEDGERS)]
    for line in child.stdout:
        words = line.split()
        if words == ["ready"]:
            return counters, ledgers
        assert words[0] == "recovered", line
        i = int(words[2])
        if words[1] == "counter":
            n, check, pad = map(int, words[3:])
            assert {"n": n, "check": check, "pad": "x" * pad} == checked(n), f"torn counter state: {line}"
            counters[i] = n
        else:
            ledgers[i] = [int(w) for w in words[3:]]
    raise AssertionError(f"child exited before ready: {errors.read_text()[-2000:]}")


def test_sigkill_at_random_moments_loses_no_acknowledged_write(tmp_path):
    path = str(tmp_path / "store")
    rng = random.Random(20240611)
    acked_counters = [0] * COUNTERS
    acked_ledgers: list[list[int]] = [[] for _ in range(LEDGERS)]
    rounds = [0] * LEDGERS  # ledger writes acknowledged in the current run
    for kill in range(KILLS + 1):
        child = start(path, tmp_path / "child.err")
        try:
            counters, ledgers = read_recovered(child, tmp_path / "child.err")
            for i in range(COUNTERS):  # every ack kept, at most the one in-flight write more
                assert counters[i] in (acked_counters[i], acked_counters[i] + 1), (kill, i)
            for i in range(LEDGERS):
                extra = ledgers[i][len(acked_ledgers[i]):]
                assert ledgers[i][:len(acked_ledgers[i])] == acked_ledgers[i], (kill, i)
                assert extra in ([], [rounds[i] + 1] * 2), (kill, i, extra)  # never half a write
            if kill == KILLS:
                break
            acked_counters, acked_ledgers, rounds = counters, ledgers, [0] * LEDGERS
            lines = [child.stdout.readline() for _ in range(rng.randint(1, 400))]
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=BOUND)
            lines += child.stdout.readlines()  # acks printed before the kill landed count too
            for line in lines:
                if not line.endswith("\n"):
                    break  # cut off by the kill: that write may or may not be stored
                words = line.split()
                i = int(words[2])
                if words[1] == "counter":
                    assert int(words[3]) == acked_counters[i] + 1
                    acked_counters[i] += 1
                else:
                    rounds[i] += 1
                    acked_ledgers[i] = acked_ledgers[i] + [rounds[i]] * 2
                    assert int(words[3]) == len(acked_ledgers[i])
        finally:
            child.kill()
            child.wait(timeout=BOUND)
            child.stdout.close()
    assert sum(acked_counters) > 0 and any(acked_ledgers)
