"""One node of a cluster in this OS process: the node-host side of a launcher.

    python -m apps.cluster --name n1@localhost --listen unix:/tmp/c/n1.sock \\
        --peers-file /tmp/c/peers.json demo.apps:start      # the secret in $LETITCRASH_SECRET

`run_node` is the same from Python (the laptop launcher, `letitcrash node`, or a cluster
manager's host): it starts a real-time node and its distribution, the name server
(`actors.global_names`), the process-group scope (`actors.pg`) and the observer's agent
(`apps.observer.remote`: `letitcrash observe --cluster` asks it), awaits `listening(dist)`
if given (a cluster manager publishes the node's address there, and returns the names of
the nodes to meet), connects to the nodes it is told of (waiting for those not up yet, up
to `connect_timeout`: the others connect to it when they start), runs the application's
start function (`start(node)`; if it returns an awaitable, that is awaited), with
`observer=PORT` serves the observer page (`apps.observer`, on loopback, its token derived
from the cluster's secret; 0: any free port) and prints `node NAME observer at URL`,
prints `node NAME up at ADDRESS`, and runs until it is told to stop (SIGTERM or SIGINT in
`main`). Stopping shuts its processes down (their links and monitors across hear
"shutdown"), then closes its connections.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import logging
import os
import signal
import sys
import time
from typing import Any, Awaitable, Callable

from actors import Distribution, Node, PeerTable, global_names, new_creation, pg
from actors.peers import Discovery
from apps.observer.remote import serve_agent

log = logging.getLogger("apps.cluster")

SECRET_VARIABLE = "LETITCRASH_SECRET"
NODES_VARIABLE = "LETITCRASH_CLUSTER_NODES"  # the cluster's node names, comma-separated, where a launcher knows them
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def load_target(spec: str) -> Callable[[Node], Any]:
    """The function `MODULE:FUNCTION` names; ValueError naming what is wrong."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"a start function is MODULE:FUNCTION, not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for {spec}: {exc}") from None
    target = getattr(module, attr, None)
    if not callable(target):
        raise ValueError(f"{spec}: module {module_name} has no function {attr!r}")
    return target


async def run_node(name: str, *, secret: bytes | str, start: Callable[[Node], Any] | None = None,
                   listen: str | None = None, peers: dict[str, str] | None = None, connect: list[str] | None = None,
                   ticktime: float = 60.0, creation: int | None = None, connect_timeout: float = 10.0,
                   stop: asyncio.Event | None = None, observer: int | None = None,
                   discovery: Discovery | None = None,
                   listening: Callable[[Distribution], Awaitable[list[str]]] | None = None,
                   ready: Callable[[Node, Distribution], None] | None = None) -> None:
    """Run node `name` until `stop` is set (see the module docstring); `discovery` is
    where addresses come from (default: a table of `peers`)."""
    node = Node(name, creation=creation if creation is not None else new_creation())
    stop = stop if stop is not None else asyncio.Event()
    async with node:
        discovery = discovery if discovery is not None else PeerTable(peers)
        dist = await Distribution(node, secret=secret, listen=listen, discovery=discovery, ticktime=ticktime).start()
        try:
            global_names.start(node)
            pg.start(node)
            serve_agent(node)
            names = list(peers or {}) + (await listening(dist) if listening is not None else [])
            await _meet(dist, [p for p in names if p != name], connect or [], connect_timeout)
            if start is not None:
                result = start(node)
                if inspect.isawaitable(result):
                    await result
            page = None if observer is None else await _observe(node, observer, secret)
            (ready or _say_ready)(node, dist)
            await stop.wait()
            if page is not None:
                await page.stop()
            await node.stop()
        finally:
            await dist.stop()


async def _observe(node: Node, port: int, secret: bytes | str) -> Any:
    """The observer page of `node` on loopback `port`, its URL printed."""
    from apps import observer

    key = secret.encode() if isinstance(secret, str) else secret
    page = await observer.start(node, port=port, token=observer.web_token(key))
    print(f"node {node.name} observer at {page.url}", flush=True)
    return page


