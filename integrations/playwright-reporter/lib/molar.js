'use strict';
// The few Molar calls the reporter makes, over Node's built-in fetch, each bounded in time and
// retried with backoff. Nothing here throws: every call resolves to {ok, status, body, error}.

const RETRY_STATUS = new Set([408, 425, 429, 500, 502, 503, 504]);

function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal && signal.aborted) return resolve();
    const timer = setTimeout(resolve, ms);
    if (signal) signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** Seconds or an HTTP date in `Retry-After` (RFC 9110 §10.2.3) as milliseconds, else undefined. */
function retryAfterMs(response) {
  const value = response.headers.get('retry-after');
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

class MolarClient {
  /**
   * @param {{url: string, apiKey?: string, timeoutMs: number, retries: number, backoffMs: number,
   *          maxConsecutiveFailures: number, signal: AbortSignal}} options
   */
  constructor(options) {
    this.base = options.url.replace(/\/+$/, '');
    this.apiKey = options.apiKey;
    this.timeoutMs = options.timeoutMs;
    this.retries = options.retries;
    this.backoffMs = options.backoffMs;
    this.maxConsecutiveFailures = options.maxConsecutiveFailures;
    this.signal = options.signal;
    this.consecutiveFailures = 0;
    this.lastError = undefined;
  }

  /** True once Molar failed to answer this many calls in a row: later calls are not attempted, so a
   * Molar that is down costs the test run a bounded time however many tests there are. */
  get unreachable() {
    return this.consecutiveFailures >= this.maxConsecutiveFailures;
  }

  headers(extra) {
    const headers = { 'user-agent': 'molar-playwright-reporter', ...extra };
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    return headers;
  }

  json(method, path, body) {
    return this.request(method, path, () => ({
      headers: this.headers({ 'content-type': 'application/json' }),
      body: JSON.stringify(body),
    }));
  }

  /** `makeBody` builds a fresh body per attempt (a FormData cannot be sent twice safely). */
  multipart(path, makeForm, idempotencyKey) {
    return this.request('POST', path, () => ({
      headers: this.headers(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}),
      body: makeForm(),
    }));
  }

  async request(method, path, makeInit) {
    if (this.unreachable) return { ok: false, skipped: true, error: this.lastError };
    let last = { ok: false, error: 'not attempted' };
    for (let attempt = 0; attempt <= this.retries; attempt += 1) {
      if (this.signal.aborted) return { ok: false, error: 'gave up: the test run ended', aborted: true };
      let wait;
      try {
        const signal = AbortSignal.any
          ? AbortSignal.any([this.signal, AbortSignal.timeout(this.timeoutMs)])
          : AbortSignal.timeout(this.timeoutMs);
        const response = await fetch(this.base + path, { method, ...makeInit(), signal });
        const text = await response.text();
        let body;
        try { body = text ? JSON.parse(text) : undefined; } catch { body = undefined; }
        this.consecutiveFailures = 0;
        if (response.ok) return { ok: true, status: response.status, body };
        const message = (body && (body.message || body.error_description || body.error)) || text.slice(0, 200) || response.statusText;
        last = { ok: false, status: response.status, body, error: `HTTP ${response.status}: ${message}` };
        if (!RETRY_STATUS.has(response.status)) return last;
        wait = retryAfterMs(response);
      } catch (err) {
        if (this.signal.aborted) return { ok: false, error: 'gave up: the test run ended', aborted: true };
        const cause = err && err.cause && (err.cause.code || err.cause.message);
        const reason = err && err.name === 'TimeoutError' ? `no answer in ${this.timeoutMs} ms` : (cause || String(err && err.message));
        last = { ok: false, error: reason };
        this.consecutiveFailures += 1;
        this.lastError = reason;
        if (this.unreachable) return last;
      }
      if (attempt < this.retries) {
        const backoff = this.backoffMs * 2 ** attempt;
        const jitter = Math.random() * backoff * 0.25;
        await sleep(Math.min(wait !== undefined ? wait : backoff + jitter, 10_000), this.signal);
      }
    }
    return last;
  }
}

module.exports = { MolarClient };
