"""Re-record the labelled corpus of real runs (tests/corpus): first the labels, then every recording.

1. writes tests/corpus/labels.json from tests/corpus/cases.py — each case's expected top label and
   critical step, written from what its scenario does, before any detector reads a recording;
2. records the cases from real runs into tests/corpus/recordings/:
   - `web/<app>/<name>.zip`: the Python `playwright` package driving Debian's Chromium against the
     ticket shop, the task board and the clinic (tests/apps), trace.zip per case (tests/corpus/web.py);
   - `pwtest/<app>/<name>/`: `npx playwright test -c corpus.config.js` in tests/playwright_project
     against the board and the clinic, result.json + trace.zip per test (tests/corpus/pwtest.py);
   - `agent/<app>/<name>.otlp.json`: the travel booker and the code reviewer (scripted models) traced
     with the OpenTelemetry SDK, one OTLP/JSON export per run (tests/corpus/agents.py);
3. checks that every failing case failed and every control passed (exit 1 otherwise).

    PYTHONPATH=. .venv/bin/python scripts/record_corpus.py [web|pwtest|agent …] [CASE_ID …]

A case id (`web/board/sync-refused`) re-records only that case.

Needs the dev extra, Debian's /usr/bin/chromium and `npm ci` in tests/playwright_project (bash scripts/test
runs it). tests/corpus/test_corpus.py reads the recordings; it never re-records."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.corpus.cases import all_cases  # noqa: E402

CORPUS = ROOT / "tests" / "corpus"
LABELS = CORPUS / "labels.json"
RECORDINGS = CORPUS / "recordings"
SOURCES = ("web", "pwtest", "agent")


def write_labels() -> None:
    cases = [c.as_json() for c in all_cases()]
    LABELS.write_text(json.dumps({"cases": cases}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    failing = sum(1 for c in cases if c["label"] is not None)
    print(f"wrote {LABELS.relative_to(ROOT)}: {len(cases)} cases, {failing} failing, {len(cases) - failing} controls")


def record(source: str, only: set[str] | None) -> dict[str, str]:
    out = RECORDINGS / source
    if out.exists() and not only:
        shutil.rmtree(out)
    if source == "web":
        from tests.corpus.web import record_web

        return record_web(out, only)
    if source == "pwtest":
        from tests.corpus.pwtest import record_pwtest

        return record_pwtest(out, only)
    from tests.corpus.agents import record_agents

    return record_agents(out)


def main(argv: list[str]) -> int:
    expected = {c.id: ("failed" if c.failing else "passed") for c in all_cases()}
    cases = {a for a in argv if "/" in a}
    sources = [a for a in argv if "/" not in a] or sorted({c.split("/")[0] for c in cases}) or list(SOURCES)
    unknown = [s for s in sources if s not in SOURCES] + [c for c in cases if c not in expected]
    if unknown:
        raise SystemExit(f"unknown source or case {unknown[0]!r}: sources are {', '.join(SOURCES)}")
    write_labels()
    wrong = []
    for source in sources:
        only = {c for c in cases if c.startswith(source + "/")} or None
        outcome = record(source, only)
        for case_id, want in expected.items():
            if only and case_id not in only:
                continue
            if case_id.startswith(source + "/") and outcome.get(case_id) != want:
                wrong.append(f"{case_id}: expected {want}, the run {outcome.get(case_id) or 'was not recorded'}")
        size = sum(p.stat().st_size for p in (RECORDINGS / source).rglob("*") if p.is_file())
        print(f"{source}: {len(outcome)} runs recorded ({size // 1024} KiB)")
    for line in wrong:
        print("WRONG", line)
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
