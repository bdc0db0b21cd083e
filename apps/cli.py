"""The `letitcrash` command: `serve` and `chat` (the chat server and its terminal client),
`token`, `observe` and `remsh` (a running node, seen from outside), `cluster start` and
`node` (nodes in separate OS processes, `apps.cluster`), and the simulator's `sim`,
`replay`, `shrink` and `trace` (handed to `sim.cli`, which stays importable without
`apps`). `python -m letitcrash` is the same command.

    letitcrash serve                             # then, in two other terminals:
    letitcrash chat --user alice                 # @bob hi
    letitcrash chat --user bob

    letitcrash serve --data data --observer 8090 --attach   # the observer page, data/attach.sock
    letitcrash remsh data                        # a Python shell inside the running node
    letitcrash observe data --port 8091          # the observer page, served from outside
    letitcrash observe --cluster 127.0.0.1:4370  # every node of a cluster, over distribution

Files live in one per-user directory by default (`data_home()`): the server's store and
secret, and each chat client's small local state next to the secret it reads, so
`serve` and `chat` on one machine agree without options.

Exit status: 0 done, 1 the server or client failed, 2 bad input.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from importlib import metadata
from typing import Callable
from urllib.parse import quote

ATTACH_SOCKET = "attach.sock"  # in the data directory, with serve --attach
OBSERVER_SECRET = "observer.secret"
OK, FAILED, BAD_INPUT = 0, 1, 2
TOKEN_VARIABLE = "LETITCRASH_TOKEN"


def data_home() -> str:
    """`$XDG_DATA_HOME/letitcrash`, or `~/.local/share/letitcrash` (the XDG default)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "letitcrash")


def version() -> str:
    try:
        return metadata.version("letitcrash")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, commands = _parser({})
    if not argv or argv[0] not in commands:  # the simulator (numpy and all) loads for its commands and the help only
        from sim.cli import COMMANDS as SIM_COMMANDS
        from sim.cli import main as sim_main
        if argv and argv[0] in SIM_COMMANDS:
            return sim_main(argv)
        parser, _ = _parser(SIM_COMMANDS)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return OK


