"""msgpack with the kernel's own types: what gets stored or leaves the node goes through here.

`Pid` and `Ref` encode as msgpack extension types; `unpackb(data, node=node)` turns a pid
of that node back into the live pid object. Local sends never encode: they pass objects.
`encode_term`/`decode_term` are the wire's form, for what crosses between nodes (below).

    data = packb({"owner": pid, "n": 1})
    assert unpackb(data, node=node)["owner"] == pid
"""
from __future__ import annotations

import sys
import threading
from typing import Any, Callable

import msgpack

from .errors import RemoteError
from .ids import Pid, Ref
from .process import From

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
                return proc._pid
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


# -- the wire: terms as they cross between nodes ---------------------------------------------
#
# Stored values keep the encoding above (a tuple is stored as a list). What crosses between
# nodes keeps Python's shape: tuples stay tuples, and a kernel `From` crosses as its
# (caller pid, tag); named tuples and exceptions cross as their type's name and values, and
# are rebuilt from a type already loaded on the receiving node, never imported or run: an
# exception's `__init__` is not called (its args and fields are set), and one of a type
# the node does not have arrives as `RemoteError`. An exception's fields that cannot be
# encoded cross as their repr: a crash reason always crosses.

EXT_TUPLE = 3
EXT_RECORD = 4
EXT_ERROR = 5
EXT_FROM = 6


def _wire_default(obj: Any) -> Any:
    kind = type(obj)
    if kind is Pid:  # the same bytes as _default's, from a pooled packer
        return msgpack.ExtType(EXT_PID, _nested([obj.node_name, obj.serial]))
    if kind is Ref:
        return msgpack.ExtType(EXT_REF, _nested([obj.node_name, obj.serial]))
    if kind is tuple:
        return msgpack.ExtType(EXT_TUPLE, _nested(list(obj)))
    if kind is From:  # as (caller pid, tag): its owner's node knows them
        owner = obj.owner
        node = owner._node
        tag = (owner.pid, owner.ref) if node is None else node._boundary.call_tag(obj)  # None: a Remote
        return msgpack.ExtType(EXT_FROM, _nested(list(tag)))
    if isinstance(obj, BaseException):
        fields = {k: _or_repr(v) for k, v in vars(obj).items()} if hasattr(obj, "__dict__") else {}
        return msgpack.ExtType(EXT_ERROR, _nested([kind.__module__, kind.__qualname__,
                                                   [_or_repr(a) for a in obj.args], fields]))
    if isinstance(obj, tuple) and hasattr(kind, "_fields"):
        return msgpack.ExtType(EXT_RECORD, _nested([kind.__module__, kind.__qualname__, list(obj)]))
    raise TypeError(f"cannot encode {kind.__name__} {obj!r:.100} for another node (use dicts, "
                    "lists, tuples, str, bytes, numbers, bool, None, Pid, Ref, named tuples, "
                    "exceptions)")


def _nested(value: Any) -> bytes:
    """Pack from inside the packer's own `default` (a Packer is not reentrant: one per depth)."""
    pool = _local.__dict__.setdefault("wire", [])
    depth = _local.__dict__.get("depth", 0)
    if depth == len(pool):
        pool.append(msgpack.Packer(default=_wire_default, use_bin_type=True, strict_types=True))
    _local.depth = depth + 1
    try:
        return pool[depth].pack(value)
    finally:
        _local.depth = depth


def _or_repr(value: Any) -> Any:
    """`value` if it can cross, else its repr (for an exception's args and fields)."""
    try:
        _nested(value)
    except (TypeError, ValueError, OverflowError):
        return repr(value)
    return value


def encode_term(value: Any, node: Any) -> bytes:
    """Encode `value` to cross from `node` to another; raises TypeError naming what cannot."""
    return _nested(value)


def wire_encoder() -> Callable[[Any], bytes]:
    """`encode_term` for one sender's hot path (the wire's): a packer of its own, for the
    calling thread only."""
    return msgpack.Packer(default=_wire_default, use_bin_type=True, strict_types=True).pack


def decode_term(data: bytes, node: Any) -> Any:
    """Decode what `encode_term` made, on the receiving `node`."""
    return msgpack.unpackb(data, ext_hook=lambda code, payload: _decode_wire(code, payload, node),
                           raw=False, strict_map_key=False)


def _decode_wire(code: int, payload: bytes, node: Any) -> Any:
    if code == EXT_TUPLE:
        return tuple(decode_term(payload, node))
    if code == EXT_FROM:
        pid, tag = decode_term(payload, node)
        from .boundary import Remote
        return From(Remote(pid, tag), tag.serial)
    if code == EXT_ERROR:
        module, qualname, args, fields = decode_term(payload, node)
        cls = _loaded(module, qualname)
        if cls is None or not issubclass(cls, BaseException):
            return RemoteError(f"{module}.{qualname}", *args)
        exc = cls.__new__(cls, *args)
        exc.args = tuple(args)
        if fields and hasattr(exc, "__dict__"):
            exc.__dict__.update(fields)
        return exc
    if code == EXT_RECORD:
        module, qualname, values = decode_term(payload, node)
        cls = _loaded(module, qualname)
        if cls is None or not issubclass(cls, tuple) or len(getattr(cls, "_fields", ())) != len(values):
            raise TypeError(f"a {module}.{qualname} from another node: no such named tuple here")
        return cls._make(values)  # type: ignore[attr-defined]
    if code != EXT_PID and code != EXT_REF:
        raise ValueError(f"an extension type {code} from another node: the wire has none such")
    value = _decode_ext(code, payload, node)
    if type(value.node_name) is not str or type(value.serial) is not int:
        raise ValueError(f"a malformed {'pid' if code == EXT_PID else 'ref'} from another node")
    return value


def _loaded(module: str, qualname: str) -> type | None:
    """The class `module.qualname` if that module is loaded here (nothing is imported)."""
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None) if obj is not None and part != "<locals>" else None
    return obj if isinstance(obj, type) else None
