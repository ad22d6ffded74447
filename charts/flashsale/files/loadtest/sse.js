// SSE clients during a purchase run (k6): CLIENTS listeners each hold GET /v1/sales/{id}/events open for HOLD_S
// while buyers purchase on the same sale at PURCHASE_RATE per second, so the stream has stock changes to carry.
//
// k6 has no SSE client: a listener is a streaming http.get that ends at its own timeout (k6 then hands over the
// body received so far, error_code 1050), and the body is parsed afterwards. So k6 measures what it can see:
// connect success (a `sale` snapshot came first), time to the first event (time to first byte), stock events
// per client, and whether each client's last event matches the sale's final state (a client left behind shows
// an older seq). The delay of each event cannot be timed this way (the body arrives in one piece at the end);
// `flashsale bench` times it with a small Python asyncio client alongside this script.
//
// Env: BASE_URL (API), SSE_URL (http://127.0.0.1:8001), SALE_ID (default sse-<run>), JWT_SECRET, CLIENTS (500),
// HOLD_S (20; more than CONNECT_S + 2), CONNECT_S (5: listeners connect spread over this), PURCHASE_RATE (200; 0: no buyers),
// CREATE_SALE (true: create and open the sale if missing, STOCK 10000000, PER_USER_LIMIT 1000), RUN_ID,
// SUMMARY_PATH.
// Run locally: k6 run -e JWT_SECRET=... -e SSE_URL=http://127.0.0.1:8001 loadtest/sse.js

import http from 'k6/http';
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  CONTRACT_STATUSES, TREND_STATS, awaitSale, baseUrl, env, envBool, envFloat, envInt, metricValue, newKey,
  readSale, requireSecret, sseUrl, summaryOutputs, thresholdResults, tokenFor, trend,
} from './lib.js';

const BASE_URL = baseUrl();
const SSE_URL = sseUrl();
const RUN_ID = env('RUN_ID', '');
const SALE_ID = env('SALE_ID', '');
const CLIENTS = envInt('CLIENTS', 500);
const HOLD_S = envFloat('HOLD_S', 20);
const CONNECT_S = envFloat('CONNECT_S', 5);
const PURCHASE_RATE = envInt('PURCHASE_RATE', 200);
// k6's own error code for a request that hit its timeout: for a listener, the normal end.
const K6_TIMEOUT = 1050;

const scenarios = {
  listeners: {
    executor: 'per-vu-iterations',
    vus: CLIENTS,
    iterations: 1,
    exec: 'listen',
    maxDuration: `${Math.ceil(CONNECT_S + HOLD_S + 30)}s`,
  },
};
if (PURCHASE_RATE > 0) {
  scenarios.buyers = {
    executor: 'constant-arrival-rate',
    rate: PURCHASE_RATE,
    timeUnit: '1s',
    // Buyers run while every listener is connected: from the end of the connect spread until a second
    // before the first listener's hold ends, so every listener's last event can show the final stock.
    startTime: `${Math.ceil(CONNECT_S)}s`,
    duration: `${Math.max(1, Math.floor(HOLD_S - 1 - Math.ceil(CONNECT_S)))}s`,
    preAllocatedVUs: Math.max(10, Math.ceil(PURCHASE_RATE * 0.02)),
    maxVUs: Math.max(20, Math.ceil(PURCHASE_RATE * 0.2)),
    exec: 'buy',
  };
}

export const options = {
  scenarios,
  thresholds: {
    sse_connected: ['rate==1'],
    sse_first_event_ms: ['p(99)<1000'],
    sse_up_to_date: ['rate>0.99'],
    'checks{kind:purchase}': ['rate==1'],
  },
  summaryTrendStats: TREND_STATS,
  setupTimeout: '120s',
};

const connected = new Rate('sse_connected');
const firstEventMs = new Trend('sse_first_event_ms', true);
const stockEvents = new Trend('sse_stock_events_per_client');
const upToDate = new Rate('sse_up_to_date');
const heartbeats = new Counter('sse_heartbeats');
const purchases = new Counter('sse_purchases');

export function setup() {
  requireSecret();
  const runId = RUN_ID || String(Date.now());
  const saleId = SALE_ID || `sse-${runId}`;
  awaitSale(BASE_URL, saleId, {
    states: ['open'],
    waitS: 60,
    create: envBool('CREATE_SALE', true)
      ? { stock: envInt('STOCK', 10000000), perUserLimit: envInt('PER_USER_LIMIT', 1000), durationS: 3600 }
      : null,
  });
  return { runId, saleId };
}

