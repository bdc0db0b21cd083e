"""Where nodes listen: addresses, and the discovery a distribution asks (a peers table).

An address is `tcp:HOST:PORT` (or `HOST:PORT`; `[::1]:PORT` for IPv6) or `unix:PATH`.
`parse_address` gives its canonical form, or a `ValueError` naming what is wrong.

Discovery is pluggable: a `Distribution` (`actors.dist`) asks `resolve(name)` for the
address of a node it is to connect to, tells `learn(name, address)` what the nodes it
meets announce, and shares `known()` with them, so that a node connecting to one member
of a cluster meets them all. `PeerTable` is the static kind (the launcher's, or one
filled by hand); a cluster manager's kind (resolving through a named service) implements
the same three methods.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

MAX_PEERS = 100_000
UNIX_PATH_MAX = 107  # bytes in a Unix socket's path, the terminating NUL aside (Linux)


class Address(NamedTuple):
    """A parsed address; `str()` is its canonical form."""

    kind: str  # "tcp" or "unix"
    host: str
    port: int
    path: str

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


def parse_address(text: str) -> Address:
    """`tcp:HOST:PORT`, `HOST:PORT` or `unix:PATH`; ValueError naming what is wrong."""
    if type(text) is not str or not text:
        raise ValueError(f"an address is tcp:HOST:PORT or unix:PATH, not {text!r}")
    if text.startswith("unix:"):
        path = text[5:]
        if not path or len(path.encode()) > UNIX_PATH_MAX:
            raise ValueError(f"a Unix socket path of 1 to {UNIX_PATH_MAX} bytes, not {path!r}")
        return Address("unix", "", 0, path)
    rest = text[4:] if text.startswith("tcp:") else text
    host, sep, port_text = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"an address is tcp:HOST:PORT (a port 0-65535) or unix:PATH, not {text!r}")
    return Address("tcp", host, int(port_text), "")


class Discovery(Protocol):
    """What a distribution asks about other nodes (see the module docstring)."""

    async def resolve(self, name: str) -> str | None: ...

    def learn(self, name: str, address: str) -> None: ...

    def known(self) -> dict[str, str]: ...


class PeerTable:
    """A table of node names to addresses: given, and learned as nodes announce theirs.

        peers = PeerTable({"b@host": "unix:/tmp/cluster/b.sock"})
    """

    def __init__(self, addresses: dict[str, str] | None = None, limit: int = MAX_PEERS) -> None:
        self.limit = limit
        self.addresses: dict[str, str] = {}
        for name, address in (addresses or {}).items():
            self.learn(name, address)

    async def resolve(self, name: str) -> str | None:
        return self.addresses.get(name)

    def learn(self, name: str, address: str) -> None:
        canonical = str(parse_address(address))
        if name not in self.addresses and len(self.addresses) >= self.limit:
            return  # full: the nodes met first are kept
        self.addresses[name] = canonical

    def known(self) -> dict[str, str]:
        return dict(self.addresses)

    def __repr__(self) -> str:
        return f"<PeerTable {len(self.addresses)} nodes>"
