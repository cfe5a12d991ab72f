"""The in-process transport the MCP tools reach the /v1 app through: a caller that leaves mid-request
(its call cancelled) takes the app's task down with it and returns only once that task has unwound, so no
request of the app is left running behind a call that has already returned; `TraceClient`'s reads through
it reach the app as httpx2 would send them, and get the same answers."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import httpx2
import pytest

from molar_mcp.api.telemetry import IN_PROCESS_EXTENSION
from molar_mcp.client import ApiClientError, HeaderAuth, TraceClient, TraceFilters
from molar_mcp.client.asgi_stream import MODEL_ANSWER, MODEL_EXTENSION, READ_WHOLE, StreamingASGITransport
from molar_mcp.compose import Embedded
from molar_mcp.ingest import ingest_bundle
from molar_mcp.store.port import LOCAL_ORG_ID
from tests.bundles import make_bundle, summary

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the transport runs the app as an asyncio task, as under uvicorn


async def test_a_cancelled_whole_read_returns_after_the_app_has_unwound() -> None:
    started, unwound = anyio.Event(), anyio.Event()
    steps: list[str] = []

    async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.set()
        try:
            await anyio.sleep(30)
        finally:
            steps.append("cleaning up")
            with anyio.CancelScope(shield=True):
                await asyncio.sleep(0.05)  # e.g. a transaction rolled back in a worker thread
            steps.append("unwound")
            unwound.set()

    async with httpx2.AsyncClient(transport=StreamingASGITransport(slow_app), base_url="http://molar.test") as http:
        with anyio.move_on_after(5) as scope:
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    await http.get("/v1/traces", extensions={READ_WHOLE: True})

                tg.start_soon(call)
                await started.wait()
                tg.cancel_scope.cancel()
        assert not scope.cancelled_caught  # the cancelled call came back well before the deadline
        assert steps == ["cleaning up", "unwound"]  # ...and only after the app had finished unwinding
        assert unwound.is_set()


async def test_a_whole_read_answers_what_the_app_sent() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = await receive()
        await send(
            {"type": "http.response.start", "status": 201, "headers": [(b"x-seen", str(len(request["body"])).encode())]}
        )
        await send({"type": "http.response.body", "body": b"part one, ", "more_body": True})
        await send({"type": "http.response.body", "body": b"part two"})

    async with httpx2.AsyncClient(transport=StreamingASGITransport(app), base_url="http://molar.test") as http:
        answer = await http.post("/v1/x", content=b"12345", extensions={READ_WHOLE: True})
    assert (answer.status_code, answer.headers["x-seen"], answer.text) == (201, "5", "part one, part two")


# -- TraceClient's reads from the in-process app, without an httpx2 request built around them -----------


class CountingTransport(StreamingASGITransport):
    """Counts the requests httpx2 hands it (a read that bypasses httpx2 is not among them)."""

    sent = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.sent += 1
        return await super().handle_async_request(request)


class Acting(HeaderAuth):
    def headers(self) -> dict[str, str]:
        return {"x-internal-token": "t0ken", "x-molar-subject": "ann é"}


def _recording_app(scopes: list[dict[str, Any]], status: int, body: bytes) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)
        await receive()
        headers = [(b"content-type", b"application/json"), (b"x-request-id", b"rid-1")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def _reads(client: TraceClient) -> list[Any]:
    """The same reads through a client: answers, or the error each raised."""
    out: list[Any] = []
    for call in (
        lambda: client.list_traces(TraceFilters(q="coupon 10% off & more=yes +1", status="failed"), cursor="a/b=="),
        lambda: client.get_events("abc DEF/..%", step="3.2", kind="network", ok=False, limit=7, offset=2),
        lambda: client.get_trace_with_failures("Jm2Xbrw5P", 12),
    ):
        try:
            out.append(await call())
        except ApiClientError as exc:
            out.append((type(exc), exc.status, exc.error, exc.message, exc.request_id))
    return out


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, b'{"items": [], "next_cursor": null}'), (404, b'{"error": "not_found", "message": "no trace x"}')],
)
async def test_in_process_reads_reach_the_app_as_httpx2_would_send_them(status: int, body: bytes) -> None:
    """A `TraceClient` given the in-process transport reads without building httpx2 requests: the app gets
    the same scope (method, path, raw path, query, headers with the client's and its auth's, server) and
    the caller the same answers and errors as when each read goes through httpx2."""
    scopes: dict[str, list[dict[str, Any]]] = {"httpx2": [], "direct": []}
    answers: dict[str, list[Any]] = {}
    sent: dict[str, int] = {}
    for way, scoped in scopes.items():
        transport = CountingTransport(_recording_app(scoped, status, body), extensions={"molar.in_process": {}})
        async with httpx2.AsyncClient(
            transport=transport, base_url="http://molar.embedded", headers={"x-molar-org": "org_a"}, auth=Acting()
        ) as http:
            client = TraceClient(http, in_process=transport if way == "direct" else None)
            answers[way] = await _reads(client)
        sent[way] = transport.sent
    assert sent == {"httpx2": 3, "direct": 0}
    assert answers["direct"] == answers["httpx2"]
    assert len(scopes["direct"]) == len(scopes["httpx2"]) == 3
    for direct, through in zip(scopes["direct"], scopes["httpx2"], strict=True):
        # ...and the offer to take the answer as a model, which only such a read can take
        assert direct == {**through, "extensions": {**through["extensions"], MODEL_EXTENSION: {}}}
    assert scopes["direct"][1]["path"] == "/v1/traces/abc DEF/..%/events"  # one segment, decoded as httpx2 does
    assert (b"x-molar-subject", "ann é".encode()) in scopes["direct"][0]["headers"]


async def test_a_read_too_long_for_a_url_is_refused_as_before() -> None:
    scopes: list[dict[str, Any]] = []
    transport = StreamingASGITransport(_recording_app(scopes, 200, b"{}"))
    async with httpx2.AsyncClient(transport=transport, base_url="http://molar.embedded") as http:
        client = TraceClient(http, in_process=transport)
        with pytest.raises(ApiClientError) as refused:
            await client.list_traces(TraceFilters(q="a" * 70_000))
    assert (refused.value.status, refused.value.error) == (400, "bad_request")
    assert scopes == []


async def test_the_api_hands_its_model_to_an_in_process_read_the_same_as_its_json(embedded: Embedded) -> None:
    """`GET /v1/traces/{id}?failed_events=` and `GET /v1/traces?row_cursors=true` hand an in-process read
    the model they would write as JSON (the body empty): equal to what parsing the JSON gives a read through
    httpx2, which still gets the JSON; other reads and other callers get JSON as before."""
    _, short = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(summary()))
    ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(summary(status="passed", failure_signature=None)))
    bodies: list[tuple[bytes, bool]] = []

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def sent(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                bodies.append((message.get("body", b""), MODEL_ANSWER in message))
            await send(message)

        await embedded.api_app(scope, receive, sent)

    answers: dict[str, list[Any]] = {}
    seen: dict[str, list[tuple[bytes, bool]]] = {}
    for way in ("httpx2", "direct"):
        bodies.clear()
        transport = StreamingASGITransport(recording, extensions={IN_PROCESS_EXTENSION: {}})
        async with httpx2.AsyncClient(transport=transport, base_url="http://molar.embedded") as http:
            client = TraceClient(http, in_process=transport if way == "direct" else None)
            answers[way] = [
                await client.get_trace_with_failures(short, 12),
                await client.list_traces(TraceFilters(status="failed"), row_cursors=True),
                await client.list_traces(),
                await client.get_events(short, ok=False),
            ]
        seen[way] = list(bodies)
    assert answers["direct"] == answers["httpx2"]
    assert [a.model_dump_json() for a in answers["direct"]] == [a.model_dump_json() for a in answers["httpx2"]]
    assert answers["direct"][0].failed_events.total >= 1
    assert len(answers["direct"][1].items) == 1
    assert [handed for _, handed in seen["direct"]] == [True, True, False, False]
    assert [body == b"" for body, _ in seen["direct"]] == [True, True, False, False]
    assert not any(handed for _, handed in seen["httpx2"])
    assert all(body for body, _ in seen["httpx2"])
