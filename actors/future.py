"""A minimal single-threaded future for code outside the node (asyncio tasks, tests).

`await fut` works inside a running asyncio loop; under the deterministic driver,
`node.run_until_complete(fut)` drives the node until it is done. Both then give
`fut.result()`: the value, or the exception raised.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

_PENDING = object()


class Future:
    __slots__ = ("_value", "_exc", "_callbacks")

    def __init__(self) -> None:
        self._value: Any = _PENDING
        self._exc: BaseException | None = None
        self._callbacks: list[Callable[[Future], None]] = []

    def done(self) -> bool:
        return self._value is not _PENDING or self._exc is not None

    def result(self) -> Any:
        if self._exc is not None:
            raise self._exc
        if self._value is _PENDING:
            raise RuntimeError("the future is not done yet")
        return self._value

    def exception(self) -> BaseException | None:
        return self._exc

    def set_result(self, value: Any) -> None:
        assert not self.done(), "future resolved twice"
        self._value = value
        self._run_callbacks()

    def set_exception(self, exc: BaseException) -> None:
        assert not self.done(), "future resolved twice"
        self._exc = exc
        self._run_callbacks()

    def add_done_callback(self, fn: Callable[[Future], None]) -> None:
        if self.done():
            fn(self)
        else:
            self._callbacks.append(fn)

    def _run_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)

    def __await__(self):
        if not self.done():
            waiter = asyncio.get_running_loop().create_future()
            self.add_done_callback(lambda _: waiter.done() or waiter.set_result(None))
            yield from waiter.__await__()
        return self.result()
