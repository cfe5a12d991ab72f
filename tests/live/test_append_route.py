"""The live append's lean route (api/append_route.py) in a real `molar-mcp serve` with authentication:
the same guarantees as every /v1 route — credentials and scopes, the org, limits, `{error, message,
request_id}` bodies with the request id echoed, metrics under the route's template — and followers get
exactly the appended events, in order. In process: appends take the lean route, other requests the app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest
from starlette.types import Receive, Scope, Send

from molar_mcp.api.append_route import LiveAppendRoute
from molar_mcp.compose import Embedded
from tests.servers import EVERY_SCOPE, Served, start_auth_server, stop_server

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TS = 1_763_629_200_000
ROUTE = "/v1/traces/{trace_id}/events"


@dataclass
class Keys:
    served: Served
    write: str  # org_local: read and write
    read: str  # org_local: read only
    other: str  # org_other: every scope

    @property
    def base(self) -> str:
        return self.served.base_url


@pytest.fixture(scope="module")
def lean_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    keys: dict[str, str | tuple[str, str]] = {
        "write": "mcp:trace:read mcp:trace:write",
        "read": "mcp:trace:read",
        "other": (EVERY_SCOPE, "org_other"),
    }
    started = start_auth_server(tmp_path_factory.mktemp("append-route") / "data", keys=keys)
    try:
        yield Keys(started.served, started.keys["write"], started.keys["read"], started.keys["other"])
    finally:
        stop_server(started.served)


def bearer(key: str, **more: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", **more}


def ev(seq: int, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "ts": TS + seq, "kind": "log", "step_id": f"s{seq // 3}", "message": f"line {seq}", **fields}


def start_trace(served: Keys, key: str) -> str:
    response = httpx2.post(f"{served.served.base_url}/v1/traces", json={"scenario_slug": "lean"}, headers=bearer(key))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def assert_error(response: httpx2.Response, status: int, error: str) -> dict[str, Any]:
    """The /v1 error shape, with the request id in the body and the header."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "message", "request_id"}
    assert body["error"] == error
    assert body["message"]
    assert body["request_id"]
    assert response.headers["x-request-id"] == body["request_id"]
    return body


def test_an_append_without_a_credential_is_401_with_the_challenge(lean_server: Keys) -> None:
    trace = start_trace(lean_server, lean_server.write)
    response = httpx2.post(f"{lean_server.base}/v1/traces/{trace}/events", json=ev(0))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert "resource_metadata=" in response.headers["www-authenticate"]
    assert response.headers["x-request-id"]


def test_a_read_only_key_is_403_insufficient_scope_naming_the_write_scope(lean_server: Keys) -> None:
    trace = start_trace(lean_server, lean_server.write)
    response = httpx2.post(f"{lean_server.base}/v1/traces/{trace}/events", json=ev(0), headers=bearer(lean_server.read))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert "mcp:trace:write" in response.headers["www-authenticate"]


def test_another_orgs_key_is_403_for_the_org_asked_and_404_for_this_orgs_trace(lean_server: Keys) -> None:
    trace = start_trace(lean_server, lean_server.write)
    url = f"{lean_server.base}/v1/traces/{trace}/events"
    asked = httpx2.post(url, json=ev(0), headers=bearer(lean_server.other, **{"x-molar-org": "org_local"}))
    assert_error(asked, 403, "forbidden")
    assert_error(httpx2.post(url, json=ev(0), headers=bearer(lean_server.other)), 404, "not_found")
    events = httpx2.get(f"{lean_server.base}/v1/traces/{trace}/events", headers=bearer(lean_server.read)).json()
    assert events["events"] == []  # nothing of either was stored


def test_bad_appends_get_the_api_errors_with_the_callers_request_id(lean_server: Keys) -> None:
    trace = start_trace(lean_server, lean_server.write)
    url = f"{lean_server.base}/v1/traces/{trace}/events"
    headers = bearer(lean_server.write, **{"x-request-id": "producer-42"})
    too_many = httpx2.post(url, json={"events": [ev(i) for i in range(1001)]}, headers=headers)
    assert assert_error(too_many, 413, "payload_too_large")["request_id"] == "producer-42"
    as_text = httpx2.post(url, content=b"{}", headers={**headers, "content-type": "text/plain"})
    assert_error(as_text, 415, "unsupported_media_type")
    assert_error(httpx2.post(url, json={"events": []}, headers=headers), 422, "validation_error")
    not_json = httpx2.post(url, content=b'{"events": [', headers={**headers, "content-type": "application/json"})
    assert_error(not_json, 400, "bad_request")
    unknown = f"{lean_server.base}/v1/traces/no-such-trace/events"
    assert_error(httpx2.post(unknown, json=ev(0), headers=headers), 404, "not_found")
    finished = start_trace(lean_server, lean_server.write)
    done = httpx2.post(f"{lean_server.base}/v1/traces/{finished}/finish", json={"status": "passed"}, headers=headers)
    assert done.status_code == 200
    closed = httpx2.post(f"{lean_server.base}/v1/traces/{finished}/events", json=ev(0), headers=headers)
    assert_error(closed, 409, "conflict")
    events = httpx2.get(f"{lean_server.base}/v1/traces/{trace}/events", headers=bearer(lean_server.read)).json()
    assert events["events"] == []  # nothing of a refused request was stored


