'use strict';
// A Playwright Test reporter a replay adds to the run (`--reporter <this file>`): it writes each test's
// result with its top-level steps (title, category, duration, error) as JSON to $MOLAR_STEPS_OUTPUT.
// Plain Node, no dependencies: it runs inside the replay's sandbox.
const fs = require('node:fs');
const path = require('node:path');

class MolarStepsReporter {
  constructor() {
    this.tests = [];
    this.rootDir = process.cwd();
  }

  onBegin(config) {
    this.rootDir = config.rootDir || this.rootDir;
  }

  onTestEnd(test, result) {
    const titles = test.titlePath().filter(Boolean);
    const project = test.parent.project() ? test.parent.project().name : undefined;
    const file = path.relative(process.cwd(), test.location.file).split(path.sep).join('/');
    // titlePath: [project?, file, ...describes, title]; keep the describes and the title.
    const fileIndex = titles.findIndex((t) => test.location.file.endsWith(t));
    this.tests.push({
      project,
      file,
      title_path: fileIndex >= 0 ? titles.slice(fileIndex + 1) : [test.title],
      status: result.status,
      duration_ms: result.duration,
      errors: (result.errors || []).map((e) => ({ message: String(e.message || e.value || '').slice(0, 4000) })),
      steps: (result.steps || []).map((s) => ({
        title: String(s.title).slice(0, 500),
        category: s.category,
        duration_ms: s.duration,
        error: s.error ? String(s.error.message || s.error.value || 'failed').slice(0, 4000) : null,
      })),
    });
  }

  onEnd() {
    const out = process.env.MOLAR_STEPS_OUTPUT;
    if (out) fs.writeFileSync(out, JSON.stringify({ tests: this.tests }));
  }

  printsToStdio() {
    return false;
  }
}

module.exports = MolarStepsReporter;
