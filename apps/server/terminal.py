"""`letitcrash chat --user alice [--device laptop]`: the interactive terminal client.

Type `@bob hello` to send bob "hello"; `/help` lists the commands (`COMMANDS`). A message
shown is marked read, so its sender sees `[read]`. A user may chat from several devices
at once: what it sends from another one shows here as `[you] bob: ...`.

- Shown means delivered: a chat item is confirmed to the server only once it has been
  printed, so quitting during a backlog leaves the rest on the server, pushed again to
  the next connection of the user.
- When the connection ends (the server restarted, the network dropped), the client
  reconnects with exponential backoff (`RECONNECT`, at most `RECONNECT_ATTEMPTS` tries)
  and resumes: what was not shown comes again, and a command that was waiting is sent
  again (a message with its client id, so it is stored once). It does not reconnect
  when a newer connection of the same device replaced it, or the device was unlinked.
- What the server cannot say is kept in a small local file (`LocalState`): the
  messages sent from here, so that their receipts name them (`[read] bob: hello`), and
  the users followed, so that tweets show their text. It survives restarts of the
  client and of the server.
- Input: on a terminal, prompt_toolkit's line editor (incoming lines print above what
  is being typed; the arrow keys recall earlier lines). Any other standard input (a
  pipe, a regular file, /dev/null) is read a line at a time, each line one command;
  the end of input quits, as `/quit` does.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import secrets
import sys
import threading
from typing import Any, Awaitable, Callable, TypeVar

from supervision import Backoff

from . import protocol as P
from .client import Client, Closed, ConnectionClosed, Message, Presence, Read, Receipt, Sent, ServerError, Tweet

COMMANDS = {
    "@USER TEXT": "send USER a message",
    "/post TEXT": "post a tweet",
    "/follow USER": "see USER's tweets",
    "/unfollow USER": "stop seeing them",
    "/timeline": "your home timeline, newest first",
    "/contacts [USER...]": "who sees your presence (none: nobody)",
    "/who USER": "USER's presence",
    "/away": "show yourself away",
    "/online": "show yourself online",
    "/devices": "your linked devices",
    "/unlink DEVICE": "log DEVICE out (its state on the server is dropped)",
    "/help": "this list",
    "/quit": "leave (Ctrl-D too); what was not shown comes next time",
}
USAGE = {usage.split()[0]: usage for usage in COMMANDS}  # "/follow" -> "/follow USER"
NO_RECONNECT = frozenset({"replaced", "unlinked"})
"""Close reasons after which reconnecting would be wrong: a newer client of the device
took over, or the device was logged out."""
NO_RETRY = frozenset({P.AUTH_FAILED, P.QUOTA_EXCEEDED})
"""Refusals of a reconnection that trying again cannot help: a new server secret, or
the user's other devices took every place."""
RECONNECT = Backoff(min_delay=0.1, max_delay=5.0, jitter=0.5)
RECONNECT_ATTEMPTS = 25  # about two minutes of trying, then the client gives up
REQUEST_ATTEMPTS = 3  # a command is tried on at most this many connections
MAX_SENT = 10_000  # sent messages remembered for their receipts
MAX_FOLLOWING = 1_000  # users whose tweets are asked for their text
MAX_READS_DUE = 1_000  # read receipts waiting for a reconnection
MAX_LINE = 1 << 20  # bytes of one input line; a longer one is refused
MAX_LINES_QUEUED = 64  # input lines read ahead of the commands
TOO_LONG = b"line too long"  # queued (by identity) in place of a line over MAX_LINE
OK, FAILED = 0, 1
T = TypeVar("T")