def _parser(sim_commands: dict[str, str]) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The command's parser, listing `sim_commands` (name: help) first, and its commands by name."""
    home = data_home()
    parser = argparse.ArgumentParser(prog="letitcrash", description="letitcrash: the deterministic "
                                     "simulator, the chat server and its terminal client, and a look "
                                     "inside a running node.",
                                     epilog=f"Default files live in {home} ($XDG_DATA_HOME/letitcrash).")
    parser.add_argument("--version", action="version", version=f"letitcrash {version()}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    for name, help_text in sim_commands.items():
        sub.add_parser(name, help=f"{help_text} (letitcrash {name} --help)", add_help=False)

    serve = sub.add_parser("serve", help="run the chat server", description="Run one node with the "
                           "chat and timeline applications behind a TCP server, until SIGTERM or Ctrl-C.")
    serve.add_argument("--data", default=home, help="the data directory: the LMDB store and the "
                       "default secret (default: %(default)s)")
    _address(serve, lowest=0)
    serve.add_argument("--secret-file", help="the server secret, from which every user's token is "
                       "derived (default: DATA/secret, made on first start)")
    serve.add_argument("--durability", choices=("sync", "process"), default="sync",
                       help="what an acknowledged message survives: sync = power loss (fsync per "
                       "commit), process = kill -9 of the server (default: %(default)s)")
    serve.add_argument("--idle-timeout", type=float, default=60.0, metavar="SECONDS",
                       help="close a connection silent this long (default: %(default)s)")
    serve.add_argument("--auth-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="close a connection not authenticated this long after connecting "
                       "(default: %(default)s)")
    serve.add_argument("--rate", type=float, default=2000.0,
                       help="requests per second per connection (default: %(default)s)")
    serve.add_argument("--burst", type=int, default=4000,
                       help="requests in a burst per connection (default: %(default)s)")
    serve.add_argument("--max-frame", type=int, default=1 << 20, metavar="BYTES",
                       help="largest request frame (default: %(default)s)")
    serve.add_argument("--max-outgoing", type=int, default=4 << 20, metavar="BYTES",
                       help="unsent bytes per connection: chat items wait above half of it, and a "
                       "reader that lets other frames pile past it is disconnected (default: %(default)s)")
    serve.add_argument("--max-delay", type=float, default=0.05, metavar="SECONDS",
                       help="a request that waited longer than this for its turn, or behind 8 "
                       "being stored for longer, is answered overloaded, not executed "
                       "(default: %(default)s)")
    serve.add_argument("--max-inflight", type=int, default=1000,
                       help="requests of the whole server in flight (being stored); beyond, new "
                       "ones are answered overloaded, not executed (default: %(default)s)")
    serve.add_argument("--max-connections", type=int, default=100_000,
                       help="connections served at once (lowered to fit the descriptor limit, "
                       "ulimit -n); more are refused (default: %(default)s)")
    serve.add_argument("--observer", type=int, metavar="PORT",
                       help="serve the observer page on PORT (its URL, with the token, is printed; "
                       "default: no observer page)")
    serve.add_argument("--observer-host", default="127.0.0.1",
                       help="the observer's address (default: %(default)s; its token is always needed)")
    serve.add_argument("--attach", action="store_true",
                       help="open DATA/attach.sock for letitcrash observe and remsh (secret: DATA/observer.secret)")
    serve.set_defaults(func=_serve)

    for name, text in (("observe", "serve the observer page of a running node"),
                       ("remsh", "a Python shell running inside a running node")):
        attached = sub.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}, attached "
                                  "through the socket its `letitcrash serve --attach` opened.")
        attached.add_argument("node", metavar="NODE", nargs="?" if name == "observe" else None,
                              help="the node's data directory, its attach socket path, or HOST:PORT of a "
                              "TCP attach server")
        attached.add_argument("--secret-file", help="the attach secret (default: DATA/observer.secret); with "
                              f"--cluster, the cluster's (default: $LETITCRASH_SECRET, else {home}/cookie)")
        attached.set_defaults(func=_observe if name == "observe" else _remsh)
    observe = sub.choices["observe"]
    observe.add_argument("--cluster", metavar="ADDRESS", help="instead of NODE: join the cluster whose node "
                         "listens at ADDRESS (HOST:PORT or unix:PATH) over distribution and show any of its "
                         "nodes (each runs the agent); the remote shell stays on the attach socket")
    observe.add_argument("--port", type=lambda text: _port(text, 0), default=8090,
                         help="the page's port (default: %(default)s; 0: any free one)")
    observe.add_argument("--host", default="127.0.0.1", help="the page's address (default: %(default)s)")
    sub.choices["remsh"].add_argument("-c", dest="code", help="run CODE, print its output and result, and exit")

    chat = sub.add_parser("chat", help="chat through a running server, in this terminal",
                          description="Chat through a running server. Type '@bob hi' to send, /help "
                          "for the rest. Reconnects by itself if the server restarts. Reads commands "
                          "from standard input when it is not a terminal (one per line).",
                          epilog=f"Set {TOKEN_VARIABLE} to a token from 'letitcrash token' to chat "
                          "without the server secret. What the client remembers (the messages sent, "
                          "for their receipts, and whom you follow) is kept next to the secret file, "
                          "in chat-USER@HOST-PORT.jsonl (chat-USER+DEVICE@... for another device).")
    chat.add_argument("--user", required=True, help="who you are")
    chat.add_argument("--device", default="primary", help="this device's name (default: %(default)s, the "
                      "user's first device); a user may chat from several devices at once")
    _address(chat, lowest=1)
    chat.add_argument("--secret-file", default=os.path.join(home, "secret"),
                      help=f"the server secret, from which your token is derived, unless {TOKEN_VARIABLE} "
                      "is set (default: %(default)s, where 'letitcrash serve' makes it)")
    chat.set_defaults(func=_chat)

    cluster = sub.add_parser("cluster", help="a cluster of node processes on this machine",
                             description="Run node processes on this machine that talk over Unix sockets.")
    actions = cluster.add_subparsers(required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start N nodes running an application, until Ctrl-C",
                               description="Start N node processes (n1@HOST, n2@HOST...) connected over Unix "
                               "sockets with a random secret, run MODULE:FUNCTION(node) on each, print their "
                               "output prefixed with the node's name, and stop them all on Ctrl-C or SIGTERM "
                               "(each gets SIGTERM, then SIGKILL after --stop-timeout).")
    start.add_argument("--nodes", type=int, help="how many nodes (default: 4; on Ray, one per CPU)")
    start.add_argument("--ray", metavar="ADDRESS",
                       help="place the nodes on a Ray cluster instead (needs the 'cluster' extra): 'auto' (the one "
                       "running here or at $RAY_ADDRESS, else a new local one), 'local', or a head's HOST:PORT")
    start.add_argument("--cpus", type=float, default=1.0,
                       help="on Ray, the CPUs each node takes (default: %(default)s)")
    start.add_argument("--host", default="localhost",
                       help="the host part of their names; on Ray, the cluster's name too (default: %(default)s)")
    start.add_argument("--ticktime", type=float, default=60.0,
                       help="seconds before a silent node counts as gone (default: %(default)s)")
    start.add_argument("--stop-timeout", type=float, default=10.0,
                       help="seconds a node has to stop before it is killed (default: %(default)s)")
    start.add_argument("--observer", type=int, metavar="PORT",
                       help="node i serves the observer page on loopback PORT+i-1 (0: any free port); "
                       "each prints its URL, with the token")
    start.add_argument("target", metavar="MODULE:FUNCTION", help="the application's start function, given the node")
    start.set_defaults(func=_cluster_start)

    node = sub.add_parser("node", help="run one node that other nodes connect to (TCP)",
                          description="Run one node in this process, listening on TCP, connected to the "
                          "nodes at the --connect addresses (and, through them, to every node they know), "
                          "until Ctrl-C or SIGTERM.",
                          epilog="Nodes of one cluster share a secret: $LETITCRASH_SECRET, else the "
                          "--secret-file (made with a random secret, readable by you only, if missing: "
                          "nodes on one machine agree without options).")
    node.add_argument("--name", required=True, help="the node's name, name@host")
    node.add_argument("--listen", default="tcp:127.0.0.1:0",
                      help="where it accepts connections, HOST:PORT or unix:PATH (default: %(default)s, any port)")
    node.add_argument("--connect", action="append", default=[], metavar="ADDRESS",
                      help="the address of a node to connect to, HOST:PORT or unix:PATH (repeatable)")
    node.add_argument("--secret-file", default=os.path.join(home, "cookie"),
                      help="the cluster's secret (default: %(default)s)")
    node.add_argument("--ticktime", type=float, default=60.0,
                      help="seconds before a silent node counts as gone (default: %(default)s)")
    node.add_argument("target", metavar="MODULE:FUNCTION", nargs="?", help="the application's start function")
    node.set_defaults(func=_node)

    token = sub.add_parser("token", help="print a user's token, to give to that user",
                           description="Print USER's token (hex), derived from the server secret. "
                           f"USER then chats without the secret: {TOKEN_VARIABLE}=TOKEN letitcrash chat "
                           "--user USER.")
    token.add_argument("--user", required=True, help="whose token")
    token.add_argument("--secret-file", default=os.path.join(home, "secret"),
                       help="the server secret (default: %(default)s)")
    token.set_defaults(func=_token)
    return parser, sub.choices


