// The buyer page: one sale, its live stock (SSE from the sse server), sign-in, the Buy button
// (POST with an Idempotency-Key, re-sent unchanged after a network error) and the order's status
// as the workers settle it (/v1/me/events). With the sale's waiting room on, Buy first joins the
// line and waits for an admission pass.
import {
  $, claims, fmt, newKey, problemCode, problemText, retryAfterMs, show, sleep, storeToken,
  takeToken,
} from "./common.js";

const TOKEN_KEY = "flashsale.token";
const FINAL = new Set(["confirmed", "failed"]);
const STATUS_TEXT = {
  pending: ["Order placed: paying…", "info"],
  confirmed: ["Confirmed: it is yours.", "good"],
  failed: ["Payment failed: the unit went back on sale.", "bad"],
  needs_reconciliation: ["Payment is being checked with the bank…", "warn"],
};
const NETWORK_RETRIES = 4;

const page = {
  config: { sse_url: "", sale_id: null },
  saleId: "",
  sale: null,
  token: "",
  saleStream: null,
  meStream: null,
  queueStream: null,
  order: null,
  // Order events seen on this page, by order id: a fast payment can settle an order before its
  // 202 arrives (a slow network, or the answer replayed after a retry).
  seen: new Map(),
  buying: false,
  pass: null,
  passExpiresAt: 0,
  queued: false,
  queueRetryMs: 2000,
};

const sseUrl = (path) => (page.config.sse_url || "") + path;
const authHeader = () => ({ Authorization: `Bearer ${page.token}` });
const waitingRoom = () => Boolean(page.sale && page.sale.waiting_room && page.sale.waiting_room.enabled);

// --- the sale -------------------------------------------------------------------------------

function renderSale() {
  const sale = page.sale;
  if (!sale) return;
  $("sale-name").textContent = sale.name;
  $("sale-price").textContent = `€ ${sale.price}`;
  const badge = $("sale-state");
  badge.dataset.state = sale.state;
  badge.textContent = sale.state.replace("_", " ");
  $("remaining").textContent = fmt(sale.remaining);
  $("initial").textContent = fmt(sale.initial_stock);
  const meter = $("stock-meter");
  meter.value = sale.initial_stock ? sale.remaining / sale.initial_stock : 0;
  document.title = `${sale.name} · flashsale`;
  renderCountdown();
  renderBuy();
}

function clock(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const parts = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  return parts.map((n) => String(n).padStart(2, "0")).join(":");
}

function renderCountdown() {
  const sale = page.sale;
  if (!sale) return;
  const now = Date.now();
  const opens = Date.parse(sale.opens_at);
  const closes = Date.parse(sale.closes_at);
  let text = "";
  if (sale.state === "scheduled") text = now < opens ? `Opens in ${clock(opens - now)}` : "Opening…";
  else if (sale.state === "open") text = `Open · closes in ${clock(closes - now)}`;
  else if (sale.state === "sold_out") text = "Sold out. Units come back if a payment fails.";
  else if (sale.state === "closed") text = "This sale has ended.";
  $("countdown").textContent = text;
}

function applyStock(doc) {
  if (!page.sale) return;
  page.sale = { ...page.sale, remaining: doc.remaining, state: doc.state ?? page.sale.state };
  renderSale();
}

async function loadSale(saleId) {
  page.saleId = saleId;
  $("sale-id").value = saleId;
  const response = await fetch(`/v1/sales/${encodeURIComponent(saleId)}`);
  if (!response.ok) {
    $("sale-name").textContent = response.status === 404 ? `No sale called “${saleId}”` : "The sale could not be loaded";
    show($("live-state"), await problemText(response));
    return;
  }
  page.sale = await response.json();
  renderSale();
  watchSale();
}

function watchSale() {
  page.saleStream?.close();
  const stream = new EventSource(sseUrl(`/v1/sales/${encodeURIComponent(page.saleId)}/events`));
  page.saleStream = stream;
  stream.addEventListener("open", () => show($("live-state"), "Live: stock updates as it sells."));
  stream.addEventListener("error", () => show($("live-state"), "Live updates interrupted; reconnecting…"));
  stream.addEventListener("sale", (e) => {
    page.sale = JSON.parse(e.data);
    renderSale();
  });
  stream.addEventListener("stock", (e) => applyStock(JSON.parse(e.data)));
  stream.addEventListener("state", (e) => applyStock(JSON.parse(e.data)));
  stream.addEventListener("deleted", () => {
    stream.close();
    page.sale = { ...page.sale, state: "closed" };
    renderSale();
    show($("live-state"), "This sale was removed.");
  });
}

// --- account --------------------------------------------------------------------------------

