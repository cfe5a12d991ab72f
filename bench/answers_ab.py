"""Same answers before and after: every answer of a fixed set of MCP calls, from two checkouts, compared.

    .venv/bin/python bench/answers_ab.py --data /tmp/molar-scale/s10k --before /tmp/before/src

Each side runs in its own process (`--before`'s code on PYTHONPATH, then this checkout's) over the real MCP
client, in memory, against a fresh copy of `--data` (opening a store may change it: a quiet running trace
is marked interrupted), after loading the demo's Playwright run, shipped scenario runs and agent run into
the copy. The calls: `get_trace` on the 70 newest traces and 13 of the oldest failed/errored/passed ones at
budgets 800…20,000, a step page and an events page of each, three step pages of the 10k-event trace
(`bench-ids.json`), `list_traces` by status. Prints how many answers differ (0 expected) and the first
difference; exits 1 when any does.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import logging
import os
import random
import shutil
import sqlite3
import string
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def corpus(data: Path) -> list[str]:
    db = sqlite3.connect(data / "molar.sqlite3")
    try:
        ids = [r[0] for r in db.execute("SELECT short_id FROM traces ORDER BY rowid DESC LIMIT 70")]
        ids += [
            r[0]
            for r in db.execute(
                "SELECT short_id FROM traces WHERE status IN ('failed', 'error') ORDER BY rowid LIMIT 10"
            )
        ]
        ids += [r[0] for r in db.execute("SELECT short_id FROM traces WHERE status = 'passed' ORDER BY rowid LIMIT 3")]
    finally:
        db.close()
    return ids


async def dump(data: Path, known: set[str]) -> list[dict[str, Any]]:
    """This process's code: load the demos into `data` (a copy), make every call; the answers."""
    from mcp.client import Client

    from molar_mcp.compose import (
        load_agent_demo,
        load_playwright_demo,
        load_shipped_demo,
        open_embedded,
    )
    from molar_mcp.mcp.server import create_mcp_server

    logging.getLogger("httpx2").setLevel(logging.WARNING)
    ids = json.loads((data / "bench-ids.json").read_text())
    with open_embedded(data) as embedded:
        load_playwright_demo(embedded.store)
        load_shipped_demo(embedded.store)
        # (its own event loop: on a thread, since this one runs in ours)
        await asyncio.to_thread(load_agent_demo, embedded)
        fix_new_ids(data, known)
        calls: list[tuple[str, dict[str, Any]]] = []
        for sid in corpus(data):
            calls += [
                ("get_trace", {"trace_id": sid, "max_tokens": n}) for n in (800, 1000, 1300, 2000, 3000, 6000, 20000)
            ]
            calls.append(("get_trace", {"trace_id": sid, "step": 1}))
            calls.append(("get_trace", {"trace_id": sid, "events": True, "max_tokens": 1000}))
        calls += [("get_trace", {"trace_id": ids["big"], "step": 25, "max_tokens": n}) for n in (800, 2000, 6000)]
        calls += [("list_traces", {"status": s} if s else {}) for s in ("failed", "passed", "error", None)]
        answers: list[dict[str, Any]] = []
        async with Client(create_mcp_server(embedded.client_factory())) as client:
            for name, args in calls:
                result = await client.call_tool(name, args)
                answers.append(
                    {
                        "call": [name, args],
                        "error": result.is_error,
                        "content": [
                            b.model_dump(mode="json", by_alias=True, exclude_none=True) for b in result.content
                        ],
                        "structured": result.structured_content,
                    }
                )
    return answers


def trace_ids(data: Path) -> set[str]:
    db = sqlite3.connect(data / "molar.sqlite3")
    try:
        return {row[0] for row in db.execute("SELECT id FROM traces")}
    finally:
        db.close()


def fix_new_ids(data: Path, known: set[str]) -> None:
    """The traces this dump loaded given the same ids on both sides, in the order loaded (random ids of the
    same shape as the store's, from a fixed seed). An answer's layout depends on its ids' token cost (a page
    holds the rows its budget leaves room for beside the id), so random ids alone would make equal code
    answer differently; the placeholders below then keep the diff readable."""
    rng = random.Random(20261207)
    alphabet = string.ascii_letters + string.digits
    db = sqlite3.connect(data / "molar.sqlite3")
    try:
        with db:
            rows = db.execute("SELECT pk, id FROM traces ORDER BY rowid").fetchall()
            for pk, old in (row for row in rows if row[1] not in known):
                new = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                short = "".join(rng.choice(alphabet) for _ in range(9))
                db.execute("UPDATE traces SET id = ?, short_id = ? WHERE pk = ?", (new, short, pk))
                for table, column in REFERENCES:
                    db.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (new, old))
    finally:
        db.close()


# Where a trace's UUID is stored beside `traces.id`.
REFERENCES = (
    ("traces", "parent_trace_id"),
    ("run_traces", "trace_id"),
    ("replays", "trace_id"),
    ("replays", "replay_trace_id"),
    ("replay_scenarios", "trace_id"),
    ("replay_origins", "trace_id"),
    ("incidents", "last_trace_id"),
)


def anonymise_new_traces(text: str, data: Path, known: set[str]) -> str:
    """The answers with the ids and creation times of the traces this dump loaded (the demos: new ids on
    every load, and the agent run stored through the OTLP receiver a new creation time too) replaced by
    placeholders, in the order loaded."""
    db = sqlite3.connect(data / "molar.sqlite3")
    try:
        rows = db.execute("SELECT id, short_id, created_ms FROM traces ORDER BY rowid").fetchall()
    finally:
        db.close()
    for n, (trace_id, short_id, created_ms) in enumerate(row for row in rows if row[0] not in known):
        created = datetime.fromtimestamp(created_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = text.replace(trace_id, f"new-trace-{n}").replace(short_id, f"new-short-{n}")
        text = text.replace(created, f"new-created-{n}")
    return text


def side(data: Path, src: Path | None, work: Path, name: str) -> list[Any]:
    copy = work / name / "data"
    shutil.copytree(data, copy)
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src.resolve())
    out = work / f"{name}.json"
    subprocess.run([sys.executable, __file__, "--dump", str(copy), str(out)], env=env, check=True)
    return list(json.loads(out.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, help="a data dir with bench-ids.json (bench_scale.py writes it)")
    parser.add_argument("--before", type=Path, help="another checkout's src/")
    parser.add_argument("--dump", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dump:
        data, out = args.dump
        known = trace_ids(data)
        text = json.dumps(asyncio.run(dump(data, known)), indent=1, ensure_ascii=False)
        out.write_text(anonymise_new_traces(text, data, known))
        return
    if args.data is None or args.before is None:
        parser.error("--data and --before are required")
    with tempfile.TemporaryDirectory(prefix="answers-ab-") as tmp:
        work = Path(tmp)
        before = side(args.data, args.before, work, "before")
        after = side(args.data, None, work, "after")
    differ = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    print(f"{len(after)} answers, {len(differ)} differ")
    if differ:
        for i in differ:
            print("differs:", json.dumps(after[i]["call"]))
        first = differ[0]
        lines = [json.dumps(side[first], indent=1, ensure_ascii=False).splitlines() for side in (before, after)]
        print("\n".join(list(difflib.unified_diff(*lines, "before", "after", lineterm=""))[:200]))
        sys.exit(1)


if __name__ == "__main__":
    main()
