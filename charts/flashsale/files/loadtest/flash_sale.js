// The flash sale as it happens (k6): a crowd of distinct buyers arriving around the opening moment. One copy for
// every runner: the chart mounts this folder into the in-cluster k6 Job, `flashsale demo` runs it locally (the
// repository's top-level loadtest/ is a symlink to this folder).
//
// Open model (ramping-arrival-rate): buyers arrive at the planned rate whether or not the API keeps up, as a real
// crowd does: 0 -> RATE over RAMP, RATE for HOLD, RATE -> 0 over DECAY. Each arrival is a new buyer (user
// `k6-<run>-<n>`; arrivals beyond USERS come back as earlier buyers) who keeps trying until the contract says
// stop, politely:
//  - 202: done. 409 purchase_limit_reached / sale_closed: done.
//  - 409 sale_not_open (arrived early): wait until the opens_at in the answer, then try again with a new key.
//  - 409 sold_out: a failed payment can return a unit, so the buyer looks once more after SOLD_OUT_WAIT_S (with
//    jitter; SOLD_OUT_RETRIES times, default 1), with a new key. Units returned while arrivals go on are bought
//    by later arrivals anyway; this is what sells the ones returned near the end.
//  - 429 / 503 overloaded: wait Retry-After (capped at RETRY_CAP_S, jittered), then a new attempt with a new key
//    (nothing was reserved); at most MAX_RETRIES times. Any other 503 (a store did not answer in time: whether
//    the unit was reserved is unknown) and 409 request_in_progress: wait, then the SAME key.
//  - no answer (connection error, timeout): the SAME key again after a short backoff, at most NET_RETRIES times.
//    Whether the first try reserved or not, the replay gets the first answer (Idempotent-Replayed).
// Tokens are HS256 JWTs minted here from JWT_SECRET (claims sub and exp). Checks: only the contract's answers
// (202, 409, 429, 503). Thresholds: reserved-ack latency p50/p95/p99 and the share of failed requests.
//
// Env: BASE_URL (http://127.0.0.1:8000), SALE_ID (demo), JWT_SECRET (required), USERS (100000), RATE (peak
// arrivals/s; default USERS spread over RAMP/2 + HOLD + DECAY/2), RAMP (10s), HOLD (50s), DECAY (0s), PRE_VUS
// (50), MAX_VUS (3000), MAX_RETRIES (5), NET_RETRIES (3), RETRY_CAP_S (5), SOLD_OUT_RETRIES (1),
// SOLD_OUT_WAIT_S (2), TIMEOUT (10s), QUANTITY (1), ACK_P50_MS / ACK_P95_MS / ACK_P99_MS (thresholds on the
// reserved-ack latency, 50/200/1000; P99_MS is the older name of ACK_P99_MS), MAX_FAILED_RATE (0.001), TOKEN_TTL_S (3600), WAIT_OPEN_S (120: how long
// setup waits for the sale to exist), CREATE_SALE (false: create the sale if it does not exist, with STOCK 1000,
// PRICE 49.99, DURATION_S 300, PER_USER_LIMIT 1, opening OPENS_IN_S (0) after setup), SUMMARY_PATH (also write
// the JSON summary there), RUN_ID (default: the start time; buyer ids and keys include it).
// Time series: run with `--out csv=FILE.gz` (K6_CSV_TIME_FORMAT=unix_milli); `flashsale demo` plots it.
// Run locally: k6 run -e SALE_ID=demo -e JWT_SECRET=... loadtest/flash_sale.js

import http from 'k6/http';
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import {
  CONTRACT_STATUSES, TREND_STATS, awaitSale, baseUrl, env, envFloat, envInt, forgetToken, metricValue, newKey,
  problemCode, requireSecret, retryDelay, seconds, summaryOutputs, thresholdResults, tokenFor, trend,
} from './lib.js';

