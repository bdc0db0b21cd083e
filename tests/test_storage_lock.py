"""One store directory, one process: a second opener is refused with the holder's pid,
and the lock goes with its holder, however that ends (close, or SIGKILL)."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from actors import Node
from storage import ForeignStore, Store, StoreLocked
from storage_servers import Counter

ROOT = Path(__file__).resolve().parent.parent
HOLDER = """
import sys
from actors import Node
from storage import Store
store = Store(sys.argv[1], Node(seed=1), mode="sync")
print("ready", flush=True)
sys.stdin.read()  # until the test closes our stdin, or kills us
store.close()
"""


def call(node, dest, request):
    return node.run_until_complete(node.call(dest, request, 5.0))


def wait_line(child: subprocess.Popen, timeout: float = 30.0) -> str:
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    assert ready, f"the child said nothing in {timeout} s"
    return child.stdout.readline()


def test_a_second_store_on_the_directory_in_this_process_is_refused_naming_it(tmp_path):
    path = str(tmp_path / "store")
    node = Node(seed=1)
    store = Store(path, node, mode="process")
    pid = node.spawn(Counter, store, ("counter", 1))
    assert call(node, pid, ("add", 5)) == 5
    with pytest.raises(StoreLocked) as info:
        Store(path, Node(seed=2), mode="process")
    assert path in str(info.value) and f"this process (pid {os.getpid()})" in str(info.value)
    assert info.value.path == path and info.value.pid == os.getpid()
    assert call(node, pid, ("add", 1)) == 6  # the holder is undisturbed
    store.close()
    node2 = Node(seed=2)
    with Store(path, node2, mode="process") as again:  # closed: the lock went with it
        assert call(node2, node2.spawn(Counter, again, ("counter", 1)), ("add", 1)) == 7


def test_another_process_holding_the_store_is_named_and_its_sigkill_frees_it(tmp_path):
    path = str(tmp_path / "store")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert wait_line(child) == "ready\n"
        with pytest.raises(StoreLocked, match=f"store {path} is in use: process {child.pid} holds its lock"):
            Store(path, Node(seed=1))
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    node = Node(seed=1)
    with Store(path, node) as store:  # nothing stale after the kill
        assert call(node, node.spawn(Counter, store, ("counter", 1)), ("add", 2)) == 2
    child = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    try:  # and the closed store let the next process in
        assert wait_line(child) == "ready\n"
    finally:
        child.stdin.close()
        assert child.wait(timeout=30) == 0


def test_a_refused_open_leaves_no_lock_file_behind(tmp_path):
    path = str(tmp_path / "foreign")
    env = lmdb.open(path)
    with env.begin(write=True) as txn:
        txn.put(b"user:1", b"someone else's data")
    env.close()
    before = sorted(os.listdir(path))
    with pytest.raises(ForeignStore):
        Store(path, Node(seed=1))
    assert sorted(os.listdir(path)) == before
