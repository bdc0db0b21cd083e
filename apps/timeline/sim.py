"""Timelines as a simulated system (scenarios name it `timeline`, or `"apps.timeline.sim:TimelineSystem"`).

Server nodes "tl1".. each run a `TimelineService` on a real LMDB store (sync mode); users
are placed on them by rendezvous hashing (`apps.timeline.context`). Node "clients"
(spared by random faults) runs one client per user, one request at a time, each retried until it is acknowledged:
posts (with a client id, so a retry is stored once), follows and unfollows of random
accounts, and reads of a few pages. With `celebrity` on, every user first follows user 0,
whose followers then far outnumber the threshold: its tweets are merged on read.

The model is built from acknowledgements only: the tweets each author posted and, per
(user, author), the follow intervals (since, until] the follow and unfollow answers gave.

Checks:
- always: every page a client read is newest first, older than its cursor, with no id
  twice in one walk; every acknowledged tweet is in its author's stored state; at most
  one live activation of each author and timeline in the cluster, checked as each starts
  (`sim.systems.entities.Ledger`);
- eventually: every request was acknowledged; each user's timeline, as stored (its pushed
  ids merged with the pulled tweets of the celebrities it follows, read from their stored
  state), equals the newest 800 of the acknowledged tweets of the accounts it followed at
  the time they were posted (the model's answer).
"""
from __future__ import annotations

from typing import Any, Callable

from actors import Node
from sim.schema import Field
from sim.system import System, check
from sim.systems.entities import Ledger
from storage import ActivationError, LimitExceeded

from apps.common import RETRYABLE, ServerNodes, ServerSystem, stored_state, top_restarts

from . import author as author_state
from . import home
from .config import TimelineConfig
from .errors import BadRequest, TimelineError
from .service import TimelineService

RETRY = (*RETRYABLE, ActivationError, LimitExceeded, TimelineError)


