"""A small hybrid recommender and the asynchronous view counter.

Scores (each normalised to [0, 1] over the candidates, then weighted as in the Netflix
notes' merge: 0.4 collaborative, 0.3 content, 0.2 popularity, 0.1 newness):
- collaborative: implicit-feedback matrix factorisation by alternating least squares
  (numpy; factors seeded, so a seed gives the same model), predicted affinity U V^T;
- content: cosine similarity of genre vectors between a title and the user's history;
- popularity: view counts; newness: the order titles joined the catalogue.
Titles the user has watched are never recommended. A user with no history gets the
popular and new titles.

`Recommender` is the process: the catalogue and every user's watch weights are stored,
as records (`("titles", video)` -> [its position, genres], `("watched", user)`,
`("views", video)`; see `storage.persistent`), so a view rewrites its user's record and
its title's count, never the whole catalogue;
viewing events arrive as casts and the model is refitted once `batch` events are waiting
(or `every` seconds after the first), not on every event. `ViewCounter` adds views up in
memory and stores the totals every `every` seconds or `batch` views (YouTube: "increment
asynchronously, batch updates"): a crash loses at most the views of one batch.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from actors import seed_for
from storage import PersistentServer

WEIGHTS = {"collaborative": 0.4, "content": 0.3, "popularity": 0.2, "new": 0.1}
MAX_TITLES = 20_000
MAX_USERS = 100_000
_FIT = ("$fit",)
_FLUSH = ("$flush",)


def genre_matrix(genres: list[list[str]]) -> np.ndarray:
    """One row per title, one column per genre (sorted), 1 where the title has it."""
    names = sorted({g for gs in genres for g in gs})
    col = {g: j for j, g in enumerate(names)}
    m = np.zeros((len(genres), len(names)))
    for i, gs in enumerate(genres):
        for g in gs:
            m[i, col[g]] = 1.0
    return m


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of `a` with every row of `b` (0 for empty rows)."""
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    return (a / np.where(na == 0, 1, na)) @ (b / np.where(nb == 0, 1, nb)).T