def _address(parser: argparse.ArgumentParser, lowest: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="the server's address (default: %(default)s)")
    parser.add_argument("--port", type=lambda text: _port(text, lowest), default=7400,
                        help=f"TCP port, {lowest}-65535 (default: %(default)s{'; 0: any free port' if lowest == 0 else ''})")


def _port(text: str, lowest: int) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a TCP port number, got {text!r}") from None
    if not lowest <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port here is from {lowest} to 65535, got {port}")
    return port


def chat_state_path(secret_file: str, user: str, host: str, port: int, device: str = "primary") -> str:
    """Where `letitcrash chat` keeps what it remembers: next to the secret file, one file
    a device (each rewrites its own; the primary's name is the one from before devices)."""
    who = quote(user, safe='') if device == "primary" else f"{quote(user, safe='')}+{quote(device, safe='')}"
    name = f"chat-{who}@{quote(host, safe='')}-{port}.jsonl"
    return os.path.join(os.path.dirname(os.path.abspath(secret_file)), name)


def _user_token(args: argparse.Namespace, env: bool = True) -> bytes:
    from apps.server.auth import load_secret, token_for

    hex_token = os.environ.get(TOKEN_VARIABLE) if env else None
    if hex_token:
        try:
            return bytes.fromhex(hex_token)
        except ValueError:
            raise ValueError(f"{TOKEN_VARIABLE} must be the token in hex (see letitcrash token)") from None
    return token_for(load_secret(args.secret_file), args.user)


