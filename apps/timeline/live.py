"""Real-time push: connected clients get new tweet ids for their timeline as they come.

One per node (`timeline.live`), for the users homed there. A client subscribes through
its timeline (`TimelineService.subscribe`) and gets `("tweet", user, tweet_id)` frames:
for a pushed tweet when its insert is stored, for a pulled one when its author posts it
(every node's Live hears of pulled tweets; each knows which of its subscribers follow
which pulled authors). Subscribers are monitored and dropped when they exit. Nothing
here is stored: a push is news; the timeline itself is the record.
"""
from __future__ import annotations

from typing import Any

from actors import Down, GenServer, Pid

MAX_SUBSCRIBERS = 1_000_000


class Live(GenServer):
    """See the module docstring."""

    def init(self) -> None:
        self.subs: dict[int, list[Pid]] = {}  # user -> client pids
        self.refs: dict[Any, tuple[int, Pid]] = {}
        self.watching: dict[int, dict[int, int]] = {}  # pulled author -> {subscribed follower: 1}

    def handle_cast(self, msg: Any) -> None:
        kind = msg[0]
        if kind == "new":
            self._push(msg[1], msg[2])
        elif kind == "pulled":
            for user in self.watching.get(msg[1], ()):
                self._push(user, msg[2])
        elif kind == "sub":
            _, user, pid, authors = msg
            if len(self.refs) < MAX_SUBSCRIBERS and pid not in self.subs.get(user, ()):
                self.subs.setdefault(user, []).append(pid)
                self.refs[self.monitor(pid)] = (user, pid)
                for author in authors:
                    self.watching.setdefault(author, {})[user] = 1
        elif kind == "watch":
            if msg[1] in self.subs:  # only subscribers' follows matter here
                self.watching.setdefault(msg[2], {})[msg[1]] = 1
        elif kind == "unwatch":
            self._unwatch(msg[1], msg[2])
        else:
            GenServer.handle_info(self, msg)  # logged and dropped

    def handle_info(self, msg: Any) -> None:
        if type(msg) is not Down or msg.ref not in self.refs:
            return super().handle_info(msg)
        user, pid = self.refs.pop(msg.ref)
        pids = self.subs[user]
        pids.remove(pid)
        if not pids:
            del self.subs[user]
            for author in [a for a, users in self.watching.items() if user in users]:
                self._unwatch(user, author)

    def _unwatch(self, user: int, author: int) -> None:
        users = self.watching.get(author)
        if users is not None:
            users.pop(user, None)
            if not users:
                del self.watching[author]

    def _push(self, user: int, tweet_id: int) -> None:
        for pid in self.subs.get(user, ()):
            self.send(pid, ("tweet", user, tweet_id))