def als(r: np.ndarray, factors: int, reg: float, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Alternating least squares on the users x titles matrix `r`: U (users x k), V (titles x k)
    minimising |r - U V^T|^2 + reg (|U|^2 + |V|^2)."""
    assert r.ndim == 2 and factors >= 1 and reg > 0 and iterations >= 1
    rng = np.random.default_rng(seed)
    k = min(factors, *r.shape) if min(r.shape) else factors
    u = rng.normal(0.0, 0.1, (r.shape[0], k))
    v = rng.normal(0.0, 0.1, (r.shape[1], k))
    eye = reg * np.eye(k)
    for _ in range(iterations):
        u = r @ v @ np.linalg.inv(v.T @ v + eye)
        v = r.T @ u @ np.linalg.inv(u.T @ u + eye)
    return u, v


def _unit(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min() if x.size else 0.0
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def hybrid_scores(r: np.ndarray, user: int | None, genres: np.ndarray, views: np.ndarray,
                  u: np.ndarray | None, v: np.ndarray | None) -> np.ndarray:
    """The weighted score of every title for row `user` of `r` (None: a new user)."""
    n = r.shape[1]
    pop = _unit(np.log1p(views))
    new = _unit(np.arange(n, dtype=float))
    if user is None or not r[user].any():
        return WEIGHTS["popularity"] * pop + WEIGHTS["new"] * new
    cf = _unit(u[user] @ v.T) if u is not None else np.zeros(n)
    profile = r[user] @ genres  # the user's genres, weighted by watching
    content = _unit(cosine(genres, profile[None, :])[:, 0])
    return (WEIGHTS["collaborative"] * cf + WEIGHTS["content"] * content
            + WEIGHTS["popularity"] * pop + WEIGHTS["new"] * new)


class Recommender(PersistentServer):
    """`init(store, key, seed, batch=32, every=10.0)`. Casts: `("title", video, genres)`,
    `("viewed", user, video, completion)`. Calls: `("recommend", user, n)`, `("stats",)`."""

    def init(self, store: Any, key: Any, seed: int, batch: int = 32, every: float = 10.0) -> None:
        super().init(store, key)
        self.seed = seed_for(seed, "recommender")
        self.batch = batch
        self.every = every
        self.waiting = 0
        self.fits = 0
        self.model: tuple | None = None
        self._fit()

    def initial_state(self) -> dict[str, Any]:
        return {}

    def recover_records(self, records: list[tuple[Any, Any]]) -> None:
        old = self.state  # a state stored whole, before records: its titles are moved over
        titles = {key[1]: value for key, value in records if key[0] == "titles"}
        for i, video in enumerate(old.pop("titles", ())):
            titles[video] = [i, old["genres"][video]]
            self.put_record(("titles", video), titles[video])
        old.pop("genres", None)
        order = sorted(titles, key=lambda video: titles[video][0])
        self.tables = {"titles": order, "genres": {video: titles[video][1] for video in order},
                       "watched": self.take_table("watched", records), "views": self.take_table("views", records)}

    def handle_cast(self, msg: tuple) -> None:
        s = self.tables
        if msg[0] == "title":
            _, video, genres = msg
            if s["genres"].get(video) == sorted(genres):
                return  # announced again (a catalogue's boot): nothing to store
            if video not in s["genres"]:
                if len(s["titles"]) >= MAX_TITLES:
                    raise OverflowError(f"recommender: more than {MAX_TITLES} titles")
                s["titles"].append(video)
            s["genres"][video] = sorted(genres)
            self.put_record(("titles", video), [s["titles"].index(video), s["genres"][video]])  # rare: O(titles)
        elif msg[0] == "viewed":
            _, user, video, completion = msg
            if video not in s["genres"]:
                return  # not (yet) in the catalogue
            if user not in s["watched"] and len(s["watched"]) >= MAX_USERS:
                raise OverflowError(f"recommender: more than {MAX_USERS} users")
            w = s["watched"].setdefault(user, {})
            w[video] = max(w.get(video, 0.0), round(float(min(1.0, max(0.0, completion))), 4))
            s["views"][video] = s["views"].get(video, 0) + 1
            self.put_record(("watched", user), w)
            self.put_record(("views", video), s["views"][video])
            self.waiting += 1
            if self.waiting >= self.batch:
                self._fit()
            elif self.waiting == 1:
                self.send_after(self.every, self.pid, _FIT)
        else:
            raise ValueError(f"recommender: unknown message {msg!r:.200}")

    def handle_info(self, msg: Any) -> None:
        if msg == _FIT:
            if self.waiting:
                self._fit()
        else:
            super().handle_info(msg)

    def _matrix(self) -> tuple[list, np.ndarray]:
        s = self.tables
        users = sorted(s["watched"], key=str)
        col = {video: j for j, video in enumerate(s["titles"])}
        r = np.zeros((len(users), len(col)))
        for i, user in enumerate(users):
            for video, w in s["watched"][user].items():
                r[i, col[video]] = w
        return users, r

    def _fit(self) -> None:
        self.waiting = 0
        users, r = self._matrix()
        uv = als(r, 8, 0.1, 10, self.seed) if r.size else (None, None)
        self.model = (users, r, uv)
        self.fits += 1

    def handle_call(self, request: tuple, caller: Any) -> Any:
        if request[0] == "recommend":
            return self._recommend(request[1], request[2])
        if request[0] == "stats":
            return {"titles": len(self.tables["titles"]), "users": len(self.tables["watched"]), "fits": self.fits}
        return ValueError(f"recommender: unknown request {request!r:.200}")

    def _recommend(self, user: Any, n: int) -> Any:
        if type(n) is not int or not 1 <= n <= 100:
            return ValueError(f"recommend: n must be an int in 1..100, got {n!r}")
        s = self.tables
        titles = s["titles"]
        if not titles:
            return []
        users, r, (u, v) = self.model
        if r.shape[1] != len(titles):  # titles joined since the last fit
            self._fit()
            users, r, (u, v) = self.model
        row = users.index(user) if user in s["watched"] else None
        genres = genre_matrix([s["genres"][t] for t in titles])
        views = np.array([s["views"].get(t, 0) for t in titles], dtype=float)
        score = hybrid_scores(r, row, genres, views, u, v)
        seen = s["watched"].get(user, {})
        order = sorted((j for j in range(len(titles)) if titles[j] not in seen), key=lambda j: (-score[j], j))
        return [titles[j] for j in order[:n]]


class ViewCounter(PersistentServer):
    """`init(store, key, batch=100, every=5.0)`. Casts `("view", video)`; calls
    `("count", video)` (stored + pending), `("top", n)` (most viewed, stored + pending)."""

    def init(self, store: Any, key: Any, batch: int = 100, every: float = 5.0) -> None:
        super().init(store, key)
        self.batch = batch
        self.every = every
        self.pending: dict[Any, int] = {}
        self.npending = 0
        self.flushes = 0

    def initial_state(self) -> dict[str, Any]:
        return {}

    def recover_records(self, records: list[tuple[Any, Any]]) -> None:
        self.views: dict[Any, int] = self.take_table("views", records)  # video -> stored count

    def handle_cast(self, msg: tuple) -> None:
        assert msg[0] == "view", msg
        self.pending[msg[1]] = self.pending.get(msg[1], 0) + 1
        self.npending += 1
        if self.npending >= self.batch:
            self._flush_views()
        elif self.npending == 1:
            self.send_after(self.every, self.pid, _FLUSH)

    def handle_info(self, msg: Any) -> None:
        if msg == _FLUSH:
            if self.npending:
                self._flush_views()
        else:
            super().handle_info(msg)

    def _flush_views(self) -> None:
        views = self.views
        for video, n in self.pending.items():
            views[video] = views.get(video, 0) + n
            self.put_record(("views", video), views[video])
        self.pending, self.npending = {}, 0
        self.flushes += 1

    def _total(self, video: Any) -> int:
        return self.views.get(video, 0) + self.pending.get(video, 0)

    def handle_call(self, request: tuple, caller: Any) -> Any:
        if request[0] == "count":
            return self._total(request[1])
        if request[0] == "top":
            videos = set(self.views) | set(self.pending)
            return sorted(videos, key=lambda v: (-self._total(v), str(v)))[:request[1]]
        if request[0] == "stats":
            return {"flushes": self.flushes, "pending": self.npending}
        return ValueError(f"view counter: unknown request {request!r:.200}")
