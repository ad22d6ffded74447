// Flash-sale purchase load (k6). One copy for every runner: the chart mounts this file into the in-cluster k6
// Job, and the repository's top-level loadtest/ is a symlink to this folder for local runs.
//
// Open model (ramping-arrival-rate): buyers arrive at RATE per second whether or not the API keeps up, as a
// real crowd does. Each arrival is one purchase attempt by one of USERS buyers, with its own Idempotency-Key;
// a 429/503 is retried after its Retry-After with the same key (the contract lets only a 202 claim a key, so a
// retry of the same attempt is safe and is what a real client does). Tokens are HS256 JWTs minted here with
// JWT_SECRET (claims sub and exp, no role). Only the contract's answers pass the check: 202, 409, 429, 503.
//
// Env: BASE_URL (API, default http://127.0.0.1:8000), SALE_ID, JWT_SECRET (required), RATE (arrivals/s, 300),
// RAMP (20s), HOLD (40s), USERS (5000), PRE_VUS (50), MAX_VUS (1000), MAX_RETRIES (3), RETRY_CAP_S (5),
// QUANTITY (1), P99_MS (threshold on the purchase p99, 1000), TOKEN_TTL_S (3600), WAIT_OPEN_S (120: how long
// setup waits for the sale to open), CREATE_SALE (true: create and open the sale if it does not exist, with
// STOCK 1000, PRICE 49.99, DURATION_S 300, PER_USER_LIMIT 1), SUMMARY_PATH (also write the JSON summary there),
// RUN_ID (default: the start time; buyer ids and keys include it, so runs do not collide).
// Run locally: k6 run -e SALE_ID=demo -e JWT_SECRET=... loadtest/flash_sale.js