def _serve(args: argparse.Namespace) -> int:
    from apps.server.auth import SecretError
    from apps.server.connection import Limits
    from apps.server.server import serve
    from storage import StorageError

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("supervision").setLevel(logging.WARNING)  # not a line per connection
    try:
        limits = Limits(max_frame=args.max_frame, max_outgoing=args.max_outgoing, rate=args.rate,
                        burst=args.burst, idle_timeout=args.idle_timeout, auth_timeout=args.auth_timeout,
                        max_delay=args.max_delay, max_inflight=args.max_inflight)
    except ValueError as exc:
        return _fail(str(exc).replace("Limits.", "--").replace("_", "-"), BAD_INPUT)
    if args.max_connections < 1:
        return _fail(f"--max-connections must be a positive int, got {args.max_connections}", BAD_INPUT)

    def ready(host: str, port: int) -> None:
        print(f"letitcrash: serving on {host}:{port}", flush=True)

    try:
        observe = _observe_options(args)
        asyncio.run(serve(args.data, args.host, args.port, args.secret_file, limits, ready, args.durability,
                          args.max_connections, observe))
    except (SecretError, StorageError, ValueError) as exc:
        return _fail(str(exc), BAD_INPUT)
    except OSError as exc:
        return _fail(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}", FAILED)
    return OK


def _observe_options(args: argparse.Namespace) -> dict | None:
    """`apps.observer.start` options for `serve --observer/--attach`, or None."""
    if args.observer is None and not args.attach:
        return None
    from apps.observer import web_token
    from apps.server.auth import load_secret

    os.makedirs(args.data, exist_ok=True)
    secret = load_secret(os.path.join(args.data, OBSERVER_SECRET), create=True)
    return {"port": args.observer, "host": args.observer_host, "token": web_token(secret),
            "attach": os.path.join(args.data, ATTACH_SOCKET) if args.attach else None, "secret": secret}


def _attach_target(args: argparse.Namespace) -> tuple[object, bytes]:
    """Where NODE's attach server is, and its secret."""
    from apps.server.auth import load_secret

    node = args.node
    if os.path.isdir(node):
        where: object = os.path.join(node, ATTACH_SOCKET)
        secret_file = args.secret_file or os.path.join(node, OBSERVER_SECRET)
    else:
        host, _, port = node.rpartition(":")
        where = (host, int(port)) if host and port.isdigit() else node
        if args.secret_file is None:
            raise ValueError("--secret-file is needed unless NODE is a data directory")
        secret_file = args.secret_file
    return where, load_secret(secret_file)


