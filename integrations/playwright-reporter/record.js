'use strict';
// molar-playwright-reporter/record: writes what the reporter would upload into a folder instead of
// sending it — one folder per test attempt (`001/result.json`, its trace.zip and attachments) and
// `run.json` — for an upload later, or for data shipped with Molar (its demo is recorded this way).
//
//   reporter: [['list'], ['molar-playwright-reporter/record', { dir: 'molar-upload' }]]   // or MOLAR_RECORD_DIR

const fs = require('node:fs/promises');
const path = require('node:path');
const { describeResult } = require('./lib/result');
const { runSource } = require('./lib/source');

class RecordReporter {
  constructor(options = {}) {
    this.dir = path.resolve(options.dir || process.env.MOLAR_RECORD_DIR || 'molar-upload');
    this.runName = options.runName || process.env.MOLAR_RUN_NAME || undefined;
    this.count = 0;
    this.writes = [];
  }

  printsToStdio() {
    return false;
  }

  onBegin(config) {
    this.config = config;
    this.source = runSource(process.env, config.rootDir);
  }

  onTestEnd(test, result) {
    this.count += 1;
    const folder = path.join(this.dir, String(this.count).padStart(3, '0'));
    const described = describeResult(test, result, {
      rootDir: this.config.rootDir,
      configFile: this.config.configFile,
      source: this.source,
      playwrightVersion: this.config.version,
      maxOutputChars: 256 * 1024,
    });
    this.writes.push(this.write(folder, described.body, result.attachments || []));
  }

  async write(folder, body, attachments) {
    await fs.mkdir(folder, { recursive: true });
    const entry = { result: body, trace: null, attachments: [] };
    for (const attachment of attachments) {
      const isTrace = attachment.name === 'trace' && entry.trace === null;
      let name = isTrace ? 'trace.zip' : path.basename(attachment.path || attachment.name);
      if (!isTrace && (name === 'trace.zip' || name === 'result.json' || entry.attachments.some((a) => a.name === name))) {
        name = `${entry.attachments.length + 1}-${name}`;
      }
      if (attachment.path) await fs.copyFile(attachment.path, path.join(folder, name));
      else if (attachment.body) await fs.writeFile(path.join(folder, name), attachment.body);
      else continue;
      if (isTrace) entry.trace = name;
      else entry.attachments.push({ name, content_type: attachment.contentType || 'application/octet-stream' });
    }
    await fs.writeFile(path.join(folder, 'result.json'), `${JSON.stringify(entry, null, 2)}\n`);
  }

  async onEnd(result) {
    await Promise.all(this.writes);
    const status = { passed: 'passed', failed: 'failed' }[result.status] || 'errored';
    const run = { kind: 'playwright', ...this.source, status };
    if (this.runName) run.name = this.runName;
    await fs.mkdir(this.dir, { recursive: true });
    await fs.writeFile(path.join(this.dir, 'run.json'), `${JSON.stringify(run, null, 2)}\n`);
  }
}

module.exports = RecordReporter;
module.exports.default = RecordReporter;
