"""Without Ray installed, `letitcrash cluster start --ray` says how to get it, and the
laptop cluster needs none of it."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import BOUND, ROOT

WITHOUT_RAY = "import sys; sys.modules['ray'] = None; from apps.cli import main; sys.exit(main(sys.argv[1:]))"


def test_cluster_start_on_ray_without_ray_says_how_to_install_it():
    done = subprocess.run([sys.executable, "-c", WITHOUT_RAY, "cluster", "start", "--ray", "auto", "--nodes", "1",
                           "apps.cluster.demo:counter"], capture_output=True, text=True, timeout=BOUND, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done
    assert "clusters on Ray need Ray: pip install 'letitcrash[cluster]'" in done.stderr
    assert "Traceback" not in done.stderr
