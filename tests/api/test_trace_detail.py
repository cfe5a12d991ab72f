"""GET /v1/traces/{id} and GET /v1/traces/{id}/events over the real app (seed 000 shapes)."""

from __future__ import annotations

import hashlib

import httpx2
import pytest

from molar_mcp.models import ArtifactRef
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from tests.bundles import checkout_events
from tests.conftest import fetch
from tests.store.factory import new_trace

from .support import assert_error

pytestmark = pytest.mark.anyio

VIDEO = b"\x1aE\xdf\xa3webm-ish video"
SEED_DETAIL_FIELDS = {
    "id",
    "short_id",
    "status",
    "s3_prefix",
    "signed_urls",
    "parent_trace_id",
    "replay_from_step",
    "total_size_bytes",
    "blob_count",
}
SEED_EVENT_FIELDS = {"seq", "ts", "kind", "step_id", "ok", "message"}


@pytest.fixture
def trace(store: SqliteTraceStore) -> tuple[str, str]:
    sha = hashlib.sha256(VIDEO).hexdigest()
    video = ArtifactRef(kind="video", sha256=sha, name="run.webm", content_type="video/webm", size=len(VIDEO))
    return store.add_trace(LOCAL_ORG_ID, new_trace(artifacts=[video]), {sha: VIDEO})


@pytest.mark.parametrize("by", ["id", "short_id", "upper_id"])
async def test_the_detail_is_found_by_id_or_short_id_with_the_fields_of_seed_000(
    client: httpx2.AsyncClient, trace: tuple[str, str], by: str
) -> None:
    trace_id, short_id = trace
    ref = {"id": trace_id, "short_id": short_id, "upper_id": trace_id.upper()}[by]
    resp = await client.get(f"/v1/traces/{ref}")
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) >= SEED_DETAIL_FIELDS
    assert (body["id"], body["short_id"], body["status"]) == (trace_id, short_id, "failed")
    assert body["s3_prefix"].startswith(f"traces/runs/{LOCAL_ORG_ID}/")
    assert body["s3_prefix"].endswith(f"/{trace_id}/")
    assert (body["parent_trace_id"], body["replay_from_step"]) == (None, None)
    assert (body["total_size_bytes"], body["blob_count"]) == (len(VIDEO), 1)
    assert [s["title"] for s in body["steps"]][-1] == "Verify"
    assert body["event_counts"]["network.response"] == 7


async def test_the_detail_signs_a_url_for_each_artifact_kind_that_serves_the_blob(
    client: httpx2.AsyncClient, trace: tuple[str, str]
) -> None:
    body = (await client.get(f"/v1/traces/{trace[1]}")).json()
    # Seed 000: the artifact kinds the trace has, plus its exports (events ndjson, summary, report).
    assert set(body["signed_urls"]) == {"video", "ndjson", "summary", "report"}
    url = httpx2.URL(body["signed_urls"]["video"])
    # Ours (`exp`), or, with blobs in an object store, the store's presigned URL valid as long.
    assert url.params.get("exp") or url.params["X-Amz-Expires"] == "3600"
    resp = await fetch(client, url)
    assert resp.status_code == 200
    assert resp.content == VIDEO


async def test_the_detail_without_signed_urls_is_the_same_detail_with_nothing_signed(
    client: httpx2.AsyncClient, trace: tuple[str, str]
) -> None:
    _, short_id = trace
    signed = (await client.get(f"/v1/traces/{short_id}")).json()
    unsigned = (await client.get(f"/v1/traces/{short_id}", params={"signed_urls": "false"})).json()
    both = (await client.get(f"/v1/traces/{short_id}", params={"signed_urls": "false", "failed_events": 2})).json()
    assert set(signed["signed_urls"]) == {"video", "ndjson", "summary", "report"}
    assert unsigned["signed_urls"] == {} == both["signed_urls"]
    assert unsigned == signed | {"signed_urls": {}}
    assert both["failed_events"]["events"]
    again = (await client.get(f"/v1/traces/{short_id}", params={"signed_urls": "true"})).json()
    assert set(again["signed_urls"]) == set(signed["signed_urls"])
    assert_error(await client.get(f"/v1/traces/{short_id}", params={"signed_urls": "no"}), 400, "bad_request")


async def test_the_detail_with_its_failed_events_is_both_reads_in_one(
    client: httpx2.AsyncClient, trace: tuple[str, str]
) -> None:
    _, short_id = trace
    both = (await client.get(f"/v1/traces/{short_id}", params={"failed_events": 2})).json()
    detail = (await client.get(f"/v1/traces/{short_id}")).json()
    failed = (await client.get(f"/v1/traces/{short_id}/events", params={"ok": "false", "limit": 2})).json()
    assert "failed_events" not in detail  # only when asked
    assert both.pop("failed_events") == failed
    assert failed["total"] > len(failed["events"]) == 2
    for body in (both, detail):
        body.pop("signed_urls")  # signed afresh on every read
    assert both == detail
    for bad in ("0", "x", "1001"):
        resp = await client.get(f"/v1/traces/{short_id}", params={"failed_events": bad})
        assert_error(resp, 400, "bad_request")
    assert_error(await client.get(f"/v1/traces/{short_id}", params={"failed": 2}), 400, "bad_request")
    assert_error(await client.get("/v1/traces/nope12345", params={"failed_events": 2}), 404, "not_found")


