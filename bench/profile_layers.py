"""CPU by layer and kernel counts from a cProfile run, for the benches that print where a
message's (or a match's) time goes (`apps_chat.py`, `apps_rides.py`, `dist_scale.py`).

    stats = pstats.Stats(profile).stats
    own = cpu_by_layer(stats, layer_by(LAYERS))      # layer -> own CPU seconds
    counts = kernel_counts(stats)                    # deliveries, held, encodes, timers, saves

`layer_of(filename, function)` names the layer of a profiled function, or None for a C
function (file "~") that has no layer of its own: its time then counts for the layers
of its callers, as cProfile splits it between them.
"""
from __future__ import annotations

from typing import Callable


def cpu_by_layer(stats: dict, layer_of: Callable[[str, str], str | None]) -> dict[str, float]:
    """Own CPU seconds by layer, from pstats' table `stats`."""
    own: dict[str, float] = {}
    for (filename, _, function), (_, _, tottime, _, callers) in stats.items():
        layer = layer_of(filename, function)
        if layer is not None:
            own[layer] = own.get(layer, 0.0) + tottime
            continue
        for (caller_file, _, caller_function), edge in callers.items():
            mine = layer_of(caller_file, caller_function) or "other"
            own[mine] = own.get(mine, 0.0) + edge[2]
    return own


def function_name(profiled: str) -> str:
    """A profiled function's name without the class a kernel method's copy is for: the
    kernel gives each process class copies of its per-turn methods, their code named
    "NAME of CLASS" (see `actors.process`), so that cProfile counts each apart."""
    return profiled.partition(" of ")[0]


def layer_by(layers: tuple[tuple[str, str], ...]) -> Callable[[str, str], str | None]:
    """A `layer_of` from (part of a file's path, layer) pairs, the first match wins, else
    "other"; a C function has none (its time is its callers' layer's)."""
    def layer_of(filename: str, function: str) -> str | None:
        if filename == "~":
            return None
        return next((name for part, name in layers if part in filename), "other")
    return layer_of


def kernel_counts(stats: dict) -> dict[str, int]:
    """What the profiled run did, counted from pstats' table `stats`: "deliveries"
    (messages put in a mailbox), "held" (outputs held until storage's commit, then
    released), "encodes" (msgpack packs by the codec; msgpack's own C code is not seen by
    cProfile), "timers" (timers started) and "saves" (writes persistent processes handed
    to the store: a state, its records, its events)."""
    counts = dict.fromkeys(("deliveries", "held", "encodes", "timers", "saves"), 0)
    for (filename, _, name), (_, calls, _, _, callers) in stats.items():
        counts["held"] += sum(edge[1] for (f, _, caller), edge in callers.items()
                              if f.endswith("actors/output.py") and caller == "release")  # a held item's delivery
        name = function_name(name)
        if filename.endswith("actors/process.py") and name == "_deliver":
            counts["deliveries"] += calls
        elif filename.endswith("actors/codec.py") and name == "packb":
            counts["encodes"] += calls
        elif filename.endswith("actors/timers.py") and name == "add":
            counts["timers"] += calls
        elif filename.endswith("storage/store.py") and name == "write":
            counts["saves"] += calls
    return counts
