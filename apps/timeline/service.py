"""TimelineService: Twitter-style home timelines as one supervision tree per node.

    service = TimelineService(node, store)            # TimelineConfig() by default
    service.start()
    tweet_id = node.run_until_complete(service.post(node, 7, "hello", cid="p1"))
    node.run_until_complete(service.follow(node, 8, 7))
    ids, cursor = node.run_until_complete(service.read_page(node, 8))

    timeline (one_for_one)
    ├─ ids         IdServer: Snowflake ids with a stored lease (machine id = node index)
    ├─ fanout      Fanout: the durable, batched fan-out queue
    ├─ live        Live: real-time pushes to subscribed clients
    ├─ authors     UserEntities of Author: followers, tweets, posting
    └─ timelines   UserEntities of Timeline: home timelines (started on demand, passivated)

Across nodes (`TimelineConfig.nodes`), each user lives on one node (`context.Context.home`,
rendezvous hashing), its author and timeline entities there only.

Users are ints; a caller that names its users maps a name to its id with `user_id(name)`,
which refuses an empty, overlong or unprintable name (`check_name`). Every API function takes `caller`,
the calling process (it returns a coroutine) or the `Node` (a `Future`); errors are raised: `BadRequest` (nothing stored), `Unavailable`
(retry; a post with the same `cid` is stored once), and the kernel's call errors.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from actors import Future, Node, Pid, Process
from storage import Store, entity_call
from supervision import ChildSpec

from apps.common import TreeService

from .author import Author
from .config import TimelineConfig
from .context import AUTHORS, FANOUT, IDS, LIVE, TIMELINES, Context, UserEntities, bind, check_user
from .errors import Unavailable
from .fanout import Fanout
from .ids import IdServer
from .live import Live
from .timeline import Timeline


class Page(NamedTuple):
    """Up to 50 tweet ids, newest first, and the cursor of the next page (None: the end)."""

    ids: list[int]
    cursor: int | None


class TimelineService(TreeService):
    """The timeline application on one node; see the module docstring. `max_restarts`:
    what the top supervisor allows in 5 s before the node's timelines give up."""

    name = "timeline"

    def __init__(self, node: Node, store: Store, config: TimelineConfig | None = None, *,
                 resolve: Callable[[str, str], Pid | None] | None = None, max_restarts: int = 10,
                 activated: Callable[[Any, Pid], None] | None = None) -> None:
        super().__init__(node, store, max_restarts)
        self.config = config or TimelineConfig()
        self.ctx = Context(node, self.config, resolve, activated)

    def children(self) -> list[ChildSpec]:
        ctx, config, store = self.ctx, self.config, self.store
        entities = dict(idle_timeout=config.idle_timeout, max_active=config.max_active)
        return [
            ChildSpec("ids", IdServer, args=(store, ctx.machine, config.lease), options={"name": IDS}),
            ChildSpec("fanout", Fanout, args=(store, ctx), options={"name": FANOUT}),
            ChildSpec("live", Live, options={"name": LIVE}),
            ChildSpec("authors", UserEntities, args=(store, bind(Author, ctx), ctx.nodes, *entities.values()),
                      options={"name": AUTHORS}),
            ChildSpec("timelines", UserEntities, args=(store, bind(Timeline, ctx), ctx.nodes, *entities.values()),
                      options={"name": TIMELINES}),
        ]

    # -- the client API -------------------------------------------------------------------------

    def post(self, caller: Node | Process, author: int, text: str, cid: int | str | None = None) -> Any:
        """Post a tweet: its Snowflake id, once it is stored and its fan-out queued. A
        retry with the same `cid` answers the same id."""
        return self._author(caller, author, ("post", text, cid))

    def follow(self, caller: Node | Process, user: int, author: int) -> Any:
        """`user` follows `author` from now on: the author's newest tweet id at that moment
        (`since`); later tweets reach `user`'s timeline."""
        return self._timeline(caller, user, ("follow", author))

    def unfollow(self, caller: Node | Process, user: int, author: int) -> Any:
        """`user` stops following `author`: the author's newest tweet id at that moment
        (tweets up to it stay in the timeline), or None if `user` did not follow."""
        return self._timeline(caller, user, ("unfollow", author))

    def read_page(self, caller: Node | Process, user: int, cursor: int | None = None) -> Any:
        """A `Page` of `user`'s home timeline older than `cursor` (None: the newest)."""
        result = self._timeline(caller, user, ("page", cursor))
        return _as_page(result) if isinstance(caller, Process) else _page_future(result)

    def subscribe(self, caller: Node | Process, user: int, pid: Pid) -> Any:
        """Push `("tweet", user, tweet_id)` to `pid` for each new tweet of `user`'s timeline."""
        return self._timeline(caller, user, ("subscribe", pid))

    def tweets(self, caller: Node | Process, author: int, ids: list[int]) -> Any:
        """{id: text} for those of `ids` the author still keeps (its newest 800)."""
        return self._author(caller, author, ("tweets", ids))

    # -- plumbing ---------------------------------------------------------------------------------

    def _author(self, caller: Node | Process, user: int, request: tuple) -> Any:
        return self._entity(caller, self.ctx.authors, "author", user, request)

    def _timeline(self, caller: Node | Process, user: int, request: tuple) -> Any:
        return self._entity(caller, self.ctx.timelines, "timeline", user, request)

    def _entity(self, caller: Node | Process, where: Callable[[int], Pid | None], kind: str,
                user: int, request: tuple) -> Any:
        check_user("user", user)
        router = where(user)
        if router is None:
            raise Unavailable(f"the {kind} processes of user {user} (node {self.ctx.home(user)}) are not running")
        return entity_call(caller, router, (kind, user), request, self.config.call_timeout)


async def _as_page(result: Any) -> Page:
    return Page(*await result)


def _page_future(result: Future) -> Future:
    page = Future()

    def done(f: Future) -> None:
        if f.exception() is not None:
            page.set_exception(f.exception())
        else:
            page.set_result(Page(*f.result()))

    result.add_done_callback(done)
    return page
