"""The `letitcrash` command line.

    letitcrash sim SCENARIO.toml [--seed N | --seeds A..B] [--trace FILE] [--faults SPEC]
                                 [--system-option [SYSTEM.]KEY=VALUE ...] [--jobs N] [--json]
                                 [--html FILE]
    letitcrash replay TRACE [--json] [--html FILE]
    letitcrash shrink SCENARIO.toml --seed N [-o OUT.toml] [--budget RUNS]
    letitcrash trace show TRACE [--node N] [--process PID] [--kind K] [--from T] [--to T] [--json]

Exit status: 0 every check held (replay: identical and held; shrink: a shrunk scenario
was written), 1 a check failed (replay: it failed again, or diverged; shrink: the seed
does not fail), 2 bad input (a bad scenario, argument or path to write, a missing or
damaged trace), checked before any run.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import shlex
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from . import report, report_html
from .core import Simulation
from .faults import KINDS, PROFILES
from .runner import Result, run
from .scenario import Scenario, load, parse, read_text
from .schema import ScenarioError, parse_seconds
from .replay import replay
from .shrink import shrink, size_unit, write
from .trace import EVENT_KINDS, TraceError, TraceReader, events

OK, FAILED, BAD_INPUT = 0, 1, 2
COMMANDS = {
    "sim": "run a scenario under injected faults and report which invariants held",
    "replay": "re-run a recorded trace and report the first divergence",
    "shrink": "reduce a failing seed to a smaller scenario that still fails",
    "trace": "read a recorded trace (trace show: its events, filtered)",
}
"""The simulator's commands and their one-line help (the `letitcrash` command lists them)."""


