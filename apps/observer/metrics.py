"""Prometheus metrics of one node, with the standard client library (`prometheus-client`).

    metrics = Metrics(agent)
    text = metrics.render()        # the text exposition format, for GET /metrics

Each observer has its own registry (never the library's global one), read at scrape time:

    letitcrash_processes                     gauge    live processes
    letitcrash_run_queue                     gauge    processes queued for a turn
    letitcrash_mailbox_messages              gauge    messages queued in all mailboxes
    letitcrash_spawns_total                  counter  processes spawned
    letitcrash_turns_total                   counter  process turns (a turn takes 1..batch messages)
    letitcrash_messages_total                counter  messages taken from mailboxes, and call replies
    letitcrash_crashes_total                 counter  turns that raised
    letitcrash_exits_total                   counter  processes exited
    letitcrash_restarts_total                counter  children restarted by supervisors
    letitcrash_store_commits_total           counter  LMDB commits
    letitcrash_store_writes_total            counter  keys and events written
    letitcrash_store_bytes                   gauge    bytes of LMDB pages in use
    letitcrash_store_commit_seconds          histogram  time in one commit transaction

The kernel's counters count from the node's start, restarts from the moment the
observer started (its probe), the store's from the store's opening.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .probe import store_bytes

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .agent import Agent

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_COUNTERS = (("spawns", "processes spawned"), ("turns", "process turns (a turn takes 1..batch messages)"),
             ("messages", "messages taken by processes from their mailboxes, and call replies"),
             ("crashes", "turns that raised"), ("exits", "processes exited"),
             ("restarts", "children restarted by supervisors"))


class Metrics:
    """A registry reading `agent` at each scrape; see the module docstring."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_NodeCollector(agent))
        self.commit_seconds = Histogram("letitcrash_store_commit_seconds", "time in one LMDB commit transaction",
                                        buckets=COMMIT_BUCKETS, registry=self.registry)
        agent.commit_observers.append(self.commit_seconds.observe)

    def render(self) -> bytes:
        """The text exposition of every metric now (on the node's thread)."""
        return generate_latest(self.registry)


class _NodeCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        scan = agent.scan()
        label = [agent.node.name]
        for name, doc, value in (("processes", "live processes", scan["processes"]),
                                 ("run_queue", "processes queued for a turn", agent.node.statistics()["run_queue"]),
                                 ("mailbox_messages", "messages queued in all mailboxes", scan["mailbox_total"])):
            gauge = GaugeMetricFamily(f"letitcrash_{name}", doc, labels=["node"])
            gauge.add_metric(label, value)
            yield gauge
        for key, doc in _COUNTERS:
            counter = CounterMetricFamily(f"letitcrash_{key}", doc, labels=["node"])
            counter.add_metric(label, agent.probe.totals[key])
            yield counter
        store = agent.store
        if store is not None:
            for key, doc in (("commits", "LMDB commits"), ("writes", "keys and events written")):
                counter = CounterMetricFamily(f"letitcrash_store_{key}", doc, labels=["node"])
                counter.add_metric(label, getattr(store, key))
                yield counter
            size = store_bytes(store)
            if size is not None:
                gauge = GaugeMetricFamily("letitcrash_store_bytes", "bytes of LMDB pages in use", labels=["node"])
                gauge.add_metric(label, size)
                yield gauge
