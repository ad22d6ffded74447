// Shared helpers of the k6 scripts beside it (flash_sale.js, throughput.js, sse.js). The chart mounts every
// *.js of this folder into the k6 Job's ConfigMap, so imports stay relative and the folder stays flat (ConfigMap
// keys cannot contain '/'). Nothing here sends a request at import time.

import http from 'k6/http';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import { fail, sleep } from 'k6';

// --- environment ----------------------------------------------------------------------------------------
export function env(name, fallback) {
  const value = __ENV[name];
  return value === undefined || value === '' ? fallback : value;
}

export function envInt(name, fallback) {
  const value = parseInt(env(name, String(fallback)), 10);
  if (Number.isNaN(value)) {
    throw new Error(`${name} must be an integer`);
  }
  return value;
}

export function envFloat(name, fallback) {
  const value = parseFloat(env(name, String(fallback)));
  if (Number.isNaN(value)) {
    throw new Error(`${name} must be a number`);
  }
  return value;
}

export function envBool(name, fallback) {
  return ['1', 'true', 'yes'].includes(String(env(name, fallback ? 'true' : 'false')).toLowerCase());
}

export function baseUrl() {
  return env('BASE_URL', 'http://127.0.0.1:8000').replace(/\/+$/, '');
}

export function sseUrl() {
  return env('SSE_URL', 'http://127.0.0.1:8001').replace(/\/+$/, '');
}

// A k6 duration ('90s', '2m', '1m30s', '500ms') in seconds, for arithmetic on stages.
export function seconds(duration) {
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let match;
  let seen = '';
  while ((match = re.exec(duration)) !== null) {
    const unit = { ms: 0.001, s: 1, m: 60, h: 3600 }[match[2]];
    total += parseFloat(match[1]) * unit;
    seen += match[0];
  }
  if (seen !== String(duration)) {
    throw new Error(`not a duration: ${duration}`);
  }
  return total;
}

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

// Tokens per VU, re-minted a minute before expiry (the API allows 30 s of clock skew on exp, not more).
// Users that come back (a retry, a second attempt) reuse their token, as a browser would.
const tokens = {};

export function tokenFor(user, { role = '', ttlS = 3600, secret = jwtSecret() } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const key = role ? `${role}:${user}` : user;
  const cached = tokens[key];
  if (cached && cached.exp - 60 > now) {
    return cached.token;
  }
  const claims = { sub: user, exp: now + ttlS };
  if (role) {
    claims.role = role;
  }
  const token = mintJwt(claims, secret);
  tokens[key] = { token, exp: claims.exp };
  return token;
}

// Forget a user's token: a buyer who is done never comes back, and 100,000 of them would fill a VU's memory.
export function forgetToken(user) {
  delete tokens[user];
}

export function jwtSecret() {
  return env('JWT_SECRET', '');
}

export function requireSecret() {
  if (jwtSecret().length < 32) {
    fail("JWT_SECRET (the API's FLASHSALE_AUTH__JWT_SECRET, at least 32 characters) is required");
  }
}

// --- answers --------------------------------------------------------------------------------------------
// The answers the contract allows for a purchase attempt during a sale; anything else is a failed check.
export const CONTRACT_STATUSES = [202, 409, 429, 503];

export function problemCode(res) {
  try {
    return res.json('code') || '';
  } catch (e) {
    return '';
  }
}

// Retry-After is seconds or an HTTP date; at least 50 ms, at most capS, with up to 20% jitter so retries do
// not arrive in lockstep.
export function retryDelay(res, capS) {
  const header = res.headers['Retry-After'];
  let wait = 1;
  if (header) {
    const asNumber = Number(header);
    wait = Number.isNaN(asNumber) ? (Date.parse(header) - Date.now()) / 1000 : asNumber;
  }
  wait = Math.min(Math.max(wait, 0.05), capS);
  return wait * (1 + Math.random() * 0.2);
}

// A fresh Idempotency-Key: unique per run, VU and attempt, visible ASCII.
export function newKey(runId, vu, n) {
  return `${runId}-${vu}-${n}-${Math.random().toString(36).slice(2, 10)}`;
}