function signIn(token) {
  page.token = token;
  storeToken(TOKEN_KEY, token);
  const who = token ? claims(token) : null;
  $("who").textContent = who ? `Signed in as ${who.sub}.` : "Not signed in.";
  $("sign-out").hidden = !token;
  $("signed-out").hidden = Boolean(token);
  page.meStream?.close();
  page.meStream = null;
  if (token) watchOrders();
  renderBuy();
}

function watchOrders() {
  const url = sseUrl(`/v1/me/events?access_token=${encodeURIComponent(page.token)}`);
  const stream = new EventSource(url);
  page.meStream = stream;
  stream.addEventListener("order", (e) => {
    const doc = JSON.parse(e.data);
    page.seen.set(doc.order_id, doc);
    if (page.order && doc.order_id === page.order.order_id) setOrderStatus(doc.status, doc.failure_reason);
  });
  stream.addEventListener("resync", () => refreshOrder());
  stream.addEventListener("error", () => {
    if (stream.readyState === EventSource.CLOSED) {
      show($("auth-message"), "Your session ended; sign in again.", "warn");
    }
  });
}

async function authenticate(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    show($("auth-message"), await problemText(response), "bad");
    return;
  }
  const doc = await response.json();
  signIn(doc.token);
  show($("auth-message"), path.endsWith("register") ? "Account created; you are signed in." : "Signed in.", "good");
}

// --- buying ---------------------------------------------------------------------------------

function buyBlocker() {
  const sale = page.sale;
  if (!sale) return "Loading the sale…";
  if (!page.token) return "Sign in to buy.";
  if (page.buying) return "Sending your order…";
  if (sale.state === "scheduled") return "The sale has not opened yet.";
  if (sale.state === "sold_out") return "Sold out for now.";
  if (sale.state === "closed") return "This sale has ended.";
  if (waitingRoom() && page.queued && !page.pass) return "You are in the line; Buy unlocks when it is your turn.";
  return "";
}

function renderBuy() {
  const blocker = buyBlocker();
  const button = $("buy");
  // aria-disabled, not disabled: the button stays in the Tab order and says why it cannot act.
  button.setAttribute("aria-disabled", blocker ? "true" : "false");
  button.textContent = waitingRoom() && !page.pass ? "Join the line" : "Buy now";
  $("buy-hint").textContent = blocker;
}

function setOrderStatus(status, failureReason) {
  if (!page.order) return;
  page.order.status = status;
  const [text, tone] = STATUS_TEXT[status] || [status, "info"];
  const reason = failureReason ? ` (${failureReason.replaceAll("_", " ")})` : "";
  const el = $("order");
  el.dataset.status = status;
  show(el, `${text}${reason} Order ${page.order.order_id.slice(0, 13)}…`, tone);
}

async function refreshOrder() {
  if (!page.order || FINAL.has(page.order.status)) return;
  const response = await fetch(`/v1/orders/${page.order.order_id}`, { headers: authHeader() });
  if (response.ok) {
    const doc = await response.json();
    setOrderStatus(doc.status, doc.failure_reason);
  }
}

// The stream tells us first; this only covers a stream that was not connected yet or dropped.
async function followOrder(orderId) {
  const until = Date.now() + 120_000;
  while (page.order && page.order.order_id === orderId && !FINAL.has(page.order.status) && Date.now() < until) {
    await sleep(3000);
    await refreshOrder();
  }
}

async function purchase() {
  const key = newKey();
  const headers = { ...authHeader(), "Idempotency-Key": key, "Content-Type": "application/json" };
  if (page.pass) headers["Admission-Pass"] = page.pass;
  const url = `/v1/sales/${encodeURIComponent(page.saleId)}/orders`;
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(url, { method: "POST", headers, body: '{"quantity":1}' });
    } catch {
      // No answer: the order may or may not exist. The same key makes the retry safe.
      if (attempt >= NETWORK_RETRIES) {
        show($("order"), "No connection. Try again: your order will not be placed twice.", "bad");
        return;
      }
      show($("order"), "Network trouble; retrying with the same request…", "warn");
      await sleep(500 * 2 ** attempt);
      continue;
    }
    if (response.status === 202) {
      const doc = await response.json();
      page.order = doc;
      const early = page.seen.get(doc.order_id);
      setOrderStatus(early ? early.status : doc.status, early ? early.failure_reason : null);
      followOrder(doc.order_id);
      return;
    }
    const code = await problemCode(response);
    const retryable = response.status === 429 || response.status === 503 || code === "request_in_progress";
    if (retryable && attempt < NETWORK_RETRIES) {
      show($("order"), "Busy; retrying in a moment…", "warn");
      await sleep(retryAfterMs(response));
      continue;
    }
    if (code === "not_admitted") {
      page.pass = null;
      page.queued = false;
    }
    show($("order"), await problemText(response), "bad");
    return;
  }
}

