"""The `letitcrash` command as a new user meets it: help that is true and names the
defaults, defaults that agree between `serve` and `chat`, `--version`, `python -m
letitcrash`, and the package metadata and files an installer sees. (That `chat` takes
LETITCRASH_TOKEN is tested with the terminal client, in test_chat_terminal.py.)"""
from __future__ import annotations

import os
import select
import subprocess
import sys
import tomllib

import pytest
from server_harness import ROOT, SECRET, START_TIMEOUT, WAIT

from apps.cli import chat_state_path, main
from apps.server.auth import token_for
from sim.cli import COMMANDS as SIM_COMMANDS

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = ["actors", "supervision", "storage", "sim", "apps"]


@pytest.fixture(autouse=True)
def wide_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # argparse wraps help at the terminal's width


def help_of(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*args, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_the_command_list_says_what_each_command_does(capsys):
    text = help_of(capsys)
    for name, what in SIM_COMMANDS.items():
        assert f"{name} {what} (letitcrash {name} --help)" in text
    assert "the simulator's" not in text
    for line in ("serve run the chat server", "chat chat through a running server",
                 "token print a user's token, to give to that user"):
        assert line in text


def test_serve_and_chat_show_their_defaults_and_agree_on_the_secret(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    home = tmp_path / "letitcrash"
    serve = help_of(capsys, "serve")
    for default in (f"(default: {home})", "(default: DATA/secret, made on first start)", "(default: 127.0.0.1)",
                    "(default: 7400; 0: any free port)", "(default: sync)", "(default: 60.0)", "(default: 10.0)", "(default: 2000.0)",
                    "(default: 4000)", "(default: 1048576)", "(default: 4194304)", "(default: 100000)"):
        assert default in serve
    chat = help_of(capsys, "chat")
    assert f"(default: {home / 'secret'}, where 'letitcrash serve' makes it)" in chat
    assert "unless LETITCRASH_TOKEN is set" in chat and "(default: primary, the user's first device)" in chat
    assert "TCP port, 1-65535 (default: 7400)" in chat
    assert f"(default: {home / 'secret'})" in help_of(capsys, "token")


def test_each_device_of_a_chat_user_keeps_its_own_state_file():
    """Two terminals of one user each rewrite their file: shared, one would lose the other's
    lines. The primary device keeps the name from before devices."""
    paths = {(user, device): os.path.basename(chat_state_path("/d/secret", user, "h", 1, device))
             for user, device in [("bob", "primary"), ("bob", "laptop"), ("bob+laptop", "primary"), ("a.b", "primary"),
                                  ("a", "b")]}
    assert paths[("bob", "primary")] == "chat-bob@h-1.jsonl"
    assert len(set(paths.values())) == len(paths)  # no two users or devices share one


def test_token_help_does_not_claim_to_read_the_token_variable(capsys, monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    text = help_of(capsys, "token")
    assert "USER then chats without the secret: LETITCRASH_TOKEN=TOKEN letitcrash chat" in text
    monkeypatch.setenv("LETITCRASH_TOKEN", "00" * 32)  # ignored: the token comes from the secret
    assert main(["token", "--user", "alice", "--secret-file", str(secret)]) == 0
    assert capsys.readouterr().out.strip() == token_for(SECRET, "alice").hex()


def test_serve_and_chat_meet_with_no_options(tmp_path):
    """Both default to the per-user data directory: serve makes the secret, chat reads it."""
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path)}
    serve = subprocess.Popen([sys.executable, "-m", "apps.cli", "serve", "--port", "0", "--durability", "process"],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready, _, _ = select.select([serve.stdout], [], [], START_TIMEOUT)
        line = serve.stdout.readline() if ready else ""
        assert line.startswith("letitcrash: serving on "), line
        port = line.rsplit(":", 1)[1].strip()
        done = subprocess.run([sys.executable, "-m", "apps.cli", "chat", "--user", "alice", "--port", port],
                              cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=WAIT)
        assert done.returncode == 0 and "* connected as alice" in done.stdout, done.stderr
        assert (tmp_path / "letitcrash" / "secret").exists() and (tmp_path / "letitcrash" / "store").is_dir()
    finally:
        serve.terminate()
        assert serve.wait(timeout=START_TIMEOUT) == 0


@pytest.mark.parametrize("command", [["letitcrash"], [sys.executable, "-m", "letitcrash"]])
def test_the_version_from_the_script_and_from_python_m(command):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([*command, "--version"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=WAIT)
    assert (done.returncode, done.stdout) == (0, f"letitcrash {PYPROJECT['project']['version']}\n"), done.stderr


def test_the_package_metadata_and_files():
    project = PYPROJECT["project"]
    assert project["license"] == {"text": "MIT"} and "MIT License" in (ROOT / "LICENSE").read_text()
    assert "License :: OSI Approved :: MIT License" in project["classifiers"]
    assert "Typing :: Typed" in project["classifiers"] and project["authors"]
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["py-modules"] == ["letitcrash"] and setuptools["package-data"]["*"] == ["py.typed"]
    for package in PACKAGES:
        assert (ROOT / package / "py.typed").exists(), package
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {project['version']}" in changelog
