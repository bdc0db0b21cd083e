"""The fan-out: a node's durable queue of jobs that insert tweet ids into timelines.

A job (`("job", tweet_id, kind, author, followers)`, a call answered once the job is
stored) is one insert per follower: kind "i" puts a pushed tweet into each timeline,
kind "p" tells each timeline that `author` now fans out on read. Each insert is a cast
to the follower's timeline entity, which acknowledges it once stored; unacknowledged
inserts go again after `retry_after` seconds (inserts are idempotent), so a job outlives
crashes of timelines, of this process and of nodes.

Batching: each turn sends at most `fanout_batch` inserts, taking jobs round-robin, then
yields to the scheduler (a message to itself), so one author with many followers
neither blocks the node nor holds up the jobs of the others. Acknowledgements that
arrive within one scheduler pass are stored as one event.

Stored: each job as records (see `storage.persistent`), so that no stored value grows
with a job's followers or the number of jobs: `("job", id)` -> [kind, author], and its
followers still to acknowledge in parts of at most `JOB_PART`, fewer if the store's
`max_value_bytes` would not hold that many (`("part", id, k)` ->
{follower: None}; a job arrives as one `E_JOB` event per part). The state holds `done`,
the ids of the latest finished jobs, so a job handed over twice runs once. A fan-out
stored by the previous version (every job in its snapshot) is converted when it starts.
"""
from __future__ import annotations

from collections import deque
from typing import Any

from storage import EventSourcedServer, Store, entity_cast

from .context import Context
from .errors import BadRequest, Unavailable

WORK, FLUSH, RETRY = ("$fanout.work",), ("$fanout.flush",), ("$fanout.retry",)
E_JOB, E_ACKS = "j", "a"
JOB_PART = 50_000  # followers in one stored part of a job (and one E_JOB event), at most
FOLLOWER_BYTES = 10  # a follower in a part, encoded: a msgpack int (up to 9 bytes) and a nil
ACKS_PER_EVENT = 4_096


