"""
The status port's dashboard: one self-contained HTML page (inline CSS and
JavaScript, no external asset) that polls C{/status} every second and draws
a table of the ports with a sparkline each from C{/history}.

Stable hooks for tests and scripts: each port's row is
C{tr[data-port="<name>"]}; its cells have the classes C{name}, C{handler},
C{tls}, C{state}, C{current}, C{accepted}, C{closed}, C{rejected},
C{received}, C{sent}, C{errors} and C{activity}; numeric cells carry their
exact figure in C{data-value}.
"""

from __future__ import annotations

DASHBOARD_HTML = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>multiport status</title>
<link rel="icon" href="data:,">
<style>
:root {
  --bg: #f4f6f9; --panel: #ffffff; --text: #1c2430; --muted: #6a7483;
  --line: #e2e7ee; --head: #f8fafc; --hover: #f6f9fc;
  --down-row: rgba(239, 68, 68, .05);
  --green: #15803d; --green-bg: #dcfce7; --green-dot: #22c55e;
  --red: #b91c1c; --red-bg: #fee2e2; --red-dot: #ef4444;
  --amber: #a16207; --amber-bg: #fef3c7;
  --rate: #3b82f6; --rate-fill: rgba(59, 130, 246, .3); --conn: #8b5cf6;
  --mono: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas,
    monospace;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0f141a; --panel: #161c24; --text: #e6ebf1; --muted: #8b96a5;
    --line: #263040; --head: #1a212b; --hover: #1c2430;
    --green: #4ade80; --green-bg: #13361f; --red: #f87171; --red-bg: #3d1717;
    --amber: #fbbf24; --amber-bg: #3a2c0c; --rate-fill: rgba(59, 130, 246, .35);
    --down-row: rgba(239, 68, 68, .08);
  }
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--bg); color: var(--text);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans",
    sans-serif;
}
header {
  display: flex; align-items: center; gap: 14px; flex-wrap: wrap;
  padding: 14px 28px; background: var(--panel);
  border-bottom: 1px solid var(--line);
}
header h1 { margin: 0; font-size: 19px; font-weight: 650; letter-spacing: -.01em; }
header h1 .logo { color: var(--rate); margin-right: 6px; }
.pill {
  display: inline-block; padding: 1px 8px; border-radius: 999px;
  background: var(--head); border: 1px solid var(--line); color: var(--muted);
  font-size: 12px; font-family: var(--mono);
}
.meta { color: var(--muted); }
.meta b { color: var(--text); font-weight: 600; font-variant-numeric: tabular-nums; }
.spacer { flex: 1; }
.badge {
  display: inline-flex; align-items: center; gap: 6px; padding: 3px 10px;
  border-radius: 999px; font-size: 12.5px; font-weight: 600; white-space: nowrap;
}
.badge::before {
  content: ""; width: 8px; height: 8px; border-radius: 50%; background: currentColor;
}
.badge.up { color: var(--green); background: var(--green-bg); }
.badge.up::before { background: var(--green-dot); }
.badge.down { color: var(--red); background: var(--red-bg); }
.badge.down::before { background: var(--red-dot); }
.badge.tls { color: var(--green); background: var(--green-bg); }
.badge.tls::before { display: none; }
.badge.warn { color: var(--amber); background: var(--amber-bg); }
.live { color: var(--muted); font-size: 12.5px; font-variant-numeric: tabular-nums; }
.live .dot {
  display: inline-block; width: 7px; height: 7px; border-radius: 50%;
  background: var(--green-dot); margin-right: 5px; vertical-align: 1px;
}
.live.off { color: var(--red); }
.live.off .dot { background: var(--red-dot); }
main { padding: 22px 28px 28px; }
.cards {
  display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 14px;
  margin-bottom: 18px;
}
.card {
  background: var(--panel); border: 1px solid var(--line); border-radius: 10px;
  padding: 12px 16px;
}
.card .label {
  color: var(--muted); font-size: 11.5px; font-weight: 600;
  text-transform: uppercase; letter-spacing: .06em;
}
.card .value {
  font-size: 24px; font-weight: 650; font-variant-numeric: tabular-nums;
  margin-top: 2px; white-space: nowrap;
}
.card .value small { font-size: 14px; color: var(--muted); font-weight: 500; }
.panel {
  background: var(--panel); border: 1px solid var(--line); border-radius: 10px;
  overflow-x: auto;
}
table { width: 100%; border-collapse: collapse; }
th, td { padding: 9px 10px; text-align: left; white-space: nowrap; }
thead th {
  background: var(--head); color: var(--muted); font-size: 11.5px;
  font-weight: 600; text-transform: uppercase; letter-spacing: .05em;
  border-bottom: 1px solid var(--line);
}
thead tr.group th { padding-bottom: 0; border-bottom: 0; }
thead tr.group th.span {
  text-align: center; color: var(--text); opacity: .75;
}
thead tr.group th.span span {
  display: block; border-bottom: 1px solid var(--line); padding-bottom: 4px;
}
tbody td { border-bottom: 1px solid var(--line); vertical-align: middle; }
tbody tr:last-child td { border-bottom: 0; }
tbody tr:hover td { background: var(--hover); }
tbody tr.down td { background: var(--down-row); }
tbody tr.down td.name .port { color: var(--red); }
.num { text-align: right; font-variant-numeric: tabular-nums; }
td.name .port { font-family: var(--mono); font-size: 13px; font-weight: 600; }
td.name .sub, td.tls .sub { color: var(--muted); font-size: 12px; }
td.handler { font-weight: 500; }
td.tls .sub { margin-left: 6px; }
td .none, td.zero { color: var(--muted); }
td.hot { color: var(--red); font-weight: 600; }
td.warm { color: var(--amber); font-weight: 600; }
td.activity { width: 1%; padding-top: 4px; padding-bottom: 4px; }
td.activity svg { display: block; }
svg .base { stroke: var(--line); stroke-width: 1; }
svg .rate { fill: var(--rate-fill); stroke: var(--rate); stroke-width: 1; }
svg .conn { fill: none; stroke: var(--conn); stroke-width: 1.2; opacity: .9; }
.legend { text-transform: none; letter-spacing: 0; font-weight: 500; }
.legend i {
  display: inline-block; width: 12px; height: 3px; border-radius: 2px;
  vertical-align: middle; margin: 0 3px 0 8px;
}
.legend .c { background: var(--conn); }
.legend .r { background: var(--rate); }
tr.empty td { text-align: center; color: var(--muted); padding: 28px; }
body.stale .panel, body.stale .cards { opacity: .55; }
footer {
  display: flex; justify-content: space-between; margin-top: 12px;
  color: var(--muted); font-size: 12.5px;
}
footer a { color: var(--muted); font-family: var(--mono); margin-left: 14px; }
footer a:hover { color: var(--rate); }
</style>
</head>
<body class="stale">
<header>
  <h1><span class="logo">&#9670;</span>multiport</h1>
  <span class="pill" id="version">&hellip;</span>
  <span class="meta">up <b id="uptime">&hellip;</b></span>
  <span class="meta">started <b id="started">&hellip;</b></span>
  <span class="spacer"></span>
  <span class="badge" id="health">&hellip;</span>
  <span class="live off" id="live"><span class="dot"></span>
    <span id="live-text">connecting&hellip;</span></span>