// One look at the line (POST is idempotent per user: the same ticket each time). The answer
// carries the pass once admitted, so polling at its Retry-After also works without the stream.
async function lookInQueue() {
  const response = await fetch(`/v1/sales/${encodeURIComponent(page.saleId)}/queue`, {
    method: "POST",
    headers: authHeader(),
  });
  if (!response.ok) {
    show($("queue"), await problemText(response), "bad");
    page.queued = false;
    return null;
  }
  const doc = await response.json();
  page.queued = true;
  page.queueRetryMs = retryAfterMs(response, 2000);
  if (doc.pass) admit(doc);
  else showPosition(doc);
  return doc;
}

function admit(doc) {
  page.pass = doc.pass;
  page.passExpiresAt = Date.parse(doc.expires_at);
  const until = new Date(page.passExpiresAt).toLocaleTimeString();
  show($("queue"), `It is your turn: buy before ${until}.`, "good");
  page.queueStream?.close();
  renderBuy();
}

async function pollQueue() {
  while (page.queued && !page.pass && waitingRoom()) {
    await sleep(page.queueRetryMs);
    if (!(await lookInQueue())) return;
  }
}

async function joinQueue() {
  const doc = await lookInQueue();
  if (!doc || page.pass) return;
  page.queueStream?.close();
  const params = new URLSearchParams({ ticket: doc.ticket, access_token: page.token });
  const path = `/v1/sales/${encodeURIComponent(page.saleId)}/queue/events?${params}`;
  const stream = new EventSource(sseUrl(path));
  page.queueStream = stream;
  stream.addEventListener("position", (e) => showPosition(JSON.parse(e.data)));
  stream.addEventListener("admitted", (e) => admit(JSON.parse(e.data)));
  // Sold out pauses admission; a unit that comes back (a failed payment) resumes it.
  stream.addEventListener("sold_out", () => {
    show($("queue"), "Sold out for now; you keep your place in case units come back.", "warn");
  });
  stream.addEventListener("closed", () => {
    show($("queue"), "The sale has ended.", "bad");
    page.queued = false;
    stream.close();
    renderBuy();
  });
  stream.addEventListener("waiting_room_disabled", () => {
    page.sale = { ...page.sale, waiting_room: { ...page.sale.waiting_room, enabled: false } };
    page.queued = false;
    stream.close();
    show($("queue"), "The line is gone: buy directly.", "info");
    renderBuy();
  });
  stream.addEventListener("error", () => {
    if (stream.readyState === EventSource.CLOSED && page.queued) pollQueue();
  });
  renderBuy();
}

function showPosition(doc) {
  const wait = doc.estimated_wait_s ? `, about ${fmt(doc.estimated_wait_s)} s to wait` : "";
  show($("queue"), `You are number ${fmt(doc.position)} in line${wait}.`, "info");
}

async function onBuy() {
  if ($("buy").getAttribute("aria-disabled") === "true") return;
  if (page.pass && Date.now() > page.passExpiresAt) page.pass = null;
  page.buying = true;
  renderBuy();
  try {
    if (waitingRoom() && !page.pass) await joinQueue();
    else await purchase();
  } finally {
    page.buying = false;
    renderBuy();
  }
}

// --- start ----------------------------------------------------------------------------------

function wire() {
  $("buy").addEventListener("click", onBuy);
  $("auth-form").addEventListener("submit", (e) => {
    e.preventDefault();
    authenticate("/v1/auth/login", { email: $("email").value, password: $("password").value });
  });
  $("register").addEventListener("click", () => {
    authenticate("/v1/auth/register", {
      email: $("email").value,
      password: $("password").value,
      name: $("name").value || $("email").value,
    });
  });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    signIn(token);
    show($("auth-message"), token ? "Token in use." : "", "good");
  });
  $("sign-out").addEventListener("click", () => {
    signIn("");
    show($("auth-message"), "Signed out.", "info");
  });
  $("sale-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("sale-id").value.trim();
    if (id) location.search = `?sale=${encodeURIComponent(id)}`;
  });
  setInterval(renderCountdown, 250);
}

async function main() {
  wire();
  const response = await fetch("/v1/pages/config");
  if (response.ok) page.config = await response.json();
  signIn(takeToken(TOKEN_KEY));
  const saleId = new URLSearchParams(location.search).get("sale") || page.config.sale_id;
  if (saleId) await loadSale(saleId);
  else {
    $("sale-name").textContent = "No sale is on right now";
    show($("live-state"), "Enter a sale id to look at one.");
  }
  document.body.dataset.ready = "true";
}

main();