class BadInput(Exception):
    """A command-line argument that cannot be used; the message says why."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (BadInput, ScenarioError, TraceError, report_html.ReportError) as exc:
        print(f"letitcrash: {exc}", file=sys.stderr)
        return BAD_INPUT
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="letitcrash", description="Deterministic simulation of "
                                     "letitcrash systems under faults.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    sim = sub.add_parser("sim", help=COMMANDS["sim"], description="Run a scenario with one seed "
                         "or a range of seeds under its fault plan, and report which invariants held.")
    sim.add_argument("scenario", help="scenario file (TOML)")
    seeds = sim.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=_seed, help="the seed (default: the scenario's run.seed)")
    seeds.add_argument("--seeds", type=_seed_range, metavar="A..B", help="every seed from A to B")
    sim.add_argument("--trace", metavar="FILE", help="record the trace (msgpack); with --seeds, "
                     "FILE must contain {seed}")
    _scenario_options(sim)
    sim.add_argument("--jobs", type=_count, default=1, help="with --seeds: runs in parallel (default: 1)")
    sim.add_argument("--json", action="store_true", help="print the report as JSON")
    sim.add_argument("--html", metavar="FILE", help="also write the run's report as one HTML page")
    sim.set_defaults(func=cmd_sim)

    rep = sub.add_parser("replay", help=COMMANDS["replay"], description="Re-run a recorded trace "
                         "with its scenario and seed, and report the first event that differs.")
    rep.add_argument("trace", help="a trace recorded with `sim --trace`")
    rep.add_argument("--json", action="store_true", help="print the report as JSON")
    rep.add_argument("--html", metavar="FILE", help="also write the run's report as one HTML page")
    rep.set_defaults(func=cmd_replay)

    trace = sub.add_parser("trace", help=COMMANDS["trace"]).add_subparsers(required=True, metavar="ACTION")
    show = trace.add_parser("show", help="print a trace's events, filtered", formatter_class=argparse.
                            RawDescriptionHelpFormatter, description="Print the events of a trace recorded "
                            "with `sim --trace`, one per line, or as JSON lines.", epilog=TRACE_KINDS_HELP)
    show.add_argument("trace", help="a trace recorded with `sim --trace`")
    show.add_argument("--node", action="append", default=[], metavar="NAME",
                      help="events that happened on this node (repeat or comma-separate for several)")
    show.add_argument("--process", action="append", default=[], metavar="PID",
                      help="events of this process, e.g. counter1.7 or '<counter1#1.7>' (repeat or comma-separate)")
    show.add_argument("--kind", action="append", default=[], metavar="KIND",
                      help=f"events of this kind: {', '.join(EVENT_KINDS)} (repeat or comma-separate)")
    show.add_argument("--from", dest="start", type=_time, metavar="T", help="from virtual time T (s, or 250ms)")
    show.add_argument("--to", dest="end", type=_time, metavar="T", help="up to virtual time T, included")
    show.add_argument("--json", action="store_true", help="one JSON object per event (JSON lines)")
    show.set_defaults(func=cmd_trace_show)

    shr = sub.add_parser("shrink", help=COMMANDS["shrink"], description="Reduce a scenario that "
                         "fails with a seed to a smaller scenario that fails the same way.")
    shr.add_argument("scenario", help="scenario file (TOML)")
    shr.add_argument("--seed", type=_seed, required=True, help="a seed with which the scenario fails")
    shr.add_argument("-o", "--output", metavar="OUT.toml", help="where to write the shrunk scenario (default: "
                     "SCENARIO.seedN.shrunk.toml in the current directory)")
    shr.add_argument("--budget", type=_count, default=120, help="at most this many runs (default 120)")
    _scenario_options(shr)
    shr.set_defaults(func=cmd_shrink)
    return parser


def _scenario_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--faults", metavar="SPEC", help="off | chaos | swarm | a heavy profile ("
                        f"{' | '.join(PROFILES)}), and/or a comma list of fault kinds to keep, each "
                        "optionally =RATE (e.g. swarm,kill_node,drop=0.05)")
    parser.add_argument("--system-option", action="append", default=[], metavar="[SYSTEM.]KEY=VALUE",
                        help="override a system option, or a workload one as workload.KEY (VALUE in "
                        "TOML syntax; bare words are strings)")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to 1000000, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"a seed must be in [0, 2**63), got {value}")
    return value


def _time(text: str) -> float:
    try:
        value = parse_seconds(text.strip() if text.strip()[-1:].isalpha() else float(text))
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected virtual seconds (e.g. 1.5 or 250ms), got {text!r}")
    return value


def _seed_range(text: str) -> range:
    a, sep, b = text.partition("..")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected A..B (e.g. 1..100), got {text!r}")
    lo, hi = _seed(a), _seed(b)
    if hi < lo:
        raise argparse.ArgumentTypeError(f"empty seed range {text!r}")
    return range(lo, hi + 1)


# -- scenario overrides --------------------------------------------------------------------


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    """The scenario file with --system-option and --faults applied. A value an option
    set that the scenario refuses is reported as that option's error, not the file's."""
    overrides = _system_overrides(args.scenario, args.system_option)
    try:
        scenario = load(args.scenario, [(key, value) for key, value, _ in overrides])
    except ScenarioError as exc:
        for key, _, option in overrides:
            if exc.key == key:
                hint = (" (a workload option is given as workload.KEY)"
                        if "unknown key" in exc.detail and ".workload." not in key else "")
                raise BadInput(f"--system-option {option!r}: {key}: {exc.detail}{hint}") from None
        raise
    return apply_faults(scenario, args.faults) if args.faults else scenario


def _system_overrides(path: str, options: list[str]) -> list[tuple[str, Any, str]]:
    """--system-option [SYSTEM.]KEY=VALUE as (key path, value, option) overrides; SYSTEM
    may be left out when the scenario runs one system (KEY may be workload.KEY)."""
    if not options:
        return []
    try:
        systems = list(tomllib.loads(read_text(path)).get("systems", {}))
    except tomllib.TOMLDecodeError:
        systems = []  # load() reports the file's own problem
    out = []
    for option in options:
        key, sep, text = option.partition("=")
        if not sep or not key:
            raise BadInput(f"--system-option {option!r}: expected [SYSTEM.]KEY=VALUE")
        if key.split(".")[0] not in systems:
            if len(systems) != 1:
                raise BadInput(f"--system-option {option!r}: say which system "
                               f"({', '.join(systems)}) as SYSTEM.KEY=VALUE")
            key = f"{systems[0]}.{key}"
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare word: a string
        out.append((f"systems.{key}", value, option))
    return out


def apply_faults(scenario: Scenario, spec: str) -> Scenario:
    """Apply a --faults SPEC: a mode and/or the kinds to keep, each optionally =RATE; a
    heavy profile's name stands for its kinds at their rates (see `sim.faults.PROFILES`).
    Naming kinds without a mode turns a scenario whose mode is "off" to "chaos"."""
    raw = scenario.raw()
    faults = raw["faults"]
    mode: str | None = None
    kinds: dict[str, float | None] = {}
    for token in (t.strip() for t in spec.split(",")):
        name, sep, rate = token.partition("=")
        if name in ("off", "none", "chaos", "swarm") and not sep:
            mode = "off" if name == "none" else name
        elif name in PROFILES and not sep:
            kinds.update(PROFILES[name])
        elif name in KINDS:
            kinds[name] = _rate(token, name, rate) if sep else None
        else:
            raise BadInput(f"--faults {spec!r}: unknown item {token!r}; expected off, chaos, swarm, "
                           f"a profile ({', '.join(PROFILES)}) or a fault kind ({', '.join(KINDS)}), "
                           "optionally KIND=RATE")
    if kinds:
        for kind in KINDS:
            if kind not in kinds:
                faults.pop(kind, None)
                continue
            faults.setdefault(kind, {})
            if kinds[kind] is not None:
                faults[kind]["rate"] = kinds[kind]
    faults["mode"] = mode or ("chaos" if kinds and faults["mode"] == "off" else faults["mode"])
    return scenario.rebuild(raw)


def _rate(token: str, kind: str, text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise BadInput(f"--faults: {token!r}: expected {kind}=RATE with a number") from None
    top = 1000.0 if KINDS[kind].family == "discrete" else 1.0
    unit = "per virtual second" if top > 1 else "probability per message or commit"
    if not 0.0 <= rate <= top:
        raise BadInput(f"--faults: {token!r}: the rate must be in [0, {top:g}] ({unit})")
    return rate


def _override_args(args: argparse.Namespace) -> str:
    parts = ["--faults", args.faults] if args.faults else []
    for option in args.system_option:
        parts += ["--system-option", option]
    return " " + shlex.join(parts) if parts else ""


def commands(args: argparse.Namespace, result: Result) -> tuple[str, str]:
    """The commands that reproduce and shrink this run, with the same overrides."""
    extra = _override_args(args)
    return report.reproduce_command(result, extra), report.shrink_command(result, extra)


# -- commands ---------------------------------------------------------------------------


def writable(path: str, option: str) -> None:
    """Fail now, before any work, if `path` cannot be written (a missing directory, a
    directory, no permission); the check leaves no file behind."""
    target = Path(path)
    if target.is_dir():
        raise BadInput(f"{option} {path}: is a directory; expected a file name")
    existed = target.exists()
    try:
        with open(target, "ab"):
            pass
    except OSError as exc:
        raise BadInput(f"{option} {path}: cannot write there: {exc.strerror}") from None
    if not existed:
        target.unlink()


def _trace_paths(args: argparse.Namespace, seeds: range) -> None:
    """Check the --trace pattern and that each file it names can be written."""
    pattern = args.trace
    if args.seeds is not None and "{seed}" not in pattern:
        raise BadInput("--trace with --seeds needs {seed} in the file name (e.g. run-{seed}.trace)")
    try:
        paths = [pattern.format(seed=seed) for seed in seeds]
    except (KeyError, IndexError, ValueError):
        raise BadInput(f"--trace {pattern!r}: the only placeholder allowed is {{seed}}") from None
    seen: set[str] = set()
    for path in paths:
        folder = str(Path(path).parent)
        if folder not in seen:  # one file per folder tells whether the folder takes files
            seen.add(folder)
            writable(path, "--trace")


def cmd_sim(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    seed = scenario.seed if args.seed is None else args.seed
    if args.trace:
        _trace_paths(args, args.seeds or range(seed, seed + 1))
    if args.html:
        writable(args.html, "--html")
    if args.seeds is not None:
        if args.html:
            raise BadInput("--html reports one run: give --seed N, not --seeds")
        return _many(args, scenario)
    if args.html:
        report_html.require()
    progress = _Progress() if sys.stderr.isatty() else None
    with tempfile.TemporaryDirectory(prefix="letitcrash-") as tmp:
        trace = args.trace or (str(Path(tmp) / "run.trace") if args.html else None)
        result = _run_one(scenario, seed, trace, progress)
        if progress is not None:
            progress.clear()
        if args.json:
            print(json.dumps(report.as_json(result, *commands(args, result)), indent=2))
        else:
            print(report.text(result, *commands(args, result)))
        if args.html:
            assert trace is not None, "an --html run records its trace"
            _write_html(args.html, report_html.page(trace.format(seed=seed), result,
                                                    command=commands(args, result)[0]))
    return OK if result.passed else FAILED


def _write_html(path: str, page: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(page)
    print(f"wrote {path} ({len(page.encode()) / 1024:,.0f} KiB)", file=sys.stderr)


def _run_one(scenario: Scenario, seed: int, trace: str | None, progress: Any = None) -> Result:
    if trace is None:
        return run(scenario, seed, progress=progress)
    with open(trace.format(seed=seed), "wb") as out:
        return run(scenario, seed, out=out, progress=progress)


def _worker(path: str, toml: str, seed: int, trace: str | None) -> Result:
    """One seed in a worker process: module-level and fed only plain values, so it works
    under any start method (spawn imports this module afresh)."""
    return _run_one(parse(toml, path), seed, trace)


def _many(args: argparse.Namespace, scenario: Scenario) -> int:
    """Every seed of --seeds, in `--jobs` processes; results in seed order whatever the
    order they finish in, and the same as one process gives."""
    results: list[Result] = []
    started = time.perf_counter()  # wall clock: the report's true elapsed time
    if args.jobs > 1:
        context = multiprocessing.get_context("spawn")  # no forked copy of this process's state
        with ProcessPoolExecutor(max_workers=min(args.jobs, len(args.seeds)), mp_context=context) as pool:
            toml = scenario.to_toml()
            futures = [pool.submit(_worker, scenario.path, toml, seed, args.trace) for seed in args.seeds]
            for future in futures:
                results.append(future.result())
                _seed_done(args, results[-1])
    else:
        for seed in args.seeds:
            results.append(_run_one(scenario, seed, args.trace))
            _seed_done(args, results[-1])
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps([report.as_json(r, *commands(args, r)) for r in results], indent=2))
    else:
        print(report.summary(results, elapsed, args.jobs))
        for r in results:
            if r.failure is not None:
                reproduce, shrink = commands(args, r)
                print(f"\nseed {r.seed}: {r.failure.check}: {r.failure.message.splitlines()[0]}\n"
                      f"  reproduce: {reproduce}\n  shrink:    {shrink}")
    return OK if all(r.passed for r in results) else FAILED


def _seed_done(args: argparse.Namespace, result: Result) -> None:
    if sys.stderr.isatty() and not args.json:
        verdict = "ok" if result.failure is None else f"FAIL {result.failure.check}"
        print(f"seed {result.seed}: {verdict} ({result.events:,} events, {result.wall:.1f} s)",
              file=sys.stderr)


def cmd_replay(args: argparse.Namespace) -> int:
    if args.html:
        writable(args.html, "--html")
        report_html.require()
    done = replay(args.trace)
    d = done.divergence
    if args.json:
        out = {"trace": done.path, "seed": done.seed, "diverged": d is not None, "notes": done.notes}
        if d is not None:
            out.update(index=d.index, time=d.time, node=d.node, expected=repr(d.expected), got=repr(d.got),
                       checkpoint={"records": d.checkpoint[0], "time": d.checkpoint[1]})
        else:
            assert done.result is not None, "a replay that did not diverge has its result"
            out.update(events=done.result.events, hash=done.result.trace_hash,
                       recorded_hash=done.recorded_hash, passed=done.result.passed)
        print(json.dumps(out, indent=2))
    elif d is not None:
        print(f"replay {done.path} (seed {done.seed}): DIVERGED at {d}")
    else:
        result = done.result
        assert result is not None, "a replay that did not diverge has its result"
        verdict = "passed" if result.failure is None else f"failed {result.failure.check} again"
        print(f"replay {done.path} (seed {done.seed}): identical, {result.events:,} events, "
              f"hash {result.trace_hash}; the run {verdict}")
    for note in done.notes:
        print(f"  note: {note}")
    if args.html:
        _write_html(args.html, report_html.page(done.path, done.result, d))
    return OK if d is None and done.result is not None and done.result.passed else FAILED


TRACE_KINDS_HELP = """\
event kinds (--kind), with the fields of --json's "fields":
  run      a process took a turn                  [serial]
  spawn    a process started                      ["spawn", serial, what was spawned]
  exit     a process ended                        ["exit", serial, reason]
  send     a delivery left its node               ["send", src, dst, serial, msg|reply|exit|down
                                                   (link|monitor when it found no connection),
                                                   fault ("", drop, duplicate, delay, reorder, cut,
                                                   noconnection),
                                                   arrival time (absent if it never arrives)]
  arr      a delivery reached its node            ["arr", dst, serial, kind, why it was lost if it was]
  commit   a store committed                      ["commit", node, commits on the node so far]
  lost     a power cut lost unsynced commits      ["lost", node, commits lost]
  fault    a fault was injected                   ["fault", kind, node or groups, details...]
  restart  a node booted again                    ["restart", node, incarnation]
  heal     a partition ended                      ["heal", "partition"]
  phase    a phase began                          ["phase", name]
  check    a check ran                            ["check", SYSTEM.CHECK]
  bug      a buggify site was drawn / fired       ["bug", site, enabled] / ["bug", site]