async def _attach(args: argparse.Namespace):
    from apps.observer import Client

    where, secret = _attach_target(args)
    if isinstance(where, tuple):
        return await Client.connect_tcp(*where, secret)
    return await Client.connect_unix(where, secret)


def _guarded(run: Callable[[], int]) -> int:
    """`run()` attached to a node, its failures mapped to exit statuses."""
    from apps.observer.protocol import ProtocolError
    from apps.server.auth import SecretError

    try:
        return run()
    except (SecretError, ValueError) as exc:
        return _fail(str(exc), BAD_INPUT)
    except ProtocolError as exc:
        return _fail(str(exc), FAILED)
    except OSError as exc:
        return _fail(f"cannot attach: {exc.strerror or exc}", FAILED)


def _observe(args: argparse.Namespace) -> int:
    import secrets

    from apps.observer.web import serve_web

    if (args.node is None) == (args.cluster is None):
        return _fail("observe takes NODE or --cluster ADDRESS (one of them)", BAD_INPUT)
    if args.cluster is not None:
        return _guarded(lambda: asyncio.run(_observe_cluster(args, secrets.token_hex(16))))

    async def run() -> int:
        client = await _attach(args)
        token = secrets.token_hex(16)
        runner, port = await serve_web(client, client.node, host=args.host, port=args.port, token=token)
        print(f"letitcrash: observing {client.node} on http://{args.host}:{port}/?token={token}", flush=True)
        try:
            while client.closed is None:
                await asyncio.sleep(0.5)
            return _fail(f"the node went away: {client.closed}", FAILED)
        finally:
            await runner.cleanup()
            await client.close()

    return _guarded(lambda: asyncio.run(run()))


async def _observe_cluster(args: argparse.Namespace, token: str) -> int:
    """The page of a cluster, from a node that joins it (`apps.observer.remote`)."""
    from apps.cluster.host import SECRET_VARIABLE
    from apps.observer.remote import Cluster, join
    from apps.observer.web import serve_web
    from apps.server.auth import load_secret

    secret = os.environ.get(SECRET_VARIABLE) or load_secret(args.secret_file or
                                                            os.path.join(data_home(), "cookie"))
    address = args.cluster if args.cluster.startswith(("tcp:", "unix:")) else f"tcp:{args.cluster}"
    node, dist = await join(address, secret)
    try:
        runner, port = await serve_web(Cluster(node), node.name, host=args.host, port=args.port, token=token)
        print(f"letitcrash: observing {', '.join(node.nodes())} on http://{args.host}:{port}/?token={token}",
              flush=True)
        try:
            while node.nodes():
                await asyncio.sleep(0.5)
            return _fail(f"every node of the cluster at {args.cluster} went away", FAILED)
        finally:
            await runner.cleanup()
    finally:
        await dist.stop()
        await node.stop()


def _remsh(args: argparse.Namespace) -> int:
    loop = asyncio.new_event_loop()  # the console is synchronous: it drives this loop itself
    try:
        return _guarded(lambda: _shell(args, loop))
    finally:
        loop.close()


