"""Bad Playwright uploads: the right status, `{error, message}` naming the file (and line), nothing stored."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import httpx2
import pytest

from molar_mcp.store import SqliteTraceStore, TraceQuery
from tests.api.support import assert_error

pytestmark = pytest.mark.anyio


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def rezip(files: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def count(store: SqliteTraceStore) -> int:
    return len(store.list_traces("org_local", TraceQuery(limit=200)).items)


def first_line(raw: bytes) -> dict[str, Any]:
    line: dict[str, Any] = json.loads(raw.splitlines()[0])
    return line


def _bad_json_line(files: dict[str, bytes]) -> dict[str, bytes]:
    lines = files["trace.trace"].splitlines()
    lines[3] = b'{"type":"before", this is not json'
    return {**files, "trace.trace": b"\n".join(lines)}


def _newer_version(files: dict[str, bytes]) -> dict[str, bytes]:
    lines = files["trace.trace"].splitlines()
    head = json.loads(lines[0])
    head["version"] = 11
    return {**files, "trace.trace": b"\n".join([json.dumps(head).encode(), *lines[1:]])}


def _missing_resource(files: dict[str, bytes]) -> dict[str, bytes]:
    return {n: d for n, d in files.items() if not n.startswith("resources/")}


def _many_actions(files: dict[str, bytes]) -> dict[str, bytes]:
    head = files["trace.trace"].splitlines()[0]
    body = b"\n".join(
        b'{"type":"before","callId":"c%d","startTime":%d,"class":"Frame","method":"click","params":{}}' % (i, i)
        for i in range(100_000)
    )
    return {"trace.trace": head + b"\n" + body}


CASES = {
    "bad JSON line": (_bad_json_line, 422, "validation_error", "trace.trace line 4"),
    "version 11": (_newer_version, 422, "unsupported_version", "version 11"),
    "missing resource": (_missing_resource, 422, "validation_error", "resources/"),
    "100,000 actions": (_many_actions, 413, "payload_too_large", "actions"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_broken_trace_is_refused_and_nothing_is_stored(
    pw_client: httpx2.AsyncClient, pw_traces: dict[str, bytes], store: SqliteTraceStore, case: str
) -> None:
    breaker, status, error, says = CASES[case]
    data = rezip(breaker(members(pw_traces["http-500"])))
    before = count(store)
    resp = await pw_client.post(
        "/v1/traces/ingest", files={"file": ("broken.zip", data)}, data={"format": "playwright-trace"}
    )
    body = assert_error(resp, status, error)
    assert says in body["message"]
    assert count(store) == before


async def test_not_a_zip_a_foreign_zip_and_a_truncated_zip(
    pw_client: httpx2.AsyncClient, pw_traces: dict[str, bytes], store: SqliteTraceStore
) -> None:
    before = count(store)
    text = await pw_client.post("/v1/traces/ingest", files={"file": ("notes.txt", b"hello, I am not a trace")})
    assert "notes.txt" in assert_error(text, 415, "unsupported_media_type")["message"]
    foreign = await pw_client.post("/v1/traces/ingest", files={"file": ("photos.zip", rezip({"a.jpg": b"x"}))})
    assert "no .trace file" in assert_error(foreign, 422, "validation_error")["message"]
    forced = await pw_client.post(
        "/v1/traces/ingest", files={"file": ("photos.zip", rezip({"a.jpg": b"x"}))}, data={"format": "playwright-trace"}
    )
    assert "no .trace file" in assert_error(forced, 422, "validation_error")["message"]
    truncated = pw_traces["wrong-text"][: len(pw_traces["wrong-text"]) // 2]
    cut = await pw_client.post("/v1/traces/ingest", files={"file": ("cut.zip", truncated)})
    assert "cut.zip" in assert_error(cut, 400, "bad_bundle")["message"]
    unknown = await pw_client.post(
        "/v1/traces/ingest", files={"file": ("t.zip", pw_traces["wrong-text"])}, data={"format": "har"}
    )
    assert_error(unknown, 422, "validation_error")
    bad_result = await pw_client.post(
        "/v1/traces/ingest",
        files={"file": ("t.zip", pw_traces["wrong-text"])},
        data={"result": json.dumps({"status": "exploded"})},
    )
    assert "result" in assert_error(bad_result, 422, "validation_error")["message"]
    assert count(store) == before


async def test_a_zip_bomb_and_an_escaping_path(
    pw_client: httpx2.AsyncClient, pw_traces: dict[str, bytes], store: SqliteTraceStore
) -> None:
    before = count(store)
    files = members(pw_traces["wrong-text"])
    bomb = rezip({**files, "resources/zeros.bin": b"\0" * (60 * 1024 * 1024)})
    assert len(bomb) < 1024 * 1024
    resp = await pw_client.post("/v1/traces/ingest", files={"file": ("bomb.zip", bomb)})
    assert "expands past" in assert_error(resp, 413, "payload_too_large")["message"]
    escape = rezip({**files, "../../etc/cron.d/x": b"* * * * * root true"})
    resp = await pw_client.post("/v1/traces/ingest", files={"file": ("escape.zip", escape)})
    assert "escapes" in assert_error(resp, 400, "unsafe_path")["message"]
    assert count(store) == before


async def test_older_format_versions_are_read(pw_client: httpx2.AsyncClient, pw_traces: dict[str, bytes]) -> None:
    """A version 7 trace (Playwright ~1.45): `apiName` titles, no `stepId`; read as the viewer reads it."""
    files = members(pw_traces["wrong-text"])
    lines = files["trace.trace"].splitlines()
    head = json.loads(lines[0])
    head["version"] = 7
    old = [json.dumps(head).encode()]
    for raw in lines[1:]:
        ev = json.loads(raw)
        if ev.get("type") == "before":
            ev["apiName"] = ev.pop("title", f"{ev['class'].lower()}.{ev['method']}")
        old.append(json.dumps(ev).encode())
    data = rezip({**files, "trace.trace": b"\n".join(old)})
    resp = await pw_client.post("/v1/traces/ingest", files={"file": ("v7.zip", data)})
    assert resp.status_code == 201, resp.text
    evs = (await pw_client.get(f"/v1/traces/{resp.json()['short_id']}/events", params={"kind": "assertion"})).json()
    assert any(e["payload"]["actual"] == "Sold out" for e in evs["events"])