</header>
<main>
  <section class="cards">
    <div class="card"><div class="label">Ports listening</div>
      <div class="value" id="card-ports">&ndash;</div></div>
    <div class="card"><div class="label">Open connections</div>
      <div class="value" id="card-open">&ndash;</div></div>
    <div class="card"><div class="label">Accepted</div>
      <div class="value" id="card-accepted">&ndash;</div></div>
    <div class="card"><div class="label">Throughput in / out</div>
      <div class="value" id="card-rate">&ndash;</div></div>
  </section>
  <div class="panel">
    <table id="ports">
      <thead>
        <tr class="group">
          <th colspan="4"></th>
          <th colspan="4" class="span"><span>Connections</span></th>
          <th colspan="2" class="span"><span>Bytes</span></th>
          <th colspan="2"></th>
        </tr>
        <tr>
          <th>Port</th><th>Handler</th><th>TLS</th><th>State</th>
          <th class="num">Open</th><th class="num">Accepted</th>
          <th class="num">Closed</th><th class="num">Rejected</th>
          <th class="num">In</th><th class="num">Out</th>
          <th class="num">Errors</th>
          <th>Activity</th>
        </tr>
      </thead>
      <tbody id="rows"></tbody>
    </table>
  </div>
  <footer>
    <span class="legend">Activity, last 2 min:<i class="c"></i>open connections<i
      class="r"></i>bytes/s in + out</span>
    <span class="links"><a href="./status">/status</a><a
      href="./metrics">/metrics</a><a href="./healthz">/healthz</a><a
      href="./history">/history</a></span>
  </footer>
