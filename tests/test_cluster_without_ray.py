"""Without Ray installed, `letitcrash cluster start --ray` says how to get it; what only
the laptop cluster has is refused with --ray."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import BOUND, ROOT

WITHOUT_RAY = "import sys; sys.modules['ray'] = None; from apps.cli import main; sys.exit(main(sys.argv[1:]))"


def without_ray(*args: str) -> subprocess.CompletedProcess:
    """`letitcrash ARGS...` in a process where `import ray` fails."""
    return subprocess.run([sys.executable, "-c", WITHOUT_RAY, *args], capture_output=True, text=True, timeout=BOUND,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_cluster_start_on_ray_without_ray_says_how_to_install_it():
    done = without_ray("cluster", "start", "--ray", "auto", "--nodes", "1", "apps.cluster.demo:counter")
    assert done.returncode == 2, done
    assert "clusters on Ray need Ray: pip install 'letitcrash[cluster]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_observer_option_is_refused_on_ray():
    done = without_ray("cluster", "start", "--ray", "auto", "--observer", "0", "apps.cluster.demo:counter")
    assert done.returncode == 2 and "--observer is for nodes on this machine, not with --ray" in done.stderr, done
