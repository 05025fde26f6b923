"""
The dashboard's WebSocket panel: for each port that served WebSocket, its
open connections, messages and payload bytes each way, refused handshakes
and closes (from the C{websocket} block of C{/status}).

Stable hooks: the table C{#websocket-ports} (hidden while no port has
served WebSocket), a row C{tr[data-websocket-port="<name>"]} per port
with the cells C{name}, C{ws_open}, C{ws_messages_in}, C{ws_messages_out},
C{ws_bytes_in}, C{ws_bytes_out}, C{ws_refused} and C{ws_closes}, each
number's exact figure in C{data-value}; the titles of C{ws_refused} and
C{ws_closes} list them by reason and by close code.
"""

#: The panel's markup, after the UDP panel.
WEBSOCKET_PANEL = r"""  <div class="panel" id="websocket-panel" hidden>
    <table id="websocket-ports">
      <thead>
        <tr class="group">
          <th colspan="2"></th>
          <th colspan="2" class="span"><span>Messages</span></th>
          <th colspan="2" class="span"><span>Payload bytes</span></th>
          <th colspan="2"></th>
        </tr>
        <tr>
          <th>WebSocket port</th><th class="num">Open</th>
          <th class="num">In</th><th class="num">Out</th>
          <th class="num">In</th><th class="num">Out</th>
          <th class="num">Refused</th><th class="num">Closed</th>
        </tr>
      </thead>
      <tbody id="websocket-rows"></tbody>
    </table>
  </div>
"""

#: Called by the dashboard's render() with the ports of each /status.
WEBSOCKET_SCRIPT = r"""
const WS_COLUMNS = [
  "name", "ws_open", "ws_messages_in", "ws_messages_out", "ws_bytes_in",
  "ws_bytes_out", "ws_refused", "ws_closes",
];
const wsRows = new Map();

function wsByKey(table) {
  return Object.entries(table || {}).map(([k, n]) => `${k}: ${fmtInt(n)}`)
    .join(", ");
}

function renderWebSocket(ports) {
  const body = byId("websocket-rows");
  const shown = new Set();
  for (const p of ports) {
    const w = p.websocket;
    if (!w) continue;
    shown.add(p.name);
    let tr = wsRows.get(p.name);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.websocketPort = p.name;
      for (const column of WS_COLUMNS) {
        const td = document.createElement("td");
        td.className = column + (column === "name" ? "" : " num");
        tr.appendChild(td);
      }
      wsRows.set(p.name, tr);
    }
    body.appendChild(tr);
    const c = cells(tr);
    c.name.replaceChildren(span("port", p.name));
    const sum = (t) => Object.values(t || {}).reduce((a, b) => a + b, 0);
    const refused = sum(w.handshake_failures), closes = sum(w.close_codes);
    setCell(c.ws_open, fmtInt(w.connections), w.connections, "",
      w.connections ? "" : "zero");
    setCell(c.ws_messages_in, fmtInt(w.messages.in), w.messages.in, "",
      w.messages.in ? "" : "zero");
    setCell(c.ws_messages_out, fmtInt(w.messages.out), w.messages.out, "",
      w.messages.out ? "" : "zero");
    setCell(c.ws_bytes_in, fmtBytes(w.bytes.in), w.bytes.in,
      `${fmtInt(w.bytes.in)} bytes`, w.bytes.in ? "" : "zero");
    setCell(c.ws_bytes_out, fmtBytes(w.bytes.out), w.bytes.out,
      `${fmtInt(w.bytes.out)} bytes`, w.bytes.out ? "" : "zero");
    setCell(c.ws_refused, fmtInt(refused), refused, wsByKey(w.handshake_failures),
      refused ? "warm" : "zero");
    setCell(c.ws_closes, fmtInt(closes), closes,
      w.close_codes ? "by code: " + wsByKey(w.close_codes) : "",
      closes ? "" : "zero");
  }
  for (const [name, tr] of wsRows) {
    if (!shown.has(name)) { tr.remove(); wsRows.delete(name); }
  }
  byId("websocket-panel").hidden = !shown.size;
}
"""
