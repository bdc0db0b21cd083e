"""A home timeline's stored state and the merge that reads it, as pure functions.

The state of user u's timeline:
- `ids`: tweet ids pushed to u (fan-out on write), newest first, at most `capacity`;
- `follows`: author -> `since`, the author's newest tweet id when u followed (tweets
  after it are u's to see; "following takes effect for later tweets");
- `pulls`: authors known to fan out on read: their pulled tweets are merged when u reads.

What u sees is the newest `capacity` ids of `ids` merged with, for every followed author
in `pulls`, that author's pulled tweets newer than `since`. Unfollowing a pulled author
copies the pulled tweets u could see into `ids` first, so tweets already shown stay.

Events: `["i", tweet_id]` (a pushed tweet), `["f", author, since, pulls]`, `["u", author,
ids]` (unfollow, with the pulled ids to keep), `["p", author]` (the author now fans out
on read).
"""
from __future__ import annotations

from bisect import bisect_left
from heapq import merge
from itertools import islice
from typing import Any, Iterable, Iterator

E_INSERT, E_FOLLOW, E_UNFOLLOW, E_PULLS = "i", "f", "u", "p"


def empty() -> dict[str, Any]:
    return {"ids": [], "follows": {}, "pulls": {}}


def _neg(tweet_id: int) -> int:
    return -tweet_id


def _slot(ids: list[int], tweet_id: int, capacity: int) -> int | None:
    """Where `tweet_id` goes in the newest-first list `ids`; None if it is there already
    or too old to be among the newest `capacity`."""
    i = bisect_left(ids, -tweet_id, key=_neg)
    if i >= capacity or (i < len(ids) and ids[i] == tweet_id):
        return None
    return i


def accepts(ids: list[int], tweet_id: int, capacity: int) -> bool:
    """Would `insert` change `ids`?"""
    return _slot(ids, tweet_id, capacity) is not None


def insert(ids: list[int], tweet_id: int, capacity: int) -> bool:
    """Put `tweet_id` into `ids`, keeping at most `capacity`; False if nothing changed."""
    i = _slot(ids, tweet_id, capacity)
    if i is None:
        return False
    ids.insert(i, tweet_id)
    if len(ids) > capacity:
        ids.pop()
    return True


def apply(state: dict[str, Any], event: list, capacity: int) -> None:
    kind = event[0]
    if kind == E_INSERT:
        insert(state["ids"], event[1], capacity)
    elif kind == E_FOLLOW:
        state["follows"][event[1]] = event[2]
        if event[3]:
            state["pulls"][event[1]] = 1
    elif kind == E_UNFOLLOW:
        del state["follows"][event[1]]
        state["pulls"].pop(event[1], None)
        for tweet_id in event[2]:
            insert(state["ids"], tweet_id, capacity)
    else:
        assert kind == E_PULLS, event
        state["pulls"][event[1]] = 1


def pulled_authors(state: dict[str, Any]) -> list[tuple[Any, int]]:
    """(author, since) for the followed authors whose tweets are merged on read."""
    follows = state["follows"]
    return [(a, follows[a]) for a in state["pulls"] if a in follows]


def merged(lists: Iterable[list[int]]) -> Iterator[int]:
    """Newest-first lists merged newest first, each id once."""
    last = None
    for tweet_id in merge(*lists, reverse=True):
        if tweet_id != last:
            last = tweet_id
            yield tweet_id


def newest(lists: Iterable[list[int]], capacity: int) -> list[int]:
    """The newest `capacity` ids of the merged lists: a whole timeline."""
    return list(islice(merged(lists), capacity))


def page(lists: Iterable[list[int]], cursor: int | None, size: int, capacity: int
         ) -> tuple[list[int], int | None]:
    """One page of the timeline the lists make: up to `size` ids older than `cursor` (the
    last id of the previous page; None for the first page), within the newest
    `capacity`. Returns (ids, the cursor of the next page or None at the end)."""
    out: list[int] = []
    for rank, tweet_id in enumerate(merged(lists)):
        if rank >= capacity:
            return out, None
        if cursor is not None and tweet_id >= cursor:
            continue
        if len(out) == size:
            return out, out[-1]
        out.append(tweet_id)
    return out, None


def since_filter(ids: list[int], since: int) -> list[int]:
    """The newest-first ids newer than `since`."""
    return ids[:bisect_left(ids, -since, key=_neg)]
