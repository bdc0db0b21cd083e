// letitcrash observer page: one server-sent event stream keeps every view live.
"use strict";

const params = new URLSearchParams(location.search);
if (params.has("token")) {
  sessionStorage.setItem("observer-token", params.get("token"));
  history.replaceState(null, "", location.pathname);  // the token leaves the address bar
}
const token = sessionStorage.getItem("observer-token") || "";
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
};
// the node shown (a cluster's page: picked in the header; null: the first, or the only one)
const onNode = (path) => view.node === null ? path
  : path + (path.includes("?") ? "&" : "?") + "node=" + encodeURIComponent(view.node);
const api = (path, opts = {}) => fetch(onNode(path), {
  ...opts, headers: { ...(opts.headers || {}), Authorization: "Bearer " + token },
});

const view = { node: null, sort: "mailbox", limit: 50, query: "", history: [], open: new Map(), detail: null, crashes: new Set() };
let events = null;

// -- the stream ------------------------------------------------------------------------------

function connect() {
  if (events) events.close();
  const q = new URLSearchParams({ token, sort: view.sort, limit: view.limit, query: view.query });
  events = new EventSource(onNode("/api/events?" + q));
  events.addEventListener("hello", (e) => hello(JSON.parse(e.data)));
  events.addEventListener("overview", (e) => overview(JSON.parse(e.data)));
  events.addEventListener("processes", (e) => processes(JSON.parse(e.data)));
  events.addEventListener("tree", (e) => tree(JSON.parse(e.data)));
  events.addEventListener("crash", (e) => crash(JSON.parse(e.data)));
  events.onopen = () => { $("live").textContent = "live"; $("live").classList.remove("off"); };
  events.onerror = () => { $("live").textContent = "offline"; $("live").classList.add("off"); };
}

function hello(h) {
  $("node").textContent = h.node;
  const pick = $("nodes");
  pick.hidden = h.nodes.length < 2;
  pick.replaceChildren(...h.nodes.map((n) => el("option", "", n)));
  pick.value = h.node;
}

$("nodes").addEventListener("change", () => {
  view.node = $("nodes").value;
  view.history = [];
  view.crashes.clear();
  $("crashes").replaceChildren();
  view.detail = null;
  $("detail").hidden = true;
  connect();
});

// -- node overview and charts ----------------------------------------------------------------

const fmt = (n) => n === null || n === undefined ? "–" : n >= 1e6 ? (n / 1e6).toFixed(1) + "M"
  : n >= 1e4 ? (n / 1e3).toFixed(1) + "k" : Number.isInteger(n) ? String(n) : n.toFixed(1);
const bytes = (n) => n === null || n === undefined ? "–" : n >= 1 << 30 ? (n / (1 << 30)).toFixed(1) + " GiB"
  : n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + " MiB" : n >= 1024 ? (n / 1024).toFixed(1) + " KiB" : n + " B";

function overview(o) {
  $("s-processes").textContent = fmt(o.processes);
  $("s-runq").textContent = fmt(o.run_queue);
  $("s-mailbox").textContent = fmt(o.mailbox_total);
  $("s-restarts").textContent = fmt(o.totals.restarts);
  $("s-crashes").textContent = fmt(o.totals.crashes);
  if (o.store) {
    $("s-store").textContent = bytes(o.store.bytes);
    $("s-store-label").textContent = `store · ${fmt(o.store.commits)} commits (${o.store.mode})`;
  } else {
    $("s-store-label").textContent = "no store";
  }
  for (const p of o.history) view.history.push(p);
  view.history = view.history.slice(-300);
  chart("c-processes", [view.history.map((p) => p.processes)]);
  chart("c-turns", [view.history.map((p) => p.turns)]);
  chart("c-restarts", [view.history.map((p) => p.restarts), view.history.map((p) => p.crashes)]);
  chart("c-commits", [view.history.map((p) => p.commits), view.history.map((p) => p.commit_ms)]);
}