class Fanout(EventSourcedServer):
    """See the module docstring. Spawned as `(store, context)`."""

    snapshot_every = 20_000

    def init(self, store: Store, ctx: Context) -> None:
        self.ctx = ctx
        self.part = max(1, min(JOB_PART, (store.max_value_bytes - 256) // FOLLOWER_BYTES))
        super().init(store, ("timeline.fanout", ctx.node.name))
        self.rounds: dict[int, list] = {}  # job -> [followers to send to, next index, round ended at]
        self.order: deque[int] = deque()  # jobs with inserts to send, round-robin
        self.acks: list[list] = []
        self.working = False
        for job in self.jobs:
            self._start_round(job)
        self.send_after(ctx.config.retry_after, self.pid, RETRY)

    def initial_state(self) -> dict[str, Any]:
        return {"done": {}}

    def recover_records(self, records: list[tuple[Any, Any]]) -> None:
        # job -> [kind, author, {follower still to acknowledge: its part}]; (job, part) -> those of a part
        self.jobs: dict[int, list] = {}
        self.parts: dict[tuple[int, int], dict] = {}
        for key, value in sorted(records, key=lambda kv: kv[0][0] != "job"):  # heads first
            if key[0] == "job":
                self.jobs[key[1]] = [*value, {}]
            else:
                _, job, part = key
                self.parts[(job, part)] = value
                self.jobs[job][2].update(dict.fromkeys(value, part))
        for job, (kind, author, followers) in self.state.pop("jobs", {}).items():  # stored whole before
            self._job_events(job, kind, author, list(followers), self.apply)

    def apply(self, event: list) -> None:
        jobs = self.jobs
        if event[0] == E_JOB:
            _, job, kind, author, followers, *part = event  # journals from before parts: one part
            part = part[0] if part else 0
            entry = jobs.get(job)
            if entry is None:
                entry = jobs[job] = [kind, author, {}]
                self.put_record(("job", job), [kind, author])
            entry[2].update(dict.fromkeys(followers, part))
            self.parts[(job, part)] = dict.fromkeys(followers)
            self.put_record(("part", job, part), self.parts[(job, part)])
            return
        assert event[0] == E_ACKS, event
        for job, user in event[1]:
            entry = jobs.get(job)
            part = entry[2].pop(user, None) if entry is not None else None
            if part is None:
                continue
            pending = self.parts[(job, part)]
            del pending[user]
            if pending:
                self.put_record(("part", job, part), pending)  # saved as it is at the snapshot
            else:
                del self.parts[(job, part)]
                self.delete_record(("part", job, part))
            if not entry[2]:
                del jobs[job]
                self.delete_record(("job", job))
                done = self.state["done"]
                done[job] = 1
                if len(done) > self.ctx.config.max_done_jobs:
                    del done[next(iter(done))]

    # -- messages ------------------------------------------------------------------------------

    def handle_call(self, request: Any, caller: Any) -> Any:
        if type(request) is not tuple or len(request) != 5 or request[0] != "job" or request[2] not in ("i", "p"):
            return BadRequest(f"the fan-out takes ('job', tweet_id, 'i' or 'p', author, followers), "
                              f"not {request!r:.80}")
        _, job, kind, author, followers = request
        jobs = self.jobs
        if job in jobs or job in self.state["done"] or not followers:
            return "ok"
        if len(jobs) >= self.ctx.config.max_jobs:
            return Unavailable(f"the fan-out queue of {self.ctx.node.name} holds {len(jobs)} jobs "
                               "(max_jobs); retry later")
        self._job_events(job, kind, author, list(followers), self.persist)
        self._start_round(job)
        return "ok"

    def _job_events(self, job: int, kind: str, author: int, followers: list, take: Any) -> None:
        """The E_JOB events of a job, a part each, handed to `take` (persist or apply)."""
        size = self.part
        for start in range(0, max(1, len(followers)), size):
            take([E_JOB, job, kind, author, followers[start:start + size], start // size])

    def handle_info(self, msg: Any) -> None:
        if type(msg) is tuple and msg and msg[0] == "ack":
            if not self.acks:
                self.send(self.pid, FLUSH)  # arrives after this pass: one event for its acks
            self.acks.append([msg[1], msg[2]])
        elif msg == WORK:
            self.working = False
            self._work()
        elif msg == FLUSH:
            acks, self.acks = self.acks, []
            for start in range(0, len(acks), ACKS_PER_EVENT):
                self.persist([E_ACKS, acks[start:start + ACKS_PER_EVENT]])
        elif msg == RETRY:
            self._retry()
        else:
            super().handle_info(msg)

    # -- sending inserts -----------------------------------------------------------------------

    def _start_round(self, job: int) -> None:
        current = self.rounds.get(job)
        if current is None or current[2] is not None:  # else it is in `order` already
            self.order.append(job)
        self.rounds[job] = [list(self.jobs[job][2]), 0, None]
        if not self.working:
            self.working = True
            self.send(self.pid, WORK)

    def _work(self) -> None:
        budget = self.ctx.config.fanout_batch
        jobs = self.jobs
        share = max(1, budget // max(1, len(self.order)))
        while budget > 0 and self.order:
            job = self.order.popleft()
            entry, rnd = jobs.get(job), self.rounds[job]
            if entry is None:  # finished meanwhile
                del self.rounds[job]
                continue
            kind, author, pending = entry
            followers, i = rnd[0], rnd[1]
            stop = min(len(followers), i + min(share, budget))
            for user in followers[i:stop]:
                if user in pending:
                    self._insert(user, job, kind, author)
            budget -= stop - i
            rnd[1] = stop
            if stop < len(followers):
                self.order.append(job)
            else:
                rnd[2] = self.now()  # sent to everyone: wait for the acks, or retry
        if self.order and not self.working:
            self.working = True
            self.send(self.pid, WORK)  # the rest next pass: others run meanwhile

    def _insert(self, user: int, job: int, kind: str, author: int) -> None:
        timelines = self.ctx.timelines(user)
        if timelines is not None:  # else its node is down: the retry sends it again
            entity_cast(self, timelines, ("timeline", user), ("ins", job, kind, author, self.pid))

    def _retry(self) -> None:
        horizon = self.now() - self.ctx.config.retry_after
        for job, rnd in list(self.rounds.items()):
            if job not in self.jobs:
                del self.rounds[job]
            elif rnd[2] is not None and rnd[2] <= horizon:
                self._start_round(job)
        self.send_after(self.ctx.config.retry_after, self.pid, RETRY)
