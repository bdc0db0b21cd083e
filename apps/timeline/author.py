"""An author: one activated entity per user (`("author", user)`), holding who follows
them and their tweets, event-sourced in LMDB. Each follower is a record of its own
(`("followers", user)` -> since, see `storage.persistent`): a celebrity's millions of
followers never make one stored value, and a snapshot writes only those that changed.

Posting (`("post", text, cid)`): take a Snowflake id from the node's id server, store the
tweet, then hand the fan-out job to the node's fan-out process, and only then answer with
the id. With at most `threshold` followers the job inserts the id into every follower's
timeline (fan-out on write); above it the tweet is only kept here, and followers merge it
when they read (fan-out on read). The first pulled tweet also sends every follower a
"pull me" mark, once. A post with a client id already stored answers the same id.

The follower set a job uses is the one the tweet was posted with: while a job is being
handed over the author handles nothing else (its callback is suspended), and an author
that stopped in between hands it over again, first thing, when it next starts. So a
follow or unfollow takes effect exactly for the tweets after it.

Other requests: `("follow", user)` -> (since, pulls), `("unfollow", user)` -> (since,
until) or None, `("pulled_range", since, until)` -> its pulled ids in that range,
`("tweets", ids)` -> {id: text}; and the cast `("pulled_to", after, pid, ref)`, answered
with the message `("$pulled", ref, author, ids newer than after)`.
"""
from __future__ import annotations

from typing import Any

from actors import GenServer, NoProc
from storage import Store

from apps.common import RETRYABLE

from .context import FANOUT, IDS, UserEntity, check_user
from .errors import BadRequest, Unavailable

MAX_CIDS = 64  # client post ids remembered per author: retries come within seconds
MAX_GONE = 1_000  # recent unfollows remembered, so a retried unfollow answers the same
HAND_OVER_TRIES = 3
PULLED = "$pulled"  # the answer to a timeline's "pulled_to"
E_TWEET, E_FANNED, E_FOLLOW, E_UNFOLLOW, E_PULLING = "t", "j", "f", "u", "m"


def empty() -> dict[str, Any]:
    """An author with no tweets. `tweets` are [id, text, pulled, handed over], newest
    first; `gone` maps recent unfollowers to [since, until]. (Its followers, each mapped
    to `since`, are records: `followers` below.)"""
    return {"tweets": [], "last": -1, "pulling": False, "cids": {}, "gone": {}}


def apply(state: dict[str, Any], event: list, capacity: int, followers: dict | None = None) -> None:
    """An author's stored transitions (pure: replayed on recovery and by checks), with
    its `followers` (None when only its tweets are wanted)."""
    kind = event[0]
    if kind == E_TWEET:
        _, tweet_id, text, pulled, cid, fanned = event
        tweets = state["tweets"]
        tweets.insert(0, [tweet_id, text, pulled, fanned])
        if len(tweets) > capacity:
            tweets.pop()  # no timeline can show more of one author than its newest 800
        state["last"] = tweet_id
        if cid is not None:
            cids = state["cids"]
            cids[cid] = tweet_id
            if len(cids) > MAX_CIDS:
                del cids[next(iter(cids))]
    elif kind == E_FANNED:
        assert state["tweets"][0][0] == event[1], (state["tweets"][:1], event)
        state["tweets"][0][3] = True
    elif kind == E_FOLLOW:
        if followers is not None:
            followers[event[1]] = state["last"]
        state["gone"].pop(event[1], None)
    elif kind == E_UNFOLLOW:
        gone = state["gone"]
        gone[event[1]] = [followers.pop(event[1]) if followers is not None else None, state["last"]]
        if len(gone) > MAX_GONE:
            del gone[next(iter(gone))]
    else:
        assert kind == E_PULLING, event
        state["pulling"] = True


def pulled_after(state: dict[str, Any], after: int, until: int | None = None) -> list[int]:
    """The author's pulled tweet ids in (after, until], newest first."""
    out = []
    for tweet_id, _, pulled, _ in state["tweets"]:  # newest first
        if tweet_id <= after:
            break
        if pulled and (until is None or tweet_id <= until):
            out.append(tweet_id)
    return out


