"""`letitcrash chat --user alice`: the interactive terminal client.

Type `@bob hello` to send bob "hello". Messages shown are marked read, so their senders
see `[read]`. Commands: /post TEXT, /follow USER, /unfollow USER, /timeline,
/contacts USER..., /who USER, /away, /online, /quit, /help. Standard input may be a
terminal or a pipe (each line one command), so scripts and tests drive it the same way.
"""
from __future__ import annotations

import asyncio
import sys
from typing import Any

from .client import Client, Closed, ConnectionClosed, Message, Presence, Receipt, ServerError, Tweet

HELP = ("@USER TEXT send a message | /post TEXT | /follow USER | /unfollow USER | /timeline | "
        "/contacts USER... | /who USER | /away | /online | /quit")
MAX_SENT = 10_000  # sent messages remembered for their receipts


class Terminal:
    """One user's session at the keyboard."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.sent: dict[int, tuple[str, str]] = {}  # msg_id -> (to, text), for receipts
        self.following: list[str] = []  # who /follow named in this run: tweet texts are asked of them

    def say(self, line: str) -> None:
        print(line, flush=True)

    async def command(self, line: str) -> bool:
        """Act on one input line; False to quit."""
        line = line.strip()
        client = self.client
        if not line:
            return True
        if line.startswith("@"):
            to, _, text = line[1:].partition(" ")
            msg_id = await client.send(to, text.encode(), preview=text)
            if len(self.sent) >= MAX_SENT:
                self.sent.pop(next(iter(self.sent)))
            self.sent[msg_id] = (to, text)
            self.say(f"[sent] {to}: {text}")
            return True
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word == "/quit":
            return False
        if word == "/post":
            self.say(f"[posted] #{await client.post(rest)}")
        elif word == "/follow":
            await client.follow(rest)
            if rest not in self.following:
                self.following.append(rest)
            self.say(f"* following {rest}")
        elif word == "/unfollow":
            await client.unfollow(rest)
            self.say(f"* not following {rest}")
        elif word == "/timeline":
            ids, _ = await client.timeline()
            for tweet_id in ids:
                self.say(await self.tweet_line(tweet_id))
            self.say(f"* {len(ids)} tweets")
        elif word == "/contacts":
            await client.set_contacts(rest.split())
            self.say(f"* contacts: {rest}")
        elif word == "/who":
            status, last_seen = await client.presence_of(rest)
            self.say(f"* {rest} is {status}" + (f" (last seen at {last_seen:.0f})" if last_seen else ""))
        elif word in ("/away", "/online"):
            await client.set_presence(word[1:])
            self.say(f"* you are {word[1:]}")
        else:
            self.say(HELP)
        return True

    async def tweet_line(self, tweet_id: int) -> str:
        for author in self.following:
            texts = await self.client.tweets(author, [tweet_id])
            if tweet_id in texts:
                return f"# {author}: {texts[tweet_id]}"
        return f"# tweet {tweet_id}"

    async def show(self, event: Any) -> None:
        if isinstance(event, Message):
            self.say(f"{event.sender}: {event.body.decode(errors='replace')}")
            await self.client.read([event.msg_id])
        elif isinstance(event, Receipt):
            to, text = self.sent.get(event.msg_id, ("?", f"#{event.msg_id}"))
            self.say(f"[{event.status}] {to}: {text}")
        elif isinstance(event, Presence):
            self.say(f"* {event.user} is {event.status}")
        elif isinstance(event, Tweet):
            self.say(await self.tweet_line(event.tweet_id))
        elif isinstance(event, ServerError):
            self.say(f"! {event}")


async def run(host: str, port: int, user: str, device: str, token: bytes) -> int:
    """Chat until /quit, end of input, or the server closing; the exit status."""
    client = await Client.connect(host, port, user, token, device)
    term = Terminal(client)
    term.say(f"* connected as {user}. {HELP}")
    stdin = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    keyboard = asyncio.create_task(_keyboard(term, stdin))
    status = 0
    try:
        while not keyboard.done():
            events = asyncio.create_task(client.next_event())
            await asyncio.wait([events, keyboard], return_when=asyncio.FIRST_COMPLETED)
            if not events.done():
                events.cancel()
                break
            event = events.result()
            if isinstance(event, Closed):
                term.say(f"* disconnected: {event.reason}")
                status = 1
                break
            try:
                await term.show(event)
            except ServerError as exc:
                term.say(f"! {exc}")
    finally:
        keyboard.cancel()
        await client.close()
    return status


async def _keyboard(term: Terminal, stdin: asyncio.StreamReader) -> None:
    while line := (await stdin.readline()).decode(errors="replace"):
        try:
            if not await term.command(line):
                return
        except ServerError as exc:
            term.say(f"! {exc}")
        except ConnectionClosed:
            return
