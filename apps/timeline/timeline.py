"""A home timeline: one activated entity per user (`("timeline", user)`), event-sourced
in LMDB, started on demand and passivated when idle (`storage.Entities`).

It takes fan-out inserts (`("ins", job, kind, author, reply_to)`, a cast: the
acknowledgement to `reply_to` leaves once the insert is stored), and answers:
- `("page", cursor)` -> `[ids, next_cursor]`: 50 ids older than `cursor`, newest first,
  with the pulled tweets of followed celebrities merged in. Those are asked of their
  authors all at once, and only what is newer than what this process already fetched;
  the page is answered when the last author has (OTP's noreply: the timeline goes on
  taking inserts and other reads meanwhile), or `Unavailable` after half `call_timeout`
  (so that the answer reaches a caller with the whole timeout);
- `("follow", author)` -> since: asks the author to add this user, stores the follow;
- `("unfollow", author)` -> until (or None): asks the author to drop this user, keeps the
  author's pulled tweets this user could see, drops the follow;
- `("subscribe", pid)`: new tweet ids for this user are pushed to `pid` as they come.

`apps.timeline.home` has the state and the merge as pure functions.
"""
from __future__ import annotations

from typing import Any

from actors import NoProc, NoReply, Pid
from storage import ActivationError, Store, entity_call, entity_cast

from apps.common import RETRYABLE

from . import home
from .author import PULLED
from .context import LIVE, UserEntity, check_user
from .errors import BadRequest, Unavailable

RETRY = (*RETRYABLE, ActivationError)
LATE = "$read_late"