serial is the process's number on its node; pids print as <node.n>, or <node#k.n> on the
node's k-th restart. "record" numbers every record (with the time and node context
records), as a replay's divergence report does."""


def cmd_trace_show(args: argparse.Namespace) -> int:
    nodes = {n for option in args.node for n in option.split(",") if n}
    pids = {_pid(p) for option in args.process for p in option.split(",") if p}
    kinds = {k for option in args.kind for k in option.split(",") if k}
    unknown = sorted(kinds - set(EVENT_KINDS))
    if unknown:
        raise BadInput(f"--kind {', '.join(unknown)}: unknown; expected {', '.join(EVENT_KINDS)}")
    reader = TraceReader(args.trace)
    try:
        for event in events(reader.records()):
            if args.end is not None and event.time > args.end:
                return OK
            if ((args.start is not None and event.time < args.start) or (nodes and event.node not in nodes)
                    or (pids and event.pid not in pids) or (kinds and event.kind not in kinds)):
                continue
            print(json.dumps(event.as_json()) if args.json else f"#{event.record:<8} {event.text}")
        if reader.footer is None:  # the file ended early: say so, after what could be read
            reader.verify()
    finally:
        reader.close()
    return OK


def _pid(text: str) -> str:
    """A pid as `trace show` prints it: "counter1.7" and "<counter1.7>" both match."""
    text = text.strip()
    return text if text.startswith("<") else f"<{text}>"


