// Shared by the buyer page and the dashboard: DOM and fetch helpers, problem+json messages,
// tokens (kept in sessionStorage: gone when the tab closes) and idempotency keys. No dependencies.

export const $ = (id) => document.getElementById(id);

export function show(el, text, tone) {
  el.textContent = text;
  if (tone) el.dataset.tone = tone;
  else delete el.dataset.tone;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A problem+json answer (RFC 9457) as one readable line.
export async function problemText(response) {
  try {
    const doc = await response.json();
    return doc.detail || doc.title || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

export async function problemCode(response) {
  try {
    return (await response.clone().json()).code || "";
  } catch {
    return "";
  }
}

// Seconds to wait from a Retry-After header, bounded so a page never sleeps for long.
export function retryAfterMs(response, fallbackMs = 1000) {
  const seconds = Number(response.headers.get("Retry-After"));
  return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 5) * 1000 : fallbackMs;
}

// An Idempotency-Key: 128 random bits as hex. getRandomValues works on plain http too, where
// crypto.randomUUID does not exist (it needs a secure context).
export function newKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// The claims of a JWT (not verified: only to show who is signed in and when the token expires).
export function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}

// A token handed over in the URL fragment (#token=...; never sent to a server), else the one
// this tab stored. The fragment is removed from the address bar at once.
export function takeToken(storageKey) {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("token");
  if (given) {
    sessionStorage.setItem(storageKey, given);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(storageKey) || "";
}

export function storeToken(storageKey, token) {
  if (token) sessionStorage.setItem(storageKey, token);
  else sessionStorage.removeItem(storageKey);
}

export function fmt(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}
