"""Scenario files (TOML): what to simulate, under which faults, checked how.

`load(path)` reads and checks a file; every unknown key or bad value is a
`ScenarioError` naming the file, the line (found by scanning the text: tomllib keeps no
positions), the key path and what was expected. `Scenario.data` is the checked table with
every default filled in; `Scenario.to_toml()` writes it back (shrunk scenarios, traces).
See scenarios/counter.toml for a commented example.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .faults import KINDS
from .schema import REQUIRED, Field, ScenarioError, Source, show, to_toml, validate
from .system import System, lookup

TOP = ("name", "description", "run", "checks", "systems", "network", "faults", "phases")

RUN = {
    "seed": Field.int(1, 0, 2**63 - 1, "the default seed (--seed overrides it)"),
    "duration": Field.seconds(20.0, 0.0, 86_400.0, "length of the chaos phase when there are no [[phases]]"),
    "resolution": Field.seconds(0.001, 0.0, 1.0, "the clock moves in ticks of this length (0: exact)"),
    "buggify": Field.bool(True, "let buggify() fault points fire"),
    "checkpoint": Field.int(4096, 16, 1 << 20, "trace records between checkpoint hashes"),
}
CHECKS = {
    "every": Field.seconds(0.5, 0.001, 3600.0, "virtual seconds between runs of the always-checks"),
    "names": Field.names(None, "checks to run, as SYSTEM.CHECK (default: all of them)"),
}
NETWORK = {
    "latency": Field.range((0.001, 0.005), 1e-6, 60.0, "one-way latency, uniform in [min, max]"),
    "link": Field.tables("network.link", "links with their own latency"),
    "codec": Field.bool(True, "what crosses between nodes goes through the wire's codec: a "
                        "message that could not go over a socket fails the run"),
}
LINK = {
    "between": Field.names(REQUIRED, "the two nodes of the link"),
    "latency": Field.range(REQUIRED, 1e-6, 60.0, "one-way latency of this link"),
}
FAULTS = {
    "mode": Field.str("chaos", ("off", "chaos", "swarm"),
                      "off: only scripted faults; chaos: every kind at its rate; swarm: a per-seed mix"),
    "tick": Field.seconds(0.1, 0.001, 60.0, "how often random discrete faults are drawn"),
    "script": Field.tables("faults.script", "faults at given virtual times"),
}
SCRIPT = {
    "at": Field.seconds(REQUIRED, 0.0, 86_400.0, "when (virtual seconds)"),
    "kind": Field.str(REQUIRED, tuple(KINDS), "which fault"),
}
PHASE = {
    "name": Field.str(REQUIRED, doc="shown in the trace and the report"),
    "duration": Field.seconds(REQUIRED, 0.0, 86_400.0, "virtual seconds"),
    "faults": Field.bool(False, "random faults on"),
    "workload": Field.bool(True, "clients start new requests"),
    "heal": Field.bool(False, "at the start: end partitions, skews, full disks; restart dead nodes"),
    "check": Field.bool(False, "at the end: run the eventually-checks"),
}


@dataclass
class Phase:
    name: str
    duration: float
    faults: bool
    workload: bool
    heal: bool
    check: bool


class Scenario:
    """A checked scenario. `data` holds every key with its default filled in."""

    def __init__(self, source: Source, data: dict[str, Any], systems: dict[str, type[System]]) -> None:
        self.source = source
        self.data = data
        self.system_classes = systems
        self.node_refs: list[tuple[tuple, str]] = []  # (key path, node name) to check once nodes exist

    # Views of `data` the runner uses.
    @property
    def path(self) -> str:
        return self.source.file

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def seed(self) -> int:
        return self.data["run"]["seed"]

    @property
    def phases(self) -> list[Phase]:
        return [Phase(**p) for p in self.data["phases"]]

    @property
    def duration(self) -> float:
        return sum(p["duration"] for p in self.data["phases"])

    def checks(self) -> dict[str, str]:
        """The checks to run: "system.check" -> "always" | "eventually"."""
        every = {f"{name}.{check}": when for name, cls in self.system_classes.items()
                 for check, when in cls.checks().items()}
        names = self.data["checks"]["names"]
        return every if names is None else {n: every[n] for n in names}

    def to_toml(self) -> str:
        """The scenario as TOML, every default spelled out."""
        data = {k: v for k, v in self.data.items() if v is not None}
        data["run"] = {k: v for k, v in data["run"].items() if k != "duration"}
        data["checks"] = {k: v for k, v in data["checks"].items() if v is not None}
        faults = data["faults"] = dict(data["faults"])
        faults["script"] = [{k: v for k, v in e.items() if v is not None} for e in faults["script"]]
        if not faults["script"]:
            del faults["script"]
        if not data["network"]["link"]:
            data["network"] = {k: v for k, v in data["network"].items() if k != "link"}
        return to_toml(data)

    def raw(self) -> dict[str, Any]:
        """The scenario as the plain tables TOML reads, to edit and `rebuild`."""
        return tomllib.loads(self.to_toml())

    def rebuild(self, raw: dict[str, Any]) -> Scenario:
        """A scenario from edited `raw()` tables, checked again (same file name)."""
        return parse(to_toml(raw), self.path)


def load(path: str | Path, overrides: list[tuple[str, Any]] | None = None) -> Scenario:
    """Read and check a scenario file. `overrides` are (key path, value) pairs applied
    first, e.g. ("systems.counter.bug", "ack_before_persist")."""
    return parse(read_text(path), str(path), overrides)


def read_text(path: str | Path) -> str:
    """A scenario file's text; a ScenarioError if it cannot be read or is not UTF-8."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(path), None, "", f"cannot read the scenario: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise ScenarioError(str(path), line, "", f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                            f"offset {exc.start}); TOML files are UTF-8") from None


