"""Rewriting recorded traces in tests: a recording other code would have made (its
checkpoint hashes made to match again), or a damaged one (hashes left as they were)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import msgpack


def rewrite(path: Path, objects: list, rehash: bool) -> None:
    """Write trace objects back; with `rehash`, the checkpoints and the end record match
    the records again."""
    digest, chunk, count = hashlib.blake2b(digest_size=16), [], 0
    with open(path, "wb") as out:
        for obj in objects:
            if rehash and type(obj) is list and obj[0] == "ckpt":
                digest.update(msgpack.packb(chunk)[3 if len(chunk) >= 16 else 1:])
                count += len(chunk)
                chunk = []
                obj = ["ckpt", count, obj[2], digest.hexdigest()]
            elif rehash and type(obj) is dict and obj.get("end"):
                obj = {**obj, "hash": digest.hexdigest()}
            elif type(obj) is not dict:
                chunk.append(obj)
            out.write(msgpack.packb(obj))


def tamper(path: Path, rehash: bool) -> tuple[int, list]:
    """Change the receiving process of a send past record 3000; its record number and new value."""
    with open(path, "rb") as f:
        objects = list(msgpack.Unpacker(f, raw=False, strict_map_key=False))
    index = -1
    for tampered in objects:
        if type(tampered) is dict or (type(tampered) is list and tampered[0] == "ckpt"):
            continue
        index += 1
        if index >= 3000 and type(tampered) is list and tampered[0] == "send":
            tampered[3] += 1  # another receiving process
            break
    rewrite(path, objects, rehash)
    return index, tampered