const BASE_URL = baseUrl();
const SALE_ID = env('SALE_ID', 'demo');
const USERS = envInt('USERS', 100000);
const RAMP = env('RAMP', '10s');
const HOLD = env('HOLD', '50s');
const DECAY = env('DECAY', '0s');
// Arrivals planned = RATE x (RAMP/2 + HOLD + DECAY/2): the default RATE brings every user once.
const SPREAD_S = seconds(RAMP) / 2 + seconds(HOLD) + seconds(DECAY) / 2;
const RATE = envInt('RATE', Math.max(1, Math.ceil(USERS / Math.max(SPREAD_S, 1))));
const MAX_RETRIES = envInt('MAX_RETRIES', 5);
const NET_RETRIES = envInt('NET_RETRIES', 3);
const RETRY_CAP_S = envFloat('RETRY_CAP_S', 5);
const SOLD_OUT_RETRIES = envInt('SOLD_OUT_RETRIES', 1);
const SOLD_OUT_WAIT_S = envFloat('SOLD_OUT_WAIT_S', 2);
const TIMEOUT = env('TIMEOUT', '10s');
const QUANTITY = envInt('QUANTITY', 1);
const TOKEN_TTL_S = envInt('TOKEN_TTL_S', 3600);
const WAIT_OPEN_S = envInt('WAIT_OPEN_S', 120);
const RUN_ID = env('RUN_ID', '');

const stages = [
  { target: RATE, duration: RAMP },
  { target: RATE, duration: HOLD },
];
if (seconds(DECAY) > 0) {
  stages.push({ target: 0, duration: DECAY });
}

export const options = {
  scenarios: {
    crowd: {
      executor: 'ramping-arrival-rate',
      startRate: 0,
      timeUnit: '1s',
      preAllocatedVUs: envInt('PRE_VUS', 50),
      maxVUs: envInt('MAX_VUS', 3000),
      stages,
      // Buyers still in their retry loop get this long to finish after the last arrival.
      gracefulStop: `${Math.ceil(RETRY_CAP_S * MAX_RETRIES + SOLD_OUT_WAIT_S * 1.2 * SOLD_OUT_RETRIES + 10)}s`,
    },
  },
  thresholds: {
    // Every answer is one the contract allows.
    checks: ['rate==1'],
    purchase_ack_ms: [
      `med<${envInt('ACK_P50_MS', 50)}`,
      `p(95)<${envInt('ACK_P95_MS', 200)}`,
      `p(99)<${envInt('ACK_P99_MS', envInt('P99_MS', 1000))}`,
    ],
    // Reported, not judged: every purchase answer's latency (refusals included).
    'http_req_duration{kind:purchase}': ['max>=0'],
    'http_req_failed{kind:purchase}': [`rate<${envFloat('MAX_FAILED_RATE', 0.001)}`],
  },
  summaryTrendStats: TREND_STATS,
  // Fewer columns in the CSV time series (tags k6 would add to every sample); `kind` is ours.
  systemTags: ['status', 'scenario', 'expected_response', 'error_code'],
  setupTimeout: `${WAIT_OPEN_S + 60}s`,
};

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
  unavailable: new Counter('purchase_unavailable'),
  network_error: new Counter('purchase_network_error'),
  unexpected: new Counter('purchase_unexpected'),
};
const buyers = new Counter('buyers');
const buyersServed = new Counter('buyers_reserved');
const retries = new Counter('purchase_retries');
const gaveUp = new Counter('purchase_gave_up');
const ackMs = new Trend('purchase_ack_ms', true);
const soldOutAtS = new Trend('sold_out_at_s');