function chart(id, series) {
  const canvas = $(id), ctx = canvas.getContext("2d");
  const w = canvas.width = canvas.clientWidth * devicePixelRatio, h = canvas.height = 90 * devicePixelRatio;
  ctx.clearRect(0, 0, w, h);
  const colors = ["#2f6fde", "#e0702b"];
  series.forEach((values, i) => {
    const max = Math.max(1e-9, ...values.filter((v) => v !== null));
    ctx.strokeStyle = colors[i]; ctx.lineWidth = 1.5 * devicePixelRatio; ctx.beginPath();
    let started = false;
    values.forEach((v, x) => {
      if (v === null) return;
      const px = values.length < 2 ? w : (x / (values.length - 1)) * w, py = h - 4 - (v / max) * (h - 16);
      started ? ctx.lineTo(px, py) : ctx.moveTo(px, py); started = true;
    });
    ctx.stroke();
    const last = values.length ? values[values.length - 1] : null;
    ctx.fillStyle = colors[i]; ctx.font = `${11 * devicePixelRatio}px sans-serif`;
    ctx.fillText(last === null ? "–" : fmt(last), i ? w * 0.55 : 4, 12 * devicePixelRatio);
  });
}

// -- supervision trees -----------------------------------------------------------------------

function tree(roots) {
  const box = $("tree");
  box.replaceChildren();
  if (!roots.length) { box.append(el("p", "muted", "no supervision tree on this node")); return; }
  const ul = el("ul");
  roots.forEach((r) => ul.append(treeNode(r, "")));
  box.append(ul);
}

function treeLabel(t) {
  const line = el("span", "row");
  line.append(el("span", "id", t.id ?? t.name ?? "-"), " ");
  line.append(el("span", "pid", t.pid ?? "(not running)"), " ");
  line.append(el("span", "tag", t.strategy ? `${t.type} ${t.strategy}` : (t.runs || t.type)));
  if (t.restarts !== null && t.restarts !== undefined) {
    line.append(" ", el("span", "restarts" + (t.restarts ? " hot" : ""), `restarts=${t.restarts}`));
  }
  if (t.mailbox) line.append(" ", el("span", "tag", `mailbox=${t.mailbox}`));
  if (t.pid) line.dataset.pid = t.pid;
  line.addEventListener("click", (e) => { if (t.pid) { e.preventDefault(); openDetail(t.pid); } });
  return line;
}

function treeNode(t, path) {
  const key = path + "/" + (t.id ?? t.pid);
  const li = el("li");
  li.dataset.id = t.id ?? "";
  if (t.pid) li.dataset.pid = t.pid;
  const count = t.children.length + t.omitted;
  if (!count) {
    const leaf = el("div", "leaf");
    leaf.append(treeLabel(t));
    li.append(leaf);
    return li;
  }
  const details = el("details");
  details.open = view.open.has(key) ? view.open.get(key) : count <= 20;  // large ones start collapsed
  details.addEventListener("toggle", () => view.open.set(key, details.open));
  const summary = el("summary");
  summary.append(treeLabel(t));
  if (t.strategy === "dynamic" || t.omitted) summary.append(" ", el("span", "tag", `children=${count}`));
  details.append(summary);
  const ul = el("ul");
  t.children.forEach((c) => ul.append(treeNode(c, key)));
  if (t.omitted) ul.append(el("li", "more", `… ${t.omitted} more`));
  details.append(ul);
  li.append(details);
  return li;
}

// -- processes -------------------------------------------------------------------------------

function processes(rows) {
  const body = $("processes").tBodies[0];
  body.replaceChildren();
  for (const r of rows) {
    const tr = el("tr");
    tr.dataset.pid = r.pid;
    tr.append(el("td", "pid", r.pid), el("td", "", r.name ?? ""), el("td", "", r.kind), el("td", "", r.status),
      el("td", "num", fmt(r.mailbox)), el("td", "num", fmt(r.turns)), el("td", "num", bytes(r.memory)));
    tr.addEventListener("click", () => openDetail(r.pid));
    body.append(tr);
  }
  $("proc-count").textContent = `top ${rows.length} by ${view.sort}`;
}

document.querySelectorAll("th[data-sort]").forEach((th) => th.addEventListener("click", () => {
  view.sort = th.dataset.sort;
  document.querySelectorAll("th[data-sort]").forEach((o) => o.classList.toggle("sorted", o === th));
  connect();
}));
let searching = null;
$("search").addEventListener("input", () => {
  clearTimeout(searching);
  searching = setTimeout(() => { view.query = $("search").value.trim(); connect(); }, 250);
});
$("limit").addEventListener("change", () => { view.limit = Number($("limit").value); connect(); });

