"""`letitcrash chat`, the terminal client, as a person uses it: a real server subprocess,
the client in a subprocess (on pipes, files, /dev/null and a pseudo-terminal), and the
asyncio client library in this process as the other user. Waits are safety bounds."""
from __future__ import annotations

import asyncio
import os
import select
import socket
import subprocess
import sys
import time

import pytest
from conftest import arun
from server_harness import ROOT, SECRET, WAIT, ChatProcess, ServerProcess, running_server, take

from apps.server import ConnectionClosed, Message
from apps.server import terminal
from apps.server.auth import token_for
from apps.server.terminal import Chat, LocalState
from supervision import Backoff

pytestmark = pytest.mark.xdist_group("chat_terminal")  # one worker: its module fixture is made once


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("terminal"), "--durability", "process") as srv:
        yield srv



def chat(server: ServerProcess, user: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apps.cli", "chat", "--user", user, "--port", str(server.port),
                           "--secret-file", str(server.data / "secret")],
                          cwd=ROOT, capture_output=True, text=True, timeout=WAIT * 2, **options)


def test_quitting_during_a_backlog_leaves_what_was_not_shown_for_next_time(server):
    n = 600

    async def fill():
        alice = await server.client("alice1")
        await asyncio.gather(*(alice.send("bob1", f"m{i}".encode(), cid=i) for i in range(n)))
        await alice.close()
    arun(fill())
    bob = ChatProcess(server, "bob1")
    try:
        bob.expect("alice1: m0")
        assert bob.quit() == 0
        shown = [line.split(": ", 1)[1] for line in bob.rest() if line.startswith("alice1: ")]
    finally:
        bob.kill()
    assert 0 < len(shown) < n, "quit after the first message shown, during the backlog"
    assert shown == [f"m{i}" for i in range(len(shown))]

    async def next_time():
        again = await server.client("bob1")
        got = await take(again, Message, n - len(shown))
        await again.close()
        return [m.body.decode() for m in got]
    assert arun(next_time()) == [f"m{i}" for i in range(len(shown), n)]  # each once, none lost


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_client_reconnects_after_a_restart_and_still_names_its_messages(tmp_path):
    srv = ServerProcess(tmp_path, "--port", str(free_port()), "--durability", "process").start()
    alice = ChatProcess(srv, "alice")
    try:
        alice.expect("* connected as alice")
        alice.type("@bob sent before the restart")
        alice.expect("[sent] bob: sent before the restart")
        srv.kill()
        alice.expect("* disconnected: connection lost; reconnecting")
        srv.start()
        alice.expect("* reconnected")
        alice.type("@bob sent after it")
        alice.expect("[sent] bob: sent after it")

        async def bob_takes():
            bob = await srv.client("bob")
            got = await take(bob, Message, 2)
            await bob.close()
            return got
        got = arun(bob_takes())
        assert [m.body for m in got] == [b"sent before the restart", b"sent after it"]
        alice.expect("[delivered] bob: sent before the restart")
        alice.expect("[delivered] bob: sent after it")
        assert alice.quit() == 0
    finally:
        alice.kill()

    async def bob_reads():
        bob = await srv.client("bob", last_seq=got[-1].seq)
        await bob.read([m.msg_id for m in got])
        await bob.close()
    arun(bob_reads())
    later = ChatProcess(srv, "alice")  # a new process: the receipts still name the messages
    try:
        later.expect("[read] bob: sent before the restart")
        later.expect("[read] bob: sent after it")
        assert later.quit() == 0
    finally:
        later.kill()
    assert srv.terminate() == 0


async def _replace(server, user):  # the device's newer connection wins
    await (await server.client(user, device="terminal")).close()


async def _unlink(server, user):  # another device (both stay) logs the terminal out
    phone = await server.client(user, device="phone")
    await phone.unlink("terminal")
    await phone.close()


