"""A real Playwright trace.zip in, a trace an agent can read out: the failing action, expected vs received,
the request or page error behind it, the screenshot at the failure, and the original zip."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

from molar_mcp.store import SqliteTraceStore

pytestmark = pytest.mark.anyio


async def ingest(client: httpx2.AsyncClient, data: bytes, name: str = "trace.zip", **form: str) -> dict[str, Any]:
    resp = await client.post("/v1/traces/ingest", files={"file": (name, data, "application/zip")}, data=form)
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def events(client: httpx2.AsyncClient, trace: str, **params: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/v1/traces/{trace}/events", params={"limit": "1000", **params})
    assert resp.status_code == 200, resp.text
    found: list[dict[str, Any]] = resp.json()["events"]
    return found


async def test_wrong_text_names_the_assertion_with_expected_and_received(
    pw_client: httpx2.AsyncClient, pw_traces: dict[str, bytes]
) -> None:
    body = await ingest(pw_client, pw_traces["wrong-text"], "wrong-text.zip")
    assert set(body) == {"trace_id", "short_id"}
    detail = (await pw_client.get(f"/v1/traces/{body['short_id']}")).json()
    assert detail["scenario_slug"] == "wrong-text"  # from the trace's title: no scenario_slug needed
    assert detail["status"] == "failed"
    assert "Sold out" in detail["failure_signature"]
    [assertion] = [e for e in await events(pw_client, body["short_id"], kind="assertion") if e["ok"] is False]
    assert assertion["payload"]["expected"] == "In stock"
    assert assertion["payload"]["actual"] == "Sold out"
    assert assertion["payload"]["matcher"] == "to_have_text"
    assert assertion["payload"]["selector"] == "#stock"
    assert any("unexpected value" in line for line in assertion["payload"]["log"])
    # The screencast frame at the failure, the last frame and the original zip are artifacts.
    kinds = [a["kind"] for a in detail["artifacts"]]
    assert kinds[0] == "playwright"
    assert kinds.count("screenshot") >= 1
    assert "playwright" in detail["signed_urls"]
    zipped = await pw_client.get(detail["signed_urls"]["playwright"])
    assert zipped.status_code == 200
    assert zipped.content == pw_traces["wrong-text"]
    shots = [e for e in await events(pw_client, body["short_id"], kind="screenshot")]
    assert shots
    assert shots[0]["step"] == assertion["step"]


async def test_http_500_and_the_console_errors_behind_it(
    pw_client: httpx2.AsyncClient, pw_traces: dict[str, bytes]
) -> None:
    body = await ingest(pw_client, pw_traces["http-500"])
    evs = await events(pw_client, body["short_id"])
    [failed] = [e for e in evs if e["kind"] == "network.response" and e["payload"].get("status") == 500]
    assert failed["ok"] is False
    assert failed["payload"]["url"].endswith("/api/checkout")
    assert failed["payload"]["body"]["error"] == "payment_gateway"  # a JSON body, readable
    [request] = [e for e in evs if e["kind"] == "network.request" and e["payload"]["url"].endswith("/api/checkout")]
    assert request["payload"]["method"] == "POST"
    assert request["payload"]["body"] == {"event": "jazz-night", "qty": 1}
    assert any(e["kind"] == "console" and "checkout failed with 500" in e["message"] for e in evs)
    [assertion] = [e for e in evs if e["kind"] == "assertion" and e["ok"] is False]
    assert (assertion["payload"]["expected"], assertion["payload"]["actual"]) == ("Paid", "Payment failed")


async def test_an_uncaught_page_error_is_an_error_event(
    pw_client: httpx2.AsyncClient, pw_traces: dict[str, bytes]
) -> None:
    body = await ingest(pw_client, pw_traces["js-exception"])
    detail = (await pw_client.get(f"/v1/traces/{body['short_id']}")).json()
    errors = await events(pw_client, body["short_id"], kind="error")
    page = [e for e in errors if e["payload"].get("source") == "page"]
    assert page
    assert page[0]["message"].startswith("TypeError: Cannot read properties of null")
    assert detail["event_counts"]["error"] >= 1


@pytest.mark.parametrize(
    ("scenario", "cause"),
    [
        ("overlay", "intercepts pointer events"),
        ("missing-selector", "no element matched"),
    ],
)
async def test_a_failed_action_says_why_from_its_call_log(
    pw_client: httpx2.AsyncClient, pw_traces: dict[str, bytes], scenario: str, cause: str
) -> None:
    body = await ingest(pw_client, pw_traces[scenario])
    [error] = await events(pw_client, body["short_id"], kind="error")
    assert error["payload"]["name"] == "TimeoutError"
    assert cause in error["payload"]["cause"]
    assert cause in error["message"]
    [action] = [e for e in await events(pw_client, body["short_id"], kind="action") if e["ok"] is False]
    assert action["payload"]["action"] == "click"
    assert action["payload"]["duration_ms"] >= 1000


async def test_groups_nest_as_steps_with_parents(pw_client: httpx2.AsyncClient, pw_traces: dict[str, bytes]) -> None:
    body = await ingest(pw_client, pw_traces["grouped"])
    starts = {e["message"]: e for e in await events(pw_client, body["short_id"], kind="step.start")}
    outer, inner = starts["open the event"], starts["choose tickets"]
    assert outer["payload"]["category"] == "group"
    assert "parent_step_id" not in outer["payload"]
    assert inner["payload"]["parent_step_id"] == outer["step_id"]
    ends = {e["step_id"]: e for e in await events(pw_client, body["short_id"], kind="step.end")}
    assert ends[starts["check availability"]["step_id"]]["ok"] is False  # the failed expect inside it
    assert ends[outer["step_id"]]["ok"] is True


async def test_passwords_tokens_and_cookies_are_masked_unless_kept(
    pw_client: httpx2.AsyncClient, pw_traces: dict[str, bytes], store: SqliteTraceStore
) -> None:
    secrets = ("hunter2-very-secret", "k-live-123456", "s3cr3t-session-value")
    body = await ingest(pw_client, pw_traces["login"])
    text = json.dumps(await events(pw_client, body["short_id"]))
    for secret in secrets:
        assert secret not in text
    assert "[masked]" in text
    detail = (await pw_client.get(f"/v1/traces/{body['short_id']}")).json()
    original = (await pw_client.get(detail["signed_urls"]["playwright"])).content
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(original)) as zf:
        for name in zf.namelist():
            if name.endswith((".trace", ".network")):
                for secret in secrets:
                    assert secret.encode() not in zf.read(name), (name, secret)
    kept = await ingest(pw_client, pw_traces["login"], keep_secrets="true")
    kept_text = json.dumps(await events(pw_client, kept["short_id"]))
    assert "hunter2-very-secret" in kept_text


async def test_a_passing_trace_is_passed_and_its_harmless_404_is_kept(
    pw_client: httpx2.AsyncClient, pw_traces: dict[str, bytes]
) -> None:
    body = await ingest(pw_client, pw_traces["passing"], scenario_slug="home-page")
    detail = (await pw_client.get(f"/v1/traces/{body['short_id']}")).json()
    assert detail["status"] == "passed"
    assert detail["scenario_slug"] == "home-page"
    assert detail["failure_signature"] is None
    evs = await events(pw_client, body["short_id"], kind="network.response")
    assert any(e["payload"].get("status") == 404 and "logo.png" in e["payload"]["url"] for e in evs)


async def test_each_chunk_of_a_chunked_trace_is_a_trace_of_its_own_actions(
    pw_client: httpx2.AsyncClient, pw_chunks: list[bytes]
) -> None:
    seen: list[dict[str, Any]] = []
    for data in pw_chunks:
        body = await ingest(pw_client, data, "chunk.zip")
        detail = (await pw_client.get(f"/v1/traces/{body['short_id']}")).json()
        actions = [(e["payload"]["action"], e["ok"]) for e in await events(pw_client, body["short_id"], kind="action")]
        selectors = [e["payload"].get("selector") for e in await events(pw_client, body["short_id"], kind="action")]
        urls = [e["payload"].get("url") for e in await events(pw_client, body["short_id"], kind="action")]
        asserted = await events(pw_client, body["short_id"], kind="assertion")
        seen.append({"detail": detail, "actions": actions, "selectors": selectors, "urls": urls, "asserted": asserted})
    passing, wrong_text, http_500 = seen
    # Each chunk is named by its start_chunk title, and holds only what ran between its start and stop.
    assert [s["detail"]["scenario_slug"] for s in seen] == ["passing", "wrong-text", "http-500"]
    assert [s["detail"]["status"] for s in seen] == ["passed", "failed", "failed"]
    assert passing["actions"] == [("goto", True), ("click", True)]
    assert passing["urls"][0].endswith("/")
    assert passing["selectors"][1] == 'internal:role=link[name="Jazz night"i]'
    assert all(a["ok"] for a in passing["asserted"])
    assert len(passing["asserted"]) == 2  # the event count, then the stock text

    assert wrong_text["actions"] == [("goto", True), ("fill", True)]
    assert wrong_text["urls"][0].endswith("/event/sold-out")
    assert wrong_text["selectors"][1] == "#qty"
    [failed] = [a for a in wrong_text["asserted"] if a["ok"] is False]
    assert (failed["payload"]["expected"], failed["payload"]["actual"]) == ("In stock", "Sold out")

    assert http_500["actions"] == [("goto", True), ("click", True)]
    assert http_500["urls"][0].endswith("/checkout")
    assert http_500["selectors"][1] == "#pay"
    [failed] = [a for a in http_500["asserted"] if a["ok"] is False]
    assert (failed["payload"]["expected"], failed["payload"]["actual"]) == ("Paid", "Payment failed")
    responses = await events(pw_client, http_500["detail"]["short_id"], kind="network.response")
    assert any(r["payload"].get("status") == 500 for r in responses)
    # No chunk carries another's network: the sold-out page was fetched only in its own chunk.
    for other in (passing, http_500):
        fetched = await events(pw_client, other["detail"]["short_id"], kind="network.request")
        assert not any("/event/sold-out" in str(r["payload"].get("url")) for r in fetched)