def _say_ready(node: Node, dist: Distribution) -> None:
    print(f"node {node.name} up at {dist.address}", flush=True)
    log.info("node %s up at %s, connected to %s", node.name, dist.address, ", ".join(node.nodes()) or "none yet")


async def _meet(dist: Distribution, names: list[str], addresses: list[str], timeout: float) -> None:
    """Connect to each node named (and at each address), retrying until `timeout`."""
    deadline = time.monotonic() + timeout

    async def reach(attempt: Callable[[], Any], what: str) -> None:
        pause = 0.02
        while True:
            try:
                await attempt()
                return
            except ConnectionError as exc:
                if time.monotonic() + pause > deadline:
                    log.warning("node %s: %s not reached (%s); it connects when it starts", dist.node.name, what, exc)
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)
    await asyncio.gather(*(reach(lambda n=n: dist.connect(n), n) for n in names),
                         *(reach(lambda a=a: dist.connect_address(a), a) for a in addresses))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m apps.cluster", description=__doc__.split("\n")[0])
    ap.add_argument("--name", required=True, help="the node's name, name@host")
    ap.add_argument("--listen", help="where it accepts connections: tcp:HOST:PORT or unix:PATH")
    ap.add_argument("--peers-file", help="a JSON object of node names to addresses")
    ap.add_argument("--connect", action="append", default=[], help="an address to connect to (repeatable)")
    ap.add_argument("--ticktime", type=float, default=60.0, help="net_ticktime in seconds (default: %(default)s)")
    ap.add_argument("--creation", type=int, help="the node's incarnation (default: a random one)")
    ap.add_argument("--observer", type=int, metavar="PORT", help="serve the observer page on loopback PORT")
    ap.add_argument("--stop-with-stdin", action="store_true",
                    help="also stop when standard input closes (a launcher's pipe: the node goes with it)")
    ap.add_argument("target", metavar="MODULE:FUNCTION", nargs="?", help="the application's start function")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    secret = os.environ.get(SECRET_VARIABLE, "")
    if not secret:
        print(f"{ap.prog}: the cluster's secret goes in ${SECRET_VARIABLE}", file=sys.stderr)
        return 2
    try:
        start = load_target(args.target) if args.target else None
        peers = read_peers(args.peers_file) if args.peers_file else None
    except ValueError as exc:
        print(f"{ap.prog}: {exc}", file=sys.stderr)
        return 2
    return serve(args.name, secret=secret, start=start, listen=args.listen, peers=peers, connect=args.connect,
                 ticktime=args.ticktime, creation=args.creation, observer=args.observer,
                 stop_with_stdin=args.stop_with_stdin)


def serve(name: str, stop_with_stdin: bool = False, **options: Any) -> int:
    """`run_node` in a fresh event loop until SIGTERM or SIGINT (or, with `stop_with_stdin`,
    until standard input closes); an exit status."""
    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if stop_with_stdin:
            loop.add_reader(sys.stdin.fileno(), _stop_at_eof, loop, stop)
        await run_node(name, stop=stop, **options)
    try:
        asyncio.run(run())
    except (ValueError, OSError) as exc:
        print(f"node {name}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def _stop_at_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Standard input is readable: what came is ignored; its end stops the node."""
    if not os.read(sys.stdin.fileno(), 4096):
        loop.remove_reader(sys.stdin.fileno())
        stop.set()


def read_peers(path: str) -> dict[str, str]:
    """A peers file: a JSON object of node names to addresses."""
    try:
        with open(path) as f:
            peers = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the peers file {path}: {exc}") from None
    if type(peers) is not dict or not all(type(k) is str and type(v) is str for k, v in peers.items()):
        raise ValueError(f"the peers file {path} must hold a JSON object of node names to addresses")
    return peers
