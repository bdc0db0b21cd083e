"""CPU by layer from a cProfile run, for the benches that print where a message's time
goes (`apps_chat.py`, `dist_scale.py`).

    own = cpu_by_layer(pstats.Stats(profile).stats, layer_of)

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