import http from 'k6/http';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import exec from 'k6/execution';
import { check, fail, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';

function env(name, fallback) {
  const value = __ENV[name];
  return value === undefined || value === '' ? fallback : value;
}
function envInt(name, fallback) {
  const value = parseInt(env(name, String(fallback)), 10);
  if (Number.isNaN(value)) {
    throw new Error(`${name} must be an integer`);
  }
  return value;
}

const BASE_URL = env('BASE_URL', 'http://127.0.0.1:8000').replace(/\/+$/, '');
const SALE_ID = env('SALE_ID', 'demo');
const JWT_SECRET = env('JWT_SECRET', '');
const RATE = envInt('RATE', 300);
const RAMP = env('RAMP', '20s');
const HOLD = env('HOLD', '40s');
const USERS = envInt('USERS', 5000);
const PRE_VUS = envInt('PRE_VUS', 50);
const MAX_VUS = envInt('MAX_VUS', 1000);
const MAX_RETRIES = envInt('MAX_RETRIES', 3);
const RETRY_CAP_S = envInt('RETRY_CAP_S', 5);
const QUANTITY = envInt('QUANTITY', 1);
const P99_MS = envInt('P99_MS', 1000);
const TOKEN_TTL_S = envInt('TOKEN_TTL_S', 3600);
const WAIT_OPEN_S = envInt('WAIT_OPEN_S', 120);
const CREATE_SALE = ['1', 'true', 'yes'].includes(env('CREATE_SALE', 'false').toLowerCase());
const SUMMARY_PATH = env('SUMMARY_PATH', '');
const RUN_ID = env('RUN_ID', '');

// The answers the contract allows for a purchase; anything else (500, 400, 401, ...) is a failed check.
const CONTRACT_STATUSES = [202, 409, 429, 503];
const RETRYABLE = [429, 503];

export const options = {
  scenarios: {
    purchase: {
      executor: 'ramping-arrival-rate',
      startRate: 0,
      timeUnit: '1s',
      preAllocatedVUs: PRE_VUS,
      maxVUs: MAX_VUS,
      stages: [
        { target: RATE, duration: RAMP },
        { target: RATE, duration: HOLD },
      ],
      gracefulStop: '30s',
    },
  },
  thresholds: {
    // Every answer is one the contract allows.
    checks: ['rate==1'],
    'http_req_duration{kind:purchase}': [`p(99)<${P99_MS}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
  setupTimeout: `${WAIT_OPEN_S + 60}s`,
};

// --- HS256 tokens ---------------------------------------------------------------------------------------
// The header is the one PyJWT writes (sorted keys, no spaces), so tokens look like `flashsale token` output.
const JWT_HEADER = encoding.b64encode('{"alg":"HS256","typ":"JWT"}', 'rawurl');

export function mintJwt(claims, secret) {
  const payload = encoding.b64encode(JSON.stringify(claims), 'rawurl');
  const signingInput = `${JWT_HEADER}.${payload}`;
  return `${signingInput}.${crypto.hmac('sha256', secret, signingInput, 'base64rawurl')}`;
}

// Known answer, computed with PyJWT 2.15 (the library the API verifies with): a k6 whose encodings differ
// fails here at init, not with 100% 401s mid-test.
const KNOWN_ANSWER =
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJrNi1zZWxmLXRlc3QiLCJleHAiOjIwMDAwMDAwMDB9.' +
  '8_XGhV3sHVojgIBR4tMejHwEsQfdD_XoD0twJuVC8fA';
if (mintJwt({ sub: 'k6-self-test', exp: 2000000000 }, 'flashsale-k6-known-answer-test-secret-0123') !== KNOWN_ANSWER) {
  throw new Error('HS256 self-test failed: this k6 encodes tokens differently from PyJWT');
}

const tokens = {}; // per VU: user id -> {token, exp}
function tokenFor(user, role) {
  const now = Math.floor(Date.now() / 1000);
  const key = role ? `${role}:${user}` : user;
  const cached = tokens[key];
  // Re-mint a minute before expiry; the API allows 30 s of clock skew on exp, not more.
  if (cached && cached.exp - 60 > now) {
    return cached.token;
  }
  const claims = { sub: user, exp: now + TOKEN_TTL_S };
  if (role) {
    claims.role = role;
  }
  const token = mintJwt(claims, JWT_SECRET);
  tokens[key] = { token, exp: claims.exp };
  return token;
}

// --- outcomes -------------------------------------------------------------------------------------------
const outcomes = {
  reserved: new Counter('purchase_reserved'),
  replayed: new Counter('purchase_replayed'),
  sold_out: new Counter('purchase_sold_out'),
  purchase_limit_reached: new Counter('purchase_limit_reached'),
  sale_not_open: new Counter('purchase_sale_not_open'),
  sale_closed: new Counter('purchase_sale_closed'),
  request_in_progress: new Counter('purchase_request_in_progress'),
  other_409: new Counter('purchase_other_409'),
  rate_limited: new Counter('purchase_rate_limited'),
  overloaded: new Counter('purchase_overloaded'),
  unexpected: new Counter('purchase_unexpected'),
};
const retries = new Counter('purchase_retries');
const gaveUp = new Counter('purchase_gave_up');
const ackMs = new Trend('purchase_ack_ms', true);
const soldOutAtS = new Trend('sold_out_at_s');

function problemCode(res) {
  try {
    return res.json('code') || '';
  } catch (e) {
    return '';
  }
}

function record(res, testStart) {
  if (res.status === 202) {
    if (res.headers['Idempotent-Replayed'] === 'true') {
      outcomes.replayed.add(1);
    } else {
      outcomes.reserved.add(1);
      ackMs.add(res.timings.duration);
    }
  } else if (res.status === 409) {
    const code = problemCode(res);
    (outcomes[code] || outcomes.other_409).add(1);
    if (code === 'sold_out') {
      soldOutAtS.add((Date.now() - testStart) / 1000);
    }
  } else if (res.status === 429) {
    outcomes.rate_limited.add(1);
  } else if (res.status === 503) {
    outcomes.overloaded.add(1);
  } else {
    outcomes.unexpected.add(1, { status: String(res.status) });
  }
}

// Retry-After is seconds or an HTTP date; capped, with up to 20% jitter so retries do not arrive in lockstep.
function retryDelay(res) {
  const header = res.headers['Retry-After'];
  let seconds = 1;
  if (header) {
    const asNumber = Number(header);
    seconds = Number.isNaN(asNumber) ? (Date.parse(header) - Date.now()) / 1000 : asNumber;
  }
  seconds = Math.min(Math.max(seconds, 0.05), RETRY_CAP_S);
  return seconds * (1 + Math.random() * 0.2);
}

// --- setup: the sale must exist and be open ------------------------------------------------------------
function adminHeaders() {
  return {
    Authorization: `Bearer ${tokenFor('k6-admin', 'admin')}`,
    'Content-Type': 'application/json',
  };
}

function createSale() {
  const now = Date.now();
  const body = JSON.stringify({
    name: `k6 ${SALE_ID}`,
    price: env('PRICE', '49.99'),
    stock: envInt('STOCK', 1000),
    opens_at: new Date(now).toISOString(),
    closes_at: new Date(now + envInt('DURATION_S', 300) * 1000).toISOString(),
    per_user_limit: envInt('PER_USER_LIMIT', 1),
  });
  const url = `${BASE_URL}/v1/admin/sales/${SALE_ID}`;
  const put = http.put(url, body, { headers: adminHeaders(), tags: { kind: 'setup' } });
  if (put.status !== 200 && put.status !== 201) {
    fail(`creating sale ${SALE_ID}: ${put.status} ${put.body}`);
  }
  const open = http.post(`${url}/open`, null, { headers: adminHeaders(), tags: { kind: 'setup' } });
  if (open.status !== 200) {
    fail(`opening sale ${SALE_ID}: ${open.status} ${open.body}`);
  }
}

export function setup() {
  if (JWT_SECRET.length < 32) {
    fail('JWT_SECRET (the API\'s FLASHSALE_AUTH__JWT_SECRET, at least 32 characters) is required');
  }
  const deadline = Date.now() + WAIT_OPEN_S * 1000;
  let created = false;
  for (;;) {
    const res = http.get(`${BASE_URL}/v1/sales/${SALE_ID}`, { tags: { kind: 'setup' } });
    if (res.status === 404 && CREATE_SALE && !created) {
      createSale();
      created = true;
      continue;
    }
    const state = res.status === 200 ? res.json('state') : `HTTP ${res.status}`;
    if (state === 'open') {
      break;
    }
    if (state === 'sold_out' || state === 'closed') {
      fail(`sale ${SALE_ID} is already ${state}; create a new one (a new FlashSale or CREATE_SALE=true)`);
    }
    if (Date.now() > deadline) {
      fail(`sale ${SALE_ID} is not open after ${WAIT_OPEN_S}s (last answer: ${state})`);
    }
    sleep(1);
  }
  return { runId: RUN_ID || String(Date.now()), testStart: Date.now() };
}

// --- one arrival: one purchase attempt ------------------------------------------------------------------
export default function (data) {
  const iteration = exec.scenario.iterationInTest;
  const user = `k6-${data.runId}-${iteration % USERS}`;
  const idempotencyKey = `${data.runId}-${iteration}-${Math.random().toString(36).slice(2, 10)}`;
  const url = `${BASE_URL}/v1/sales/${SALE_ID}/orders`;
  const body = JSON.stringify({ quantity: QUANTITY });
  for (let attempt = 0; ; attempt += 1) {
    const res = http.post(url, body, {
      headers: {
        Authorization: `Bearer ${tokenFor(user)}`,
        'Content-Type': 'application/json',
        'Idempotency-Key': idempotencyKey,
      },
      tags: { kind: 'purchase' },
      responseCallback: http.expectedStatuses(...CONTRACT_STATUSES),
    });
    check(res, { 'purchase answer is a contract status (202, 409, 429, 503)': (r) => CONTRACT_STATUSES.includes(r.status) });
    record(res, data.testStart);
    if (!RETRYABLE.includes(res.status)) {
      return;
    }
    if (attempt >= MAX_RETRIES) {
      gaveUp.add(1);
      return;
    }
    retries.add(1);
    sleep(retryDelay(res));
  }
}

// --- summary --------------------------------------------------------------------------------------------
function metricValue(data, name, field) {
  const metric = data.metrics[name];
  return metric && metric.values[field] !== undefined ? metric.values[field] : null;
}

export function handleSummary(data) {
  const counts = {};
  for (const [outcome, counter] of Object.entries(outcomes)) {
    counts[outcome] = metricValue(data, counter.name, 'count') || 0;
  }
  const thresholds = {};
  for (const [name, metric] of Object.entries(data.metrics)) {
    for (const [expression, result] of Object.entries(metric.thresholds || {})) {
      thresholds[`${name}: ${expression}`] = result.ok;
    }
  }
  const purchase = 'http_req_duration{kind:purchase}';
  const summary = {
    script: 'flash_sale.js',
    base_url: BASE_URL,
    sale_id: SALE_ID,
    rate_per_s: RATE,
    ramp: RAMP,
    hold: HOLD,
    users: USERS,
    requests: metricValue(data, 'http_reqs', 'count'),
    iterations: metricValue(data, 'iterations', 'count'),
    dropped_iterations: metricValue(data, 'dropped_iterations', 'count') || 0,
    outcomes: counts,
    retries: metricValue(data, 'purchase_retries', 'count') || 0,
    gave_up: metricValue(data, 'purchase_gave_up', 'count') || 0,
    contract_checks_passed: metricValue(data, 'checks', 'rate'),
    purchase_ms: {
      p50: metricValue(data, purchase, 'med'),
      p95: metricValue(data, purchase, 'p(95)'),
      p99: metricValue(data, purchase, 'p(99)'),
      max: metricValue(data, purchase, 'max'),
    },
    reserved_ack_ms_p99: metricValue(data, 'purchase_ack_ms', 'p(99)'),
    first_sold_out_s: metricValue(data, 'sold_out_at_s', 'min'),
    thresholds,
    passed: Object.values(thresholds).every(Boolean),
  };
  const json = JSON.stringify(summary);
  const human = [
    `flash_sale.js against ${BASE_URL}, sale ${SALE_ID}: ${summary.requests} requests, ` +
      `${counts.reserved} reserved, ${counts.sold_out} sold out, ${counts.rate_limited} rate limited, ` +
      `${counts.overloaded} overloaded, ${counts.unexpected} unexpected`,
    `purchase p50/p95/p99 ms: ${summary.purchase_ms.p50}/${summary.purchase_ms.p95}/${summary.purchase_ms.p99}; ` +
      `thresholds ${summary.passed ? 'passed' : 'FAILED'}`,
    json,
    '',
  ].join('\n');
  const out = { stdout: human };
  if (SUMMARY_PATH) {
    out[SUMMARY_PATH] = `${json}\n`;
  }
  return out;
}
