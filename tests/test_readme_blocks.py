"""Every ```python block of README.md and examples/README.md runs as written: each alone,
in a process of its own, with a fresh namespace (its imports are its own), in an empty
temporary directory, and ends as a script would (once its threads have finished). A block that
is deliberately a fragment (code from inside a larger program) says so on its first
line, `# fragment: why`, where a reader sees it too; it is only compiled.

To be quick, one interpreter imports the packages once and forks a child per block:
the import cache is shared, nothing else is."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.xdist_group("readme_blocks")  # one worker: its module fixture is made once

DOCS = ["README.md", "examples/README.md"]
BOUND = 60  # seconds for one block: a safety bound on a loaded machine, not a measurement
FRAGMENT = "# fragment:"
RUNNER = r"""
import importlib, json, os, select, signal, sys, threading, time, traceback
for name in ("numpy", "actors", "storage", "supervision", "sim", "apps.chat", "apps.rides", "apps.timeline",
             "apps.video", "apps.embed", "fastapi.testclient", "aiohttp.test_utils", "flask"):
    try:
        importlib.import_module(name)
    except ImportError:  # the block that needs it says so itself
        pass

bound, blocks = json.load(sys.stdin)
results = []
for n, code in enumerate(blocks):
    os.mkdir(str(n))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the block, as a script: output to the pipe; it ends once its threads have
        os.close(read_end)
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.chdir(str(n))
        status = 0
        try:
            exec(compile(code, f"block {n}", "exec"), {"__name__": "__main__"})
            for thread in threading.enumerate():  # as the interpreter waits at exit
                if thread is not threading.main_thread() and not thread.daemon:
                    thread.join()
        except BaseException:
            traceback.print_exc()
            status = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # skips tearing down the modules imported for every block
    os.close(write_end)
    output, deadline = b"", time.monotonic() + bound
    while (left := deadline - time.monotonic()) > 0 and select.select([read_end], [], [], left)[0]:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        output += chunk
    os.close(read_end)
    if left <= 0:
        os.kill(pid, signal.SIGKILL)
        output += f"\n(still running after {bound} s: killed)".encode()
    _, status = os.waitpid(pid, 0)
    results.append([os.waitstatus_to_exitcode(status), output.decode(errors="replace")])
print(json.dumps(results))
"""


def python_blocks(doc: str) -> list[tuple[int, str]]:
    """(line number, code) of each ```python block of `doc`."""
    text = (ROOT / doc).read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```$", text, re.M | re.S)]


BLOCKS = [(f"{doc}:{line}", code) for doc in DOCS for line, code in python_blocks(doc)]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """{block id: (exit status, output)} of every block that is not a fragment."""
    runs = [(name, code) for name, code in BLOCKS if not code.startswith(FRAGMENT)]
    where = tmp_path_factory.mktemp("blocks")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(where)}  # stores made with tempfile land here
    done = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps([BOUND, [c for _, c in runs]]),
                          cwd=where, env=env, capture_output=True, text=True, timeout=BOUND * (len(runs) + 1))
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: tuple(result) for (name, _), result in zip(runs, json.loads(done.stdout))}


def test_the_docs_have_blocks_and_few_fragments():
    assert len(BLOCKS) >= 10
    fragments = [name for name, code in BLOCKS if code.startswith(FRAGMENT)]
    assert len(fragments) <= 2, fragments


@pytest.mark.parametrize("name, code", BLOCKS, ids=[name for name, _ in BLOCKS])
def test_a_block_runs_as_written(name, code, outcomes):
    if code.startswith(FRAGMENT):
        compile(code, name, "exec")
        return
    status, output = outcomes[name]
    assert status == 0, f"{name}:\n{code}\n{output[-3000:]}"