@pytest.mark.parametrize("user, end, reason", [("alice5", _replace, "replaced"), ("alice9", _unlink, "unlinked")])
def test_a_replaced_or_unlinked_device_does_not_reconnect(server, user, end, reason):
    async def main():
        said = []
        chat = Chat(lambda last: server.client(user, device="terminal", last_seq=last, auto_confirm=False),
                    LocalState(None), said.append)
        await chat.start()
        await end(server, user)
        return await chat.receive(), said
    assert arun(main()) == (terminal.FAILED, [f"* disconnected: {reason}"])


def test_the_client_gives_up_reconnecting_after_its_attempts(tmp_path, monkeypatch):
    monkeypatch.setattr(terminal, "RECONNECT_ATTEMPTS", 3)
    monkeypatch.setattr(terminal, "RECONNECT", Backoff(min_delay=0.01, max_delay=0.02))
    srv = ServerProcess(tmp_path, "--durability", "process").start()

    async def main():
        said = []
        chat = Chat(lambda last: srv.client("alice", last_seq=last, auto_confirm=False), LocalState(None),
                    said.append)
        await chat.start()
        srv.kill()
        status = await chat.receive()
        with pytest.raises(ConnectionClosed):  # a command then fails at once, never waits
            await chat.call(lambda client: client.presence_of("bob"))
        return status, said
    status, said = arun(main())
    assert status == terminal.FAILED and said[0] == "* disconnected: connection lost; reconnecting"
    assert said[1].startswith("* could not reconnect (3 attempts): ") and len(said) == 2


@pytest.mark.parametrize("kind", ["devnull", "file", "closed"])  # a pipe: the test after this one
def test_any_standard_input_works(server, tmp_path, kind):
    script = "@bob2 from standard input\n/who bob2\n"
    if kind == "devnull":
        done = chat(server, "alice2", stdin=subprocess.DEVNULL)
    elif kind == "file":
        path = tmp_path / "commands.txt"
        path.write_text(script)
        with open(path) as f:
            done = chat(server, "alice2", stdin=f)
    else:
        done = chat(server, "alice2", stdin=subprocess.DEVNULL, preexec_fn=lambda: os.close(0))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("* connected as alice2")
    if kind == "file":  # each line a command, then the end of input quits
        assert ("[sent] bob2: from standard input\n! forbidden: presence_of: 'bob2' shares presence "
                "with its contacts only") in done.stdout  # both lines ran; bob2 never listed alice2


def test_a_command_that_cannot_work_gets_a_clear_message(server):
    said = {
        "/follow": "! /follow needs USER: /follow USER",
        "/who   ": "! /who needs USER: /who USER",
        "@bob3": "! nothing to send to bob3; type @bob3 and the message",
        "@bob3    ": "! nothing to send to bob3; type @bob3 and the message",
        "@ hello": "! name the user right after @: @bob hello",
        "/foo bar": "! unknown command /foo; /help lists them",
        "hello": "! to send a message, start the line with @ and the user: @bob hello",
    }
    done = chat(server, "alice3", input="\n".join(said) + "\n")  # on a pipe
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.splitlines()[1:] == list(said.values())
    assert not list(server.data.glob("chat-alice3@*"))  # nothing was sent