// --- sales (setup) --------------------------------------------------------------------------------------
export function adminHeaders() {
  return {
    Authorization: `Bearer ${tokenFor('k6-admin', { role: 'admin', ttlS: 3600 })}`,
    'Content-Type': 'application/json',
  };
}

// Setup requests read their bodies even in scripts that discard the load's (discardResponseBodies).
const SETUP_PARAMS = { tags: { kind: 'setup' }, responseType: 'text' };

export function readSale(base, saleId) {
  return http.get(`${base}/v1/sales/${saleId}`, SETUP_PARAMS);
}

// Create (PUT) a sale that opens opensInS seconds from now (at once when 0: then POST open too, which pins
// opens_at to the server's clock); fails the test on any other answer.
export function createSale(
  base, saleId, { stock, price = '49.99', durationS = 300, perUserLimit = 1, opensInS = 0 },
) {
  const opens = Date.now() + opensInS * 1000;
  const body = JSON.stringify({
    name: `k6 ${saleId}`,
    price,
    stock,
    opens_at: new Date(opens).toISOString(),
    closes_at: new Date(opens + durationS * 1000).toISOString(),
    per_user_limit: perUserLimit,
  });
  const url = `${base}/v1/admin/sales/${saleId}`;
  const put = http.put(url, body, { ...SETUP_PARAMS, headers: adminHeaders() });
  if (put.status !== 200 && put.status !== 201) {
    fail(`creating sale ${saleId}: ${put.status} ${put.body}`);
  }
  if (opensInS > 0) {
    return put.json();
  }
  const open = http.post(`${url}/open`, null, { ...SETUP_PARAMS, headers: adminHeaders() });
  if (open.status !== 200) {
    fail(`opening sale ${saleId}: ${open.status} ${open.body}`);
  }
  return open.json();
}

// Wait until the sale exists and is in one of `states` (creating it first when asked); returns the sale.
export function awaitSale(base, saleId, { states, waitS, create = null }) {
  const deadline = Date.now() + waitS * 1000;
  let created = false;
  for (;;) {
    const res = readSale(base, saleId);
    if (res.status === 404 && create && !created) {
      createSale(base, saleId, create);
      created = true;
      continue;
    }
    const state = res.status === 200 ? res.json('state') : `HTTP ${res.status}`;
    if (states.includes(state)) {
      return res.json();
    }
    if (state === 'sold_out' || state === 'closed') {
      fail(`sale ${saleId} is already ${state}; create a new one (a new FlashSale or CREATE_SALE=true)`);
    }
    if (Date.now() > deadline) {
      fail(`sale ${saleId} is not ${states.join('/')} after ${waitS}s (last answer: ${state})`);
    }
    sleep(1);
  }
}

// --- summaries ------------------------------------------------------------------------------------------
export function metricValue(data, name, field) {
  const metric = data.metrics[name];
  return metric && metric.values[field] !== undefined ? metric.values[field] : null;
}

export function thresholdResults(data) {
  const out = {};
  for (const [name, metric] of Object.entries(data.metrics)) {
    for (const [expression, result] of Object.entries(metric.thresholds || {})) {
      out[`${name}: ${expression}`] = result.ok;
    }
  }
  return out;
}

export function trend(data, name) {
  return {
    p50: metricValue(data, name, 'med'),
    p90: metricValue(data, name, 'p(90)'),
    p95: metricValue(data, name, 'p(95)'),
    p99: metricValue(data, name, 'p(99)'),
    max: metricValue(data, name, 'max'),
    avg: metricValue(data, name, 'avg'),
  };
}

// The summary as handleSummary returns it: a human line or two and the JSON on stdout (its last line, so a
// `kubectl logs` reader can pick it up), and the same JSON at SUMMARY_PATH when given.
export function summaryOutputs(summary, humanLines) {
  const json = JSON.stringify(summary);
  const out = { stdout: [...humanLines, json, ''].join('\n') };
  const path = env('SUMMARY_PATH', '');
  if (path) {
    out[path] = `${json}\n`;
  }
  return out;
}

export const TREND_STATS = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'];