class LocalState:
    """What this client remembers across its restarts: `sent` (msg_id -> (to, text)), the
    newest `MAX_SENT`, and `following`. Kept in a JSON-lines file (mode 0600), appended
    to on every change and rewritten when it holds twice what it needs. A file that
    cannot be read or written costs only the names in receipts and tweets: `problem`
    says why, and the state is kept in memory."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.sent: dict[int, tuple[str, str]] = {}
        self.following: dict[str, None] = {}  # ordered, oldest first
        self.problem: str | None = None
        self.lines = 0
        if path is not None:
            self._load(path)

    def remember_sent(self, msg_id: int, to: str, text: str) -> None:
        self._sent(msg_id, to, text)
        self._append({"sent": msg_id, "to": to, "text": text})

    def follow(self, user: str) -> None:
        self._follow(user)
        self._append({"follow": user})

    def unfollow(self, user: str) -> None:
        self.following.pop(user, None)
        self._append({"unfollow": user})

    def _sent(self, msg_id: int, to: str, text: str) -> None:
        if len(self.sent) >= MAX_SENT and msg_id not in self.sent:
            self.sent.pop(next(iter(self.sent)))
        self.sent[msg_id] = (to, text)

    def _follow(self, user: str) -> None:
        self.following.pop(user, None)
        if len(self.following) >= MAX_FOLLOWING:
            self.following.pop(next(iter(self.following)))
        self.following[user] = None

    def _apply(self, record: Any) -> None:
        if type(record) is not dict:
            raise ValueError("not a JSON object")
        if "sent" in record:
            msg_id, to, text = record["sent"], record["to"], record["text"]
            if type(msg_id) is not int or type(to) is not str or type(text) is not str:
                raise ValueError("a sent record needs an int id and str to and text")
            self._sent(msg_id, to, text)
        elif type(record.get("follow")) is str:
            self._follow(record["follow"])
        elif type(record.get("unfollow")) is str:
            self.following.pop(record["unfollow"], None)
        else:
            raise ValueError("an unknown record")

    def _load(self, path: str) -> None:
        bad = 0
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    self.lines += 1
                    try:
                        self._apply(json.loads(line))
                    except (ValueError, KeyError):
                        bad += 1  # a line torn by a crash, or not ours
        except FileNotFoundError:
            return
        except OSError as exc:
            self._give_up(f"cannot read {path}: {exc.strerror}")
            return
        if bad:
            self.problem = f"ignored {bad} unreadable line(s) of {path}"
        if self.lines > 2 * (len(self.sent) + len(self.following)) + 100:
            self._rewrite()

    def _append(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        try:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        except OSError as exc:
            self._give_up(f"cannot write {self.path}: {exc.strerror}")
            return
        self.lines += 1
        if self.lines > 2 * (MAX_SENT + MAX_FOLLOWING):
            self._rewrite()

    def _rewrite(self) -> None:
        """Replace the file with one line per thing remembered (atomically: rename)."""
        assert self.path is not None
        records = [{"sent": msg_id, "to": to, "text": text} for msg_id, (to, text) in self.sent.items()]
        records += [{"follow": user} for user in self.following]
        temp = f"{self.path}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            os.replace(temp, self.path)
        except OSError as exc:
            self._give_up(f"cannot rewrite {self.path}: {exc.strerror}")
            return
        self.lines = len(records)

    def _give_up(self, why: str) -> None:
        self.problem = f"{why}; receipts of earlier messages will show their ids only"
        self.path = None


class Chat:
    """One user's session at the keyboard: commands in, events out, reconnecting as needed.
    `connect(last_seq)` makes a connected `Client` (with `auto_confirm=False`)."""

    def __init__(self, connect: Callable[[int | None], Awaitable[Client]], state: LocalState,
                 say: Callable[[str], None]) -> None:
        self.connect = connect
        self.state = state
        self.say = say
        self.client: Client | None = None
        self.ended: str | None = None  # why the chat cannot go on
        self.changed = asyncio.Condition()  # the client was replaced, or the chat ended
        self.cid_prefix = secrets.token_hex(6)  # client message ids: the same on every connection
        self.cids = itertools.count(1)
        self.reads_due: list[int] = []  # read receipts a lost connection did not take

    async def start(self) -> None:
        """The first connection: its errors are the caller's (a wrong secret, no server)."""
        self.client = await self.connect(None)

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.close()

    # -- commands --------------------------------------------------------------------------

    async def command(self, line: str) -> bool:
        """Act on one input line; False to quit."""
        line = line.strip()
        if not line:
            return True
        if line.startswith("@"):
            await self._send(line)
            return True
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word == "/quit":
            return False
        if word == "/help":
            self.say("\n".join(f"  {usage:<20} {what}" for usage, what in COMMANDS.items()))
        elif not word.startswith("/"):
            self.say(f"! to send a message, start the line with @ and the user: @bob {line}")
        elif word not in USAGE:
            self.say(f"! unknown command {word}; /help lists them")
        elif not rest and " " in USAGE[word] and "[" not in USAGE[word]:
            self.say(f"! {word} needs {USAGE[word].split()[1]}: {USAGE[word]}")
        else:
            await self._command(word, rest)
        return True

    async def _send(self, line: str) -> None:
        to, _, text = line[1:].partition(" ")
        text = text.strip()
        if not to:
            self.say("! name the user right after @: @bob hello")
            return
        if not text:
            self.say(f"! nothing to send to {to}; type @{to} and the message")
            return
        cid = f"{self.cid_prefix}.{next(self.cids)}"  # the same cid on every attempt: stored once
        msg_id = await self.call(lambda client: client.send(to, text.encode(), preview=text, cid=cid))
        self.state.remember_sent(msg_id, to, text)
        self.say(f"[sent] {to}: {text}")

    async def _command(self, word: str, rest: str) -> None:
        if word == "/post":
            cid = f"{self.cid_prefix}.{next(self.cids)}"
            self.say(f"[posted] #{await self.call(lambda client: client.post(rest, cid))}")
        elif word == "/follow":
            await self.call(lambda client: client.follow(rest))
            self.state.follow(rest)
            self.say(f"* following {rest}")
        elif word == "/unfollow":
            await self.call(lambda client: client.unfollow(rest))
            self.state.unfollow(rest)
            self.say(f"* not following {rest}")
        elif word == "/timeline":
            ids, _ = await self.call(lambda client: client.timeline())
            for tweet_id in ids:
                self.say(await self.call(lambda client: self.tweet_line(client, tweet_id)))
            self.say(f"* {len(ids)} tweets")
        elif word == "/contacts":
            users = rest.split()
            await self.call(lambda client: client.set_contacts(users))
            self.say(f"* contacts: {rest or '(none)'}")
        elif word == "/devices":
            devices = await self.call(lambda client: client.devices())
            mine = self.client.device if self.client is not None else None
            for device, online, seen in devices:
                state = "online" if online else "offline" + (f", last seen at {seen:.0f}" if seen else "")
                self.say(f"* {device} ({state})" + (" - this one" if device == mine else ""))
        elif word == "/unlink":
            await self.call(lambda client: client.unlink(rest))
            self.say(f"* unlinked {rest}")
        elif word == "/who":
            status, last_seen = await self.call(lambda client: client.presence_of(rest))
            self.say(f"* {rest} is {status}" + (f" (last seen at {last_seen:.0f})" if last_seen else ""))
        else:
            await self.call(lambda client: client.set_presence(word[1:]))
            self.say(f"* you are {word[1:]}")

    async def call(self, request: Callable[[Client], Awaitable[T]]) -> T:
        """`request(client)` on the live connection; after a lost connection, again on the
        next one (every request of this client is idempotent: sends and posts keep their
        cid). Raises `ConnectionClosed` once the chat has ended."""
        tried: Client | None = None
        for _ in range(REQUEST_ATTEMPTS):
            tried = await self._live_client(tried)
            try:
                return await request(tried)
            except ConnectionClosed:
                continue  # the event loop sees the same end, and reconnects
        raise ConnectionClosed(f"no answer after {REQUEST_ATTEMPTS} connections")

    async def _live_client(self, not_this: Client | None) -> Client:
        def ready() -> bool:
            client = self.client
            return self.ended is not None or (client is not None and client is not not_this
                                              and client.closed is None)

        async with self.changed:
            await self.changed.wait_for(ready)
        if self.ended is not None:
            raise ConnectionClosed(self.ended)
        assert self.client is not None
        return self.client

    # -- events ----------------------------------------------------------------------------

    async def receive(self) -> int:
        """Show events until the chat ends (returns FAILED then); runs until cancelled."""
        while True:
            client = self.client
            assert client is not None
            event = await client.next_event()
            if isinstance(event, Closed):
                if not await self._reconnect(client, event.reason):
                    return FAILED
                continue
            try:
                await self.show(client, event)
            except ServerError as exc:
                self.say(f"! {exc}")

    async def show(self, client: Client, event: Any) -> None:
        """Print one event, then confirm it (chat items), then mark it read (messages)."""
        if isinstance(event, Message):
            self.say(f"{event.sender}: {event.body.decode(errors='replace')}")
            client.confirm(event.seq)
            await self._read(client, [event.msg_id])
        elif isinstance(event, Receipt):
            to, text = self.state.sent.get(event.msg_id, ("?", f"#{event.msg_id}"))
            self.say(f"[{event.status}] {to}: {text}" if to != "?" else
                     f"[{event.status}] message #{event.msg_id} (not sent from here)")
            client.confirm(event.seq)
        elif isinstance(event, Sent):
            if event.msg_id not in self.state.sent:  # sent from another device of this user
                text = event.body.decode(errors="replace")
                self.state.remember_sent(event.msg_id, event.to, text)
                self.say(f"[you] {event.to}: {text}")
            client.confirm(event.seq)
        elif isinstance(event, Read):  # read on another device (or this one): nothing to show
            client.confirm(event.seq)
        elif isinstance(event, Presence):
            self.say(f"* {event.user} is {event.status}")
        elif isinstance(event, Tweet):
            try:
                self.say(await self.tweet_line(client, event.tweet_id))
            except ConnectionClosed:
                self.say(f"# tweet {event.tweet_id}")
        elif isinstance(event, ServerError):
            self.say(f"! {event}")

    async def _read(self, client: Client, msg_ids: list[int]) -> None:
        try:
            await client.read(msg_ids)
        except ConnectionClosed:  # sent again once reconnected
            self.reads_due = (self.reads_due + msg_ids)[-MAX_READS_DUE:]

    async def tweet_line(self, client: Client, tweet_id: int) -> str:
        for author in reversed(self.state.following):  # the newest follow first
            texts = await client.tweets(author, [tweet_id])
            if tweet_id in texts:
                return f"# {author}: {texts[tweet_id]}"
        return f"# tweet {tweet_id}"

    async def _reconnect(self, old: Client, reason: str) -> bool:
        """Connect again with backoff, resuming after what `old` showed; False if the chat ends."""
        self.client = None
        if reason in NO_RECONNECT:
            self.say(f"* disconnected: {reason}")
            await self._end(reason)
            return False
        self.say(f"* disconnected: {reason}; reconnecting")
        last: BaseException | None = None
        for attempt in range(RECONNECT_ATTEMPTS):
            await asyncio.sleep(RECONNECT.delay(attempt, random.random))
            try:
                client = await self.connect(old.confirmed)
            except ServerError as exc:
                last = exc
                if exc.code in NO_RETRY:
                    break
            except (OSError, EOFError, TimeoutError) as exc:  # not up yet
                last = exc
            else:
                async with self.changed:
                    self.client = client
                    self.changed.notify_all()
                self.say("* reconnected")
                reads, self.reads_due = self.reads_due, []
                if reads:
                    await self._read(client, reads)
                return True
        self.say(f"* could not reconnect ({attempt + 1} attempts): {last}")
        await self._end(f"could not reconnect: {last}")
        return False

    async def _end(self, why: str) -> None:
        async with self.changed:
            self.ended = why
            self.changed.notify_all()


