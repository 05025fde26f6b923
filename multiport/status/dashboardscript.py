"""
The dashboard's JavaScript: it polls C{/status} every second, fills the
table of ports (the hooks L{multiport.status.dashboard} documents) and
draws each port's sparkline from C{/history}.
"""

SCRIPT = r""""use strict";
const WINDOW_S = 120;
const KEEP_S = 300;
const SPARK_W = 132;
const SPARK_H = 34;
const COLUMNS = [
  "name", "handler", "tls", "state", "current", "accepted", "closed",
  "rejected", "received", "sent", "h2_open", "h2_total", "errors", "activity",
];
const UDP_COLUMNS = [
  "name", "handler", "state", "datagrams_in", "datagrams_out", "dropped",
  "received", "sent", "sessions", "errors", "activity",
];
const NUMERIC = new Set([
  "current", "accepted", "closed", "rejected", "received", "sent", "errors",
  "datagrams_in", "datagrams_out", "dropped", "sessions", "h2_open", "h2_total",
]);
const isUdp = (p) => p.protocol === "udp";
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
        t: now, current: isUdp(p) ? p.sessions : p.connections.current,
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

function makeRow(name, columns) {
  const tr = document.createElement("tr");
  tr.dataset.port = name;
  for (const column of columns) {
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

function fillCommon(c, tr, p, now) {
  tr.classList.toggle("down", !p.listening);
  c.name.replaceChildren(span("port", p.name), document.createElement("br"),
    span("sub", p.listening && p.listening_since != null
      ? `listening for ${fmtDuration(now - p.listening_since)}` : "not listening"));
  c.handler.textContent = p.handler;
  c.state.replaceChildren(p.listening ? span("badge up", "listening")
    : span("badge down", "down"));
  c.state.title = p.listening && p.listening_since != null
    ? "since " + fmtDate(p.listening_since) : "";
  setCell(c.received, fmtBytes(p.bytes.received), p.bytes.received,
    `${fmtInt(p.bytes.received)} bytes`, p.bytes.received ? "" : "zero");
  setCell(c.sent, fmtBytes(p.bytes.sent), p.bytes.sent,
    `${fmtInt(p.bytes.sent)} bytes`, p.bytes.sent ? "" : "zero");
}

function fillUdpRow(tr, p, now) {
  const c = cells(tr);
  fillCommon(c, tr, p, now);
  const d = p.datagrams;
  setCell(c.datagrams_in, fmtInt(d.received), d.received, "", d.received ? "" : "zero");
  setCell(c.datagrams_out, fmtInt(d.sent), d.sent, "", d.sent ? "" : "zero");
  const reasons = Object.entries(p.dropped_by_reason || {})
    .map(([r, n]) => `${r}: ${fmtInt(n)}`).join(", ");
  setCell(c.dropped, fmtInt(d.dropped), d.dropped, reasons,
    d.dropped ? "warm" : "zero");
  setCell(c.sessions, fmtInt(p.sessions), p.sessions, "", p.sessions ? "" : "zero");
  setCell(c.errors, fmtInt(p.errors.protocol), p.errors.protocol,
    `protocol: ${fmtInt(p.errors.protocol)}`, p.errors.protocol ? "hot" : "zero");
  const samples = series.get(p.name) || [];
  sparkline(c.activity, samples, now);
  return recentRate(samples, now);
}

function fillHTTP2(c, h) {
  if (!h) {
    for (const td of [c.h2_open, c.h2_total]) {
      setCell(td, "", undefined, "no HTTP/2 on this port");
      td.replaceChildren(span("none", "\u2014"));
      delete td.dataset.value;
    }
    return;
  }
  const s = h.streams, floods = h.floods.ping_settings + h.floods.rapid_reset;
  setCell(c.h2_open, fmtInt(s.current), s.current,
    `${fmtInt(h.connections.current)} HTTP/2 connections open`,
    s.current ? "" : "zero");
  setCell(c.h2_total, fmtInt(s.total), s.total,
    `${fmtInt(h.connections.total)} HTTP/2 connections, ` +
    `${fmtInt(h.stream_resets)} streams reset by clients, ` +
    `${fmtInt(floods)} connections ended for floods`,
    floods ? "warm" : s.total ? "" : "zero");
}

function fillRow(tr, p, now) {
  const c = cells(tr);
  fillCommon(c, tr, p, now);
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
    if (p.acme) {
      if (p.acme.next_renewal != null) {
        const failing = p.acme.failures > 0;
        parts.push(span(failing ? "sub warn" : "sub",
          (failing ? "retry " : "renews ") + fmtDate(p.acme.next_renewal)));
      }
      if (p.acme.last_error) {
        badge.className = "badge warn";
        c.tls.title += "\nlast ACME attempt failed: " + p.acme.last_error;
      }
    }
    c.tls.replaceChildren(...parts);
  } else {
    c.tls.replaceChildren(span("none", "\u2014"));
    c.tls.title = "";
  }
  const k = p.connections;
  setCell(c.current, fmtInt(k.current), k.current, "", k.current ? "" : "zero");
  setCell(c.accepted, fmtInt(k.accepted), k.accepted, "", k.accepted ? "" : "zero");
  setCell(c.closed, fmtInt(k.closed), k.closed, "", k.closed ? "" : "zero");
  const reasons = Object.entries(p.rejected_by_reason || {})
    .map(([r, n]) => `${r}: ${fmtInt(n)}`).join(", ");
  setCell(c.rejected, fmtInt(k.rejected), k.rejected, reasons,
    k.rejected ? "warm" : "zero");
  fillHTTP2(c, p.http2);
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
  const body = byId("rows"), udpBody = byId("udp-rows");
  const seen = new Set();
  let open = 0, accepted = 0, rateIn = 0, rateOut = 0;
  for (const p of ports) {
    seen.add(p.name);
    const udp = isUdp(p);
    let tr = rows.get(p.name);
    if (!tr) {
      tr = makeRow(p.name, udp ? UDP_COLUMNS : COLUMNS);
      rows.set(p.name, tr);
    }
    (udp ? udpBody : body).appendChild(tr);
    const rate = udp ? fillUdpRow(tr, p, now) : fillRow(tr, p, now);
    if (!udp) {
      open += p.connections.current;
      accepted += p.connections.accepted;
    }
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
  byId("udp-panel").hidden = !ports.some(isUdp);
  byId("card-open").textContent = fmtInt(open);
  byId("card-accepted").textContent = fmtInt(accepted);
  byId("card-rate").replaceChildren(fmtRate(rateIn), " ",
    small("/ " + fmtRate(rateOut)));
  renderWebSocket(ports);
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
"""
