"""
The status port's dashboard: one self-contained HTML page (inline CSS and
JavaScript, no external asset) that polls C{/status} every second and draws
a table of the ports with a sparkline each from C{/history}.

Stable hooks for tests and scripts: each port's row is
C{tr[data-port="<name>"]}; its cells have the classes C{name}, C{handler},
C{tls}, C{state}, C{current}, C{accepted}, C{closed}, C{rejected},
C{received}, C{sent}, C{h2_open}, C{h2_total}, C{errors} and C{activity}
(C{h2_open} and C{h2_total}: the HTTP/2 streams open now and so far, a dash
on ports that don't speak HTTP/2); numeric cells carry their exact figure
in C{data-value}.  UDP ports have rows of their own, in the
table C{#udp-ports}, with the cells C{name}, C{handler}, C{state},
C{datagrams_in}, C{datagrams_out}, C{dropped}, C{received}, C{sent},
C{sessions}, C{errors} and C{activity}: a UDP port has no connections.
Ports that served WebSocket have rows in a third table
(L{multiport.status.dashboardwebsocket}).
The other instances (C{[cluster] peers}) are links in C{nav#peers}, one
C{a.peer} each, written into the page when it is served.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from urllib.parse import urlsplit

from multiport.status.dashboardscript import SCRIPT
from multiport.status.dashboardwebsocket import WEBSOCKET_PANEL, WEBSOCKET_SCRIPT

#: Where the peers' links go in the page.
_PEERS = "<!--peers-->"

#: The page around its script: markup and CSS.
_BEFORE_SCRIPT = r"""<!DOCTYPE html>
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
nav.peers { color: var(--muted); font-size: 12.5px; }
nav.peers a { color: var(--rate); font-family: var(--mono); margin-left: 8px; }
</style>
</head>
<body class="stale">
<header>
  <h1><span class="logo">&#9670;</span>multiport</h1>
  <span class="pill" id="version">&hellip;</span>
  <span class="meta">up <b id="uptime">&hellip;</b></span>
  <span class="meta">started <b id="started">&hellip;</b></span>
  <!--peers-->
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
          <th colspan="2" class="span"><span>HTTP/2 streams</span></th>
          <th colspan="2"></th>
        </tr>
        <tr>
          <th>Port</th><th>Handler</th><th>TLS</th><th>State</th>
          <th class="num">Open</th><th class="num">Accepted</th>
          <th class="num">Closed</th><th class="num">Rejected</th>
          <th class="num">In</th><th class="num">Out</th>
          <th class="num">Open</th><th class="num">Total</th>
          <th class="num">Errors</th>
          <th>Activity</th>
        </tr>
      </thead>
      <tbody id="rows"></tbody>
    </table>
  </div>
  <div class="panel" id="udp-panel" hidden>
    <table id="udp-ports">
      <thead>
        <tr class="group">
          <th colspan="3"></th>
          <th colspan="3" class="span"><span>Datagrams</span></th>
          <th colspan="2" class="span"><span>Bytes</span></th>
          <th colspan="3"></th>
        </tr>
        <tr>
          <th>UDP port</th><th>Handler</th><th>State</th>
          <th class="num">In</th><th class="num">Out</th>
          <th class="num">Dropped</th>
          <th class="num">In</th><th class="num">Out</th>
          <th class="num">Sessions</th><th class="num">Errors</th>
          <th>Activity</th>
        </tr>
      </thead>
      <tbody id="udp-rows"></tbody>
    </table>
  </div>
"""
# WebSocket: its panel between the UDP panel and the footer.
_AFTER_PANELS = r"""  <footer>
    <span class="legend">Activity, last 2 min:<i class="c"></i>open connections<i
      class="r"></i>bytes/s in + out</span>
    <span class="links"><a href="./status">/status</a><a
      href="./metrics">/metrics</a><a href="./healthz">/healthz</a><a
      href="./history">/history</a></span>
  </footer>
</main>
<script>
"""
_AFTER_SCRIPT = r"""</script>
</body>
</html>
"""

_PAGE = (
    _BEFORE_SCRIPT
    + WEBSOCKET_PANEL
    + _AFTER_PANELS
    + SCRIPT
    + WEBSOCKET_SCRIPT
    + _AFTER_SCRIPT
)
DASHBOARD_HTML = _PAGE.replace(_PEERS, "")


#: The page as served to a daemon without peers.
DASHBOARD = DASHBOARD_HTML.encode("utf-8")

_HEAD, _, _REST = _PAGE.partition(_PEERS)


def _label(peer: str) -> str:
    """
    What a peer's link says: its host and port, and its path when it has
    one.
    """
    parts = urlsplit(peer)
    path = parts.path.rstrip("/")
    return parts.netloc + path


def peerLinks(peers: Sequence[str]) -> str:
    """
    The C{nav#peers} element linking to C{peers} (validated URLs,
    escaped here all the same).
    """
    links = "".join(
        f'<a class="peer" href="{html.escape(peer, quote=True)}">'
        f"{html.escape(_label(peer))}</a>"
        for peer in peers
    )
    return f'<nav class="peers" id="peers">peers{links}</nav>'


def dashboardPage(peers: Sequence[str]) -> bytes:
    """
    The page as served to a daemon with C{peers} (the other instances).
    """
    if not peers:
        return DASHBOARD
    return (_HEAD + peerLinks(peers) + _REST).encode("utf-8")