def parse(text: str, file: str = "<scenario>", overrides: list[tuple[str, Any]] | None = None) -> Scenario:
    source = Source(file, text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        message = str(exc)
        if line is None and "(at line " in message:
            line = int(message.rsplit("(at line ", 1)[1].split(",")[0])
        raise ScenarioError(file, line, "", f"not valid TOML: {message}") from None
    for key, value in overrides or ():
        _override(raw, key, value, file)
    return check(raw, source)


def _override(raw: dict, key: str, value: Any, file: str) -> None:
    parts = key.split(".")
    table = raw
    for part in parts[:-1]:
        table = table.setdefault(part, {})
        if type(table) is not dict:
            raise ScenarioError(file, None, key, "cannot override inside a value that is not a table")
    table[parts[-1]] = value


def check(raw: dict[str, Any], source: Source) -> Scenario:
    """Check a parsed scenario table; see the module docstring."""
    for key in raw:
        if key not in TOP:
            raise source.error((key,), f"unknown key; expected one of: {', '.join(TOP)}")
    data: dict[str, Any] = {}
    for key in ("name", "description"):
        value = raw.get(key, Path(source.file).stem if key == "name" else "")
        if type(value) is not str:
            raise source.error((key,), f"expected a string, got {show(value)}")
        data[key] = value
    data["run"] = validate(raw.get("run", {}), RUN, source, ("run",))
    systems, data["systems"] = _systems(raw, source)
    data["network"] = _network(raw.get("network", {}), source)
    data["faults"] = _faults(raw.get("faults", {}), source)
    data["phases"] = _phases(raw, data["run"], source)
    data["checks"] = validate(raw.get("checks", {}), CHECKS, source, ("checks",))
    scenario = Scenario(source, data, systems)
    every = {f"{n}.{c}" for n, cls in systems.items() for c in cls.checks()}
    for i, name in enumerate(data["checks"]["names"] or ()):
        if name not in every:
            raise source.error(("checks", "names"), f"item {i}: unknown check {name!r}; the systems "
                               f"have: {', '.join(sorted(every)) or '(none)'}")
    for i, link in enumerate(data["network"]["link"]):
        scenario.node_refs += [(("network", "link", i, "between"), n) for n in link["between"]]
    for i, entry in enumerate(data["faults"]["script"]):
        names = [entry[k] for k in ("node", "src", "dst") if entry.get(k)]
        names += [n for group in entry.get("groups") or () for n in group]
        scenario.node_refs += [(("faults", "script", i), n) for n in names]
    return scenario


def _systems(raw: dict, source: Source) -> tuple[dict[str, type[System]], dict[str, Any]]:
    table = raw.get("systems")
    if type(table) is not dict or not table:
        raise source.error(("systems",), "expected at least one [systems.NAME] table "
                           "(e.g. [systems.counter])")
    classes, out = {}, {}
    for name, options in table.items():
        path = ("systems", name)
        try:
            cls = lookup(name)
        except LookupError as exc:
            raise source.error(path, str(exc)) from None
        if type(options) is not dict:
            raise source.error(path, f"expected a table of {name} options, got {show(options)}")
        options = dict(options)
        workload = options.pop("workload", {})
        values = validate(options, cls.options, source, path)
        values["workload"] = validate(workload, cls.workload_options, source, path + ("workload",))
        classes[name], out[name] = cls, values
    return classes, out


def _network(table: Any, source: Source) -> dict[str, Any]:
    out = validate(table, NETWORK, source, ("network",))
    links = []
    for i, link in enumerate(out["link"]):
        values = validate(link, LINK, source, ("network", "link", i))
        if len(values["between"]) != 2 or values["between"][0] == values["between"][1]:
            raise source.error(("network", "link", i, "between"), "expected two different node names")
        links.append(values)
    out["link"] = links
    return out


def _faults(table: Any, source: Source) -> dict[str, Any]:
    if type(table) is not dict:
        raise source.error(("faults",), f"expected a table, got {show(table)}")
    schema = dict(FAULTS)
    schema.update({kind: Field(f"a [faults.{kind}] table", lambda v: v, None) for kind in KINDS})
    out = validate(table, schema, source, ("faults",))
    for kind, spec in KINDS.items():
        if out[kind] is None:
            del out[kind]
        else:
            out[kind] = validate(out[kind], spec.params, source, ("faults", kind))
    script = []
    for i, entry in enumerate(out["script"]):
        path = ("faults", "script", i)
        if type(entry) is not dict:
            raise source.error(path, f"expected a table, got {show(entry)}")
        base = validate({k: entry[k] for k in SCRIPT if k in entry}, SCRIPT, source, path)
        rest = {k: v for k, v in entry.items() if k not in SCRIPT}
        script.append({**base, **validate(rest, KINDS[base["kind"]].script, source, path)})
    out["script"] = script
    return out


def _phases(raw: dict, run: dict, source: Source) -> list[dict[str, Any]]:
    table = raw.get("phases")
    if table is None:
        return [
            {"name": "chaos", "duration": run["duration"], "faults": True, "workload": True,
             "heal": False, "check": False},
            {"name": "heal", "duration": 2.0, "faults": False, "workload": True, "heal": True,
             "check": False},
            {"name": "quiesce", "duration": 10.0, "faults": False, "workload": False, "heal": False,
             "check": True},
        ]
    if "duration" in raw.get("run", {}):
        raise source.error(("run", "duration"), "give either run.duration or [[phases]], not both")
    if type(table) is not list or not table:
        raise source.error(("phases",), "expected one or more [[phases]] tables")
    phases, names = [], set()
    for i, phase in enumerate(table):
        values = validate(phase, PHASE, source, ("phases", i))
        if values["name"] in names:
            raise source.error(("phases", i, "name"), f"phase name {values['name']!r} is used twice")
        names.add(values["name"])
        phases.append(values)
    if not any(p["check"] for p in phases):
        phases[-1]["check"] = True  # the eventually-checks always run, at the end by default
    return phases