function record(res, testStart) {
  if (res.status === 202) {
    if (res.headers['Idempotent-Replayed'] === 'true') {
      outcomes.replayed.add(1);
    } else {
      outcomes.reserved.add(1);
      ackMs.add(res.timings.duration);
    }
    return '';
  }
  if (res.status === 409) {
    const code = problemCode(res);
    (outcomes[code] || outcomes.other_409).add(1);
    if (code === 'sold_out') {
      soldOutAtS.add((Date.now() - testStart) / 1000);
    }
    return code;
  }
  if (res.status === 429) {
    outcomes.rate_limited.add(1);
  } else if (res.status === 503) {
    const code = problemCode(res);
    (code === 'overloaded' ? outcomes.overloaded : outcomes.unavailable).add(1);
    return code;
  } else if (res.status === 0) {
    outcomes.network_error.add(1);
  } else {
    outcomes.unexpected.add(1, { status: String(res.status) });
  }
  return '';
}

// --- setup: the sale must exist, scheduled or open --------------------------------------------------------
export function setup() {
  requireSecret();
  const sale = awaitSale(BASE_URL, SALE_ID, {
    states: ['scheduled', 'open'],
    waitS: WAIT_OPEN_S,
    create: ['1', 'true', 'yes'].includes(env('CREATE_SALE', 'false').toLowerCase())
      ? {
          stock: envInt('STOCK', 1000),
          price: env('PRICE', '49.99'),
          durationS: envInt('DURATION_S', 300),
          perUserLimit: envInt('PER_USER_LIMIT', 1),
          opensInS: envFloat('OPENS_IN_S', 0),
        }
      : null,
  });
  return { runId: RUN_ID || String(Date.now()), testStart: Date.now(), opensAt: sale.opens_at };
}

// --- one arrival: one buyer -----------------------------------------------------------------------------
const BODY = JSON.stringify({ quantity: QUANTITY });

// How long a buyer who arrived early waits: until opens_at (from the 409 answer), plus up to 100 ms of
// human jitter, at least 50 ms.
function untilOpen(res, fallback) {
  let opensAt = fallback;
  try {
    opensAt = res.json('opens_at') || fallback;
  } catch (e) {
    // keep the fallback
  }
  const wait = (Date.parse(opensAt) - Date.now()) / 1000;
  return Math.max(0.05, wait) + Math.random() * 0.1;
}

function attempt(url, user, key) {
  return http.post(url, BODY, {
    headers: {
      Authorization: `Bearer ${tokenFor(user, { ttlS: TOKEN_TTL_S })}`,
      'Content-Type': 'application/json',
      'Idempotency-Key': key,
    },
    tags: { kind: 'purchase' },
    timeout: TIMEOUT,
    responseCallback: http.expectedStatuses(...CONTRACT_STATUSES),
  });
}

// What the buyer does next: ['done'], ['new', wait_s] (new key) or ['same', wait_s] (same key).
function nextStep(res, code, state, opensAt) {
  if (res.status === 0) {
    state.net += 1;
    return state.net > NET_RETRIES ? ['gave_up'] : ['same', 0.2 * state.net * (1 + Math.random())];
  }
  if (res.status === 503 && code !== 'overloaded') {
    state.busy += 1;
    return state.busy > MAX_RETRIES ? ['gave_up'] : ['same', retryDelay(res, RETRY_CAP_S)];
  }
  if (res.status === 429 || res.status === 503) {
    state.busy += 1;
    return state.busy > MAX_RETRIES ? ['gave_up'] : ['new', retryDelay(res, RETRY_CAP_S)];
  }
  if (code === 'sale_not_open') {
    state.early += 1;
    return state.early > MAX_RETRIES ? ['gave_up'] : ['new', untilOpen(res, opensAt)];
  }
  if (code === 'request_in_progress') {
    state.busy += 1;
    return state.busy > MAX_RETRIES ? ['gave_up'] : ['same', retryDelay(res, RETRY_CAP_S)];
  }
  if (code === 'sold_out' && state.soldOut < SOLD_OUT_RETRIES) {
    state.soldOut += 1;
    return ['new', SOLD_OUT_WAIT_S * (0.8 + Math.random() * 0.4)];
  }
  return ['done'];
}