class Timeline(UserEntity):
    """See the module docstring."""

    snapshot_every = 200

    def init(self, store: Store, key: Any) -> None:
        super().init(store, key)
        self.pulled_cache: dict[int, list[int]] = {}  # author -> its pulled ids, newest first
        self.reads: dict[Any, list] = {}  # ref -> [caller, cursor, answers awaited, timer]

    def initial_state(self) -> dict[str, Any]:
        return home.empty()

    def apply(self, event: list) -> None:
        home.apply(self.state, event, self.ctx.config.capacity)

    # -- fan-out inserts ------------------------------------------------------------------------

    def handle_cast(self, msg: Any) -> None:
        _, job, kind, author, reply_to = msg
        state = self.state
        if kind == "i":
            if home.accepts(state["ids"], job, self.ctx.config.capacity):
                self.persist([home.E_INSERT, job])
                self.cast(LIVE, ("new", self.user, job))
        elif author in state["follows"] and author not in state["pulls"]:
            # (A mark from an author not followed is only acknowledged: its pulled tweets
            # were kept at the unfollow, and a retried follow learns it from the author.)
            self.persist([home.E_PULLS, author])
            self.cast(LIVE, ("watch", self.user, author))
            self.cast(LIVE, ("new", self.user, job))  # the tweet that made the author pull
        self.send(reply_to, ("ack", job, self.user))

    # -- requests -------------------------------------------------------------------------------

    def answer(self, request: Any, caller: Any) -> Any:
        kind = request[0]
        if kind == "page":
            cursor = request[1]
            if cursor is not None and (type(cursor) is not int or cursor < 0):
                raise BadRequest(f"a page cursor is a tweet id (an int >= 0) or None, got {cursor!r:.60}")
            if not home.pulled_authors(self.state):
                return self._page([self.state["ids"]], cursor)
            return self._merged_page(cursor, caller)
        if kind == "follow":
            return self._follow(self._followee(request[1]))
        if kind == "unfollow":
            return self._unfollow(self._followee(request[1]))
        if kind == "subscribe":
            return self._subscribe(request[1])
        if kind == "state":
            return self.state
        return super().answer(request, caller)

    def _page(self, lists: list[list[int]], cursor: int | None) -> list:
        config = self.ctx.config
        ids, nxt = home.page(lists, cursor, config.page, config.capacity)
        return [ids, nxt]

    def _merged_page(self, cursor: int | None, caller: Any) -> Any:
        authors = home.pulled_authors(self.state)
        ref = self.node.make_ref()
        for author, since in authors:
            router = self.ctx.authors(author)
            if router is None:
                return Unavailable(f"the author processes of {author} are not running")
            cached = self.pulled_cache.get(author)
            entity_cast(self, router, ("author", author),
                        ("pulled_to", cached[0] if cached else since, self.pid, ref))
        timer = self.send_after(self.ctx.config.call_timeout / 2, self.pid, (LATE, ref))
        self.reads[ref] = [caller, cursor, len(authors), timer]
        return NoReply

    def handle_info(self, msg: Any) -> None:
        kind = msg[0] if type(msg) is tuple and msg else None
        if kind == PULLED:
            _, ref, author, fresh = msg
            cached = self.pulled_cache.get(author, [])
            newer = home.since_filter(fresh, cached[0]) if cached else fresh  # reads overlap
            if newer:
                self.pulled_cache[author] = (newer + cached)[:self.ctx.config.capacity]
            read = self.reads.get(ref)
            if read is not None:
                read[2] -= 1
                if not read[2]:
                    del self.reads[ref]
                    self.cancel_timer(read[3])
                    self.reply(read[0], self._page(self._lists(), read[1]))
        elif kind == LATE:
            read = self.reads.pop(msg[1], None)
            if read is not None:
                self.reply(read[0], Unavailable(f"an author did not answer timeline {self.user} in "
                                                f"{self.ctx.config.call_timeout / 2} s"))
        else:
            super().handle_info(msg)

    def _lists(self) -> list[list[int]]:
        """The pushed ids and, for each followed celebrity, its pulled ids after `since`."""
        lists = [self.state["ids"]]
        for author, since in home.pulled_authors(self.state):
            lists.append(home.since_filter(self.pulled_cache.get(author, []), since))
        return lists

    def _followee(self, author: Any) -> int:
        check_user("author", author)
        if author == self.user:
            raise BadRequest(f"user {author} cannot follow themselves")
        return author

    async def _follow(self, author: int) -> Any:
        follows = self.state["follows"]
        if author in follows:
            return follows[author]
        if len(follows) >= self.ctx.config.max_following:
            return BadRequest(f"user {self.user} already follows {len(follows)} accounts (the limit)")
        try:
            since, pulls = await self._ask_author(author, ("follow", self.user))
        except RETRY as exc:
            return Unavailable(f"author {author} did not answer: {exc}")
        self.persist([home.E_FOLLOW, author, since, pulls])
        if pulls:
            self.cast(LIVE, ("watch", self.user, author))
        return since

    async def _unfollow(self, author: int) -> Any:
        try:
            span = await self._ask_author(author, ("unfollow", self.user))
            follows = self.state["follows"]
            if author not in follows:
                return span[1] if span is not None else None
            kept: list[int] = []
            if span is not None:  # asked even if no "pull me" came yet: it may be on its way
                kept = await self._ask_author(author, ("pulled_range", follows[author], span[1]))
        except RETRY as exc:
            return Unavailable(f"author {author} did not answer: {exc}")
        self.persist([home.E_UNFOLLOW, author, kept])
        self.pulled_cache.pop(author, None)
        self.cast(LIVE, ("unwatch", self.user, author))
        return span[1] if span is not None else None

    def _subscribe(self, pid: Any) -> str:
        if type(pid) is not Pid:
            raise BadRequest(f"subscribe needs the pid to push to, got {pid!r:.60}")
        self.cast(LIVE, ("sub", self.user, pid, [a for a, _ in home.pulled_authors(self.state)]))
        return "ok"

    async def _ask_author(self, author: int, request: tuple) -> Any:
        authors = self.ctx.authors(author)
        if authors is None:
            raise NoProc(f"the author processes of {author}")
        return await entity_call(self, authors, ("author", author), request, self.ctx.config.call_timeout)