def test_chat_takes_its_token_from_the_variable(server, tmp_path):
    env = {**os.environ, "LETITCRASH_TOKEN": token_for(SECRET, "alice6").hex()}
    done = subprocess.run([sys.executable, "-m", "apps.cli", "chat", "--user", "alice6", "--port", str(server.port),
                           "--secret-file", str(tmp_path / "no such file")],
                          cwd=ROOT, env=env, input="/who alice6\n", capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert "* connected as alice6" in done.stdout and "* alice6 is online" in done.stdout


def test_typing_survives_incoming_lines_and_the_arrow_keys_recall_history(server):
    """On a terminal: a message arriving while alice types prints above her line, which
    stays as typed; the up arrow brings back her last line."""
    screen = Screen(server, "alice4")
    try:
        screen.expect(b"* connected as alice4")
        screen.type(b"@bob4 typed while")
        screen.expect(b"@bob4 typed while")  # echoed

        async def bob_says(text):
            bob = await server.client("bob4")
            await bob.send("alice4", text)
            await bob.close()
        arun(bob_says(b"an incoming line"))
        screen.expect(b"bob4: an incoming line")
        screen.expect(b"@bob4 typed while")  # drawn again, below the incoming line
        screen.type(b" a message came\r")
        screen.expect(b"[sent] bob4: typed while a message came")
        screen.type(b"\x1b[A\r")  # the up arrow: the same line again
        screen.expect(b"[sent] bob4: typed while a message came")

        async def bob_reads():
            bob = await server.client("bob4")
            got = await take(bob, Message, 2)
            await bob.close()
            return [m.body for m in got]
        assert arun(bob_reads()) == [b"typed while a message came"] * 2
        screen.type(b"/quit\r")
        assert screen.proc.wait(timeout=WAIT) == 0
    finally:
        screen.close()


class Screen:
    """`letitcrash chat` on a pseudo-terminal: `type` keys, `expect` output in order."""

    def __init__(self, server: ServerProcess, user: str) -> None:
        self.fd, child = os.openpty()
        env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}  # no cursor queries
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "apps.cli", "chat", "--user", user, "--port", str(server.port),
             "--secret-file", str(server.data / "secret")],
            cwd=ROOT, stdin=child, stdout=child, stderr=child, env=env, start_new_session=True)
        os.close(child)
        self.output = b""
        self.pos = 0  # expect() looks after what it matched last

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def expect(self, text: bytes) -> None:
        deadline = time.monotonic() + WAIT
        while (at := self.output.find(text, self.pos)) < 0:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never came; after the last match: {self.output[self.pos:]!r}"
            if select.select([self.fd], [], [], min(left, 0.2))[0]:
                try:
                    self.output += os.read(self.fd, 65536)
                except OSError:  # EIO: the client has exited
                    raise AssertionError(f"{text!r} never came; the client exited: {self.output!r}") from None
        self.pos = at + len(text)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)
        os.close(self.fd)


def test_local_state_survives_a_restart_and_a_torn_line(tmp_path):
    path = str(tmp_path / "state.jsonl")
    state = LocalState(path)
    state.remember_sent(1, "bob", "hi")
    state.follow("carol")
    state.follow("dave")
    state.unfollow("carol")
    with open(path, "a") as f:
        f.write('{"sent": 2, "to": "bob", "te')  # a crash in the middle of a line
    again = LocalState(path)
    assert again.sent == {1: ("bob", "hi")} and list(again.following) == ["dave"]
    assert again.problem == f"ignored 1 unreadable line(s) of {path}"
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_local_state_is_bounded_and_its_file_compacted(tmp_path, monkeypatch):
    monkeypatch.setattr(terminal, "MAX_SENT", 50)
    monkeypatch.setattr(terminal, "MAX_FOLLOWING", 5)
    path = str(tmp_path / "state.jsonl")
    state = LocalState(path)
    for i in range(500):
        state.remember_sent(i, "bob", "x")
    assert list(state.sent) == list(range(450, 500))  # the newest kept
    with open(path) as f:
        assert len(f.readlines()) <= 2 * (50 + 5)  # rewritten as it grew
    assert LocalState(path).sent == state.sent


def test_a_state_file_that_cannot_be_written_costs_only_the_names(tmp_path):
    blocker = tmp_path / "not a directory"
    blocker.write_text("")
    state = LocalState(str(blocker / "state.jsonl"))
    state.remember_sent(7, "bob", "kept in memory")
    assert state.sent == {7: ("bob", "kept in memory")}
    assert state.problem == (f"cannot read {blocker / 'state.jsonl'}: Not a directory; receipts of "
                             "earlier messages will show their ids only")