class TimelineSystem(ServerSystem, System):
    """See the module docstring."""

    options = {
        "servers": Field.int(2, 1, 64, "server nodes tl1.."),
        "threshold": Field.int(6, 1, 10_000_000, "followers above which an author fans out on read"),
        "celebrity": Field.bool(False, "every user follows user 0 first"),
        "capacity": Field.int(800, 1, 800, "tweet ids a timeline keeps"),
        "page": Field.int(50, 1, 800, "tweet ids per page (at most the capacity)"),
        "idle_timeout": Field.seconds(3.0, 0.1, 3600.0, "idle timelines and authors are passivated after this"),
        "retry_after": Field.seconds(1.0, 0.05, 60.0, "unacknowledged fan-out inserts go again after this"),
        "fanout_batch": Field.int(16, 1, 100_000, "inserts per fan-out turn"),
        "top_restarts": top_restarts(20),
    }
    workload_options = {
        "users": Field.int(24, 2, 100_000, "users, one client each, on node 'clients'"),
        "rate": Field.float(1.0, 0.01, 1000.0, "requests per second per client"),
        "post": Field.float(0.4, 0.0, 1.0, "share of requests that post"),
        "follow": Field.float(0.25, 0.0, 1.0, "share that follow someone"),
        "unfollow": Field.float(0.1, 0.0, 1.0, "share that unfollow someone (the rest read)"),
        "pages": Field.int(3, 1, 16, "pages a read walks at most"),
        "timeout": Field.seconds(2.0, 0.01, 60.0, "a client's call timeout"),
        "backoff": Field.seconds(0.2, 0.0, 60.0, "mean wait before a retry"),
    }

    def setup(self) -> None:
        opts = self.config
        self.servers = [f"tl{i + 1}" for i in range(opts["servers"])]
        self.tl = TimelineConfig(
            nodes=tuple(self.servers), threshold=opts["threshold"], capacity=opts["capacity"],
            idle_timeout=opts["idle_timeout"], retry_after=opts["retry_after"],
            fanout_batch=opts["fanout_batch"], call_timeout=self.load["timeout"] / 2,
            page=min(opts["page"], opts["capacity"]))
        users = self.load["users"]
        self.tweets: dict[int, list[int]] = {u: [] for u in range(users)}  # acknowledged, per author
        self.cids: dict[tuple[int, int], int] = {}
        self.intervals: dict[tuple[int, int], list[list]] = {}  # (user, author) -> [[since, until]]
        self.following: dict[int, dict[int, None]] = {u: {} for u in range(users)}
        self.busy: dict[int, str] = {}  # user -> the request under way
        self.violations: list[str] = []
        self.counts = {"posts": 0, "follows": 0, "unfollows": 0, "reads": 0, "pages": 0, "retries": 0}
        self.ledger = Ledger(self.sim)
        self.nodes = ServerNodes(self, self.servers, lambda node, store, resolve: TimelineService(
            node, store, self.tl, resolve=resolve, max_restarts=opts["top_restarts"],
            activated=self.ledger.activated))
        self.nodes.add()
        self.sim.add_node("clients", self._start_clients, targets=False)

    # -- clients ---------------------------------------------------------------------------------

    def _start_clients(self, node: Node) -> None:
        self.spawn_clients(node, self.load["users"], self._client_loop)

    async def _client_loop(self, proc: Any, user: int) -> None:
        rng = self.sim.stream(f"workload/client-{user}")
        load = self.load
        users = load["users"]
        if self.config["celebrity"] and user != 0:
            await self._follow(proc, rng, user, 0)
        posted = 0
        while True:
            await self.work(proc)
            await proc.sleep(rng.uniform(0.0, 2.0 / load["rate"]))
            if not self.workload_on:
                continue
            draw = rng.random()
            following = self.following[user]
            if draw < load["post"]:
                posted += 1
                await self._post(proc, rng, user, f"{user}:{posted}")
            elif draw < load["post"] + load["follow"]:
                author = rng.below(users)
                if author != user and author not in following:
                    await self._follow(proc, rng, user, author)
            elif draw < load["post"] + load["follow"] + load["unfollow"]:
                if following:
                    await self._unfollow(proc, rng, user, list(following)[rng.below(len(following))])
            else:
                await self._read(proc, rng, user)

    def _service(self) -> TimelineService:
        return next(iter(self.nodes.services.values()))  # any: requests go to the user's home node

    async def _until_acked(self, proc: Any, rng: Any, user: int, what: str,
                           request: Callable[[TimelineService], Any]) -> Any:
        self.busy[user] = what
        while True:
            try:
                result = await request(self._service())
                del self.busy[user]
                return result
            except BadRequest as exc:
                self.violations.append(f"client {user}: {what} refused as a bad request: {exc}")
                del self.busy[user]
                return None
            except RETRY:
                self.counts["retries"] += 1
                await proc.sleep(rng.uniform(0.0, 2.0 * self.load["backoff"]) + 0.01)

    async def _post(self, proc: Any, rng: Any, user: int, text: str) -> None:
        cid = len(self.tweets[user]) + 1
        tweet_id = await self._until_acked(proc, rng, user, f"post {cid}",
                                           lambda s: s.post(proc, user, text, cid))
        if tweet_id is None:
            return
        known = self.cids.setdefault((user, cid), tweet_id)
        if known != tweet_id:
            self.violations.append(f"user {user}'s post {cid} was stored twice: {known} and {tweet_id}")
            return
        tweets = self.tweets[user]
        if tweets and tweet_id <= tweets[-1]:
            self.violations.append(f"user {user}'s tweet id {tweet_id} is not after its previous {tweets[-1]}")
        tweets.append(tweet_id)
        self.counts["posts"] += 1

    async def _follow(self, proc: Any, rng: Any, user: int, author: int) -> None:
        since = await self._until_acked(proc, rng, user, f"follow {author}",
                                        lambda s: s.follow(proc, user, author))
        if since is not None:
            self.intervals.setdefault((user, author), []).append([since, None])
            self.following[user][author] = None
            self.counts["follows"] += 1

    async def _unfollow(self, proc: Any, rng: Any, user: int, author: int) -> None:
        until = await self._until_acked(proc, rng, user, f"unfollow {author}",
                                        lambda s: s.unfollow(proc, user, author))
        span = self.intervals[(user, author)][-1]
        if until is None or until < span[0]:
            self.violations.append(f"unfollowing {author} answered {until} to {user}, who followed "
                                   f"it since {span[0]}")
            return
        span[1] = until
        del self.following[user][author]
        self.counts["unfollows"] += 1

    async def _read(self, proc: Any, rng: Any, user: int) -> None:
        cursor, seen = None, {}
        self.counts["reads"] += 1
        for _ in range(self.load["pages"]):
            page = await self._until_acked(proc, rng, user, "read",
                                           lambda s: s.read_page(proc, user, cursor))
            if page is None:
                return
            self.counts["pages"] += 1
            ids = page.ids
            if any(a <= b for a, b in zip(ids, ids[1:])) or (cursor is not None and ids and ids[0] >= cursor):
                self.violations.append(f"user {user} read a page out of order: {ids[:5]}... after cursor {cursor}")
            twice = [i for i in ids if i in seen]
            if twice:
                self.violations.append(f"user {user} saw tweet {twice[0]} twice in one walk")
            seen.update(dict.fromkeys(ids))
            if page.cursor is None:
                return
            cursor = page.cursor

    # -- checks ------------------------------------------------------------------------------------

    def _stored(self, kind: str, user: int, empty: Callable[[], dict], apply: Callable) -> dict | None:
        """The stored state of `(kind, user)`; None while its node is down or its store failing."""
        store = self.nodes.store(self._service().ctx.home(user))
        return stored_state(store, (kind, user), empty, lambda state, event: apply(state, event, self.tl.capacity))

    def _author(self, user: int) -> dict | None:
        return self._stored("author", user, author_state.empty, author_state.apply)

    def _timeline(self, user: int) -> dict | None:
        return self._stored("timeline", user, home.empty, home.apply)

    @check("always")
    def pages_ordered_and_unique(self) -> str | None:
        """Every page read is newest first, after its cursor, with no tweet twice."""
        return self.violations[0] if self.violations else None

    @check("always")
    def single_activation(self) -> str | None:
        """No author or timeline is live on two nodes (or twice on one) at any instant."""
        return self.ledger.violation()

    @check("always")
    def acknowledged_tweets_stored(self) -> str | None:
        """Every acknowledged tweet is in its author's stored state."""
        for author, tweets in self.tweets.items():
            if not tweets:
                continue
            state = self._author(author)
            if state is None:
                continue  # its node is down
            kept = {t[0] for t in state["tweets"]}  # membership only
            missing = [t for t in tweets[-self.tl.capacity:] if t not in kept]
            if missing:
                return f"author {author}'s acknowledged tweet {missing[0]} is not in its stored state"
        return None

    @check("eventually")
    def timelines_match_the_model(self) -> str | None:
        """Each stored timeline is the newest 800 of what the user's follows posted."""
        if self.busy:
            user, what = next(iter(self.busy.items()))
            return f"{len(self.busy)} requests never acknowledged, e.g. user {user}'s {what}"
        if not self.counts["posts"]:
            return "no tweet was acknowledged at all"
        for user in range(self.load["users"]):
            state = self._timeline(user)
            if state is None:
                return f"user {user}'s node is down"
            lists = [state["ids"]]
            for author, since in home.pulled_authors(state):
                stored = self._author(author)
                if stored is None:
                    return f"author {author}'s node is down"
                lists.append(author_state.pulled_after(stored, since))
            got = home.newest(lists, self.tl.capacity)
            want = self.expected(user)
            if got != want:
                extra = [t for t in got if t not in want][:3]
                lost = [t for t in want if t not in got][:3]
                return (f"user {user}'s timeline has {len(got)} tweets, the model {len(want)}; "
                        f"missing {lost}, unexpected {extra}")
        return None

    def expected(self, user: int) -> list[int]:
        """The model: the newest tweets of the accounts `user` followed when they posted."""
        ids = []
        for author, tweets in self.tweets.items():
            for since, until in self.intervals.get((user, author), ()):
                ids += [t for t in tweets if t > since and (until is None or t <= until)]
        return sorted(set(ids), reverse=True)[:self.tl.capacity]

    def stats(self) -> dict[str, int]:
        return {**self.counts, "activations": self.ledger.activations}
