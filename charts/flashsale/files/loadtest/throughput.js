// Purchase throughput in steps (k6): constant-arrival-rate at each rate of STEPS in turn, on a sale with effectively
// unlimited stock, to find the knee. Every arrival is one purchase attempt with a fresh Idempotency-Key and no
// retry (a refusal is counted, not repeated), so what is measured is the API's answer rate and latency.
//
// Users: each VU buys as its own PER_VU users (`tp-<run>-<vu>-<n>`), so no user comes near the per-user rate
// limit (20/s by default) or per_user_limit (at most 1000 per sale) while the tokens stay few and cached.
// Steps run back to back after a short warm-up, each a scenario tagged step=<rate>; the summary reports per
// step: achieved rate, p50/p95/p99, dropped iterations (arrivals k6 could not start because MAX_VUS_S worth of
// VUs were all busy: the server fell behind) and status counts.
//
// Env: BASE_URL, SALE_ID (default tp-<run>), JWT_SECRET, STEPS (500,1000,1700,2500,4000), STEP_S (20),
// WARMUP_RATE (200), WARMUP_S (5), PER_VU (64), MAX_LATENCY_S (0.1: VUs per step = rate x this; beyond it
// arrivals are dropped), CREATE_SALE (true: create and open the sale if missing, STOCK 10000000,
// PER_USER_LIMIT 1000, DURATION_S 3600), CHECK_SALE (true; false for a bare endpoint without sales, the
// baseline), RUN_ID, SUMMARY_PATH.
// Run locally: k6 run -e JWT_SECRET=... loadtest/throughput.js

import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import {
  CONTRACT_STATUSES, TREND_STATS, awaitSale, baseUrl, env, envBool, envFloat, envInt, metricValue, newKey,
  requireSecret, summaryOutputs, thresholdResults, tokenFor, trend,
} from './lib.js';

const BASE_URL = baseUrl();
// Init code runs once per VU: a default that differs per VU (the clock) is settled once in setup().
const RUN_ID = env('RUN_ID', '');
const SALE_ID = env('SALE_ID', '');
const STEPS = env('STEPS', '500,1000,1700,2500,4000').split(',').map((s) => parseInt(s, 10));
const STEP_S = envInt('STEP_S', 20);
const WARMUP_RATE = envInt('WARMUP_RATE', 200);
const WARMUP_S = envInt('WARMUP_S', 5);
const PER_VU = envInt('PER_VU', 64);
const MAX_LATENCY_S = envFloat('MAX_LATENCY_S', 0.1);
const CHECK_SALE = envBool('CHECK_SALE', true);
const CREATE_SALE = envBool('CREATE_SALE', true);
// A step's in-flight requests finish within this before the next step starts (k6 gracefulStop).
const GRACE_S = 2;

// Answers counted per step: the contract's statuses, 'none' (no answer: connection error or timeout,
// also in failed_rate) and 'other' (an answer outside the contract).
const ANSWER_KINDS = [...CONTRACT_STATUSES, 'none', 'other'];

if (STEPS.some((rate) => Number.isNaN(rate) || rate < 1)) {
  throw new Error(`STEPS must be positive integers: ${env('STEPS', '')}`);
}

function stepScenario(rate, startS, durationS, tag) {
  return {
    executor: 'constant-arrival-rate',
    rate,
    timeUnit: '1s',
    duration: `${durationS}s`,
    // Enough VUs for the rate at ~10 ms each up front; up to rate x MAX_LATENCY_S when answers slow down.
    preAllocatedVUs: Math.max(10, Math.ceil(rate * 0.01)),
    maxVUs: Math.max(20, Math.ceil(rate * MAX_LATENCY_S)),
    startTime: `${startS}s`,
    gracefulStop: `${GRACE_S}s`,
    tags: { step: tag },
  };
}

function buildScenarios() {
  const scenarios = {};
  let start = 0;
  if (WARMUP_S > 0) {
    scenarios.warmup = stepScenario(WARMUP_RATE, start, WARMUP_S, 'warmup');
    start += WARMUP_S + GRACE_S;
  }
  for (const rate of STEPS) {
    scenarios[`step_${rate}`] = stepScenario(rate, start, STEP_S, String(rate));
    start += STEP_S + GRACE_S;
  }
  return scenarios;
}

