"""Shrinking: turn a failing seed into a smaller scenario that still fails the same check.

The seed stays fixed; the scenario shrinks. First the random faults become a script: the
faults the failing run actually injected (its decision log: kills, crashes, partitions,
each dropped or delayed message, each failed commit), at the same times on the same
targets. Every fault family draws from streams of its own, so without the fault draws
the same run happens again. An always-check that failed at t lets the run end at t. Then,
greedily, while the same check still fails with the same seed:

1. delta-debug the scripted faults (Zeller's ddmin: drop halves, quarters, ... single
   entries);
2. drop each random fault kind still configured (if scripting did not reproduce the
   failure) and turn buggify off;
3. cut the phases short and shrink each integer system and workload option towards its
   minimum (clients, counters, servers ...).

A candidate that passes, or fails some other check, is rejected. Every candidate is one
full run, so `budget` bounds the runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .core import Failure
from .faults import KINDS
from .runner import Result, run
from .scenario import Scenario
from .schema import ScenarioError, to_toml


@dataclass
class Shrunk:
    scenario: Scenario
    seed: int
    failure: Failure
    runs: int
    before: dict[str, Any]
    after: dict[str, Any]


SIZE_UNITS = {"faults": "scripted fault entries + random fault kinds on",
              "duration": "virtual seconds, all phases"}


def size_unit(key: str) -> str:
    """What a `size` entry counts, for the shrink summary."""
    return SIZE_UNITS.get(key, "workload option" if ".workload." in key else "system option")


def size(scenario: Scenario) -> dict[str, Any]:
    """What shrinking reduces: faults (scripted entries + random kinds), virtual seconds,
    and the numeric options of the systems."""
    faults = scenario.data["faults"]
    randoms = [k for k in KINDS if k in faults] if faults["mode"] != "off" else []
    options = {f"{name}.{k}": v for name, opts in scenario.data["systems"].items()
               for k, v in opts.items() if type(v) in (int, float)}
    options.update({f"{name}.workload.{k}": v for name, opts in scenario.data["systems"].items()
                    for k, v in opts["workload"].items() if type(v) in (int, float)})
    return {"faults": len(faults["script"]) + len(randoms), "duration": scenario.duration, **options}


class _Shrinker:
    def __init__(self, seed: int, check: str, budget: int, log: Callable[[str], None]) -> None:
        self.seed = seed
        self.check = check
        self.budget = budget
        self.log = log
        self.runs = 0
        self.failure: Failure | None = None

    def fails(self, candidate: Scenario) -> bool:
        if self.runs >= self.budget:
            return False
        self.runs += 1
        try:
            result = run(candidate, self.seed)
        except ScenarioError:
            return False  # e.g. fewer servers than the scenario's scripted faults name
        if result.failure is not None and result.failure.check == self.check:
            self.failure = result.failure
            return True
        return False

    def attempt(self, base: Scenario, raw: dict[str, Any], what: str) -> Scenario | None:
        """`base` edited into `raw`, if it still fails the same way."""
        try:
            candidate = base.rebuild(raw)
        except ScenarioError:
            return None
        if self.fails(candidate):
            self.log(f"  still fails after {what} (run {self.runs})")
            return candidate
        return None


def shrink(scenario: Scenario, seed: int, budget: int = 120,
           log: Callable[[str], None] = lambda line: None) -> Shrunk | None:
    """A smaller scenario that fails like `scenario` does with `seed`; None if it passes."""
    first: Result = run(scenario, seed)
    if first.failure is None:
        return None
    s = _Shrinker(seed, first.failure.check, budget, log)
    s.runs, s.failure = 1, first.failure
    log(f"seed {seed} fails {first.failure.check} at t={first.failure.time:.3f} s; shrinking "
        f"(budget {budget} runs)")
    current = scenario
    raw = current.raw()
    raw["checks"]["names"] = [s.check]
    raw["faults"] = {"mode": "off", "tick": raw["faults"]["tick"], "script": first.fault_log}
    current = s.attempt(current, raw, f"scripting the {len(first.fault_log)} injected faults") or current
    if current.checks()[s.check] == "always":
        current = _end_at(current, s.failure.time, s) or current

    changed = True
    while changed and s.runs < budget:
        changed = False
        script = current.data["faults"]["script"]
        base = current  # this round's scenario (the loop rebinds `current`)
        kept = _ddmin(script, lambda entries: s.fails(_with_script(base, entries)))  # noqa: B023
        if len(kept) < len(script):
            current = _with_script(current, kept)
            log(f"  faults: {len(script)} -> {len(kept)} scripted (run {s.runs})")
            changed = True
        for step in (_drop_kinds, _no_buggify, _cut_phases, _shrink_options):
            smaller = step(current, s)
            if smaller is not None:
                current, changed = smaller, True
    assert s.failure is not None
    return Shrunk(current, seed, s.failure, s.runs, size(scenario), size(current))


def _with_script(scenario: Scenario, entries: list[dict[str, Any]]) -> Scenario:
    raw = scenario.raw()
    raw["faults"]["script"] = [{k: v for k, v in e.items() if v is not None} for e in entries]
    return scenario.rebuild(raw)


def _ddmin(items: list[Any], fails: Callable[[list[Any]], bool]) -> list[Any]:
    """Zeller's ddmin over complements: a 1-minimal sublist for which `fails` holds."""
    if items and fails([]):
        return []
    n = 2
    while len(items) >= 2:
        chunk = -(-len(items) // n)
        for start in range(0, len(items), chunk):
            rest = items[:start] + items[start + chunk:]
            if fails(rest):
                items, n = rest, max(n - 1, 2)
                break
        else:
            if n >= len(items):
                break
            n = min(len(items), 2 * n)
    if len(items) == 1 and fails([]):
        return []
    return items


def _end_at(current: Scenario, t: float, s: _Shrinker) -> Scenario | None:
    """An always-check failed at `t`: what comes after cannot matter; end the run there."""
    raw = current.raw()
    phases, start = [], 0.0
    for phase in raw["phases"]:
        phases.append(phase)
        if start + phase["duration"] >= t:
            phase["duration"] = round(t - start, 9)
            break
        start += phase["duration"]
    phases[-1]["check"] = False
    raw["phases"] = phases
    return s.attempt(current, raw, f"ending the run at the failure, t={t:g} s")


def _drop_kinds(current: Scenario, s: _Shrinker) -> Scenario | None:
    found = None
    for kind in KINDS:
        if kind in current.data["faults"]:
            raw = current.raw()
            del raw["faults"][kind]
            smaller = s.attempt(current, raw, f"dropping random {kind} faults")
            if smaller is not None:
                current = found = smaller
    return found


def _no_buggify(current: Scenario, s: _Shrinker) -> Scenario | None:
    if not current.data["run"]["buggify"]:
        return None
    raw = current.raw()
    raw["run"]["buggify"] = False
    return s.attempt(current, raw, "turning buggify off")


def _cut_phases(current: Scenario, s: _Shrinker) -> Scenario | None:
    found = None
    for i in range(len(current.data["phases"])):
        while s.runs < s.budget:
            duration = current.data["phases"][i]["duration"]
            shorter = round(duration / 2, 3)
            if duration < 0.5:
                break
            raw = current.raw()
            raw["phases"][i]["duration"] = shorter
            smaller = s.attempt(current, raw, f"phase {raw['phases'][i]['name']} {duration:g} s -> {shorter:g} s")
            if smaller is None:
                break
            current = found = smaller
    return found


def _shrink_options(current: Scenario, s: _Shrinker) -> Scenario | None:
    """Integer options (clients, counters, servers ...): the minimum if the failure stays
    there, else a bisection between what fails and what does not."""
    found = None
    for name, cls in current.system_classes.items():
        for table, schema in (((), cls.options), (("workload",), cls.workload_options)):
            for key, field in schema.items():
                fails = _get(current.data["systems"][name], table)[key]
                if type(fails) is not int or field.lo is None or fails <= field.lo:
                    continue
                passes = field.lo - 1  # below the minimum: treated as not failing
                probe = field.lo
                while fails - passes > 1 and s.runs < s.budget:
                    raw = current.raw()
                    _get(raw["systems"][name], table)[key] = probe
                    smaller = s.attempt(current, raw,
                                        f"{name}.{'.'.join(table + (key,))} {fails} -> {probe}")
                    if smaller is not None:
                        current = found = smaller
                        fails = probe
                    else:
                        passes = probe
                    probe = (fails + passes) // 2
    return found


def _get(table: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for part in path:
        table = table[part]
    return table


def write(shrunk: Shrunk, path: str, origin: str) -> None:
    """Write the shrunk scenario, with its seed as the default, and a note of where it
    came from (`origin`: the shrink command's arguments)."""
    raw = shrunk.scenario.raw()
    raw["run"]["seed"] = shrunk.seed
    note = (f"# Shrunk by `letitcrash shrink {origin}` in {shrunk.runs} runs.\n"
            f"# It fails {shrunk.failure.check} at t={shrunk.failure.time:.6f} s:\n"
            + "".join(f"#   {line}\n" for line in shrunk.failure.message.splitlines())
            + f"# Run it: letitcrash sim {path}\n\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(note + to_toml(raw))
