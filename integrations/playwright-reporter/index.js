'use strict';
// molar-playwright-reporter: a Playwright Test reporter that uploads every finished test attempt
// (its result, trace.zip and attachments) to Molar MCP while the run goes on.
//
//   // playwright.config.ts
//   reporter: [['list'], ['molar-playwright-reporter']],
//   // and MOLAR_URL=https://molar.example.com MOLAR_API_KEY=molar_sk_… in the environment
//
// Contract with the test run: the reporter never fails it and never holds it up for long. Uploads
// run beside the tests (a few at a time); a Molar that is down or slow costs at most the flush bound
// at the end, then a warning. Nothing here throws into Playwright.

const fs = require('node:fs/promises');
const path = require('node:path');
const crypto = require('node:crypto');
const { MolarClient } = require('./lib/molar');
const { runSource } = require('./lib/source');
const { describeResult } = require('./lib/result');

const DEFAULTS = {
  timeoutMs: 15_000, // one HTTP request
  retries: 3, // after the first attempt, with exponential backoff
  backoffMs: 500,
  flushTimeoutMs: 30_000, // what onEnd waits, at most, for uploads still under way
  concurrency: 4,
  maxConsecutiveFailures: 3, // Molar unreachable this many times in a row: stop trying
  maxAttachmentBytes: 25 * 1024 * 1024,
  maxOutputChars: 256 * 1024, // stdout + stderr text sent with one result
};

const TAG = 'molar-playwright-reporter';

function envNumber(value) {
  const number = Number(value);
  return value !== undefined && value !== '' && Number.isFinite(number) && number >= 0 ? number : undefined;
}

class MolarReporter {
  /** @param {{url?: string, apiKey?: string, runName?: string, runId?: string, timeoutMs?: number,
   *   retries?: number, flushTimeoutMs?: number, concurrency?: number, quiet?: boolean}} options */
  constructor(options = {}) {
    const env = process.env;
    this.options = {
      ...DEFAULTS,
      timeoutMs: envNumber(env.MOLAR_TIMEOUT_MS) ?? DEFAULTS.timeoutMs,
      flushTimeoutMs: envNumber(env.MOLAR_FLUSH_TIMEOUT_MS) ?? DEFAULTS.flushTimeoutMs,
      retries: envNumber(env.MOLAR_RETRIES) ?? DEFAULTS.retries,
      ...options,
    };
    this.url = options.url || env.MOLAR_URL || undefined;
    this.apiKey = options.apiKey || env.MOLAR_API_KEY || undefined;
    this.runName = options.runName || env.MOLAR_RUN_NAME || undefined;
    this.givenRunId = options.runId || env.MOLAR_RUN_ID || undefined;
    this.enabled = Boolean(this.url);
    this.abort = new AbortController();
    this.pending = new Set();
    this.queue = [];
    this.active = 0;
    this.uploaded = 0;
    this.failed = []; // {title, error}
    this.links = 0;
    this.stopReason = undefined; // set when Molar refused us for good (401/403)
  }

  printsToStdio() {
    return false; // Playwright adds its default line reporter when this one is alone
  }

  onBegin(config, suite) {
    if (!this.enabled) return;
    try {
      this.config = config;
      this.rootDir = config.rootDir;
      this.client = new MolarClient({
        url: this.url,
        apiKey: this.apiKey,
        timeoutMs: this.options.timeoutMs,
        retries: this.options.retries,
        backoffMs: this.options.backoffMs,
        maxConsecutiveFailures: this.options.maxConsecutiveFailures,
        signal: this.abort.signal,
      });
      this.source = runSource(process.env, config.rootDir);
      this.playwrightVersion = config.version;
      this.total = suite.allTests().length;
      this.runPromise = this.givenRunId ? Promise.resolve(this.givenRunId) : this.createRun();
    } catch (err) {
      this.disable(`could not start: ${err && err.message}`);
    }
  }

  async createRun() {
    const body = { kind: 'playwright', ...this.source };
    if (this.runName) body.name = this.runName;
    const answer = await this.client.json('POST', '/v1/runs', body);
    if (answer.ok && answer.body && answer.body.id) {
      this.run = answer.body;
      this.createdRun = true;
      return answer.body.id;
    }
    this.noteRefusal(answer);
    if (!answer.skipped) this.runError = answer.error;
    return undefined; // results still go up, without a run
  }

