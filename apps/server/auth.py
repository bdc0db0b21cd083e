"""Authentication: per-user tokens derived from the server secret, proved by challenge-response.

    token = token_for(secret, "alice")          # given to alice once (`letitcrash token`)
    proof = prove(token, nonce)                 # what alice's client sends for this connection
    check(secret, "alice", nonce, proof)        # the server: True or False

The server keeps no token table: a token is HMAC-SHA256(secret, user), so it can be
recomputed, and a new secret revokes them all. The token itself never crosses the wire;
the client answers the connection's fresh random nonce with HMAC-SHA256(token, nonce),
so a recorded proof is worthless on any other connection. Comparisons are constant-time
(`hmac.compare_digest`). No log line, repr or error message of this package includes a
secret or a token (nor a proof, which is worthless after its connection anyway).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat

SECRET_BYTES = 32
NONCE_BYTES = 16
_TOKEN_TAG = b"letitcrash user token\x00"
_PROOF_TAG = b"letitcrash auth proof\x00"


class SecretError(Exception):
    """The secret file cannot be used; the message names the file and why."""


def token_for(secret: bytes, user: str) -> bytes:
    """The token of `user` under `secret` (32 bytes)."""
    assert len(secret) >= 16, "a server secret has at least 16 bytes"
    return hmac.new(secret, _TOKEN_TAG + user.encode(), hashlib.sha256).digest()


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def prove(token: bytes, nonce: bytes) -> bytes:
    """The client's answer to the server's `nonce`."""
    return hmac.new(token, _PROOF_TAG + nonce, hashlib.sha256).digest()


def check(secret: bytes, user: str, nonce: bytes, proof: bytes) -> bool:
    """Whether `proof` answers `nonce` with `user`'s token (constant time)."""
    return hmac.compare_digest(prove(token_for(secret, user), nonce), proof)


def load_secret(path: str, create: bool = False) -> bytes:
    """The secret in file `path` (raw bytes, at least 16). With `create`, a missing file
    is made with a fresh random secret, readable by its owner only."""
    if create and not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(SECRET_BYTES))
    try:
        with open(path, "rb") as f:
            secret = f.read(4096)
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise SecretError(f"cannot read the secret file {path}: {exc.strerror}") from None
    if len(secret) < 16:
        raise SecretError(f"the secret file {path} holds {len(secret)} bytes; at least 16 are needed")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"the secret file {path} is readable by others (mode {stat.filemode(mode)}); "
                          f"chmod 600 it")
    return secret