def _shell(args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> int:
    from apps.observer.shell import Console

    client = loop.run_until_complete(_attach(args))

    async def evaluate(code: str) -> dict:
        result: dict = {}
        async for kind, value in client.stream("eval", {"code": code}):
            if kind == "event":
                print(value["out"], end="", flush=True)
            else:
                result = value
        return result

    try:
        if args.code is None:
            Console(evaluate, loop).interact(
                banner=f"letitcrash remsh: Python inside {client.node}; node, store, processes(), info(pid), "
                       "tree(), kill(pid), trace(target). Ctrl-D leaves.", exitmsg="")
            return OK
        result = loop.run_until_complete(evaluate(args.code))
        if result.get("error"):
            print(result["error"], end="", file=sys.stderr)
            return FAILED
        if result.get("value") is not None:
            print(result["value"])
        return OK
    finally:
        loop.run_until_complete(client.close())


def _chat(args: argparse.Namespace) -> int:
    from apps.server.auth import SecretError
    from apps.server.client import ServerError
    from apps.server.terminal import run

    try:
        token = _user_token(args)
        state = chat_state_path(args.secret_file, args.user, args.host, args.port, args.device)
        return asyncio.run(run(args.host, args.port, args.user, args.device, token, state))
    except (SecretError, ValueError) as exc:
        return _fail(str(exc), BAD_INPUT)
    except ServerError as exc:
        return _fail(f"the server refused: {exc}", FAILED)
    except (OSError, EOFError, TimeoutError) as exc:
        return _fail(f"cannot reach {args.host}:{args.port}: {getattr(exc, 'strerror', None) or exc}", FAILED)


def _token(args: argparse.Namespace) -> int:
    from apps.server.auth import SecretError

    try:
        print(_user_token(args, env=False).hex())
    except SecretError as exc:
        return _fail(str(exc), BAD_INPUT)
    return OK


def _cluster_start(args: argparse.Namespace) -> int:
    import signal

    from apps.cluster import ClusterError, start
    from apps.cluster.host import load_target
    from apps.cluster.launcher import say

    try:
        load_target(args.target)  # a typo fails here, not in every node
        if args.ticktime <= 0 or args.stop_timeout < 0:
            raise ValueError("--ticktime must be positive and --stop-timeout not negative")
    except ValueError as exc:
        return _fail(str(exc), BAD_INPUT)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.ray is not None:
        return _cluster_on_ray(args, stop)
    try:
        cluster = start(args.nodes or 4, args.target, host=args.host, ticktime=args.ticktime, observer=args.observer)
    except ClusterError as exc:
        return _fail(str(exc), FAILED)
    say(f"letitcrash: {len(cluster.names)} nodes up ({', '.join(cluster.names)}); Ctrl-C stops them")
    while not stop.wait(0.2):
        if all(proc.poll() is not None for proc in cluster.procs.values()):
            break
    statuses = cluster.stop(args.stop_timeout)
    say(f"letitcrash: stopped {len(statuses)} nodes")
    return OK


def _cluster_on_ray(args: argparse.Namespace, stop: threading.Event) -> int:
    from apps.cluster import ClusterError
    from apps.cluster.launcher import say
    if args.observer is not None:
        return _fail("--observer is for nodes on this machine, not with --ray", BAD_INPUT)
    try:
        from apps.cluster.on_ray import start_on_ray
    except ImportError as exc:
        return _fail(str(exc), BAD_INPUT)
    try:
        cluster = start_on_ray(args.nodes, args.target, address=args.ray, cluster=args.host, ticktime=args.ticktime,
                               cpus=args.cpus)
    except ClusterError as exc:
        return _fail(str(exc), FAILED)
    say(f"letitcrash: {len(cluster.names)} nodes up on Ray ({', '.join(cluster.names)}); Ctrl-C stops them")
    stop.wait()
    cluster.stop(args.stop_timeout)
    say(f"letitcrash: stopped {len(cluster.names)} nodes")
    return OK


def _node(args: argparse.Namespace) -> int:
    from apps.cluster.host import LOG_FORMAT, SECRET_VARIABLE, load_target, serve
    from apps.server.auth import SecretError, load_secret

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    try:
        if not os.environ.get(SECRET_VARIABLE):
            os.makedirs(os.path.dirname(os.path.abspath(args.secret_file)), exist_ok=True)
        secret = os.environ.get(SECRET_VARIABLE) or load_secret(args.secret_file, create=True)
        start = load_target(args.target) if args.target else None
        listen = args.listen if args.listen.startswith(("tcp:", "unix:")) else f"tcp:{args.listen}"
    except (SecretError, ValueError) as exc:
        return _fail(str(exc), BAD_INPUT)
    return serve(args.name, secret=secret, start=start, listen=listen, connect=args.connect,
                 ticktime=args.ticktime)


def _fail(message: str, status: int) -> int:
    print(f"letitcrash: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