// -- crash reports ---------------------------------------------------------------------------

function crash(r) {
  const key = r.pid + " " + r.at;
  if (view.crashes.has(key)) return;  // a new stream sends the recent reports again
  view.crashes.add(key);
  const li = el("li");
  const when = new Date(r.at * 1000).toLocaleTimeString();
  li.append(el("span", "muted", when + " "), el("span", "pid", r.pid), " ", r.name ? r.name + " " : "",
    "crashed with ", el("code", "", r.reason));
  li.title = r.traceback || "";
  $("crashes").prepend(li);
  while ($("crashes").children.length > 200) $("crashes").lastChild.remove();
  $("crash-count").textContent = `${view.crashes.size} seen`;
}

// -- one process -----------------------------------------------------------------------------

const FIELDS = [["pid", "pid"], ["name", "name"], ["kind", "spawned as"],
  ["status", "status"], ["current_function", "current function"], ["mailbox", "mailbox"],
  ["turns", "turns"], ["messages_in", "messages in"], ["messages_out", "messages out"],
  ["memory", "memory (est.)"], ["last_message", "last message"], ["parent", "parent"], ["links", "links"],
  ["monitors", "monitors"], ["monitored_by", "monitored by"], ["trap_exit", "trap exit"],
  ["dropped", "dropped"], ["state", "state"]];

async function openDetail(pid) {
  view.detail = pid;
  $("detail").hidden = false;
  $("d-trace").hidden = true;
  $("d-trace").textContent = "";
  $("d-message").textContent = "";
  await refreshDetail();
}

async function refreshDetail() {
  const pid = view.detail;
  if (!pid) return;
  const res = await api("/api/process?pid=" + encodeURIComponent(pid));
  if (view.detail !== pid) return;
  $("d-title").textContent = pid;
  if (res.status === 404) {
    // A kill's answer already says the process is gone; the next refresh keeps it.
    if (!$("d-message").textContent) $("d-message").textContent = "this process has exited";
    return;
  }
  const p = await res.json();
  const dl = $("d-fields");
  dl.replaceChildren();
  for (const [key, label] of FIELDS) {
    let v = p[key];
    if (key === "memory") v = bytes(v);
    if (Array.isArray(v)) v = v.length ? v.join(" ") : "none";
    dl.append(el("dt", "", label), el("dd", "", v === null || v === undefined ? "–" : String(v)));
    dl.lastChild.dataset.field = key;
  }
  const c = p.last_crash;
  $("d-crash").textContent = c ? `${c.pid} crashed with ${c.reason}\nlast message: ${c.last_message}\n\n${c.traceback || ""}` : "none";
}
setInterval(refreshDetail, 1000);

$("d-close").addEventListener("click", () => { view.detail = null; $("detail").hidden = true; });

$("kill").addEventListener("click", async () => {
  const pid = view.detail;
  const res = await api("/api/kill", { method: "POST", body: JSON.stringify({ pid }),
    headers: { "Content-Type": "application/json" } });
  const answer = await res.json();
  $("d-message").textContent = answer.killed ? `killed ${pid}: watch its supervisor restart it`
    : (answer.error || `${pid} was not alive`);
});

let tracing = null;
$("trace").addEventListener("click", () => {
  if (tracing) tracing.close();
  const out = $("d-trace");
  out.hidden = false;
  out.textContent = "";
  const q = new URLSearchParams({ token, target: view.detail,
    max_events: $("t-events").value, seconds: $("t-seconds").value });
  tracing = new EventSource(onNode("/api/trace?" + q));
  tracing.addEventListener("trace", (e) => {
    const t = JSON.parse(e.data);
    out.textContent += `${t.at.toFixed(3)} ${t.pid} ${t.event}${t.detail ? " " + t.detail : ""}\n`;
  });
  const end = (text) => { out.textContent += text + "\n"; tracing.close(); tracing = null; };
  tracing.addEventListener("end", (e) => end(`-- trace ended: ${JSON.parse(e.data)} events`));
  tracing.addEventListener("failed", (e) => end(`-- ${JSON.parse(e.data).error}`));
});

connect();
