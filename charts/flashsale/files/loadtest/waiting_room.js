// A flash sale behind its virtual waiting room (k6): a crowd joins the queue around the opening, each buyer waits
// its turn politely, then buys with the admission pass it was given (docs/waiting-room.md).
//
// JOINERS buyers (user `wr-<run>-<n>`) arrive evenly over JOIN_S seconds from the start, the opening PRE_OPEN_S
// seconds in (the first arrivals form the pre-queue). A waiting buyer holds no k6 VU: each of the VUS virtual
// users runs its share of buyers concurrently (async functions, http.asyncRequest, timers), so 100,000 people
// waiting minutes cost 100,000 promises, not 100,000 VUs. Each buyer:
//  1. joins: POST /v1/sales/{id}/queue -> 202 {ticket, position, estimated_wait_s} (+ pass once admitted);
//     429/503/no answer: waits (Retry-After) and joins again (the same ticket comes back); 409 sold_out /
//     sale_closed: done.
//  2. waits its turn: looks again (the same POST, idempotent per user) when the answer's Retry-After says it is
//     worth it (half the estimated wait, 1-30 s; never sooner than MIN_POLL_S), until the answer carries `pass`;
//     409 sold_out or sale_closed ends the wait. No buyer polls faster than the server asks.
//  3. buys once with `Admission-Pass: <pass>`: 202 reserved, 409 sold_out / purchase_limit_reached: done;
//     429/503/no answer: the same Idempotency-Key again after Retry-After (a 503 store_unavailable or a lost
//     answer may hide a reservation: the replay returns it). 403 not_admitted would be a purchase outside the
//     admission order: counted, and a threshold fails on it.
// Reported: joins/s, join and look latency, time in the queue (first join answer -> first answer with the pass,
// as the buyer saw it) percentiles, admissions/s seen, the purchase outcomes and the purchase error rate
// (answers outside the contract, plus any 403). The chart mounts this folder into the in-cluster k6 Job.
//
// Env: BASE_URL (http://127.0.0.1:8000), SALE_ID (wr-demo), JWT_SECRET (required), JOINERS (3000), JOIN_S (10),
// PRE_OPEN_S (5), VUS (50), MIN_POLL_S (0.5), MAX_WAIT_S (600: a buyer gives up after this long in the queue),
// MAX_RETRIES (5), RETRY_CAP_S (5), TIMEOUT (10s), TOKEN_TTL_S (3600), WAIT_OPEN_S (120), CREATE_SALE (true:
// create the sale, opening PRE_OPEN_S after setup, with STOCK 1000, PRICE 49.99, DURATION_S 300, PER_USER_LIMIT 1,
// MODE fifo, ADMIT_PER_SECOND 100, SESSION_S 120), MAX_FAILED_RATE (0.001), SUMMARY_PATH, RUN_ID.
// Run locally: k6 run -e JWT_SECRET=... loadtest/waiting_room.js

import http from 'k6/http';
import exec from 'k6/execution';
import { check, fail } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { setTimeout } from 'k6/timers';
import {
  TREND_STATS, adminHeaders, awaitSale, baseUrl, env, envBool, envFloat, envInt, forgetToken, metricValue, newKey,
  problemCode, requireSecret, retryDelay, summaryOutputs, thresholdResults, tokenFor, trend,
} from './lib.js';

const BASE_URL = baseUrl();
const SALE_ID = env('SALE_ID', 'wr-demo');
const JOINERS = envInt('JOINERS', 3000);
const JOIN_S = envFloat('JOIN_S', 10);
const PRE_OPEN_S = envFloat('PRE_OPEN_S', 5);
const VUS = Math.min(envInt('VUS', 50), JOINERS);
const MIN_POLL_S = envFloat('MIN_POLL_S', 0.5);
const MAX_WAIT_S = envFloat('MAX_WAIT_S', 600);
const MAX_RETRIES = envInt('MAX_RETRIES', 5);
const RETRY_CAP_S = envFloat('RETRY_CAP_S', 5);
const TIMEOUT = env('TIMEOUT', '10s');
const TOKEN_TTL_S = envInt('TOKEN_TTL_S', 3600);
const WAIT_OPEN_S = envInt('WAIT_OPEN_S', 120);
const RUN_ID = env('RUN_ID', '');
const CONTRACT = [202, 409, 429, 503];

export const options = {
  scenarios: {
    crowd: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      // Every buyer arrives, waits its turn (or hears sold out) and buys within this.
      maxDuration: `${Math.ceil(JOIN_S + MAX_WAIT_S + 60)}s`,
    },
  },
  thresholds: {
    checks: ['rate==1'],
    // Nobody buys outside the admission order: a purchase without a valid pass would answer 403.
    purchase_not_admitted: ['count==0'],
    purchase_errors: [`rate<${envFloat('MAX_FAILED_RATE', 0.001)}`],
    // Reported, not judged.
    queue_wait_s: ['max>=0'],
    'http_req_duration{kind:join}': ['max>=0'],
    'http_req_duration{kind:look}': ['max>=0'],
    'http_req_duration{kind:purchase}': ['max>=0'],
  },
  summaryTrendStats: TREND_STATS,
  systemTags: ['status', 'scenario', 'expected_response', 'error_code'],
  setupTimeout: `${WAIT_OPEN_S + 60}s`,
};