</main>
<script>
"use strict";
const WINDOW_S = 120;
const KEEP_S = 300;
const SPARK_W = 132;
const SPARK_H = 34;
const COLUMNS = [
  "name", "handler", "tls", "state", "current", "accepted", "closed",
  "rejected", "received", "sent", "errors", "activity",
];
const NUMERIC = new Set([
  "current", "accepted", "closed", "rejected", "received", "sent", "errors",
]);
const rows = new Map();
let series = new Map();
let startedAt = null;
let needHistory = true;

const byId = (id) => document.getElementById(id);
const integer = new Intl.NumberFormat("en-US");
const fmtInt = (n) => integer.format(n);

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  const digits = i === 0 ? 0 : n < 10 ? 2 : n < 100 ? 1 : 0;
  return n.toFixed(digits) + " " + units[i];
}
const fmtRate = (n) => fmtBytes(n) + "/s";

function fmtDuration(s) {
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (d) return `${d}d ${h}h ${m}m`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${sec}s`;
  return `${sec}s`;
}
const fmtDate = (t) => new Date(t * 1000).toLocaleString("sv-SE").slice(0, 16);
const fmtTime = (t) => new Date(t * 1000).toLocaleTimeString("en-GB");

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function loadHistory(history) {
  series = new Map(Object.entries(history.ports).map(([k, v]) => [k, v.slice()]));
}

function record(status) {
  const now = status.now;
  const names = new Set();
  for (const p of status.ports) {
    names.add(p.name);
    let samples = series.get(p.name);
    if (!samples) {
      if (!p.listening) continue;
      samples = [];
      series.set(p.name, samples);
    }
    const last = samples[samples.length - 1];
    if (!last || last.t < now) {
      samples.push({
        t: now, current: p.connections.current,
        bytes_received: p.bytes.received, bytes_sent: p.bytes.sent,
      });
    }
    while (samples.length && samples[0].t < now - KEEP_S) samples.shift();
  }
  for (const name of [...series.keys()]) if (!names.has(name)) series.delete(name);
}

function rates(samples) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i], dt = b.t - a.t;
    if (dt <= 0) continue;
    out.push({
      t: b.t,
      in: Math.max(0, (b.bytes_received - a.bytes_received) / dt),
      out: Math.max(0, (b.bytes_sent - a.bytes_sent) / dt),
    });
  }
  return out;
}

function sparkline(td, samples, now) {
  const recent = samples.filter((s) => s.t >= now - WINDOW_S - 1);
  const raw = rates(recent);
  const rate = raw.map((r) => ({ t: r.t, v: r.in + r.out }));
  // The axis spans the samples there are, at least 30 s, at most WINDOW_S.
  const first = recent.length ? recent[0].t : now;
  const span = Math.min(WINDOW_S, Math.max(30, now - first));
  const peakRate = Math.max(0, ...rate.map((r) => r.v));
  const peakOpen = Math.max(0, ...recent.map((s) => s.current));
  const base = SPARK_H - 1.5, top = 3;
  const x = (t) => Math.max(0, SPARK_W - ((now - t) / span) * SPARK_W).toFixed(1);
  const y = (v, peak) => (base - (v / Math.max(peak, 1)) * (base - top)).toFixed(1);
  let area = "";
  if (rate.length) {
    area = `M${x(rate[0].t)},${base} ` +
      rate.map((r) => `L${x(r.t)},${y(r.v, peakRate)}`).join(" ") +
      ` L${x(rate[rate.length - 1].t)},${base} Z`;
  }
  let line = "";
  recent.forEach((s, i) => {
    line += i ? ` H${x(s.t)} V${y(s.current, peakOpen)}`
      : `M${x(s.t)},${y(s.current, peakOpen)}`;
  });
  td.innerHTML =
    `<svg width="${SPARK_W}" height="${SPARK_H}" viewBox="0 0 ${SPARK_W} ${SPARK_H}"` +
    ` role="img" aria-label="activity"><line class="base" x1="0" x2="${SPARK_W}"` +
    ` y1="${base}" y2="${base}"/><path class="rate" d="${area}"/>` +
    `<path class="conn" d="${line}"/></svg>`;
  td.title = `last ${fmtDuration(span)}: peak ${fmtInt(peakOpen)} open, ` +
    `peak ${fmtRate(peakRate)}`;
}

function recentRate(samples, now) {
  // Bytes per second over the last few seconds, steadier than one step.
  const recent = samples.filter((s) => s.t >= now - 5.5);
  if (recent.length < 2) return { in: 0, out: 0 };
  const a = recent[0], b = recent[recent.length - 1], dt = b.t - a.t;
  return {
    in: Math.max(0, (b.bytes_received - a.bytes_received) / dt),
    out: Math.max(0, (b.bytes_sent - a.bytes_sent) / dt),
  };
}

function span(cls, text) {
  const el = document.createElement("span");
  el.className = cls;
  el.textContent = text;
  return el;
}

function small(text) {
  const el = document.createElement("small");
  el.textContent = text;
  return el;
}

function setCell(td, text, value, title, tone) {
  td.textContent = text;
  if (value !== undefined) td.dataset.value = String(value);
  td.title = title || "";
  td.classList.toggle("zero", tone === "zero");
  td.classList.toggle("warm", tone === "warm");
  td.classList.toggle("hot", tone === "hot");
}

function makeRow(name) {
  const tr = document.createElement("tr");
  tr.dataset.port = name;
  for (const column of COLUMNS) {
    const td = document.createElement("td");
    td.className = column + (NUMERIC.has(column) ? " num" : "");
    tr.appendChild(td);
  }
  return tr;
}

function cells(tr) {
  const out = {};
  for (const td of tr.children) out[td.classList[0]] = td;
  return out;
}

function fillRow(tr, p, now) {
  const c = cells(tr);
  tr.classList.toggle("down", !p.listening);
  c.name.replaceChildren(span("port", p.name), document.createElement("br"),
    span("sub", p.listening && p.listening_since != null
      ? `listening for ${fmtDuration(now - p.listening_since)}` : "not listening"));
  c.handler.textContent = p.handler;
  if (p.tls) {
    const badge = span("badge tls", "TLS");
    const parts = [badge];
    if (p.certificate_expiry != null) {
      const days = (p.certificate_expiry - now) / 86400;
      const when = days < 0 ? "expired" : `${Math.floor(days)}d left`;
      if (days < 14) badge.className = days < 0 ? "badge down" : "badge warn";
      parts.push(span("sub", when));
      c.tls.title = "certificate expires " + fmtDate(p.certificate_expiry);
    }
    c.tls.replaceChildren(...parts);
  } else {
    c.tls.replaceChildren(span("none", "\u2014"));
    c.tls.title = "";
  }
  c.state.replaceChildren(p.listening ? span("badge up", "listening")
    : span("badge down", "down"));
  c.state.title = p.listening && p.listening_since != null
    ? "since " + fmtDate(p.listening_since) : "";
  const k = p.connections;
  setCell(c.current, fmtInt(k.current), k.current, "", k.current ? "" : "zero");
  setCell(c.accepted, fmtInt(k.accepted), k.accepted, "", k.accepted ? "" : "zero");
  setCell(c.closed, fmtInt(k.closed), k.closed, "", k.closed ? "" : "zero");
  const reasons = Object.entries(p.rejected_by_reason || {})
    .map(([r, n]) => `${r}: ${fmtInt(n)}`).join(", ");
  setCell(c.rejected, fmtInt(k.rejected), k.rejected, reasons,
    k.rejected ? "warm" : "zero");
  setCell(c.received, fmtBytes(p.bytes.received), p.bytes.received,
    `${fmtInt(p.bytes.received)} bytes`, p.bytes.received ? "" : "zero");
  setCell(c.sent, fmtBytes(p.bytes.sent), p.bytes.sent,
    `${fmtInt(p.bytes.sent)} bytes`, p.bytes.sent ? "" : "zero");
  const e = p.errors, errors = e.tls_handshake + e.protocol;
  setCell(c.errors, fmtInt(errors), errors,
    `TLS handshakes: ${fmtInt(e.tls_handshake)}, protocol: ${fmtInt(e.protocol)}`,
    errors ? "hot" : "zero");
  const samples = series.get(p.name) || [];
  sparkline(c.activity, samples, now);
  return recentRate(samples, now);
}

function render(status) {
  const now = status.now, ports = status.ports;
  byId("version").textContent = "v" + status.version;
  byId("uptime").textContent = fmtDuration(status.uptime_s);
  byId("started").textContent = fmtDate(status.started);
  const listening = ports.filter((p) => p.listening).length;
  const health = byId("health");
  const down = ports.length - listening;
  health.className = "badge " + (down ? "down" : "up");
  health.textContent = down ? `${down} of ${ports.length} ports down`
    : `all ${ports.length} ports listening`;
  const body = byId("rows");
  const seen = new Set();
  let open = 0, accepted = 0, rateIn = 0, rateOut = 0;
  for (const p of ports) {
    seen.add(p.name);
    let tr = rows.get(p.name);
    if (!tr) { tr = makeRow(p.name); rows.set(p.name, tr); }
    body.appendChild(tr);
    const rate = fillRow(tr, p, now);
    open += p.connections.current;
    accepted += p.connections.accepted;
    rateIn += rate.in;
    rateOut += rate.out;
  }
  for (const [name, tr] of rows) {
    if (!seen.has(name)) { tr.remove(); rows.delete(name); }
  }
  let empty = body.querySelector("tr.empty");
  if (!ports.length && !empty) {
    empty = document.createElement("tr");
    empty.className = "empty";
    empty.innerHTML = `<td colspan="${COLUMNS.length}">No ports configured.</td>`;
    body.appendChild(empty);
  } else if (ports.length && empty) {
    empty.remove();
  }
  byId("card-ports").replaceChildren(String(listening), " ",
    small(`of ${ports.length}`));
  byId("card-open").textContent = fmtInt(open);
  byId("card-accepted").textContent = fmtInt(accepted);
  byId("card-rate").replaceChildren(fmtRate(rateIn), " ",
    small("/ " + fmtRate(rateOut)));
  byId("live-text").textContent = "live \u00b7 " + fmtTime(now);
}

async function refresh() {
  const status = await getJSON("./status");
  if (status.started !== startedAt) {
    startedAt = status.started;
    needHistory = true;
  }
  if (needHistory) {
    loadHistory(await getJSON("./history"));
    needHistory = false;
  }
  record(status);
  render(status);
}

async function loop() {
  try {
    await refresh();
    document.body.classList.remove("stale");
    byId("live").className = "live";
  } catch (error) {
    needHistory = true;
    document.body.classList.add("stale");
    byId("live").className = "live off";
    byId("live-text").textContent = "offline \u00b7 retrying";
    byId("live").title = String(error);
  }
  setTimeout(loop, 1000);
}

loop();
</script>
</body>
</html>
"""

#: The page as served.
DASHBOARD = DASHBOARD_HTML.encode("utf-8")
