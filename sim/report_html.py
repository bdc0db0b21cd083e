"""A run as one HTML page: what happened when, on which node, and where it failed.

    letitcrash sim scenarios/counter_broken.toml --html report.html
    letitcrash replay run.trace --html report.html

    page = report_html.page("run.trace", result)     # the trace the run recorded, its Result

One self-contained file: inline CSS, charts as inline SVG, no script and nothing fetched.
From the top: a banner (PASS; FAIL with the check, its time and message; or a replay's
divergence), the numbers, a timeline with a lane per node (injected faults, process
crashes, processes started, node reboots, downtime, partitions, skewed clocks, full
disks, commits lost) and a lane of checks under the phases; for a failing run the last
events before the failure, each in the column of its node, whose header links to that
node's lane; charts over virtual time of client latency, completed requests and network
deliveries (matplotlib); the text report. Needs matplotlib: `pip install
'letitcrash[report]'`.
"""
from __future__ import annotations

import html
import io
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from . import report
from .trace import Divergence, Event, TraceReader, events

if TYPE_CHECKING:
    from .runner import Result

INSTALL = "pip install 'letitcrash[report]'  (or: pip install matplotlib)"
BINS = 400  # timeline marks are merged per 1/BINS of the run: the page stays small
LAST = 40  # events shown before a failure
NORMAL_EXITS = ("normal", "shutdown")
FAULT_COLORS = {
    "kill_process": "#e8590c", "kill_tree": "#d9480f", "kill_node": "#c92a2a", "power_loss": "#862e9c",
    "partition": "#1971c2", "clock_skew": "#e67700", "disk_full": "#5c940d", "commit_fail": "#a61e4d",
    "commit_delay": "#f08c00", "drop": "#495057", "duplicate": "#0b7285", "delay": "#868e96",
    "reorder": "#5f3dc4", "cut": "#1971c2",
}


class ReportError(Exception):
    """The page cannot be made here (matplotlib is missing); the message says how to fix it."""


