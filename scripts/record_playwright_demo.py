"""Record the Playwright Test run that `serve --demo` shows, from a real run.

Starts the demo shop (src/molar_mcp/demo/shop) on a free port, runs `npx playwright test -c demo.config.js`
in tests/playwright_project (its demo/*.spec.js drive Debian's Chromium through the storefront; two
tests fail on the shop's shipped bugs) with molar-playwright-reporter/record, and replaces
src/molar_mcp/demo/playwright_run/ with what the reporter would have uploaded: run.json and one folder per
test attempt (result.json, trace.zip, failure screenshot, error-context.md).

    .venv/bin/python scripts/record_playwright_demo.py        # after `bash scripts/test` ran npm ci once
    .venv/bin/python scripts/record_playwright_demo.py --out DIR   # record into DIR instead (the tests do)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "tests" / "playwright_project"
SHOP = ROOT / "src" / "molar_mcp" / "demo" / "shop"
TARGET = ROOT / "src" / "molar_mcp" / "demo" / "playwright_run"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(base: str, shop: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if shop.poll() is not None:
            raise SystemExit("the demo shop exited before it answered /healthz")
        try:
            if httpx2.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            time.sleep(0.1)
    raise SystemExit("the demo shop did not answer /healthz in 30 s")


def machine_free(folder: Path) -> None:
    """Drop the recording machine's checkout path from run.json and the results (it means nothing elsewhere)."""
    for path in [folder / "run.json", *folder.glob("*/result.json")]:
        data = json.loads(path.read_text(encoding="utf-8"))
        for holder in (data, data.get("result", {})):
            repo = holder.get("repo")
            if isinstance(repo, dict):
                repo.pop("path", None)
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record the demo's Playwright Test run from a real run.")
    parser.add_argument("--out", type=Path, default=TARGET, help=f"the folder to replace (default: {TARGET})")
    target: Path = parser.parse_args(argv).out.resolve()
    if not (PROJECT / "node_modules" / "@playwright" / "test").is_dir():
        raise SystemExit("tests/playwright_project has no node_modules: run `bash scripts/test` (npm ci) first")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="molar-pw-demo-") as tmp:
        shop = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=SHOP)
        try:
            wait_healthy(base, shop)
            record = Path(tmp) / "record"
            env = {
                **os.environ,
                "APP_URL": base,
                "MOLAR_RECORD_DIR": str(record),
                "PW_OUTPUT_DIR": str(Path(tmp) / "test-results"),
                "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1",
            }
            done = subprocess.run(
                ["npx", "--no-install", "playwright", "test", "-c", "demo.config.js"], cwd=PROJECT, env=env, check=False
            )
        finally:
            shop.terminate()
            shop.wait(timeout=10)
        if done.returncode not in (0, 1) or not (record / "run.json").is_file():
            raise SystemExit(f"npx playwright test exited {done.returncode} without a recorded run")
        machine_free(record)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(record, target)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    attempts = len(list(target.glob("*/result.json")))
    print(f"recorded {attempts} test attempts ({size // 1024} KiB) into {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
