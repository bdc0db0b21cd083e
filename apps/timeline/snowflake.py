"""Snowflake ids: 64-bit, unique and increasing per machine, roughly ordered by time.

    | 41 bits: milliseconds of node time | 10 bits: machine | 12 bits: sequence |

    gen = Snowflake(machine=3)
    tweet_id = gen.next(proc.now())

Time is the node's clock (`node.now()`), never the wall clock. Within one millisecond
the sequence counts up to 4095; one more borrows the next millisecond, and a clock that
stands still or goes back (a restarted node, a skewed one) keeps counting from the last
id: ids never repeat and never decrease, at the price of running a little ahead of the
clock. A generator restarted with `last` (the newest id it ever gave out, recovered from
storage) continues after it.
"""
from __future__ import annotations

TIME_BITS, MACHINE_BITS, SEQ_BITS = 41, 10, 12
MAX_MACHINE = (1 << MACHINE_BITS) - 1
MAX_SEQ = (1 << SEQ_BITS) - 1
MAX_MS = (1 << TIME_BITS) - 1


def make_id(ms: int, machine: int, seq: int) -> int:
    assert 0 <= ms <= MAX_MS and 0 <= machine <= MAX_MACHINE and 0 <= seq <= MAX_SEQ, (ms, machine, seq)
    return (ms << (MACHINE_BITS + SEQ_BITS)) | (machine << SEQ_BITS) | seq


def split_id(snowflake: int) -> tuple[int, int, int]:
    """(milliseconds, machine, sequence) of an id."""
    assert 0 <= snowflake < 1 << 63, snowflake
    return (snowflake >> (MACHINE_BITS + SEQ_BITS), (snowflake >> SEQ_BITS) & MAX_MACHINE,
            snowflake & MAX_SEQ)


class Snowflake:
    """An id generator for one machine id; see the module docstring."""

    __slots__ = ("machine", "_ms", "_seq")

    def __init__(self, machine: int, last: int = -1) -> None:
        if type(machine) is not int or not 0 <= machine <= MAX_MACHINE:
            raise ValueError(f"a Snowflake machine id must be an int in 0..{MAX_MACHINE}, got {machine!r}")
        self.machine = machine
        if last < 0:
            self._ms, self._seq = -1, MAX_SEQ
        else:
            self._ms, found, self._seq = split_id(last)
            if found != machine:
                raise ValueError(f"id {last} was made by machine {found}, not {machine}")

    @property
    def last(self) -> int:
        """The newest id given out (-1 if none)."""
        return make_id(self._ms, self.machine, self._seq) if self._ms >= 0 else -1

    def next(self, now: float) -> int:
        """A new id at node time `now` (seconds): greater than every id before it."""
        ms = int(now * 1000)
        if ms < 0:
            raise ValueError(f"Snowflake time must be >= 0 seconds, got {now!r}")
        if ms > self._ms:
            self._ms, self._seq = ms, 0
        elif self._seq < MAX_SEQ:
            self._seq += 1
        else:  # 4096 ids in this millisecond already: borrow the next one
            self._ms += 1
            self._seq = 0
        if self._ms > MAX_MS:
            raise OverflowError(f"Snowflake time ran past {TIME_BITS} bits of milliseconds")
        return make_id(self._ms, self.machine, self._seq)