def cmd_shrink(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    output = args.output or f"{Path(args.scenario).stem}.seed{args.seed}.shrunk.toml"
    writable(output, "-o")
    shrunk = shrink(scenario, args.seed, args.budget, log=lambda line: print(line, file=sys.stderr))
    if shrunk is None:
        print(f"seed {args.seed} passes {args.scenario}: nothing to shrink")
        return FAILED
    write(shrunk, output, f"{args.scenario} --seed {args.seed}{_override_args(args)}")
    print(f"shrunk in {shrunk.runs} runs: still fails {shrunk.failure.check} at "
          f"t={shrunk.failure.time:.6f} s")
    changed = [key for key in shrunk.before if shrunk.before[key] != shrunk.after.get(key)]
    if changed:
        print("  what shrank, original -> shrunk:")
    for key in changed:
        counts = f"{shrunk.before[key]:g} -> {shrunk.after.get(key):g}"
        print(f"    {key:<28} {counts:<14} {size_unit(key)}")
    print(f"wrote {output}\n  run it: letitcrash sim {shlex.quote(output)}")
    return OK


class _Progress:
    """A one-line progress bar on stderr (a TTY), redrawn at most 5 times a second."""

    def __init__(self) -> None:
        self.shown = 0.0
        self.started = time.monotonic()  # wall clock: display only

    def __call__(self, sim: Simulation, phase: str, total: float) -> None:
        now = time.monotonic()  # wall clock: display only
        if now - self.shown < 0.2:
            return
        self.shown = now
        done = min(1.0, sim.now / total) if total > 0 else 1.0
        bar = "#" * int(done * 24)
        line = (f"\r[{bar:<24}] t={sim.now:6.1f}/{total:.0f} s {phase:<8} "
                f"events {sim.trace.events:>10,}  faults {sum(sim.injected.values()):>5}  "
                f"restarts {sum(sim.restarts.values()):>5}  {now - self.started:5.1f} s")
        sys.stderr.write(line)
        sys.stderr.flush()

    def clear(self) -> None:
        sys.stderr.write("\r" + " " * 110 + "\r")
        sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
