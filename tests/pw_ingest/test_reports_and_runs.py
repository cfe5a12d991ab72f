"""Playwright Test report folders (report.json + test-results/, JUnit XML) and runs, from a real
`npx playwright test` run against the ticket shop."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import httpx2
import pytest

from molar_mcp.store import SqliteTraceStore
from tests.servers import child_env

pytestmark = pytest.mark.anyio


def zipped(folder: Path, *, skip: str | None = None, replace: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.rglob("*")):
            rel = f.relative_to(folder).as_posix()
            if f.is_file() and rel != skip:
                zf.writestr(rel, (replace or {}).get(rel, f.read_bytes()))
    return buf.getvalue()


async def upload(client: httpx2.AsyncClient, data: bytes, name: str, **form: str) -> httpx2.Response:
    return await client.post("/v1/traces/ingest", files={"file": (name, data, "application/zip")}, data=form)


async def test_a_report_folder_is_one_trace_per_attempt_in_a_run(
    pw_client: httpx2.AsyncClient, pw_report: Path
) -> None:
    resp = await upload(pw_client, zipped(pw_report), "report.zip")
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    assert body["format"] == "playwright-report"
    assert body["rejected"] == []
    statuses = sorted(t["status"] for t in body["traces"])
    # 6 tests; the flaky one has two attempts: failed, then passed → flaky.
    assert len(body["traces"]) == 7
    assert statuses.count("flaky") == 1
    assert statuses.count("passed") == 1
    run = (await pw_client.get(f"/v1/runs/{body['run_id']}")).json()
    assert run["status"] == "failed"
    assert run["counts"]["tests"] == 6
    assert run["counts"]["flaky"] == 1
    assert run["counts"]["failed"] == 4
    assert {t["title"] for t in run["failing"]} >= {"event page › shows tickets in stock", "pays for the tickets"}
    [flaky] = run["flaky"]
    assert flaky["attempts"] == 2
    # The test's identity is its scenario: its attempts share it, and the retry links the first attempt.
    listed = (await pw_client.get("/v1/traces", params={"run": run["short_id"], "limit": "50"})).json()["items"]
    assert len(listed) == 7
    history = (await pw_client.get("/v1/traces", params={"scenario": flaky["scenario_slug"]})).json()["items"]
    assert sorted(i["status"] for i in history) == ["failed", "flaky"]
    retry_events = (await pw_client.get(f"/v1/traces/{flaky['short_id']}/events", params={"kind": "retry"})).json()[
        "events"
    ]
    assert retry_events[0]["payload"]["previous_trace_id"] == flaky["trace_ids"][0]


async def test_a_merged_test_archive_nests_hooks_fixtures_and_steps(
    pw_client: httpx2.AsyncClient, pw_report: Path
) -> None:
    body = (await upload(pw_client, zipped(pw_report), "report.zip")).json()
    [stock] = [t for t in body["traces"] if t["scenario_slug"].endswith("event-page-shows-tickets-in-stock")]
    evs = (await pw_client.get(f"/v1/traces/{stock['short_id']}/events", params={"limit": "1000"})).json()["events"]
    starts = {e["message"]: e for e in evs if e["kind"] == "step.start"}
    assert starts["Before Hooks"]["payload"]["category"] == "hook"
    assert starts['Fixture "page"']["payload"]["category"] == "fixture"
    outer, inner = starts["open the sold-out concert"], starts["choose two tickets"]
    assert outer["payload"]["category"] == "test.step"
    assert inner["payload"]["parent_step_id"] == outer["step_id"]
    # The library's fill (from 1-trace.trace) sits in the runner's step, joined by call id.
    [fill] = [e for e in evs if e["kind"] == "action" and e["payload"].get("action") == "fill"]
    assert fill["step_id"] == inner["step_id"]
    assert fill["payload"]["selector"] == "#qty"
    [failed] = [e for e in evs if e["kind"] == "assertion" and e["ok"] is False]
    assert (failed["payload"]["expected"], failed["payload"]["actual"]) == ("In stock", "Sold out")
    assert "\x1b" not in json.dumps(evs)  # ANSI stripped
    detail = (await pw_client.get(f"/v1/traces/{stock['short_id']}")).json()
    names = {(a["kind"], a["name"]) for a in detail["artifacts"]}
    assert ("error-context", "error-context.md") in names
    assert any(kind == "screenshot" for kind, _ in names)


async def test_a_report_with_one_bad_trace_stores_the_rest_and_names_it(
    pw_client: httpx2.AsyncClient, pw_report: Path, store: SqliteTraceStore
) -> None:
    bad = next(p for p in sorted((pw_report / "test-results").rglob("trace.zip")))
    rel = bad.relative_to(pw_report).as_posix()
    resp = await upload(pw_client, zipped(pw_report, replace={rel: b"PK\x03\x04 truncated"}), "report.zip")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    [rejected] = body["rejected"]
    assert rejected["name"] == rel
    assert rejected["error"] == "bad_bundle"
    assert len(body["traces"]) == 7  # the result of the bad trace is kept, without its trace


async def test_junit_xml_joins_results_to_traces_by_attachment_lines(
    pw_client: httpx2.AsyncClient, pw_report: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "junit-folder"
    shutil.copytree(pw_report, folder)
    (folder / "report.json").unlink()
    resp = await upload(pw_client, zipped(folder), "junit.zip")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["format"] == "junit"
    failed = [t for t in body["traces"] if t["status"] == "failed"]
    assert failed
    detail = (await pw_client.get(f"/v1/traces/{failed[0]['short_id']}")).json()
    assert detail["artifacts"][0]["kind"] == "playwright"  # its trace.zip was found by its [[ATTACHMENT|…]] line
    bare = await pw_client.post(
        "/v1/traces/ingest", files={"file": ("junit.xml", (pw_report / "junit.xml").read_bytes(), "text/xml")}
    )
    assert bare.status_code == 201, bare.text
    assert bare.json()["format"] == "junit"


async def test_runs_over_rest_collect_uploads_and_finish(
    pw_client: httpx2.AsyncClient, pw_traces: dict[str, bytes]
) -> None:
    created = await pw_client.post("/v1/runs", json={"name": "CI #12", "commit": "abc1234", "branch": "main"})
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["status"] == "running"
    result = {
        "project": "chromium",
        "file": "shop.spec.ts",
        "title_path": ["event page", "shows tickets in stock"],
        "status": "failed",
        "retry": 0,
        "duration_ms": 2100,
        "errors": [{"message": '\x1b[31mExpected: "In stock"\x1b[39m'}],
    }
    resp = await pw_client.post(
        "/v1/traces/ingest",
        files=[
            ("file", ("trace.zip", pw_traces["wrong-text"], "application/zip")),
            ("attachment", ("test-failed-1.png", b"\x89PNG\r\n\x1a\nshot", "image/png")),
        ],
        data={"run_id": run["short_id"], "result": json.dumps(result)},
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["run_id"] == run["id"]
    trace = (await pw_client.get(f"/v1/traces/{resp.json()['short_id']}")).json()
    assert trace["scenario_slug"] == "chromium-shop-spec-ts-event-page-shows-tickets-in-stock"
    assert trace["duration_ms"] == 2100
    assert any(a["name"] == "test-failed-1.png" for a in trace["artifacts"])
    finished = (await pw_client.post(f"/v1/runs/{run['id']}/finish", json={})).json()
    assert finished["status"] == "failed"
    assert finished["failing"][0]["trace_id"] == trace["id"]
    listing = (await pw_client.get("/v1/runs")).json()
    assert listing["items"][0]["id"] == run["id"]
    missing = await pw_client.post(
        "/v1/traces/ingest", files={"file": ("t.zip", pw_traces["wrong-text"])}, data={"run_id": "nope"}
    )
    assert missing.status_code == 404
    assert (await pw_client.get("/v1/runs/nope")).status_code == 404
    bad = await pw_client.post("/v1/runs", json={"kind": "Not A Kind!"})
    assert bad.status_code == 422


def test_molar_mcp_ingest_reads_a_report_folder_and_a_trace_zip(pw_report: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    trace = next(iter(sorted((pw_report / "test-results").rglob("trace.zip"))))
    done = subprocess.run(
        [sys.executable, "-m", "molar_mcp", "ingest", "--data-dir", str(data), str(pw_report), str(trace)],
        capture_output=True,
        text=True,
        env=child_env(data),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "7 traces" in done.stderr
    assert "in run" in done.stderr
    store = SqliteTraceStore(data)
    try:
        from molar_mcp.store import TraceQuery

        assert len(store.list_traces("org_local", TraceQuery(limit=50)).items) == 8
    finally:
        store.close()


async def test_a_reporter_retry_after_a_lost_answer_stores_the_attempt_once(
    pw_client: httpx2.AsyncClient, pw_traces: dict[str, bytes]
) -> None:
    run = (await pw_client.post("/v1/runs", json={"name": "CI #13"})).json()
    result = {
        "project": "chromium",
        "file": "shop.spec.ts",
        "title_path": ["checkout", "pays"],
        "status": "failed",
        "retry": 0,
        "duration_ms": 1500,
        "errors": [{"message": "Expected: Paid"}],
    }

    async def attempt(key: str, shot: bytes = b"\x89PNG\r\n\x1a\nshot") -> httpx2.Response:
        return await pw_client.post(
            "/v1/traces/ingest",
            files=[
                ("file", ("trace.zip", pw_traces["http-500"], "application/zip")),
                ("attachment", ("test-failed-1.png", shot, "image/png")),
            ],
            data={"run_id": run["id"], "result": json.dumps(result)},
            headers={"idempotency-key": key},
        )

    first = await attempt("7f1c-attempt-0")
    assert first.status_code == 201, first.text
    retried = await attempt("7f1c-attempt-0")
    assert retried.status_code == 200
    assert retried.headers["idempotent-replayed"] == "true"
    assert retried.json() == first.json()
    after = (await pw_client.get(f"/v1/runs/{run['id']}")).json()
    assert after["counts"]["attempts"] == 1
    assert len((await pw_client.get("/v1/traces", params={"run": run["id"]})).json()["items"]) == 1
    # The same key with another attachment is another upload: refused, and the run is unchanged.
    other = await attempt("7f1c-attempt-0", shot=b"\x89PNG\r\n\x1a\nanother")
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["message"]
    assert (await pw_client.get(f"/v1/runs/{run['id']}")).json()["counts"]["attempts"] == 1
