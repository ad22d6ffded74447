// The operations dashboard: asks for an admin token, then follows GET /v1/admin/dashboard/events
// (one `metrics` event a second, aggregated by the api from every process's metrics beacon) and
// draws it. Everything is computed server-side; this file only keeps two minutes of points.
import { $, fmt, show, storeToken, takeToken } from "./common.js";
import { LineChart } from "./charts.js";

const TOKEN_KEY = "flashsale.admin-token";
const STATUS_COLORS = {
  pending: "#1a56b8", confirmed: "#1b7a35", failed: "#b3261e", needs_reconciliation: "#8f4a00",
};
const OUTCOME_COLORS = {
  reserved: "#1b7a35", succeeded: "#1b7a35", sold_out: "#5c6370", replayed: "#6b3fb3",
  declined: "#b3261e", rate_limited: "#8f4a00", overloaded: "#a3317a",
};

const charts = {
  purchases: new LineChart($("chart-purchases"), { colors: { ...OUTCOME_COLORS } }),
  latency: new LineChart($("chart-latency"), { colors: { p50: "#1b7a35", p95: "#8f4a00", p99: "#b3261e" } }),
  stock: new LineChart($("chart-stock"), { digits: 0 }),
  orders: new LineChart($("chart-orders"), { colors: { ...STATUS_COLORS }, digits: 0 }),
  lag: new LineChart($("chart-lag"), { digits: 0 }),
  payments: new LineChart($("chart-payments"), { colors: { ...OUTCOME_COLORS } }),
  sse: new LineChart($("chart-sse"), { digits: 0 }),
};
let stream = null;
let events = 0;

const sum = (obj) => Object.values(obj || {}).reduce((a, b) => a + (b || 0), 0);

function focusSale(doc) {
  return (doc.sales || []).find((s) => s.sale_id === doc.focus) || (doc.sales || [])[0] || null;
}

function render(doc) {
  const t = doc.t;
  const sale = focusSale(doc);
  charts.purchases.push(t, doc.purchases || {});
  charts.latency.push(t, doc.ack_ms || {});
  charts.stock.push(t, Object.fromEntries((doc.sales || []).map((s) => [s.sale_id, s.remaining])));
  charts.orders.push(t, sale ? {
    pending: sale.pending, confirmed: sale.confirmed, failed: sale.failed,
    needs_reconciliation: sale.needs_reconciliation,
  } : {});
  charts.lag.push(t, doc.queue_lag || {});
  charts.payments.push(t, doc.payments || {});
  charts.sse.push(t, doc.sse_clients || {});

  $("tile-purchases").textContent = fmt(sum(doc.purchases), 1);
  $("tile-p99").textContent = fmt(doc.ack_ms ? doc.ack_ms.p99 : null, 1);
  $("tile-remaining").textContent = fmt(sale ? sale.remaining : null);
  $("tile-confirmed").textContent = fmt(sale ? sale.confirmed : null);
  $("tile-lag").textContent = fmt(sum(doc.queue_lag));
  $("tile-sse").textContent = fmt(sum(doc.sse_clients));
  const procs = doc.processes || {};
  $("tile-processes").textContent = fmt(sum(procs));
  $("tile-processes").title = Object.entries(procs).map(([k, n]) => `${k} ${n}`).join(", ");
  renderSales(doc.sales || []);

  events += 1;
  document.body.dataset.events = String(events);
  const kinds = Object.entries(procs).map(([k, n]) => `${n} ${k}`).join(", ") || "no process reporting";
  const problem = doc.error ? ` (${doc.error})` : "";
  show($("conn-state"), `Live: ${kinds}${problem}.`, doc.error ? "warn" : "good");
}

function renderSales(sales) {
  const rows = sales.map((s) => {
    const tr = document.createElement("tr");
    const cells = [s.sale_id, s.state.replace("_", " "), s.initial_stock, s.remaining, s.pending,
      s.confirmed, s.failed, s.needs_reconciliation];
    cells.forEach((value, i) => {
      const cell = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) cell.scope = "row";
      cell.textContent = typeof value === "number" ? fmt(value) : value;
      tr.appendChild(cell);
    });
    return tr;
  });
  $("sales-body").replaceChildren(...rows);
}

function connect(token, sale) {
  stream?.close();
  if (!token) return;
  const params = new URLSearchParams({ access_token: token });
  if (sale) params.set("sale", sale);
  show($("conn-state"), "Connecting…", "info");
  stream = new EventSource(`/v1/admin/dashboard/events?${params}`);
  stream.addEventListener("metrics", (e) => render(JSON.parse(e.data)));
  stream.addEventListener("error", () => {
    if (stream.readyState === EventSource.CLOSED) {
      show($("conn-state"), "Refused: the token must be a valid admin token (flashsale token NAME --admin).", "bad");
    } else {
      show($("conn-state"), "Connection lost; reconnecting…", "warn");
    }
  });
}

$("connect-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("admin-token").value.trim();
  storeToken(TOKEN_KEY, token);
  connect(token, $("sale-filter").value.trim());
});

const token = takeToken(TOKEN_KEY);
const sale = new URLSearchParams(location.search).get("sale") || "";
$("admin-token").value = token;
$("sale-filter").value = sale;
connect(token, sale);
document.body.dataset.ready = "true";