  onTestEnd(test, result) {
    if (!this.enabled) return;
    try {
      const described = this.describe(test, result);
      const files = (result.attachments || []).filter((a) => a.path || a.body);
      this.enqueue(() => this.upload(described, files));
    } catch (err) {
      this.failed.push({ title: test.title, error: `could not read the result: ${err && err.message}` });
    }
  }

  describe(test, result) {
    return describeResult(test, result, {
      rootDir: this.rootDir,
      configFile: this.config.configFile,
      source: this.source,
      playwrightVersion: this.playwrightVersion,
      maxOutputChars: this.options.maxOutputChars,
    });
  }

  enqueue(task) {
    const done = new Promise((resolve) => this.queue.push(resolve)).then(task).catch((err) => {
      this.failed.push({ title: '(upload)', error: String(err && err.message) });
    }).finally(() => {
      this.active -= 1;
      this.pending.delete(done);
      this.next();
    });
    this.pending.add(done);
    this.next();
  }

  next() {
    while (this.active < this.options.concurrency && this.queue.length) {
      this.active += 1;
      this.queue.shift()();
    }
  }

  async upload(described, attachments) {
    if (this.stopReason || this.abort.signal.aborted) {
      this.failed.push({ title: described.title, error: this.stopReason || 'gave up: the test run ended' });
      return;
    }
    const runId = await this.runPromise;
    if (this.stopReason) {
      this.failed.push({ title: described.title, error: this.stopReason });
      return;
    }
    const parts = await this.readAttachments(attachments);
    const result = { ...described.body };
    if (parts.missing.length) result.missing_attachments = parts.missing;
    const key = crypto.randomUUID();
    const answer = await this.client.multipart('/v1/traces/ingest', () => {
      const form = new FormData();
      const json = JSON.stringify(result);
      if (parts.trace) {
        form.append('file', parts.trace.blob, parts.trace.name);
        form.append('format', 'playwright-trace');
      } else {
        // No trace (skipped, or tracing off for this attempt): the result is the file.
        form.append('file', new Blob([json], { type: 'application/json' }), 'result.json');
        form.append('format', 'playwright-result');
      }
      if (runId) form.append('run_id', runId);
      form.append('result', json);
      for (const part of parts.others) form.append('attachment', part.blob, part.name);
      return form;
    }, key);
    if (!answer.ok) {
      this.noteRefusal(answer);
      this.failed.push({ title: described.title, error: answer.error });
      return;
    }
    this.uploaded += 1;
    if (described.failing && !this.options.quiet) {
      const link = this.traceLink(answer.body || {});
      const retry = result.retry ? ` (retry ${result.retry})` : '';
      process.stdout.write(`  Molar: ${described.title}${retry} ${result.status} → ${link}\n`);
      this.links += 1;
    }
  }

  traceLink(stored) {
    if (stored.url) return stored.url;
    const base = this.url.replace(/\/+$/, '');
    return stored.trace_id ? `${base}/v1/traces/${stored.trace_id}/report.md (trace ${stored.short_id || stored.trace_id})` : base;
  }

  /** The trace.zip as `file`, every other attachment as an `attachment` part; files that vanished
   * or are too large are listed instead of sent. */
  async readAttachments(attachments) {
    const out = { trace: undefined, others: [], missing: [] };
    for (const attachment of attachments) {
      const isTrace = attachment.name === 'trace' && !out.trace;
      const name = attachment.path
        ? path.basename(attachment.path)
        : `${attachment.name}${extension(attachment.contentType)}`;
      let data;
      try {
        if (attachment.path) {
          const info = await fs.stat(attachment.path);
          if (info.size > this.options.maxAttachmentBytes) {
            out.missing.push({ name: attachment.name, reason: `${info.size} bytes, over the ${this.options.maxAttachmentBytes}-byte limit` });
            continue;
          }
          data = await fs.readFile(attachment.path);
        } else {
          data = Buffer.isBuffer(attachment.body) ? attachment.body : Buffer.from(String(attachment.body));
        }
      } catch (err) {
        out.missing.push({ name: attachment.name, reason: err && err.code === 'ENOENT' ? 'file not found' : String(err && err.message) });
        continue;
      }
      const part = { name, blob: new Blob([data], { type: attachment.contentType || 'application/octet-stream' }) };
      if (isTrace) out.trace = part;
      else out.others.push(part);
    }
    return out;
  }

