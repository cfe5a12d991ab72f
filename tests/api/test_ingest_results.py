"""POST /v1/traces/ingest with a test result and no trace (`format=playwright-result`): what the reporter
and the pytest plugin send for a skipped test, a passing one with tracing off, a failure outside the browser.
(The end-to-end runs that send real ones: tests/integrations/.)"""

from __future__ import annotations

import json

import httpx2
import pytest

from .support import assert_error

pytestmark = pytest.mark.anyio

RESULT = {
    "project": "pytest",
    "file": "tests/test_math.py",
    "line": 3,
    "title_path": ["test_adds"],
    "status": "failed",
    "errors": [{"message": "AssertionError: arithmetic is broken", "stack": "assert 2 == 3"}],
    "stdout": ["computing"],
}


async def post_result(client: httpx2.AsyncClient, body: bytes, **form: str) -> httpx2.Response:
    files = {"file": ("result.json", body, "application/json")}
    return await client.post("/v1/traces/ingest", files=files, data=form)


async def test_a_result_alone_is_a_trace_of_its_errors_and_output_detected_without_a_format(
    client: httpx2.AsyncClient,
) -> None:
    resp = await post_result(client, json.dumps(RESULT).encode())

    assert resp.status_code == 201, resp.text
    detail = (await client.get(f"/v1/traces/{resp.json()['trace_id']}")).json()
    assert detail["status"] == "failed"
    assert detail["scenario_slug"] == "pytest-tests-test-math-py-test-adds"
    events = (await client.get(f"/v1/traces/{detail['id']}/events")).json()["events"]
    text = json.dumps(events)
    assert "arithmetic is broken" in text
    assert "computing" in text


async def test_a_file_that_is_no_result_is_refused_naming_the_field_and_nothing_is_stored(
    client: httpx2.AsyncClient,
) -> None:
    bad = json.dumps({**RESULT, "title_path": "not a list"}).encode()
    resp = await post_result(client, bad, format="playwright-result")

    body = assert_error(resp, 422, "validation_error")
    assert "result.json" in body["message"]
    assert "title_path" in body["message"]
    assert (await client.get("/v1/traces")).json()["items"] == []
