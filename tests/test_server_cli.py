"""`letitcrash serve` / `chat` / `token` on bad input: a clear message and exit status 2 (1
when the server cannot run). Each command runs in a subprocess; the many refusals of one flag
run its `main` in this process. (`sim` through the same command: test_sim_cli's quick start.)"""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from conftest import run_main
from server_harness import ROOT, SECRET

from apps.cli import main
from apps.server.auth import token_for


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apps.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.mark.parametrize("flags, message", [
    (["--rate", "-1"], "--rate must be a positive number, got -1.0"),
    (["--burst", "0"], "--burst must be a positive int, got 0"),
    (["--max-connections", "0"], "--max-connections must be a positive int"),
    (["--max-inflight", "0"], "--max-inflight must be a positive int, got 0"),
    (["--max-delay", "-0.1"], "--max-delay must be a positive number, got -0.1"),
])
def test_serve_refuses_bad_limits(tmp_path, capsys, flags, message):
    done = run_main(main, capsys, "serve", "--data", str(tmp_path), *flags)
    assert done.returncode == 2 and message in done.stderr


@pytest.mark.parametrize("command, port, message", [
    (["serve", "--data", "DATA"], "99999", "a TCP port here is from 0 to 65535, got 99999"),
    (["serve", "--data", "DATA"], "-1", "a TCP port here is from 0 to 65535, got -1"),
    (["chat", "--user", "alice"], "0", "a TCP port here is from 1 to 65535, got 0"),
    (["chat", "--user", "alice"], "http", "expected a TCP port number, got 'http'"),
])
def test_a_bad_port_is_refused_before_anything_starts(tmp_path, capsys, command, port, message):
    done = run_main(main, capsys, *[str(tmp_path / "d") if arg == "DATA" else arg for arg in command], "--port", port)
    assert done.returncode == 2 and f"argument --port: {message}" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "d").exists()


def test_serve_refuses_a_secret_others_can_read(tmp_path):
    secret = tmp_path / "s"
    secret.write_bytes(bytes(32))
    secret.chmod(0o644)
    done = cli("serve", "--data", str(tmp_path / "d"), "--secret-file", str(secret))
    assert done.returncode == 2 and f"the secret file {secret} is readable by others" in done.stderr


def test_serve_reports_a_taken_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("serve", "--data", str(tmp_path), "--port", str(port))
    assert done.returncode == 1 and f"cannot serve on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_token_prints_the_users_token(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    done = cli("token", "--user", "alice", "--secret-file", str(secret))
    assert done.returncode == 0 and done.stdout.strip() == token_for(SECRET, "alice").hex()


def test_chat_refuses_a_token_that_is_not_hex():
    done = cli("chat", "--user", "alice", env={"LETITCRASH_TOKEN": "not hex", "PATH": ""})
    assert done.returncode == 2 and "LETITCRASH_TOKEN must be the token in hex" in done.stderr
