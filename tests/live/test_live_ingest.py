"""Live ingest over the /v1 API: create, append (partial accept, idempotency, conflicts), finish."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from molar_mcp.compose import Embedded
from molar_mcp.store import LOCAL_ORG_ID

pytestmark = pytest.mark.anyio

TS = 1_763_629_200_000


def ev(seq: int, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "ts": TS + seq, "kind": "log", "message": f"line {seq}", **fields}


@pytest.fixture
async def http(embedded: Embedded) -> AsyncIterator[httpx2.AsyncClient]:
    async with embedded.client_factory()() as client:
        yield client._http


async def start(http: httpx2.AsyncClient, slug: str = "agent-run") -> str:
    response = await http.post("/v1/traces", json={"scenario_slug": slug, "source": "manual"})
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "running"
    return str(body["id"])


async def test_a_running_trace_takes_one_event_or_a_batch_and_lists_as_running(http: httpx2.AsyncClient) -> None:
    trace = await start(http)
    one = await http.post(f"/v1/traces/{trace}/events", json=ev(0, step_id="a"))
    batch = await http.post(f"/v1/traces/{trace}/events", json={"events": [ev(1, step_id="a"), ev(2, step_id="b")]})
    assert one.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "last_seq": 0}
    assert batch.json()["accepted"] == 2
    detail = (await http.get(f"/v1/traces/{trace}")).json()
    assert detail["status"] == "running"
    assert detail["event_count"] == 3
    assert [(s["step"], s["step_id"], s["event_count"]) for s in detail["steps"]] == [(1, "a", 2), (2, "b", 1)]
    running = (await http.get("/v1/traces", params={"status": "running"})).json()["items"]
    assert [t["id"] for t in running] == [trace]


async def test_a_mixed_batch_keeps_the_valid_events_and_reports_each_rejected_one(http: httpx2.AsyncClient) -> None:
    trace = await start(http)
    batch = [
        ev(0),
        {"seq": 1, "kind": "log", "idempotency_key": "k-1"},  # no ts
        ev(2),
        ev(1, idempotency_key="k-late"),  # seq went backwards
        {"seq": "x", "ts": TS, "kind": "log"},
    ]
    response = await http.post(f"/v1/traces/{trace}/events", json={"events": batch})
    body = response.json()
    assert response.status_code == 200
    assert body["accepted"] == 2
    assert [(r["index"], r["idempotency_key"]) for r in body["rejected"]] == [(1, "k-1"), (3, "k-late"), (4, None)]
    assert "monotonic" in body["rejected"][1]["reason"]
    assert "ts" in body["rejected"][0]["reason"]
    events = (await http.get(f"/v1/traces/{trace}/events")).json()["events"]
    assert [e["seq"] for e in events] == [0, 2]


async def test_a_retried_batch_with_idempotency_keys_stores_no_duplicates(http: httpx2.AsyncClient) -> None:
    trace = await start(http)
    batch = {"events": [ev(i, idempotency_key=f"run-1:{i}") for i in range(5)]}
    first = await http.post(f"/v1/traces/{trace}/events", json=batch)
    retry = await http.post(f"/v1/traces/{trace}/events", json=batch)
    assert first.json()["accepted"] == 5
    assert retry.json() == {"accepted": 0, "duplicates": 5, "rejected": [], "last_seq": 4}
    assert (await http.get(f"/v1/traces/{trace}/events")).json()["total"] == 5


async def test_the_same_seq_with_a_different_body_is_a_conflict_and_stores_nothing_of_the_batch(
    http: httpx2.AsyncClient,
) -> None:
    trace = await start(http)
    await http.post(f"/v1/traces/{trace}/events", json={"events": [ev(0), ev(1)]})
    response = await http.post(f"/v1/traces/{trace}/events", json={"events": [ev(2), ev(1, message="changed")]})
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert "seq 1" in response.json()["message"]
    assert (await http.get(f"/v1/traces/{trace}/events")).json()["total"] == 2  # seq 2 was not kept either


async def test_an_idempotency_key_reused_for_another_event_is_a_conflict(http: httpx2.AsyncClient) -> None:
    trace = await start(http)
    await http.post(f"/v1/traces/{trace}/events", json=ev(0, idempotency_key="k"))
    response = await http.post(f"/v1/traces/{trace}/events", json=ev(1, idempotency_key="k"))
    assert response.status_code == 409


async def test_a_retried_http_response_without_ok_is_a_duplicate_not_a_conflict(http: httpx2.AsyncClient) -> None:
    # The store derives `ok` from the status; the retry carries none, as the first send did.
    trace = await start(http)
    responses = [
        ev(0, kind="network.response", payload={"status": 500}, idempotency_key="r-0"),
        ev(1, kind="network.response", payload={"status": 200}),
    ]
    first = await http.post(f"/v1/traces/{trace}/events", json={"events": responses})
    retry = await http.post(f"/v1/traces/{trace}/events", json={"events": responses})
    assert first.json()["accepted"] == 2
    assert retry.status_code == 200, retry.text
    assert retry.json() == {"accepted": 0, "duplicates": 2, "rejected": [], "last_seq": 1}
    events = (await http.get(f"/v1/traces/{trace}/events")).json()["events"]
    assert [e["ok"] for e in events] == [False, True]


async def test_a_batch_without_keys_is_sorted_out_by_seq_against_the_last_stored_and_within_itself(
    http: httpx2.AsyncClient,
) -> None:
    trace = await start(http)
    url = f"/v1/traces/{trace}/events"
    assert (await http.post(url, json={"events": [ev(0), ev(1), ev(2)]})).json()["accepted"] == 3
    retry = await http.post(url, json={"events": [ev(0), ev(1), ev(2)]})
    assert retry.json() == {"accepted": 0, "duplicates": 3, "rejected": [], "last_seq": 2}
    overlap = await http.post(url, json={"events": [ev(2), ev(3)]})  # starts at the last stored seq
    assert overlap.json() == {"accepted": 1, "duplicates": 1, "rejected": [], "last_seq": 3}
    changed = await http.post(url, json={"events": [ev(3, message="another"), ev(4)]})
    assert changed.status_code == 409
    unordered = (await http.post(url, json={"events": [ev(4), ev(6), ev(5), ev(7), ev(7)]})).json()
    assert (unordered["accepted"], unordered["duplicates"], unordered["last_seq"]) == (3, 0, 7)
    assert [(r["index"], r["reason"]) for r in unordered["rejected"]] == [
        (2, "seq must be monotonic for this trace (last is 6)"),
        (4, "seq must be monotonic for this trace (last is 7)"),
    ]
    events = (await http.get(url)).json()["events"]
    assert [e["seq"] for e in events] == [0, 1, 2, 3, 4, 6, 7]


async def test_a_batch_of_a_thousand_mixing_retries_gaps_and_new_events_is_sorted_out_event_by_event(
    http: httpx2.AsyncClient,
) -> None:
    trace = await start(http)
    stored = [ev(2 * i, idempotency_key=f"k-{i}") if i % 2 else ev(2 * i) for i in range(600)]  # seqs 0..1198
    assert (await http.post(f"/v1/traces/{trace}/events", json={"events": stored})).json()["accepted"] == 600
    # Retried: 600 stored events (keys and bare seqs, more than one lookup's worth); 100 odd seqs never
    # stored (below the last: rejected); 300 new ones above the last.
    batch = [*stored, *(ev(2 * i + 1) for i in range(100)), *(ev(1200 + i) for i in range(300))]
    body = (await http.post(f"/v1/traces/{trace}/events", json={"events": batch})).json()
    assert (body["accepted"], body["duplicates"], body["last_seq"]) == (300, 600, 1499)
    assert [r["index"] for r in body["rejected"]] == list(range(600, 700))
    assert all("monotonic" in r["reason"] for r in body["rejected"])
    listed = (await http.get(f"/v1/traces/{trace}/events", params={"limit": 1}, timeout=30)).json()
    assert listed["total"] == 900
    changed = [ev(1198, message="not what was stored", idempotency_key="k-599")]
    conflict = await http.post(f"/v1/traces/{trace}/events", json={"events": [*batch[:10], *changed]})
    assert conflict.status_code == 409
    assert "k-599" in conflict.json()["message"]


async def test_finishing_fixes_duration_and_derives_the_failure_signature_from_the_detectors(
    http: httpx2.AsyncClient,
) -> None:
    trace = await start(http, "checkout")
    events = [
        {"seq": 0, "ts": TS, "kind": "step.start", "step_id": "s1", "message": "Pay"},
        {
            "seq": 1,
            "ts": TS + 500,
            "kind": "network.response",
            "step_id": "s1",
            "payload": {"method": "POST", "url": "/api/webhooks/stripe", "status": 404},
        },
        {"seq": 2, "ts": TS + 1500, "kind": "assertion", "step_id": "s1", "ok": False, "message": "expected paid"},
    ]
    await http.post(f"/v1/traces/{trace}/events", json={"events": events})
    finished = await http.post(f"/v1/traces/{trace}/finish", json={"status": "failed"})
    assert finished.status_code == 200
    detail = finished.json()
    assert detail["status"] == "failed"
    assert detail["duration_ms"] == 1500
    assert "404" in detail["failure_signature"]
    found = (await http.get("/v1/traces", params={"q": "expected paid"})).json()["items"]
    assert [t["id"] for t in found] == [trace]
    late = await http.post(f"/v1/traces/{trace}/events", json=ev(3))
    assert late.status_code == 409


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"scenario_slug": "x"}', "text/plain", 415),
        (b"not json", "application/json", 400),
        (b'{"scenario_slug": ""}', "application/json", 422),
        (b'{"scenario_slug": "ok", "surprise": 1}', "application/json", 422),
        (b'{"scenario_slug": "../etc"}', "application/json", 422),
    ],
)
async def test_bad_create_requests_get_clear_errors(
    http: httpx2.AsyncClient, body: bytes, content_type: str, status: int
) -> None:
    response = await http.post("/v1/traces", content=body, headers={"content-type": content_type})
    assert response.status_code == status
    assert set(response.json()) == {"error", "message", "request_id"}


async def test_appending_to_another_orgs_trace_is_not_found(http: httpx2.AsyncClient, embedded: Embedded) -> None:
    trace = await start(http)
    response = await http.post(f"/v1/traces/{trace}/events", json=ev(0), headers={"x-molar-org": "org_other"})
    assert response.status_code == 404
    assert embedded.store.get_trace(LOCAL_ORG_ID, trace).event_count == 0


async def test_an_oversized_batch_is_refused(http: httpx2.AsyncClient) -> None:
    trace = await start(http)
    response = await http.post(f"/v1/traces/{trace}/events", json={"events": [ev(i) for i in range(1001)]})
    assert response.status_code == 413


async def test_the_reaper_interrupts_only_traces_quiet_past_the_period_on_every_engine(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    import time

    from molar_mcp.api.live import reap

    quiet_one = await start(http, "quiet-producer")
    busy_one = await start(http, "busy-producer")
    finished = await start(http, "finished-producer")
    await http.post(f"/v1/traces/{quiet_one}/events", json={"events": [ev(0), ev(1)]})
    await http.post(f"/v1/traces/{finished}/finish", json={"status": "passed"})
    quiet = embedded.context.live_quiet_seconds
    later = int(time.time() * 1000) + int(quiet * 1000) + 5_000
    await http.post(f"/v1/traces/{busy_one}/events", json={"events": [ev(0)]})
    reaped_early = await reap(embedded.context, now_ms=int(time.time() * 1000))
    # The busy producer appends again just before `later` (its touch, as the store would record it then).
    with embedded.store.db.tx() as conn:
        conn.execute("UPDATE traces SET live_touched_ms = ? WHERE id = ?", (later - 1000, busy_one))
    reaped = await reap(embedded.context, now_ms=later)
    again = await reap(embedded.context, now_ms=later)
    states = {t: (await http.get(f"/v1/traces/{t}")).json() for t in (quiet_one, busy_one, finished)}
    late = await http.post(f"/v1/traces/{quiet_one}/events", json={"events": [ev(2)]})
    assert reaped_early == []
    assert reaped == [quiet_one]
    assert again == []
    assert states[quiet_one]["status"] == "interrupted"
    assert states[quiet_one]["event_count"] == 2
    assert states[busy_one]["status"] == "running"
    assert states[finished]["status"] == "passed"
    assert late.status_code == 409


async def test_a_batch_is_parsed_validated_and_stored_off_the_event_loop_with_the_collector_paused(
    http: httpx2.AsyncClient,
) -> None:
    import gc
    import threading

    trace = await start(http)
    loop_thread = threading.get_ident()
    # Collections run by another thread than the event loop's while a batch of 1,000 is appended: the
    # batch is parsed, validated and stored in one worker thread (one hop), where the collector is off.
    # Thousands of tracked objects (events, payload dicts) would start several collections there; with
    # the pause there is at most the one that the first allocation after it starts.
    elsewhere: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and threading.get_ident() != loop_thread:
            elsewhere.append(info["generation"])

    gc.collect()
    gc.callbacks.append(record)
    try:
        batch = [ev(i, payload={"headers": {"a": [i, {"b": i}]}, "n": [i]}) for i in range(1000)]
        response = await http.post(f"/v1/traces/{trace}/events", json={"events": batch})
    finally:
        gc.callbacks.remove(record)
    assert response.json()["accepted"] == 1000
    assert len(elsewhere) <= 1, elsewhere
    assert gc.isenabled()


async def test_concurrent_writers_are_answered_each_with_its_own_outcome(http: httpx2.AsyncClient) -> None:
    """Many appends at once (stored in groups on the embedded store): the good batches land in order, a
    conflicting one gets its 409 and leaves nothing, a finished trace's gets its 409, each request its own."""
    traces = [await start(http, f"writer-{i}") for i in range(4)]
    await http.post(f"/v1/traces/{traces[1]}/events", json=ev(0, idempotency_key="k0"))
    finished = await start(http, "finished")
    assert (await http.post(f"/v1/traces/{finished}/finish", json={"status": "passed"})).status_code == 200
    answers: dict[tuple[str, int], httpx2.Response] = {}

    async def write(trace: str, first: int, events: list[dict[str, Any]]) -> None:
        answers[(trace, first)] = await http.post(f"/v1/traces/{trace}/events", json={"events": events})

    async def writer(trace: str) -> None:  # one producer: its batches one after another
        for first in range(0, 50, 10):
            await write(trace, first, [ev(s) for s in range(first, first + 10)])

    async with anyio.create_task_group() as tg:
        for i in (0, 2, 3):
            tg.start_soon(writer, traces[i])
        # The key of seq 0 for another event: a conflict, after events the batch would have stored.
        tg.start_soon(write, traces[1], 1, [ev(1), ev(2), ev(3, idempotency_key="k0")])
        tg.start_soon(write, finished, 0, [ev(0)])
    assert answers[(traces[1], 1)].status_code == 409
    assert answers[(traces[1], 1)].json()["error"] == "conflict"
    assert answers[(finished, 0)].status_code == 409
    assert all(
        answers[(t, f)].json()["accepted"] == 10 for t in (traces[0], traces[2], traces[3]) for f in range(0, 50, 10)
    )
    for trace in (traces[0], traces[2], traces[3]):
        events = (await http.get(f"/v1/traces/{trace}/events", params={"limit": 100})).json()["events"]
        assert [e["seq"] for e in events] == list(range(50))
    assert (await http.get(f"/v1/traces/{traces[1]}")).json()["event_count"] == 1