  noteRefusal(answer) {
    if (answer.status === 401 || answer.status === 403) {
      this.stopReason = `Molar refused the API key (${answer.error}); set MOLAR_API_KEY to a key with the mcp:trace:write scope`;
    }
  }

  disable(reason) {
    this.enabled = false;
    this.warn(reason);
  }

  warn(message) {
    process.stderr.write(`${TAG}: ${message}\n`);
  }

  async onEnd(result) {
    if (!this.enabled) {
      if (!this.options.quiet && !this.url) this.warn('MOLAR_URL is not set: nothing was uploaded');
      return;
    }
    try {
      await this.flush(result);
    } catch (err) {
      this.warn(`gave up: ${err && err.message}`);
    }
  }

  async flush(result) {
    const started = Date.now();
    const bound = this.options.flushTimeoutMs;
    let timer;
    const timedOut = new Promise((resolve) => { timer = setTimeout(() => resolve('timeout'), bound); });
    const drained = (async () => {
      while (this.pending.size) await Promise.allSettled([...this.pending]);
      return this.runPromise;
    })();
    const outcome = await Promise.race([drained, timedOut]);
    clearTimeout(timer);
    const left = this.pending.size; // queued uploads are pending too
    if (outcome === 'timeout') {
      this.abort.abort(); // the uploads still running stop now; the run is not held up further
      this.warn(`${left} upload(s) still under way after ${bound} ms: stopped waiting`);
    }
    const runId = await Promise.race([this.runPromise, Promise.resolve(undefined)]);
    if (runId && this.createdRun && !this.abort.signal.aborted && !this.client.unreachable && !this.stopReason) {
      const remaining = Math.max(2000, bound - (Date.now() - started));
      this.client.timeoutMs = Math.min(this.client.timeoutMs, remaining);
      this.client.retries = 1;
      const status = { passed: 'passed', failed: 'failed' }[result && result.status] || 'errored';
      const finished = await this.client.json('POST', `/v1/runs/${encodeURIComponent(runId)}/finish`, { status });
      if (!finished.ok) this.warn(`could not finish run ${runId}: ${finished.error}`);
      else this.run = finished.body || this.run;
    }
    this.summary(runId);
  }

  summary(runId) {
    const notSent = this.failed.length;
    const base = this.url.replace(/\/+$/, '');
    if (this.uploaded && !this.options.quiet) {
      const run = runId ? ` to run ${(this.run && this.run.short_id) || runId} (${base}/v1/runs/${runId})` : '';
      process.stdout.write(`  Molar: ${this.uploaded} result(s) uploaded${run}\n`);
    }
    const common = Boolean(this.stopReason || this.client.unreachable); // one cause for every failure: said once
    if (this.runError && !common) this.warn(`could not create a run: ${this.runError}`);
    if (!notSent) return;
    let why = this.stopReason;
    if (!why && this.client.unreachable) why = `Molar at ${base} did not answer (${this.client.lastError})`;
    if (!why) why = this.failed[0].error;
    this.warn(`${notSent} result(s) were not uploaded: ${why}. The test run itself is unaffected.`);
    if (common) return;
    for (const { title, error } of this.failed.slice(0, 5)) {
      if (error !== why) this.warn(`  ${title}: ${error}`);
    }
  }
}

function extension(contentType) {
  const known = { 'image/png': '.png', 'image/jpeg': '.jpg', 'text/markdown': '.md', 'text/plain': '.txt', 'application/json': '.json', 'application/zip': '.zip', 'video/webm': '.webm' };
  return known[(contentType || '').split(';')[0].trim()] || '';
}

module.exports = MolarReporter;
module.exports.default = MolarReporter;