# -- input -------------------------------------------------------------------------------------

class PlainInput:
    """Lines of a standard input that is not a terminal (a pipe, a file, /dev/null, a
    closed descriptor): a daemon thread reads them, as no asyncio transport takes every
    kind of file; at most `MAX_LINES_QUEUED` wait. `line()` is None at the end."""

    def __init__(self, fd: int | None) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.room = threading.Semaphore(MAX_LINES_QUEUED)
        if fd is None:  # no standard input at all
            self.queue.put_nowait(None)
            return
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, args=(fd, loop), name="letitcrash-stdin", daemon=True).start()

    async def line(self) -> str | None:
        """The next line; raises `ValueError` for one longer than `MAX_LINE` (skipped)."""
        data = await self.queue.get()
        self.room.release()
        if data is TOO_LONG:
            raise ValueError(f"a line of more than {MAX_LINE} bytes was ignored")
        return None if data is None else data.decode(errors="replace")

    def _read(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        pending, skipping = b"", False
        while True:
            try:
                chunk = os.read(fd, 65536)  # raw: no lock of sys.stdin is held at exit
            except OSError:
                chunk = b""  # a closed or unreadable descriptor: the end of input
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if not skipping and not self._put(line, loop):
                    return
                skipping = False
            if len(pending) > MAX_LINE:
                if not skipping and not self._put(TOO_LONG, loop):
                    return
                pending, skipping = b"", True
        if pending and not skipping:
            self._put(pending, loop)
        self._put(None, loop)

    def _put(self, line: bytes | None, loop: asyncio.AbstractEventLoop) -> bool:
        self.room.acquire()
        try:
            loop.call_soon_threadsafe(self.queue.put_nowait, line)
        except RuntimeError:  # the loop has closed: the client has finished
            return False
        return True


class PromptInput:
    """A terminal: prompt_toolkit's line editor, with history. Ctrl-D and Ctrl-C quit."""

    def __init__(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import InMemoryHistory

        self.session: Any = PromptSession(history=InMemoryHistory())

    async def line(self) -> str | None:
        try:
            return await self.session.prompt_async("> ")
        except (EOFError, KeyboardInterrupt):
            return None


async def run(host: str, port: int, user: str, device: str | None, token: bytes, state_path: str | None) -> int:
    """Chat until /quit, the end of input, or a connection that cannot be made again;
    the exit status."""
    interactive = sys.stdin is not None and sys.stdin.isatty() and sys.stdout.isatty()
    if interactive:
        from prompt_toolkit.patch_stdout import patch_stdout

        with patch_stdout(raw=True):  # printed lines go above the line being typed
            return await _run(host, port, user, device, token, state_path, PromptInput())
    # sys.stdin is None when descriptor 0 was closed: it may be reused, so never read it.
    return await _run(host, port, user, device, token, state_path, PlainInput(0 if sys.stdin else None))


async def _run(host: str, port: int, user: str, device: str | None, token: bytes, state_path: str | None,
               keyboard: PlainInput | PromptInput) -> int:
    def say(line: str) -> None:
        print(line, flush=True)

    def connect(last_seq: int | None) -> Awaitable[Client]:
        return Client.connect(host, port, user, token, device, last_seq=last_seq, auto_confirm=False)

    state = LocalState(state_path)
    chat = Chat(connect, state, say)
    await chat.start()
    say(f"* connected as {user} on {chat.client.device}. Type @bob hi to send bob 'hi'; /help lists the "
        "commands.")
    if state.problem:
        say(f"! {state.problem}")
    typing = asyncio.create_task(_type(chat, keyboard))
    receiving = asyncio.create_task(chat.receive())
    try:
        await asyncio.wait([typing, receiving], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (typing, receiving):
            task.cancel()
        await asyncio.gather(typing, receiving, return_exceptions=True)
        await chat.close()
    return receiving.result() if receiving.done() and not receiving.cancelled() else OK


async def _type(chat: Chat, keyboard: PlainInput | PromptInput) -> None:
    while True:
        try:
            line = await keyboard.line()
        except ValueError as exc:  # an input line too long to take
            chat.say(f"! {exc}")
            continue
        if line is None:
            return
        try:
            if not await chat.command(line):
                return
        except ServerError as exc:
            chat.say(f"! {exc}")
        except ConnectionClosed as exc:
            chat.say(f"! not done: {exc}")
            if chat.ended is not None:
                return
