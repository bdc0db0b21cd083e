"""msgpack with the kernel's own types: what gets stored or leaves the node goes through here.

`Pid` and `Ref` encode as msgpack extension types; `unpackb(data, node=node)` turns a pid
of that node back into the live pid object. Local sends never encode: they pass objects.

    >>> data = packb({"owner": pid, "n": 1})
    >>> unpackb(data, node=node)["owner"] == pid
    True
"""
from __future__ import annotations

from typing import Any

import msgpack

from .ids import Pid, Ref

EXT_PID = 1
EXT_REF = 2


def _default(obj: Any) -> Any:
    if type(obj) is Pid:
        return msgpack.ExtType(EXT_PID, msgpack.packb((obj.node_name, obj.serial)))
    if type(obj) is Ref:
        return msgpack.ExtType(EXT_REF, msgpack.packb((obj.node_name, obj.serial)))
    raise TypeError(f"cannot encode {type(obj).__name__} {obj!r:.100} with msgpack "
                    "(use dicts, lists, str, bytes, numbers, bool, None, Pid, Ref)")


def packb(obj: Any) -> bytes:
    """Encode obj; raises TypeError naming the first value msgpack cannot take."""
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpackb(data: bytes, node: Any = None) -> Any:
    """Decode data; pids of `node` come back as its live pid objects."""
    def ext_hook(code: int, payload: bytes) -> Any:
        if code == EXT_PID:
            node_name, serial = msgpack.unpackb(payload)
            if node is not None and node_name == node.name:
                proc = node._procs.get(serial)
                if proc is not None:
                    return proc.pid
            return Pid(node_name, serial)
        if code == EXT_REF:
            node_name, serial = msgpack.unpackb(payload)
            return Ref(node_name, serial)
        return msgpack.ExtType(code, payload)

    return msgpack.unpackb(data, ext_hook=ext_hook, raw=False, strict_map_key=False)