def require() -> None:
    """Raise ReportError now, before a run, if the charts cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError(f"--html draws its charts with matplotlib, which is not installed: {INSTALL}") from None


# -- what the trace says ------------------------------------------------------------------


@dataclass
class _Lane:
    name: str
    marks: dict[tuple[str, int], list] = field(default_factory=dict)  # (category, bin) -> [count, title, color]
    bands: list[tuple[float, float, str, str]] = field(default_factory=list)  # start, end, class, title
    sends: list[int] = field(default_factory=list)  # deliveries sent, per chart bin


@dataclass
class _Story:
    end: float
    lanes: dict[str, _Lane]
    checks: _Lane
    phases: list[tuple[str, float]]
    last: list[Event]
    faults: deque[Event] = field(default_factory=lambda: deque(maxlen=6))  # the last injected


def _read(path: str, end: float, stop: int | None) -> _Story:
    """One pass over the trace's events up to virtual time `end`; `stop` ends it at that
    record (a divergence)."""
    end = end or 1.0
    story = _Story(end, {}, _Lane("checks"), [], [])
    last: deque[Event] = deque(maxlen=LAST)
    reader = TraceReader(path)
    try:
        _tell(story, _until(events(reader.records()), stop), last)
    finally:
        reader.close()
    story.last = list(last)
    return story


def _until(evs: Iterator[Event], stop: int | None) -> Iterator[Event]:
    for e in evs:
        if stop is not None and e.record >= stop:
            return
        yield e


def _tell(story: _Story, evs: Iterator[Event], last: deque[Event]) -> None:
    """Put each event where the page shows it."""
    end = story.end
    down: dict[str, tuple[float, str]] = {}
    partition: tuple[float, float, list] | None = None
    for e in evs:
        last.append(e)
        lane: Any = None  # every event that marks a lane has a node
        if e.node is not None:
            lane = story.lanes.get(e.node) or story.lanes.setdefault(e.node, _Lane(e.node))
        k = e.kind
        if k == "send":
            _count(lane.sends, e.time, end)
            fault = e.fields[5]
            if fault:
                _mark(lane, "fault", e.time, end, f"{fault}: {e.text}", FAULT_COLORS.get(fault, "#c92a2a"))
        elif k == "exit" and not _normal(e.fields[2]):
            _mark(lane, "crash", e.time, end, e.text, "#c92a2a")
        elif k == "spawn" and e.time > 0:
            _mark(lane, "start", e.time, end, e.text, "#2b8a3e")
        elif k == "lost":
            story.faults.append(e)
            _mark(lane, "fault", e.time, end, f"power cut lost {e.fields[2]} commits", "#862e9c")
        elif k == "restart":
            _mark(lane, "reboot", e.time, end, f"node {e.node} rebooted (incarnation {e.fields[2]})", "#2b8a3e")
            if e.node in down:
                since, why = down.pop(e.node)
                lane.bands.append((since, e.time, "down", f"{e.node} down ({why}) {since:.3f}-{e.time:.3f} s"))
        elif k == "check":
            _mark(story.checks, "check", e.time, end, f"check {e.fields[1]}", "#74c0fc")
        elif k == "phase":
            story.phases.append((e.fields[1], e.time))
        elif k == "heal" and partition is not None:
            partition = (partition[0], min(partition[1], e.time), partition[2])
        elif k == "fault":
            story.faults.append(e)
            kind = e.fields[1]
            color = FAULT_COLORS.get(kind, "#c92a2a")
            if kind == "partition":
                if partition is not None:
                    _partition_bands(story, partition)
                partition = (e.time, e.time + e.fields[4], e.fields[2])
                continue
            _mark(lane, "fault", e.time, end, e.text, color)
            if kind in ("kill_node", "power_loss") and e.node is not None:
                down[e.node] = (e.time, kind)
            elif kind in ("clock_skew", "disk_full"):
                span = e.fields[-1]
                what = f"clock {e.fields[3]:+.3f} s off" if kind == "clock_skew" else "disk full"
                lane.bands.append((e.time, e.time + span, kind, f"{e.node} {what} for {span:.3f} s"))
    if partition is not None:
        _partition_bands(story, partition)
    for name, (since, why) in down.items():
        story.lanes[name].bands.append((since, end, "down", f"{name} down ({why}) from {since:.3f} s"))


def _normal(reason: Any) -> bool:
    return reason in NORMAL_EXITS or (type(reason) is list and reason[:1] == ["shutdown"])


def _bin(t: float, end: float, bins: int) -> int:
    return min(bins - 1, int(t / end * bins))


def _count(series: list[int], t: float, end: float) -> None:
    if not series:
        series.extend([0] * CHART_BINS)
    series[_bin(t, end, CHART_BINS)] += 1


def _mark(lane: _Lane, category: str, t: float, end: float, title: str, color: str) -> None:
    key = (category, _bin(t, end, BINS))
    mark = lane.marks.get(key)
    if mark is None:
        lane.marks[key] = [1, title, color]
    else:
        mark[0] += 1


def _partition_bands(story: _Story, partition: tuple[float, float, list]) -> None:
    start, stop, groups = partition
    title = "partition: " + " | ".join(", ".join(g) for g in groups) + f" ({start:.3f}-{stop:.3f} s)"
    for group in groups:
        for name in group:
            lane = story.lanes.get(name) or story.lanes.setdefault(name, _Lane(name))
            lane.bands.append((start, stop, "partition", title))


# -- the page ---------------------------------------------------------------------------------

CHART_BINS = 120


def page(trace_path: str, result: Result | None, divergence: Divergence | None = None,
         command: str | None = None) -> str:
    """The HTML report of the run recorded at `trace_path`. `result` is what the run (or
    its replay) returned, None when a replay diverged (then `divergence` says where)."""
    require()
    started = time.perf_counter()  # wall clock: shown on the page only
    assert result is not None or divergence is not None, "a run's result, or where its replay diverged"
    story = _read(trace_path, result.simulated if result is not None else divergence.time,  # type: ignore[union-attr]
                  divergence.index if divergence is not None else None)
    failure = result.failure if result is not None else None
    fail_at = failure.time if failure is not None else (divergence.time if divergence else None)
    body = [_banner(trace_path, result, divergence, command), _tiles(result, story),
            _timeline(story, fail_at, failure.check if failure else "divergence" if divergence else None)]
    if failure is not None or divergence is not None:
        body.append(_last_events(story, failure.check if failure else None))
    body.append(_charts(story, result, fail_at))
    if result is not None:
        body.append(f"<details><summary>The text report</summary><pre>{_e(report.text(result, command))}"
                    "</pre></details>")
    took = time.perf_counter() - started
    body.append(f"<footer>letitcrash · trace blake2b {_e(result.trace_hash if result else '-')} · "
                f"this page took {took:.2f} s to make</footer>")
    title = "letitcrash: " + (f"{result.name} seed {result.seed}" if result else trace_path)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _banner(path: str, result: Result | None, divergence: Divergence | None, command: str | None) -> str:
    if divergence is not None:
        return (f"<header class='bad'><h1>DIVERGED at record #{divergence.index}, t={divergence.time:.6f} s</h1>"
                f"<p>{_e(divergence)}</p><p class=cmd>{_e(path)}</p></header>")
    assert result is not None, "a page needs a run's result or a divergence"
    where = f"{_e(result.name)} · seed {result.seed} · {_e(result.scenario)}"
    repro = f"<p class=cmd>{_e(command)}</p>" if command else ""
    failure = result.failure
    if failure is None:
        return f"<header class=good><h1>PASS · all {len(result.checks)} checks held</h1><p>{where}</p>{repro}</header>"
    message = "<br>".join(_e(line) for line in failure.message.splitlines())
    return (f"<header class=bad><h1>FAIL · {_e(failure.check)} at t={failure.time:.6f} s</h1>"
            f"<p class=msg>{message}</p><p>{where} · <a href='#last'>the last events before it</a></p>"
            f"{repro}</header>")


def _tiles(result: Result | None, story: _Story) -> str:
    if result is None:
        return ""
    held = sum(1 for c in result.checks.values() if c["ok"])
    tiles = [("events", f"{result.events:,}"), ("simulated", f"{result.simulated:.1f} s"),
             ("faults injected", f"{sum(result.faults.values()):,}"), ("processes raised", f"{result.crashes:,}"),
             ("restarts", f"{sum(result.restarts.values()):,}"), ("deliveries", f"{result.deliveries:,}"),
             ("checks held", f"{held} / {len(result.checks)}")]
    return "<section class=tiles>" + "".join(f"<div><b>{v}</b>{k}</div>" for k, v in tiles) + "</section>"


def _pct(t: float, end: float) -> str:
    return f"{100 * min(max(t, 0.0), end) / end:.3f}%"


def _timeline(story: _Story, fail_at: float | None, failed: str | None) -> str:
    end = story.end
    out = ["<section><h2>Timeline</h2><p class=legend>",
           "".join(f"<span class='key {c}'></span>{label} " for c, label in (
               ("fault", "fault injected"), ("crash", "process killed or crashed"), ("start", "process started"),
               ("reboot", "node rebooted"), ("check", "check ran"))),
           "<span class='key k-down'></span>node down <span class='key k-partition'></span>partitioned "
           "<span class='key k-clock_skew'></span>clock skewed <span class='key k-disk_full'></span>"
           "disk full · hover a mark for what it is</p><div class=timeline>"]
    out.append("<div class=lane><span class=name>phases</span><div class=track>")
    for i, (name, t) in enumerate(story.phases):
        stop = story.phases[i + 1][1] if i + 1 < len(story.phases) else end
        out.append(f"<span class='phase p{i % 3}' style='left:{_pct(t, end)};width:{_pct(stop - t, end)}'>"
                   f"{_e(name)}</span>")
    out.append("</div></div>")
    last_nodes = {e.node for e in story.last}
    for lane in [*story.lanes.values(), story.checks]:
        out.append(f"<div class=lane id='lane-{_e(lane.name)}'><span class=name>{_e(lane.name)}"
                   + ("<a class=lastlink href='#last' title='the last events before the failure'>▶</a>"
                      if failed and lane.name in last_nodes else "") + "</span><div class=track>")
        for start, stop, cls, title in lane.bands:
            out.append(f"<span class='band {cls}' style='left:{_pct(start, end)};"
                       f"width:max(2px,{_pct(stop - start, end)})' title='{_e(title)}'></span>")
        rows = {"fault": 0, "crash": 1, "start": 2, "reboot": 0, "check": 1}
        for (category, b), (count, title, color) in sorted(lane.marks.items(), key=lambda kv: kv[0][1]):
            label = f"{title}" if count == 1 else f"{count} × like: {title}"
            size = min(14, 6 + 2 * int(math.log2(count))) if count > 1 else 6
            out.append(f"<i class='m {category} r{rows[category]}' style='left:{100 * (b + 0.5) / BINS:.3f}%;"
                       f"background:{color};width:{size}px' title='{_e(label)}'></i>")
        out.append("</div></div>")
    if fail_at is not None:
        out.append(f"<div class=failline style='left:calc(var(--name) + (100% - var(--name) - 10px) * "
                   f"{min(fail_at, end) / end:.5f})'><span>✗ {_e(failed)} · t={fail_at:.3f} s</span></div>")
    ticks = _ticks(end)
    out.append("<div class=lane><span class=name>virtual s</span><div class='track axis'>"
               + "".join(f"<span style='left:{_pct(t, end)}'>{t:g}</span>" for t in ticks) + "</div></div>")
    out.append("</div></section>")
    return "".join(out)


def _ticks(end: float) -> list[float]:
    step = 10 ** math.floor(math.log10(end / 4)) if end > 0 else 1
    step *= 2 if end / step > 10 else 1
    step *= 2.5 if end / step > 10 else 1
    return [i * step for i in range(int(end / step) + 1)]


def _last_events(story: _Story, check: str | None) -> str:
    nodes = list(story.lanes)
    head = "".join(f"<th><a href='#lane-{_e(n)}'>{_e(n)}</a></th>" for n in nodes)
    rows = []
    for e in story.last:
        cells = [""] * (len(nodes) + 1)
        column = nodes.index(e.node) if e.node in story.lanes else len(nodes)
        cls = e.kind + (" crash" if e.kind == "exit" and not _normal(e.fields[2]) else "")
        short = e.text.split(" ", 1)[1]
        if e.node and short.startswith(e.node + " "):
            short = short[len(e.node) + 1:]
        cells[column] = f"<td class='{cls}' title='{_e(short)}'>{_e(short)}</td>"
        filled = "".join(c or "<td></td>" for c in cells)
        rows.append(f"<tr id='ev-{e.record}'><td class=t>#{e.record}</td><td class=t>{e.time:.6f}</td>{filled}</tr>")
    if check is not None:
        rows.append(f"<tr class=failrow><td class=t></td><td class=t></td><td colspan={len(nodes) + 1}>✗ "
                    f"{_e(check)} failed here</td></tr>")
    faults = "".join(f"<li><a href='#lane-{_e(e.node)}'>{_e(e.node)}</a> {_e(e.text)}</li>" if e.node else
                     f"<li>{_e(e.text)}</li>" for e in reversed(story.faults))
    return (f"<section id=last><h2>The last faults injected before it, newest first</h2><ul class=faults>"
            f"{faults or '<li>none</li>'}</ul><h2>The last {len(story.last)} events before the "
            f"{'failure' if check else 'divergence'}</h2><p class=legend>Each event is in the column of "
            "the node it happened on (a send on its sender, an arrival on its receiver); a column's name "
            "leads to its lane in the timeline.</p><table class=last><col class=r><col class=t>"
            f"<tr><th>record</th><th>t (s)</th>"
            f"{head}<th>simulator</th></tr>{''.join(rows)}</table></section>")


def _charts(story: _Story, result: Result | None, fail_at: float | None) -> str:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    import numpy as np

    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, selectable
    matplotlib.rcParams["svg.hashsalt"] = "letitcrash"  # the same run gives the same page
    series = result.series if result is not None else {}
    rows = 3 if series else 1
    fig = Figure(figsize=(11, 2.3 * rows))
    fig.subplots_adjust(left=0.07, right=0.99, top=1 - 0.35 / (2.3 * rows), bottom=0.5 / (2.3 * rows), hspace=0.45)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    width = story.end / CHART_BINS
    edges = np.arange(CHART_BINS) * width
    if series:
        lat, done = axes[0], axes[1]
        for op, s in series.items():
            times, values = np.asarray(s["times"]), np.asarray(s["values"])
            which = np.minimum(CHART_BINS - 1, (times / width).astype(int)) if len(times) else times
            p50 = [np.percentile(values[which == b], 50) if np.any(which == b) else np.nan for b in range(CHART_BINS)]
            p99 = [np.percentile(values[which == b], 99) if np.any(which == b) else np.nan for b in range(CHART_BINS)]
            line, = lat.step(edges, np.asarray(p99) * 1e3, where="post", label=f"{op} p99", lw=1.2)
            lat.step(edges, np.asarray(p50) * 1e3, where="post", label=f"{op} p50", lw=1, ls="--",
                     color=line.get_color())
            counts = np.asarray(s["counts"], dtype=float)
            per_bin = np.histogram((np.arange(len(counts)) + 0.5) * s["width"], bins=CHART_BINS,
                                   range=(0, story.end), weights=counts)[0]
            done.step(edges, per_bin / width, where="post", label=op, lw=1.2)
        lat.set_yscale("log")
        lat.yaxis.set_minor_formatter(NullFormatter())
        lat.set_ylabel("latency (ms)")
        lat.set_title("client request latency per time slice (p50 dashed, p99 solid)", loc="left", fontsize=10)
        done.set_ylabel("requests / s")
        done.set_title("requests completed per virtual second", loc="left", fontsize=10)
    net = axes[-1]
    for lane in story.lanes.values():
        if lane.sends:
            net.step(edges, np.asarray(lane.sends) / width, where="post", label=f"from {lane.name}", lw=1.2)
    net.set_ylabel("deliveries / s")
    net.set_title("network deliveries per virtual second, by sending node", loc="left", fontsize=10)
    net.set_xlabel("virtual time (s)")
    net.set_xlim(0, story.end)
    for ax in axes:
        for i, (_, t) in enumerate(story.phases):
            stop = story.phases[i + 1][1] if i + 1 < len(story.phases) else story.end
            ax.axvspan(t, stop, color=("#f1f3f5", "#fff9db", "#e7f5ff")[i % 3], zorder=0)
        if fail_at is not None:
            ax.axvline(fail_at, color="#c92a2a", lw=1.5, ls="--")
        if ax.has_data():
            ax.legend(loc="upper left", fontsize=8, ncols=4, frameon=False)
        ax.grid(alpha=0.3)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    return f"<section><h2>Over virtual time</h2><div class=chart>{svg[svg.index('<svg'):]}</div></section>"


CSS = """
:root{--name:110px;font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;color:#212529}
body{margin:0 auto;max-width:1200px;padding:12px 20px}
header{border-radius:8px;padding:10px 18px;margin-bottom:12px;color:#fff}
header.good{background:#2b8a3e} header.bad{background:#c92a2a}
header h1{margin:4px 0;font-size:24px} header p{margin:4px 0}
header .msg{font-family:ui-monospace,monospace;font-size:13px;background:#0002;padding:6px 8px;border-radius:4px}
.cmd{font-family:ui-monospace,monospace;font-size:13px;opacity:.9}
header a{color:#fff}
h2{font-size:17px;margin:18px 0 6px}
.tiles{display:flex;gap:8px;flex-wrap:wrap}
.tiles div{background:#f1f3f5;border-radius:6px;padding:6px 12px;min-width:90px;color:#495057;font-size:12px}
.tiles b{display:block;font-size:18px;color:#212529}
.legend{color:#495057;font-size:12px;margin:2px 0 6px}
.key{display:inline-block;width:8px;height:12px;border-radius:2px;margin:0 3px 0 8px;vertical-align:middle}
.key.fault{background:#e8590c}.key.crash{background:#c92a2a}.key.start{background:#2b8a3e}
.key.reboot{background:#2b8a3e;border-radius:50%;width:12px}.key.check{background:#74c0fc}
.k-down,.k-partition,.k-clock_skew,.k-disk_full{width:18px;opacity:.6}
.k-down{background:#868e96}.k-partition{background:#1971c2}.k-clock_skew{background:#e67700}.k-disk_full{background:#5c940d}
.timeline{position:relative;border:1px solid #dee2e6;border-radius:6px;padding:4px 0}
.lane{display:flex;align-items:stretch;min-height:30px;border-bottom:1px solid #f1f3f5}
.lane:target{background:#fff3bf}
.lane .name{width:var(--name);flex:none;padding:6px 8px;font-weight:600;font-size:13px;overflow:hidden}
.lastlink{color:#c92a2a;text-decoration:none;margin-left:4px}
.track{position:relative;flex:1;margin-right:10px}
.band{position:absolute;top:2px;bottom:2px;opacity:.35;border-radius:2px}
.band.down{background:repeating-linear-gradient(45deg,#495057 0 4px,#adb5bd 4px 8px);opacity:.5}
.band.partition{background:#1971c2}.band.clock_skew{background:#e67700}.band.disk_full{background:#5c940d}
.m{position:absolute;height:8px;border-radius:2px;transform:translateX(-50%)}
.m.r0{top:3px}.m.r1{top:11px}.m.r2{top:19px}
.m.reboot{height:12px;border-radius:50%;top:8px;outline:2px solid #fff}
.m.check{height:14px;top:8px;width:2px!important}
.phase{position:absolute;top:3px;bottom:3px;font-size:12px;padding:3px 6px;overflow:hidden;white-space:nowrap;
  border-left:2px solid #adb5bd}
.phase.p0{background:#f1f3f5}.phase.p1{background:#fff9db}.phase.p2{background:#e7f5ff}
.axis span{position:absolute;top:6px;font-size:11px;color:#868e96;transform:translateX(-50%)}
.failline{position:absolute;top:0;bottom:0;width:0;border-left:3px solid #c92a2a;pointer-events:none}
.failline span{position:absolute;top:-2px;right:6px;white-space:nowrap;background:#c92a2a;color:#fff;
  font-weight:700;font-size:12px;padding:2px 6px;border-radius:3px}
table.last{border-collapse:collapse;font:12px ui-monospace,monospace;width:100%;table-layout:fixed}
table.last col.r{width:62px}table.last col.t{width:84px}
table.last th{position:sticky;top:0;background:#e9ecef;padding:4px;text-align:left}
table.last td{padding:2px 6px;border-bottom:1px solid #f1f3f5;white-space:nowrap;overflow:hidden;
  text-overflow:ellipsis}
table.last td.t{color:#868e96}
td.send{color:#1864ab} td.arr{color:#0b7285} td.fault,td.crash{color:#c92a2a;font-weight:700}
td.check{color:#5c940d} td.commit{color:#5f3dc4}
tr.failrow td{background:#c92a2a;color:#fff;font-weight:700}
tr:target td{background:#fff3bf}
.chart svg{width:100%;height:auto}
details{margin:16px 0} pre{font-size:12px;background:#f8f9fa;padding:8px;overflow-x:auto}
ul.faults{font:12px ui-monospace,monospace;margin:0;padding-left:18px;color:#c92a2a}
footer{color:#868e96;font-size:11px;margin:20px 0}
"""
