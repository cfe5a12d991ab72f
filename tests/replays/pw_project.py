"""A real @playwright/test project with a bug, written into a git repository for replay tests.

A small Node shop (`server.js`, started by Playwright's `webServer`) shows a cart whose total forgets the
quantities; `specs/cart.spec.js` expects the right total and fails at that step. `FIX` is the one-line
diff that makes it pass. Playwright comes from tests/playwright_project/node_modules (`npm ci` in
scripts/test), copied in; the browser is Debian's /usr/bin/chromium.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from molar_mcp.replay.drivers.playwright import STEPS_REPORTER

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO_ROOT / "tests" / "playwright_project" / "node_modules"
PACKAGES = ("@playwright", "playwright", "playwright-core")

SERVER_JS = """\
const http = require('node:http');
const items = [{ name: 'ticket', price: 1200, qty: 2 }];

function total(list) {
  return list.reduce((sum, item) => sum + item.price, 0);
}

const page = () => `<!doctype html><title>cart</title>
<p id="items">${items.reduce((n, i) => n + i.qty, 0)} tickets</p>
<p id="total">Total: ${(total(items) / 100).toFixed(2)}</p>`;

http.createServer((req, res) => {
  if (req.url === '/healthz') { res.end('ok'); return; }
  res.setHeader('content-type', 'text/html');
  res.end(page());
}).listen(Number(process.env.PORT || 4391), '127.0.0.1');
"""

CONFIG_JS = """\
const { defineConfig } = require('@playwright/test');
const port = Number(process.env.PORT || 4391);
module.exports = defineConfig({
  testDir: './specs',
  timeout: 15000,
  expect: { timeout: 1500 },
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    launchOptions: { executablePath: process.env.MOLAR_CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] },
  },
  webServer: { command: 'node server.js', url: `http://127.0.0.1:${port}/healthz`, reuseExistingServer: false },
  projects: [{ name: 'chromium', use: { browserName: 'chromium' } }],
});
"""

SPEC_JS = """\
const { test, expect } = require('@playwright/test');

test.describe('cart', () => {
  test('shows the total', async ({ page }) => {
    await page.goto('/');
    await expect(page.locator('#items')).toHaveText('2 tickets');
    await expect(page.locator('#total')).toHaveText('Total: 24.00');
  });
});
"""

MOLAR_TOML = """\
[replay]
kind = "playwright"
command = "node node_modules/@playwright/test/cli.js test"
"""

FIXED_SERVER_JS = SERVER_JS.replace("sum + item.price, 0", "sum + item.price * item.qty, 0")
FIX = (
    "server.js",
    "".join(
        difflib.unified_diff(
            SERVER_JS.splitlines(keepends=True), FIXED_SERVER_JS.splitlines(keepends=True), "a/server.js", "b/server.js"
        )
    ),
)


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def make_project(path: Path) -> str:
    """Write the project, commit it (node_modules ignored, but present), return the commit."""
    assert (NODE_MODULES / "@playwright" / "test").is_dir(), "run `npm ci --prefix tests/playwright_project`"
    path.mkdir(parents=True)
    files = {
        "server.js": SERVER_JS,
        "playwright.config.js": CONFIG_JS,
        "specs/cart.spec.js": SPEC_JS,
        "molar.toml": MOLAR_TOML,
        "package.json": json.dumps({"name": "cart", "private": True}) + "\n",
        ".gitignore": "node_modules/\ntest-results/\n",
    }
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    for package in PACKAGES:
        shutil.copytree(NODE_MODULES / package, path / "node_modules" / package, symlinks=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "cart with a total bug")
    return git(path, "rev-parse", "HEAD")


def run_test(path: Path, port: int) -> dict[str, Any]:
    """Run the spec for real on this machine, tracing on, with the replay's steps reporter; return what it
    wrote. The trace.zip is under `path.parent / "results"` (see `trace_zip`)."""
    env = {**os.environ, "PORT": str(port), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1", "CI": "1"}
    env["MOLAR_STEPS_OUTPUT"] = str(path.parent / "report.json")
    command = ["node", "node_modules/@playwright/test/cli.js", "test", "--reporter", STEPS_REPORTER, "--retries", "0"]
    command += ["--trace", "on", "--output", str(path.parent / "results")]
    subprocess.run(
        command,
        cwd=path,
        env=env,
        capture_output=True,
        timeout=180,
    )
    report: dict[str, Any] = json.loads((path.parent / "report.json").read_text())
    return report


def trace_zip(path: Path) -> bytes:
    [found] = sorted((path.parent / "results").glob("*/trace.zip"))
    return found.read_bytes()