def test_a_batch_is_partly_accepted_and_a_retry_is_a_duplicate(lean_server: Keys) -> None:
    trace = start_trace(lean_server, lean_server.write)
    url = f"{lean_server.base}/v1/traces/{trace}/events"
    batch = {"events": [ev(0, idempotency_key="k0"), {"seq": 1, "kind": "log"}, ev(2)]}
    first = httpx2.post(url, json=batch, headers=bearer(lean_server.write))
    assert first.status_code == 200
    assert first.json() == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": [{"index": 1, "idempotency_key": None, "reason": "ts: Field required"}],
        "last_seq": 2,
    }
    again = httpx2.post(url, json={"events": [ev(0, idempotency_key="k0")]}, headers=bearer(lean_server.write))
    assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": [], "last_seq": 2}
    detail = httpx2.get(f"{lean_server.base}/v1/traces/{trace}", headers=bearer(lean_server.read)).json()
    assert detail["event_count"] == 2
    assert [(s["step_id"], s["event_count"]) for s in detail["steps"]] == [("s0", 2)]


def test_appends_are_counted_under_the_route_template(lean_server: Keys) -> None:
    trace = start_trace(lean_server, lean_server.write)
    url = f"{lean_server.base}/v1/traces/{trace}/events"
    assert httpx2.post(url, json=ev(0), headers=bearer(lean_server.write)).status_code == 200
    assert httpx2.post(url, json={"events": []}, headers=bearer(lean_server.write)).status_code == 422
    metrics = httpx2.get(f"{lean_server.base}/metrics", headers=bearer(lean_server.read)).text
    for status in ("200", "422"):
        series = [
            line
            for line in metrics.splitlines()
            if line.startswith("molar_http_requests_total{")
            and f'route="{ROUTE}"' in line
            and f'status="{status}"' in line
            and 'method="POST"' in line
        ]
        assert series, status
        assert float(series[0].rsplit(" ", 1)[1]) >= 1, status
    assert trace not in metrics  # no series per trace id


async def test_a_follower_gets_exactly_the_appended_events_in_order(lean_server: Keys) -> None:
    trace = start_trace(lean_server, lean_server.write)
    base = lean_server.base
    seen: list[dict[str, Any]] = []
    got_all = anyio.Event()
    async with (
        httpx2.AsyncClient(base_url=base, headers=bearer(lean_server.write), timeout=30) as writer,
        httpx2.AsyncClient(
            base_url=base, headers=bearer(lean_server.read), timeout=httpx2.Timeout(30, read=None)
        ) as reader,
    ):

        async def follow(task_status: anyio.abc.TaskStatus[None]) -> None:
            async with reader.stream("GET", f"/v1/traces/{trace}/stream") as response:
                task_status.started()
                async for sse in httpx2.EventSource(response):
                    if sse.event == "message":
                        seen.append(json.loads(sse.data))
                        if len(seen) == 12:
                            got_all.set()
                            return

        async with anyio.create_task_group() as tasks:
            await tasks.start(follow)
            # The follower is subscribed once it has read the stream's start; the first batch may also come
            # through its backfill: either way once.
            for first in range(0, 12, 4):
                batch = {"events": [ev(s) for s in range(first, first + 4)]}
                assert (await writer.post(f"/v1/traces/{trace}/events", json=batch)).status_code == 200
            with anyio.fail_after(30):
                await got_all.wait()
    assert [e["seq"] for e in seen] == list(range(12))
    assert [e["message"] for e in seen] == [f"line {s}" for s in range(12)]
    assert [e["step"] for e in seen] == [s // 3 + 1 for s in range(12)]  # numbered as stored


async def test_appends_take_the_lean_route_and_everything_else_the_app(embedded: Embedded) -> None:
    """In process, the serve app's layer over a stand-in for the rest of the app: an append never reaches
    it (its answer comes from the /v1 app's own middleware and endpoint); other requests always do."""
    passed_on: list[str] = []

    async def rest_of_app(scope: Scope, receive: Receive, send: Send) -> None:
        passed_on.append(f"{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    layer = LiveAppendRoute(rest_of_app, api_app=embedded.api_app)
    async with embedded.client_factory()() as client:
        trace = (await client._http.post("/v1/traces", json={"scenario_slug": "lean"})).json()["id"]
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=layer), base_url="http://127.0.0.1") as http:
        appended = await http.post(f"/v1/traces/{trace}/events", json={"events": [ev(0), ev(1)]})
        refused = await http.post(f"/v1/traces/{trace}/events", json={"events": []})
        others = [
            await http.get(f"/v1/traces/{trace}/events"),
            await http.post(f"/v1/traces/{trace}/events/"),
            await http.post(f"/v1/traces/{trace}/finish", json={"status": "passed"}),
            await http.post("/v1/traces", json={"scenario_slug": "x"}),
        ]
    assert appended.status_code == 200
    assert appended.json()["accepted"] == 2
    assert appended.headers["x-request-id"]
    assert_error(refused, 422, "validation_error")
    assert [r.status_code for r in others] == [299] * 4
    assert passed_on == [
        f"GET /v1/traces/{trace}/events",
        f"POST /v1/traces/{trace}/events/",
        f"POST /v1/traces/{trace}/finish",
        "POST /v1/traces",
    ]