export default function (data) {
  const n = exec.scenario.iterationInTest;
  const user = `k6-${data.runId}-${n % USERS}`;
  const url = `${BASE_URL}/v1/sales/${SALE_ID}/orders`;
  const vu = exec.vu.idInTest;
  let key = newKey(data.runId, vu, 0);
  const state = { net: 0, busy: 0, early: 0, soldOut: 0 };
  buyers.add(1);
  for (let tries = 1; ; tries += 1) {
    const res = attempt(url, user, key);
    // No answer at all (status 0: connection error, timeout) is not an answer outside the contract: it
    // is counted as a network error, replayed, and judged by the http_req_failed threshold.
    if (res.status !== 0) {
      check(res, {
        'purchase answer is a contract status (202, 409, 429, 503)': (r) => CONTRACT_STATUSES.includes(r.status),
      });
    }
    const code = record(res, data.testStart);
    if (res.status === 202) {
      buyersServed.add(1);
      break;
    }
    const [step, wait] = nextStep(res, code, state, data.opensAt);
    if (step === 'done') {
      break;
    }
    if (step === 'gave_up') {
      gaveUp.add(1);
      break;
    }
    retries.add(1);
    sleep(wait);
    if (step === 'new') {
      key = newKey(data.runId, vu, tries);
    }
  }
  forgetToken(user);
}

// --- summary --------------------------------------------------------------------------------------------
export function handleSummary(data) {
  const counts = {};
  for (const [outcome, counter] of Object.entries(outcomes)) {
    counts[outcome] = metricValue(data, counter.name, 'count') || 0;
  }
  const thresholds = thresholdResults(data);
  const setupData = data.setup_data || {};
  const summary = {
    script: 'flash_sale.js',
    base_url: BASE_URL,
    sale_id: SALE_ID,
    run_id: setupData.runId || null,
    test_start_ms: setupData.testStart || null,
    opens_at: setupData.opensAt || null,
    users: USERS,
    peak_rate_per_s: RATE,
    ramp: RAMP,
    hold: HOLD,
    decay: DECAY,
    buyers: metricValue(data, 'buyers', 'count') || 0,
    buyers_reserved: metricValue(data, 'buyers_reserved', 'count') || 0,
    requests: metricValue(data, 'http_reqs', 'count'),
    dropped_iterations: metricValue(data, 'dropped_iterations', 'count') || 0,
    outcomes: counts,
    retries: metricValue(data, 'purchase_retries', 'count') || 0,
    gave_up: metricValue(data, 'purchase_gave_up', 'count') || 0,
    contract_checks_passed: metricValue(data, 'checks', 'rate'),
    failed_rate: metricValue(data, 'http_req_failed{kind:purchase}', 'rate'),
    purchase_ms: trend(data, 'http_req_duration{kind:purchase}'),
    ack_ms: trend(data, 'purchase_ack_ms'),
    first_sold_out_s: metricValue(data, 'sold_out_at_s', 'min'),
    max_vus: metricValue(data, 'vus_max', 'max'),
    thresholds,
    passed: Object.values(thresholds).every(Boolean),
  };
  const ack = summary.ack_ms;
  return summaryOutputs(summary, [
    `flash_sale.js against ${BASE_URL}, sale ${SALE_ID}: ${summary.buyers} buyers, ${summary.requests} requests, ` +
      `${counts.reserved} reserved, ${counts.sold_out} sold out, ${counts.rate_limited} rate limited, ` +
      `${counts.overloaded} overloaded, ${counts.unavailable} unavailable (503), ${counts.network_error} network ` +
      `errors, ${counts.unexpected} unexpected`,
    `reserved ack p50/p95/p99 ms: ${ack.p50}/${ack.p95}/${ack.p99}; thresholds ${summary.passed ? 'passed' : 'FAILED'}`,
  ]);
}
