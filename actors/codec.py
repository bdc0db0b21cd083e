"""msgpack with the kernel's own types: what gets stored or leaves the node goes through here.

`Pid` and `Ref` encode as msgpack extension types; `unpackb(data, node=node)` turns a pid
of that node back into the live pid object. Local sends never encode: they pass objects.

    data = packb({"owner": pid, "n": 1})
    assert unpackb(data, node=node)["owner"] == pid
"""
from __future__ import annotations

import threading
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


# A Packer is reused (8x cheaper than one per call) but not shareable between threads,
# and pykka workers may encode too: one per thread.
_local = threading.local()


def packb(obj: Any) -> bytes:
    """Encode obj; raises TypeError naming the first value msgpack cannot take."""
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(default=_default, use_bin_type=True)
    return packer.pack(obj)


def _decode_ext(code: int, payload: bytes, node: Any) -> Any:
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


def _foreign_ext(code: int, payload: bytes) -> Any:
    return _decode_ext(code, payload, None)


def unpackb(data: bytes, node: Any = None) -> Any:
    """Decode data; pids of `node` come back as its live pid objects."""
    hook = _foreign_ext if node is None else (lambda code, payload: _decode_ext(code, payload, node))
    return msgpack.unpackb(data, ext_hook=hook, raw=False, strict_map_key=False)
