'use strict';
// One finished test attempt as the `result` field of POST /v1/traces/ingest (docs/playwright.md).

const path = require('node:path');

const TAG = 'molar-playwright-reporter';
const MAX_CHUNKS = 1000; // writes of stdout or stderr sent with one result

function posix(file) {
  return file.split(path.sep).join('/');
}

/** stdout/stderr chunks (strings or Buffers) as strings, at most `budget` characters in all. */
function textChunks(chunks, budget) {
  const out = [];
  let used = 0;
  for (const chunk of chunks || []) {
    if (out.length >= MAX_CHUNKS) {
      out.push(`[${TAG}: output cut after ${MAX_CHUNKS} writes]`);
      break;
    }
    const text = Buffer.isBuffer(chunk) ? chunk.toString('utf8') : String(chunk);
    if (used + text.length > budget) {
      out.push(`${text.slice(0, Math.max(0, budget - used))}\n[${TAG}: output cut at ${budget} characters]`);
      break;
    }
    out.push(text);
    used += text.length;
  }
  return out;
}

/**
 * Who the test is (project + file + title path is its identity, the file relative to the config's
 * rootDir as Playwright's JSON reporter writes it) and how this attempt went, with what a replay needs
 * to run it again (the repository, and the test root and config relative to it).
 * @returns {{body: object, title: string, failing: boolean}}
 */
function describeResult(test, result, { rootDir, configFile, source, playwrightVersion, maxOutputChars }) {
  const titles = test.titlePath(); // ['', project, file, ...describe blocks, title]
  const project = test.parent && test.parent.project ? test.parent.project() : undefined;
  const repoPath = source.repo.path;
  const body = {
    project: project ? project.name : titles[1] || '',
    file: posix(path.relative(rootDir, test.location.file)),
    line: test.location.line,
    column: test.location.column,
    title_path: titles.slice(3),
    status: result.status,
    expected_status: test.expectedStatus,
    retry: result.retry,
    duration_ms: Math.round(result.duration),
    errors: (result.errors || []).map((e) => {
      const error = { message: e.message || String(e.value || '') };
      if (e.stack) error.stack = e.stack;
      if (e.location) error.location = { ...e.location, file: posix(path.relative(rootDir, e.location.file)) };
      return error;
    }),
    stdout: textChunks(result.stdout, maxOutputChars / 2),
    stderr: textChunks(result.stderr, maxOutputChars / 2),
    repo: { ...source.repo },
    test_id: test.id,
    start_time: result.startTime instanceof Date ? result.startTime.toISOString() : undefined,
    annotations: (test.annotations || []).map((a) => ({ type: a.type, description: a.description })),
    tags: test.tags || [],
    playwright_version: playwrightVersion,
  };
  if (source.commit) body.commit = source.commit;
  if (source.branch) body.branch = source.branch;
  if (repoPath) {
    body.root_dir = posix(path.relative(repoPath, rootDir)) || '.';
    if (configFile) body.config_file = posix(path.relative(repoPath, configFile));
  }
  const failing = result.status !== test.expectedStatus && result.status !== 'skipped';
  return { body, title: titles.slice(2).filter(Boolean).join(' › '), failing };
}

module.exports = { describeResult, posix };
