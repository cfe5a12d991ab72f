"""Record library traces with older Playwright releases, one per trace format version, for
tests/pw_ingest/versions/ (checked in: the tests read them; re-recording needs npm and the network).

Each release of `playwright-core` is installed from npm into a cache folder
(`PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1`) and drives Debian's Chromium (`/usr/bin/chromium`, or
`MOLAR_CHROMIUM`) through `record_versions.js` against the ticket shop: the sold-out page, a quantity
typed, an "In stock" wait that times out, a click on a button the page lacks.

    python -m tests.apps.record_versions                # every release below
    python -m tests.apps.record_versions 1.40.1         # one

Releases before 1.19 cannot drive this Chromium (they refuse its `browser_ui` target: "Unknown target
type"), so trace formats 1 and 2 are not recorded; format 10 is what the tests record at test time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import zipfile
from pathlib import Path

from tests.apps.server import serve_ticketshop

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "pw_ingest" / "versions"
# One release per trace format version (the `version` of its `context-options` line).
RELEASES = ("1.25.2", "1.32.3", "1.38.1", "1.40.1", "1.45.3", "1.55.1")


def install(release: str, cache: Path) -> Path:
    folder = cache / release
    modules = folder / "node_modules"
    if not (modules / "playwright-core" / "package.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund", f"playwright-core@{release}"],
            cwd=folder,
            check=True,
            env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"},
            timeout=600,
        )
    return modules


def format_version(path: Path) -> int:
    with zipfile.ZipFile(path) as zf:
        first = zf.read("trace.trace").decode().splitlines()[0]
    return int(json.loads(first)["version"])


def record(release: str, base: str, cache: Path, out_dir: Path) -> Path:
    modules = install(release, cache)
    scratch = out_dir / f".recording-{release}.zip"
    subprocess.run(
        ["node", str(HERE / "record_versions.js"), base, str(scratch)],
        check=True,
        env={**os.environ, "NODE_PATH": str(modules)},
        timeout=180,
    )
    final = out_dir / f"pw-{release}-v{format_version(scratch)}.zip"
    scratch.replace(final)
    return final


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("releases", nargs="*", default=list(RELEASES))
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "molar-old-playwright")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with serve_ticketshop() as base:
        for release in args.releases:
            for stale in args.out.glob(f"pw-{release}-v*.zip"):
                stale.unlink()
            path = record(release, base, args.cache, args.out)
            print(f"playwright-core {release}: {path.name} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