// Submetrics exist in the summary only when a threshold names them: one always-true threshold per figure we
// report. The only real threshold is the contract check.
function buildThresholds() {
  const thresholds = { checks: ['rate>=0'] };
  for (const rate of STEPS) {
    thresholds[`http_req_duration{step:${rate}}`] = ['max>=0'];
    thresholds[`http_reqs{step:${rate}}`] = ['count>=0'];
    thresholds[`dropped_iterations{scenario:step_${rate}}`] = ['count>=0'];
    thresholds[`purchase_answers{step:${rate}}`] = ['count>=0'];
    thresholds[`http_req_failed{step:${rate}}`] = ['rate>=0'];
    for (const status of ANSWER_KINDS) {
      thresholds[`purchase_answers{step:${rate},status:${status}}`] = ['count>=0'];
    }
  }
  return thresholds;
}

export const options = {
  scenarios: buildScenarios(),
  thresholds: buildThresholds(),
  summaryTrendStats: TREND_STATS,
  discardResponseBodies: true,
  setupTimeout: '120s',
};

const answers = new Counter('purchase_answers');

export function setup() {
  const runId = RUN_ID || String(Date.now());
  const saleId = SALE_ID || `tp-${runId}`;
  if (CHECK_SALE) {
    requireSecret();
    awaitSale(BASE_URL, saleId, {
      states: ['open'],
      waitS: 60,
      create: CREATE_SALE
        ? {
            stock: envInt('STOCK', 10000000),
            perUserLimit: envInt('PER_USER_LIMIT', 1000),
            durationS: envInt('DURATION_S', 3600),
          }
        : null,
    });
  }
  return { runId, saleId };
}

const BODY = JSON.stringify({ quantity: 1 });

export default function (data) {
  const vu = exec.vu.idInTest;
  const n = exec.vu.iterationInInstance;
  const user = `tp-${data.runId}-${vu}-${n % PER_VU}`;
  const res = http.post(`${BASE_URL}/v1/sales/${data.saleId}/orders`, BODY, {
    headers: {
      Authorization: `Bearer ${tokenFor(user)}`,
      'Content-Type': 'application/json',
      'Idempotency-Key': newKey(data.runId, vu, n),
    },
    tags: { kind: 'purchase' },
    responseCallback: http.expectedStatuses(...CONTRACT_STATUSES),
  });
  const known = CONTRACT_STATUSES.includes(res.status);
  if (res.status !== 0) {
    check(res, { 'purchase answer is a contract status (202, 409, 429, 503)': () => known });
  }
  answers.add(1, { status: known ? String(res.status) : res.status === 0 ? 'none' : 'other' });
}

function stepSummary(data, rate) {
  const requests = metricValue(data, `http_reqs{step:${rate}}`, 'count') || 0;
  const statuses = {};
  for (const status of ANSWER_KINDS) {
    statuses[status] = metricValue(data, `purchase_answers{step:${rate},status:${status}}`, 'count') || 0;
  }
  return {
    target_rate: rate,
    duration_s: STEP_S,
    requests,
    achieved_rate: Math.round((requests / STEP_S) * 10) / 10,
    dropped_iterations: metricValue(data, `dropped_iterations{scenario:step_${rate}}`, 'count') || 0,
    failed_rate: metricValue(data, `http_req_failed{step:${rate}}`, 'rate'),
    latency_ms: trend(data, `http_req_duration{step:${rate}}`),
    statuses,
  };
}

export function handleSummary(data) {
  const steps = STEPS.map((rate) => stepSummary(data, rate));
  const summary = {
    script: 'throughput.js',
    base_url: BASE_URL,
    sale_id: CHECK_SALE ? data.setup_data.saleId : null,
    run_id: data.setup_data.runId,
    step_s: STEP_S,
    steps,
    contract_checks_passed: metricValue(data, 'checks', 'rate'),
    thresholds: thresholdResults(data),
  };
  const lines = steps.map(
    (s) =>
      `step ${s.target_rate}/s: achieved ${s.achieved_rate}/s, p50/p95/p99 ms ` +
      `${fmt(s.latency_ms.p50)}/${fmt(s.latency_ms.p95)}/${fmt(s.latency_ms.p99)}, ` +
      `dropped ${s.dropped_iterations}, answers ${JSON.stringify(s.statuses)}`,
  );
  return summaryOutputs(summary, lines);
}

function fmt(value) {
  return value === null ? '-' : value.toFixed(2);
}

