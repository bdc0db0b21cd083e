"""Helpers shared by the kernel's tests."""
from actors import ReceiveTimeout


async def queued(proc):
    """Take the messages still queued for `proc`, in order (inside its own turn)."""
    left = []
    while True:
        try:
            left.append(await proc.receive(timeout=0))
        except ReceiveTimeout:
            return left