class Author(UserEntity):
    """See the module docstring."""

    snapshot_every = 1_000

    def init(self, store: Store, key: Any) -> None:
        super().init(store, key)
        tweets = self.state["tweets"]
        if tweets and not tweets[0][3]:
            self.continue_with("resubmit")  # stopped while handing over a job: finish that first

    def initial_state(self) -> dict[str, Any]:
        return empty()

    def recover_records(self, records: list[tuple[Any, Any]]) -> None:
        self.followers: dict[int, int] = self.take_table("followers", records)

    def apply(self, event: list) -> None:
        apply(self.state, event, self.ctx.config.capacity, self.followers)
        if event[0] == E_FOLLOW:
            self.put_record(("followers", event[1]), self.followers[event[1]])
        elif event[0] == E_UNFOLLOW:
            self.delete_record(("followers", event[1]))

    # -- requests --------------------------------------------------------------------------

    def handle_continue(self, arg: Any) -> Any:
        assert arg == "resubmit", arg
        return self._hand_over(self.state["tweets"][0])

    def answer(self, request: Any, caller: Any) -> Any:
        kind = request[0]
        if kind == "post":
            return self._check_post(request[1], request[2])
        if kind == "follow":
            return self._follow(check_user("follower", request[1]))
        if kind == "unfollow":
            return self._unfollow(check_user("follower", request[1]))
        if kind == "pulled_range":
            return pulled_after(self.state, request[1], request[2])
        if kind == "tweets":
            wanted = set(request[1])  # membership only
            return {t[0]: t[1] for t in self.state["tweets"] if t[0] in wanted}
        if kind == "state":
            return self.state
        return super().answer(request, caller)

    def _check_post(self, text: Any, cid: Any) -> Any:
        max_text = self.ctx.config.max_text
        if type(text) is not str or not text:
            raise BadRequest(f"a tweet is a non-empty str, got {text!r:.60}")
        if len(text) > max_text:
            raise BadRequest(f"a tweet is at most {max_text} characters, this one has {len(text)}")
        if cid is not None and (type(cid) not in (int, str) or (type(cid) is str and len(cid) > 64)):
            raise BadRequest(f"a client post id is an int or a str of at most 64 characters, got {cid!r:.60}")
        return self._post_async(text, cid)

    async def _post_async(self, text: str, cid: Any) -> Any:
        state = self.state
        known = state["cids"].get(cid) if cid is not None else None
        if known is not None:  # a retry: stored once; hand it over if that never finished
            tweet = state["tweets"][0]
            if tweet[0] == known and not tweet[3]:
                await self._hand_over(tweet)
            return known
        ids = self.ctx.local(IDS)
        try:
            if ids is None:
                raise NoProc(IDS)
            tweet_id = await self.call(ids, "next", self.ctx.config.call_timeout)
        except RETRYABLE as exc:
            return Unavailable(f"no tweet id for author {self.user}: {exc}")
        pulled = len(self.followers) > self.ctx.config.threshold
        mark = pulled and not state["pulling"]
        self.persist([E_TWEET, tweet_id, text, pulled, cid, pulled and not mark])
        if mark:
            self.persist([E_PULLING])
        if pulled:
            for live in self.ctx.lives():
                self.cast(live, ("pulled", self.user, tweet_id))
        if not state["tweets"][0][3]:
            await self._hand_over(state["tweets"][0])
        return tweet_id

    async def _hand_over(self, tweet: list) -> None:
        """Give the fan-out process the job of `tweet` (the newest, not yet handed over).
        Its followers are still those it was posted with. If the fan-out cannot take it
        after a few tries the author crashes: it hands the job over when it next starts.
        (HOOK-NEEDED: a persistent server suspended in an async callback whose commit
        failed keeps running with its outputs held forever; crashing also ends that.)"""
        tweet_id, pulled = tweet[0], tweet[2]
        job = ("job", tweet_id, "p" if pulled else "i", self.user, list(self.followers))
        for attempt in range(1, HAND_OVER_TRIES + 1):
            if not job[4] or await self._offer(job):
                self.persist([E_FANNED, tweet_id])
                return
            if attempt < HAND_OVER_TRIES:
                await self.sleep(self.ctx.config.retry_after)
        raise Unavailable(f"author {self.user}: the fan-out did not take the job of tweet {tweet_id} "
                          f"in {HAND_OVER_TRIES} tries")

    async def _offer(self, job: tuple) -> bool:
        """True once the node's fan-out has stored the job."""
        fanout = self.ctx.local(FANOUT)
        if fanout is None:
            return False
        try:
            return await self.call(fanout, job, self.ctx.config.call_timeout) == "ok"
        except RETRYABLE:
            return False  # down, restarting, or its queue is full (it answered an error)

    def handle_cast(self, msg: Any) -> None:
        """`("pulled_to", after, reply_to, ref)`: a timeline's read wants this author's
        pulled ids newer than `after`, as a message (it does not wait in a call)."""
        if type(msg) is tuple and len(msg) == 4 and msg[0] == "pulled_to":
            _, after, reply_to, ref = msg
            self.send(reply_to, (PULLED, ref, self.user, pulled_after(self.state, after)))
        else:
            GenServer.handle_info(self, msg)  # logged and dropped

    def _follow(self, user: int) -> list:
        if user == self.user:
            raise BadRequest(f"user {user} cannot follow themselves")
        followers = self.followers
        if user not in followers:
            self.persist([E_FOLLOW, user])
        return [followers[user], self.state["pulling"]]

    def _unfollow(self, user: int) -> list | None:
        if user in self.followers:
            self.persist([E_UNFOLLOW, user])
        return self.state["gone"].get(user)