async def test_the_detail_is_utf8_json_with_text_and_numbers_as_stored(
    client: httpx2.AsyncClient, store: SqliteTraceStore
) -> None:
    # The body is written in one pydantic call: UTF-8 as it is (not \u-escaped), quotes, backslashes and
    # control characters escaped, numbers exact (a float's exponent is written 1e-7 where Python writes
    # 1e-07: the same JSON number), with the JSON media type.
    title = 'Überweisung ✓ "quoted" back\\slash\ttab 𝄞'
    payload = {"ratio": 0.1, "tiny": 1e-07, "big": 12345678901234567, "text": 'ü\n\u0000"x"'}
    events = checkout_events()
    events[-1].update(payload=payload, message="expected ✓ got ✗", ok=False)
    _, short_id = store.add_trace(LOCAL_ORG_ID, new_trace(events, scenario_title=title), {})
    for params in ({}, {"failed_events": 50}):
        resp = await client.get(f"/v1/traces/{short_id}", params=params)
        assert resp.headers["content-type"] == "application/json"
        assert "Überweisung ✓".encode() in resp.content
        assert b'\\"quoted\\" back\\\\slash\\ttab' in resp.content
        assert resp.json()["scenario_title"] == title
    failed = resp.json()["failed_events"]["events"]
    assert failed[-1]["payload"] == payload
    assert failed[-1]["message"] == "expected ✓ got ✗"
    assert '"text":"ü\\n\\u0000\\"x\\""'.encode() in resp.content


@pytest.mark.parametrize("ref", ["nope", "00000000-0000-4000-8000-000000000000", "ingest"])
async def test_an_unknown_trace_is_a_404_with_the_error_shape(
    client: httpx2.AsyncClient, trace: tuple[str, str], ref: str
) -> None:
    body = assert_error(await client.get(f"/v1/traces/{ref}"), 404, "not_found")
    assert ref in body["message"]
    assert_error(await client.get(f"/v1/traces/{ref}/events"), 404, "not_found")


async def test_events_come_in_seq_order_with_the_fields_of_seed_000(
    client: httpx2.AsyncClient, trace: tuple[str, str]
) -> None:
    resp = await client.get(f"/v1/traces/{trace[0]}/events")
    assert resp.status_code == 200
    body = resp.json()
    assert (body["total"], body["offset"], body["limit"]) == (len(checkout_events()), 0, 100)
    assert [e["seq"] for e in body["events"]] == list(range(len(checkout_events())))
    assertion = body["events"][28]
    assert set(assertion) >= SEED_EVENT_FIELDS
    assert (assertion["kind"], assertion["step_id"], assertion["ok"]) == ("assertion", "s7", False)
    assert assertion["message"].startswith("expected url /billing")
    assert isinstance(assertion["ts"], int)


@pytest.mark.parametrize(
    ("params", "seqs", "total"),
    [
        ({"step": "5"}, [16, 17, 18, 19, 20], 5),
        ({"step": "s5"}, [16, 17, 18, 19, 20], 5),
        ({"step": "5", "kind": "network"}, [17, 18], 2),
        ({"kind": "network.response", "ok": "false"}, [18], 1),
        ({"ok": "false"}, [18, 19, 28, 29], 4),
        ({"kind": "assertion"}, [28], 1),
        ({"kind": "network", "limit": "3", "offset": "3"}, [6, 9, 10], 14),
        ({"limit": "2", "offset": "28"}, [28, 29], 30),
        ({"offset": "500"}, [], 30),
        ({"step": "99"}, [], 0),
    ],
)
async def test_events_are_sliced_by_step_kind_ok_limit_and_offset(
    client: httpx2.AsyncClient, trace: tuple[str, str], params: dict[str, str], seqs: list[int], total: int
) -> None:
    resp = await client.get(f"/v1/traces/{trace[1]}/events", params=params)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [e["seq"] for e in body["events"]] == seqs
    assert body["total"] == total


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "many"},
        {"offset": "-1"},
        {"ok": "maybe"},
        {"kind": "k" * 65},
        {"step": "s" * 129},
    ],
)
async def test_a_malformed_events_parameter_is_a_400(
    client: httpx2.AsyncClient, trace: tuple[str, str], params: dict[str, str]
) -> None:
    body = assert_error(await client.get(f"/v1/traces/{trace[1]}/events", params=params), 400, "bad_request")
    assert next(iter(params)) in body["message"]


async def test_one_event_is_returned_whole_by_its_seq_and_a_missing_or_bad_seq_is_refused(
    client: httpx2.AsyncClient, trace: tuple[str, str]
) -> None:
    _, short_id = trace
    listed = (await client.get(f"/v1/traces/{short_id}/events", params={"kind": "network.response"})).json()
    wanted = listed["events"][0]
    resp = await client.get(f"/v1/traces/{short_id}/events/{wanted['seq']}")
    assert resp.status_code == 200
    assert resp.json() == wanted
    missing = assert_error(await client.get(f"/v1/traces/{short_id}/events/99999"), 404, "not_found")
    assert "99999" in missing["message"]
    assert_error(await client.get(f"/v1/traces/{short_id}/events/-1"), 400, "bad_request")
    assert_error(await client.get(f"/v1/traces/{short_id}/events/1e3"), 400, "bad_request")
    assert_error(await client.get("/v1/traces/nope/events/1"), 404, "not_found")
