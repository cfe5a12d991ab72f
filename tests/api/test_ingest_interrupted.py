"""An upload whose reading child process stops sending (store/child_reader.py) is refused with 503 and an
error body, stores nothing, leaves no process or pipe behind, and the same upload sent again is stored."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest

from molar_mcp.api.app import create_api_app
from molar_mcp.api.context import ApiContext
from molar_mcp.ingest import bundle as bundle_module
from molar_mcp.store import SqliteTraceStore
from tests.bundles import make_bundle, summary
from tests.ingest.test_child_reader import children, open_pipes
from tests.ingest.test_streamed_bundles import long_events

from .support import assert_error

pytestmark = pytest.mark.anyio
EVENTS = 40_000  # in chunks of 500: the child reads ~80 of them, alive long after it is first seen


@pytest.fixture
async def client(store: SqliteTraceStore, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx2.AsyncClient]:
    monkeypatch.setattr(bundle_module, "EVENT_CHUNK", 500)
    store.read_in_child = True
    store.child_wait_seconds = 1.0
    app = create_api_app(ApiContext.embedded(store, max_bundle_bytes=50_000_000))
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t", timeout=120) as http:
        yield http


@pytest.fixture
def stopper() -> Iterator[list[int]]:
    """Stops (SIGSTOP) the first child process this process starts from now on; the pids it stopped."""
    before = children()
    stopped: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set() and not stopped:
            for pid in children() - before:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
                break

    watcher = threading.Thread(target=watch)
    watcher.start()
    yield stopped
    done.set()
    watcher.join()


async def test_a_stopped_reading_child_is_503_and_stores_nothing(
    client: httpx2.AsyncClient, store: SqliteTraceStore, stopper: list[int]
) -> None:
    before_children, before_pipes = children() - set(stopper), open_pipes()
    data = make_bundle(summary(), long_events(EVENTS))
    files = {"bundle": ("b.tar.gz", data, "application/gzip")}
    key = {"Idempotency-Key": "stalled-1"}
    resp = await client.post("/v1/traces/ingest", files=files, data={"scenario_slug": "stalled"}, headers=key)
    assert stopper, "the reading child was never seen"
    body = assert_error(resp, 503, "ingest_interrupted")
    assert "sent nothing for 1 s" in body["message"]
    assert "nothing of the upload was stored" in body["message"]
    assert resp.headers["retry-after"] == "5"
    assert (await client.get("/v1/traces")).json()["items"] == []
    assert children() == before_children  # the stopped child was killed and reaped
    assert open_pipes() == before_pipes
    # The same upload with the same key is taken again (the failed one holds no claim on the key).
    again = await client.post("/v1/traces/ingest", files=files, data={"scenario_slug": "stalled"}, headers=key)
    assert again.status_code == 201, again.text
    trace = (await client.get(f"/v1/traces/{again.json()['trace_id']}")).json()
    assert trace["event_count"] == EVENTS
