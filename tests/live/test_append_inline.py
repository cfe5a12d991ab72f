"""A small append on the embedded store is parsed, validated and stored on the event loop when the writer
is free (`api/live.py INLINE_APPEND_BYTES`, `LiveTraces.append_now`); a bigger one, or one that finds the
writer busy, goes to an append thread. Either way: the same answers, the same errors, and a loop that
never waits for the database's write lock."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from molar_mcp.api.live import INLINE_APPEND_BYTES
from molar_mcp.compose import Embedded
from molar_mcp.store.db import DB_FILE, Database

pytestmark = pytest.mark.anyio

TS = 1_763_629_200_000


def ev(seq: int, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "ts": TS + seq, "kind": "log", "message": f"line {seq}", **fields}


@pytest.fixture
async def http(embedded: Embedded) -> AsyncIterator[httpx2.AsyncClient]:
    async with embedded.client_factory()() as client:
        yield client._http


async def start(http: httpx2.AsyncClient) -> str:
    response = await http.post("/v1/traces", json={"scenario_slug": "inline-append"})
    assert response.status_code == 201
    return str(response.json()["id"])


def padded(body: bytes) -> bytes:
    """The same JSON, past the inline size: JSON's whitespace, which every parser skips."""
    return body + b" " * (INLINE_APPEND_BYTES + 1 - len(body))


def answer(response: httpx2.Response) -> tuple[int, Any]:
    body = response.json()
    if isinstance(body, dict):
        body.pop("request_id", None)
    return response.status_code, body


async def test_small_and_big_bodies_get_the_same_answers_and_errors(http: httpx2.AsyncClient) -> None:
    """Each case twice, on two traces in the same state: once small (stored on the loop on the embedded
    store), once padded past the inline size (stored on an append thread)."""
    import json

    cases: list[tuple[str, bytes, str]] = [
        ("one event", json.dumps(ev(0)).encode(), "application/json"),
        ("a batch", json.dumps({"events": [ev(1), ev(2, step_id="a")]}).encode(), "application/json"),
        ("a retried batch", json.dumps({"events": [ev(1), ev(2, step_id="a")]}).encode(), "application/json"),
        ("keys", json.dumps({"events": [ev(3, idempotency_key="k3"), ev(4)]}).encode(), "application/json"),
        ("a retried key", json.dumps({"events": [ev(3, idempotency_key="k3")]}).encode(), "application/json"),
        ("a key conflict", json.dumps({"events": [ev(5, idempotency_key="k3")]}).encode(), "application/json"),
        ("a seq conflict", json.dumps({"events": [{**ev(4), "message": "other"}]}).encode(), "application/json"),
        (
            "a mixed batch",
            json.dumps({"events": [ev(5), {"seq": 6, "kind": "log"}, ev(1), {"seq": "x"}]}).encode(),
            "application/json",
        ),
        ("not JSON", b'{"events": [}', "application/json"),
        ("not a list", b'{"events": 3}', "application/json"),
        ("an empty batch", b'{"events": []}', "application/json"),
        ("a scalar", b"[1]", "application/json"),
        (
            "a deep payload",
            json.dumps(
                ev(9, payload={"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]})
            ).encode(),
            "application/json",
        ),
        ("a huge integer", json.dumps(ev(9, payload={"n": 2**70})).encode(), "application/json"),
        ("not JSON by its type", json.dumps(ev(9)).encode(), "text/plain"),
    ]
    small, big = await start(http), await start(http)
    for name, body, content_type in cases:
        headers = {"content-type": content_type}
        on_loop = await http.post(f"/v1/traces/{small}/events", content=body, headers=headers)
        on_thread = await http.post(f"/v1/traces/{big}/events", content=padded(body), headers=headers)
        assert answer(on_loop) == answer(on_thread), name
        assert on_loop.headers["x-request-id"] == on_loop.json().get("request_id", on_loop.headers["x-request-id"])
    for trace in (small, big):  # a finished trace and one that does not exist
        assert (await http.post(f"/v1/traces/{trace}/finish", json={"status": "passed"})).status_code == 200
    body = json.dumps(ev(10)).encode()
    for target in ((small, big), ("no-such-trace", "no-such-trace")):
        headers = {"content-type": "application/json"}
        on_loop = await http.post(f"/v1/traces/{target[0]}/events", content=body, headers=headers)
        on_thread = await http.post(f"/v1/traces/{target[1]}/events", content=padded(body), headers=headers)
        assert on_loop.status_code in (404, 409)
        assert answer(on_loop) == answer(on_thread) or target[0] == small
        assert answer(on_loop)[1]["message"].replace(small, big) == answer(on_thread)[1]["message"]
    stored = [(await http.get(f"/v1/traces/{t}/events")).json()["events"] for t in (small, big)]
    assert stored[0] == stored[1]
    assert [e["seq"] for e in stored[0]][:6] == [0, 1, 2, 3, 4, 5]


async def test_a_small_batch_is_stored_on_the_loop_a_big_one_on_an_append_thread(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    if type(embedded.store.db) is not Database:
        pytest.skip("PostgreSQL's appends wait on the network: always on an append thread")
    import json

    trace = await start(http)
    inserted_on: list[int] = []

    def seen(statement: str) -> None:
        if statement.startswith("INSERT INTO events"):
            inserted_on.append(threading.get_ident())

    writer = embedded.store.db._conn
    writer.set_trace_callback(seen)
    try:
        loop = threading.get_ident()
        small = json.dumps({"events": [ev(i) for i in range(100)]}).encode()
        assert len(small) <= INLINE_APPEND_BYTES
        response = await http.post(
            f"/v1/traces/{trace}/events", content=small, headers={"content-type": "application/json"}
        )
        assert response.json()["accepted"] == 100
        assert inserted_on
        assert set(inserted_on) == {loop}
        inserted_on.clear()
        big = json.dumps({"events": [ev(i) for i in range(100, 1000)]}).encode()
        assert len(big) > INLINE_APPEND_BYTES
        response = await http.post(
            f"/v1/traces/{trace}/events", content=big, headers={"content-type": "application/json"}
        )
        assert response.json()["accepted"] == 900
        assert inserted_on
        assert loop not in inserted_on
    finally:
        writer.set_trace_callback(None)


async def test_a_small_append_finding_the_file_locked_by_another_process_waits_off_the_loop(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    """Another process's write transaction holds the database's write lock: the append waits for it on an
    append thread (SQLite's busy wait), and the loop meanwhile answers other requests."""
    if type(embedded.store.db) is not Database:
        pytest.skip("the embedded store's file lock")
    trace = await start(http)
    other = sqlite3.connect(embedded.store.db.data_dir / DB_FILE, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        answered: list[httpx2.Response] = []

        async def append() -> None:
            answered.append(await http.post(f"/v1/traces/{trace}/events", json=ev(0)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(append)
            began = anyio.current_time()
            await anyio.sleep(0.05)  # the append has started and found the lock held
            health = await http.get("/healthz")  # the loop is free: this is answered while the lock is held
            assert health.status_code == 200
            assert anyio.current_time() - began < 2  # not after SQLite's busy wait (5 s) on the loop
            assert not answered
            await anyio.sleep(0.2)
            assert not answered  # still waiting for the lock, off the loop
            other.execute("COMMIT")
        assert answered[0].status_code == 200, answered[0].text
        assert answered[0].json()["accepted"] == 1
    finally:
        other.close()