// --- metrics ----------------------------------------------------------------------------------------------
const joined = new Counter('queue_joined');
const joinRefused = new Counter('queue_join_refused');
const looks = new Counter('queue_looks');
const admitted = new Counter('queue_admitted');
const soldOutWaiting = new Counter('queue_sold_out_while_waiting');
const gaveUp = new Counter('queue_gave_up');
const waitS = new Trend('queue_wait_s');
const joinedAtS = new Trend('queue_joined_at_s');
const admittedAtS = new Trend('queue_admitted_at_s');
const outcomes = {
  reserved: new Counter('purchase_reserved'),
  rate_limited: new Counter('purchase_rate_limited'),
  overloaded: new Counter('purchase_overloaded'),
  store_unavailable: new Counter('purchase_store_unavailable'),
  sold_out: new Counter('purchase_sold_out'),
  purchase_limit_reached: new Counter('purchase_limit_reached'),
  not_admitted: new Counter('purchase_not_admitted'),
  other: new Counter('purchase_other'),
};
const purchaseErrors = new Rate('purchase_errors');

// --- setup ------------------------------------------------------------------------------------------------
function createRoomSale() {
  const opens = Date.now() + PRE_OPEN_S * 1000;
  const body = JSON.stringify({
    name: `k6 ${SALE_ID}`,
    price: env('PRICE', '49.99'),
    stock: envInt('STOCK', 1000),
    opens_at: new Date(opens).toISOString(),
    closes_at: new Date(opens + envInt('DURATION_S', 300) * 1000).toISOString(),
    per_user_limit: envInt('PER_USER_LIMIT', 1),
    waiting_room: {
      enabled: true,
      mode: env('MODE', 'fifo'),
      admit_per_second: envInt('ADMIT_PER_SECOND', 100),
      session_seconds: envInt('SESSION_S', 120),
    },
  });
  const res = http.put(`${BASE_URL}/v1/admin/sales/${SALE_ID}`, body, {
    headers: adminHeaders(), tags: { kind: 'setup' }, responseType: 'text',
  });
  if (res.status !== 200 && res.status !== 201) {
    fail(`creating sale ${SALE_ID}: ${res.status} ${res.body}`);
  }
}

export function setup() {
  requireSecret();
  if (envBool('CREATE_SALE', true)) {
    createRoomSale();
  }
  const sale = awaitSale(BASE_URL, SALE_ID, { states: ['scheduled', 'open'], waitS: WAIT_OPEN_S });
  if (!sale.waiting_room) {
    fail(`sale ${SALE_ID} has no waiting room: create it with one (CREATE_SALE=true or --waiting-room)`);
  }
  return { runId: RUN_ID || String(Date.now()), testStart: Date.now(), opensAt: sale.opens_at };
}

// --- one buyer --------------------------------------------------------------------------------------------
function pause(seconds) {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, seconds) * 1000));
}

function authHeaders(user) {
  return { Authorization: `Bearer ${tokenFor(user, { ttlS: TOKEN_TTL_S })}` };
}

async function look(user, kind) {
  const res = await http.asyncRequest('POST', `${BASE_URL}/v1/sales/${SALE_ID}/queue`, null, {
    headers: authHeaders(user),
    tags: { kind },
    timeout: TIMEOUT,
    responseCallback: http.expectedStatuses(...CONTRACT),
  });
  check(res, { 'queue answer is a contract status (202, 409, 429, 503)': (r) => CONTRACT.includes(r.status) });
  return res;
}

// When to look again: the server's Retry-After (half the estimated wait, 1-30 s), at least MIN_POLL_S.
function nextLook(res) {
  const header = Number(res.headers['Retry-After']);
  return Math.max(MIN_POLL_S, Number.isNaN(header) ? 1 : header) * (0.9 + Math.random() * 0.2);
}

// Join (again after 429/503/no answer, as the same user: the same ticket comes back); the 202, or null.
async function join(user, testStart) {
  for (let busy = 0; ; busy += 1) {
    const res = await look(user, 'join');
    if (res.status === 202) {
      joined.add(1);
      joinedAtS.add((Date.now() - testStart) / 1000);
      return res;
    }
    if (res.status === 409 || busy >= MAX_RETRIES) {
      (res.status === 409 ? joinRefused : gaveUp).add(1);
      return null;
    }
    await pause(res.status === 0 ? 0.5 : retryDelay(res, RETRY_CAP_S));
  }
}

// Look again until the pass comes; the pass, or null when the buyer stops waiting.
async function waitForPass(user, first, testStart) {
  const since = Date.now();
  let res = first;
  for (;;) {
    const doc = res.status === 202 ? res.json() : null;
    if (doc && doc.pass) {
      waitS.add((Date.now() - since) / 1000);
      admitted.add(1);
      admittedAtS.add((Date.now() - testStart) / 1000);
      return doc.pass;
    }
    if (res.status === 409) {
      soldOutWaiting.add(1);
      return null;
    }
    if ((Date.now() - since) / 1000 > MAX_WAIT_S) {
      gaveUp.add(1);
      return null;
    }
    await pause(res.status === 202 ? nextLook(res) : retryDelay(res, RETRY_CAP_S));
    res = await look(user, 'look');
    looks.add(1);
  }
}