// The frames of an event stream body: [{event, id, data}] (comments counted apart).
export function parseEvents(body) {
  const events = [];
  let comments = 0;
  for (const frame of String(body || '').split('\n\n')) {
    const event = { event: 'message', id: null, data: '' };
    let any = false;
    for (const line of frame.split('\n')) {
      if (line.startsWith(':')) {
        comments += 1;
      } else if (line.startsWith('event:')) {
        event.event = line.slice(6).trim();
        any = true;
      } else if (line.startsWith('id:')) {
        event.id = line.slice(3).trim();
        any = true;
      } else if (line.startsWith('data:')) {
        event.data += line.slice(5).trim();
        any = true;
      }
    }
    if (any) {
      events.push(event);
    }
  }
  return { events, comments };
}

export function listen(data) {
  // Spread the connects over CONNECT_S, as a page load would be, not one SYN flood.
  sleep(Math.random() * CONNECT_S);
  const res = http.get(`${SSE_URL}/v1/sales/${data.saleId}/events`, {
    timeout: `${HOLD_S}s`,
    tags: { kind: 'sse' },
    responseCallback: http.expectedStatuses(200),
  });
  const { events, comments } = parseEvents(res.body);
  const ok = (res.status === 200 || res.error_code === K6_TIMEOUT) && events.length > 0 && events[0].event === 'sale';
  connected.add(ok);
  check(res, { 'stream opens with a sale snapshot': () => ok }, { kind: 'sse' });
  heartbeats.add(comments);
  if (!ok) {
    return;
  }
  firstEventMs.add(res.timings.waiting);
  const stock = events.filter((e) => e.event === 'stock');
  stockEvents.add(stock.length);
  // Up to date: the last remaining seen equals the sale's remaining read right after the stream ended
  // (the buyers stopped a second before the first listener's hold ended).
  const last = stock.length ? JSON.parse(stock[stock.length - 1].data) : JSON.parse(events[0].data);
  const now = readSale(BASE_URL, data.saleId);
  upToDate.add(now.status === 200 && now.json('remaining') === last.remaining);
}

const BODY = JSON.stringify({ quantity: 1 });

export function buy(data) {
  const vu = exec.vu.idInTest;
  const n = exec.vu.iterationInInstance;
  const user = `sse-${data.runId}-${vu}-${n % 64}`;
  const res = http.post(`${BASE_URL}/v1/sales/${data.saleId}/orders`, BODY, {
    headers: {
      Authorization: `Bearer ${tokenFor(user)}`,
      'Content-Type': 'application/json',
      'Idempotency-Key': newKey(data.runId, vu, n),
    },
    tags: { kind: 'purchase' },
    responseCallback: http.expectedStatuses(...CONTRACT_STATUSES),
  });
  if (res.status !== 0) {
    check(res, { 'purchase answer is a contract status': (r) => CONTRACT_STATUSES.includes(r.status) }, {
      kind: 'purchase',
    });
  }
  purchases.add(1);
}

export function handleSummary(data) {
  const setupData = data.setup_data || {};
  const summary = {
    script: 'sse.js',
    sse_url: SSE_URL,
    sale_id: setupData.saleId || null,
    clients: CLIENTS,
    hold_s: HOLD_S,
    purchase_rate: PURCHASE_RATE,
    purchases: metricValue(data, 'sse_purchases', 'count') || 0,
    connected_rate: metricValue(data, 'sse_connected', 'rate'),
    connected: metricValue(data, 'sse_connected', 'passes'),
    first_event_ms: trend(data, 'sse_first_event_ms'),
    stock_events_per_client: trend(data, 'sse_stock_events_per_client'),
    up_to_date_rate: metricValue(data, 'sse_up_to_date', 'rate'),
    heartbeats: metricValue(data, 'sse_heartbeats', 'count') || 0,
    thresholds: thresholdResults(data),
  };
  summary.passed = Object.values(summary.thresholds).every(Boolean);
  return summaryOutputs(summary, [
    `sse.js: ${summary.connected}/${CLIENTS} clients connected, first event p95 ` +
      `${summary.first_event_ms.p95} ms, ${summary.purchases} purchases during the hold, up to date ` +
      `${summary.up_to_date_rate}; thresholds ${summary.passed ? 'passed' : 'FAILED'}`,
  ]);
}