async function buy(user, pass, key) {
  const res = await http.asyncRequest('POST', `${BASE_URL}/v1/sales/${SALE_ID}/orders`, '{}', {
    headers: {
      ...authHeaders(user), 'Content-Type': 'application/json', 'Idempotency-Key': key, 'Admission-Pass': pass,
    },
    tags: { kind: 'purchase' },
    timeout: TIMEOUT,
    responseCallback: http.expectedStatuses(...CONTRACT),
  });
  const code = res.status === 202 ? 'reserved' : problemCode(res) || `status_${res.status}`;
  (outcomes[code] || outcomes.other).add(1);
  purchaseErrors.add(!CONTRACT.includes(res.status) || code === 'not_admitted');
  check(res, { 'purchase answer is a contract status (202, 409, 429, 503)': (r) => CONTRACT.includes(r.status) });
  return res;
}

async function buyer(n, data) {
  const arriveAt = data.testStart + (n / JOINERS) * JOIN_S * 1000;
  await pause((arriveAt - Date.now()) / 1000);
  const user = `wr-${data.runId}-${n}`;
  const first = await join(user, data.testStart);
  const pass = first ? await waitForPass(user, first, data.testStart) : null;
  if (pass) {
    const key = newKey(data.runId, n, 0);
    let res = await buy(user, pass, key);
    for (let tries = 1; [0, 429, 503].includes(res.status) && tries <= MAX_RETRIES; tries += 1) {
      await pause(res.status === 0 ? 0.5 : retryDelay(res, RETRY_CAP_S));
      res = await buy(user, pass, key);
    }
  }
  forgetToken(user);
}

// Each VU runs every VUS-th buyer, all at once: a waiting buyer is a pending promise, not a VU.
export default async function (data) {
  const buyers = [];
  for (let n = exec.vu.idInTest - 1; n < JOINERS; n += VUS) {
    buyers.push(buyer(n, data));
  }
  await Promise.all(buyers);
}

// --- summary ----------------------------------------------------------------------------------------------
export function handleSummary(data) {
  const counts = {};
  for (const [outcome, counter] of Object.entries(outcomes)) {
    counts[outcome] = metricValue(data, counter.name, 'count') || 0;
  }
  const span = (name) => (metricValue(data, name, 'max') || 0) - (metricValue(data, name, 'min') || 0);
  const joins = metricValue(data, 'queue_joined', 'count') || 0;
  const admissions = metricValue(data, 'queue_admitted', 'count') || 0;
  const setupData = data.setup_data || {};
  const thresholds = thresholdResults(data);
  const summary = {
    script: 'waiting_room.js',
    base_url: BASE_URL,
    sale_id: SALE_ID,
    run_id: setupData.runId || null,
    opens_at: setupData.opensAt || null,
    joiners_planned: JOINERS,
    join_s_planned: JOIN_S,
    joined: joins,
    join_refused: metricValue(data, 'queue_join_refused', 'count') || 0,
    joins_per_s: joins > 1 ? (joins - 1) / Math.max(span('queue_joined_at_s'), 0.001) : null,
    looks: metricValue(data, 'queue_looks', 'count') || 0,
    admitted: admissions,
    admitted_per_s_seen: admissions > 1 ? (admissions - 1) / Math.max(span('queue_admitted_at_s'), 0.001) : null,
    sold_out_while_waiting: metricValue(data, 'queue_sold_out_while_waiting', 'count') || 0,
    gave_up: metricValue(data, 'queue_gave_up', 'count') || 0,
    queue_wait_s: trend(data, 'queue_wait_s'),
    join_ms: trend(data, 'http_req_duration{kind:join}'),
    look_ms: trend(data, 'http_req_duration{kind:look}'),
    purchase_ms: trend(data, 'http_req_duration{kind:purchase}'),
    purchases: counts,
    purchase_error_rate: metricValue(data, 'purchase_errors', 'rate'),
    requests: metricValue(data, 'http_reqs', 'count'),
    thresholds,
    passed: Object.values(thresholds).every(Boolean),
  };
  const w = summary.queue_wait_s;
  const perS = (x) => (x === null ? '-' : x.toFixed(0));
  return summaryOutputs(summary, [
    `waiting_room.js against ${BASE_URL}, sale ${SALE_ID}: ${joins} joined (${perS(summary.joins_per_s)}/s), ` +
      `${admissions} admitted (${perS(summary.admitted_per_s_seen)}/s), ${summary.sold_out_while_waiting} told ` +
      `sold out while waiting, ${counts.reserved} reserved, ${counts.not_admitted} refused not_admitted`,
    `time in queue s p50/p95/p99/max: ${w.p50}/${w.p95}/${w.p99}/${w.max}; purchase error rate ` +
      `${summary.purchase_error_rate}; thresholds ${summary.passed ? 'passed' : 'FAILED'}`,
  ]);
}
