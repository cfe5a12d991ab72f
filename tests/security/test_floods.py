"""Floods of the unauthenticated endpoints, over real HTTP: sign-in throttling per account and per
client address (lockout window, a clear 429 with Retry-After, no hashing while locked out), and
registration limits; MCP tool calls counted once each against their org's `tool` budget (real MCP
clients), never as the internal reads they make. Peak memory and the latency of other requests during a
flood are measured by bench/bench_floods.py, not timed here."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.auth.conftest import (
    EMAIL,
    PASSWORD,
    LiveServer,
    Pkce,
    authorize_url,
    hidden_fields,
    live_server,  # noqa: F401 - the shared uvicorn server (a fixture)
    register_client,
    server,  # noqa: F401 - the shared server with its clock reset (a fixture)
)
from tests.bundles import make_bundle
from tests.security.conftest import Secured, start_secured
from tests.servers import stop_server as stop

pytestmark = pytest.mark.anyio


async def _login_form(http: httpx2.AsyncClient, live: LiveServer) -> dict[str, str]:
    client = await register_client(http)
    page = await http.get(authorize_url(live, client["client_id"], Pkce.new()))
    assert "Sign in to Molar" in page.text
    return hidden_fields(page.text)


async def test_wrong_passwords_lock_the_account_out_with_a_clear_429(server: LiveServer) -> None:  # noqa: F811
    settings = server.config.throttle
    victim = "locked-" + EMAIL
    async with server.http() as http:
        fields = await _login_form(http, server)
        answers = []
        for _ in range(settings.failures_per_account.count + 3):
            answer = await http.post("/api/oauth/login", data={**fields, "email": victim, "password": "guess"})
            answers.append(answer)
    async with server.http() as other_browser:
        # Other accounts are not locked out by the attack on this one.
        other_fields = await _login_form(other_browser, server)
        other = await other_browser.post(
            "/api/oauth/login", data={**other_fields, "email": EMAIL, "password": PASSWORD}
        )
    async with server.http(cookies=http.cookies) as http:
        server.clock.advance(settings.failures_per_account.window + 1)
        after_window = await http.post("/api/oauth/login", data={**fields, "email": victim, "password": "guess"})
    statuses = [a.status_code for a in answers]
    assert statuses[: settings.failures_per_account.count] == [401] * settings.failures_per_account.count
    assert set(statuses[settings.failures_per_account.count :]) == {429}
    locked = answers[-1]
    assert 1 <= int(locked.headers["retry-after"]) <= settings.failures_per_account.window + 1
    assert "Too many sign-in attempts" in locked.text
    assert other.status_code == 303
    assert after_window.status_code == 401  # the window passed: the account may try again


async def test_one_address_cannot_spray_many_accounts(server: LiveServer) -> None:  # noqa: F811
    limit = server.config.throttle.failures_per_address.count
    server.clock.advance(3 * server.config.throttle.failures_per_address.window)  # earlier tests' failures age out
    async with server.http() as http:
        fields = await _login_form(http, server)
        statuses = []
        for n in range(limit + 2):
            answer = await http.post(
                "/api/oauth/login", data={**fields, "email": f"spray{n}@example.test", "password": "guess"}
            )
            statuses.append(answer.status_code)
    assert statuses[:limit] == [401] * limit
    assert statuses[limit:] == [429, 429]


async def test_a_concurrent_sign_in_flood_gets_429s_not_a_queue(secured: Secured) -> None:
    async with httpx2.AsyncClient(base_url=secured.base, timeout=60.0) as http:
        registered = await http.post(
            "/api/oauth/register", json={"client_name": "flood", "redirect_uris": ["http://127.0.0.1:7777/callback"]}
        )
        client_id = registered.json()["client_id"]
        page = await http.get(
            "/api/oauth/authorize",
            params={
                "client_id": client_id,
                "response_type": "code",
                "redirect_uri": "http://127.0.0.1:7777/callback",
                "code_challenge": Pkce.new().challenge,
                "code_challenge_method": "S256",
            },
        )
        fields = hidden_fields(page.text)
        statuses: list[int] = []

        async def attempt(n: int) -> None:
            answer = await http.post(
                "/api/oauth/login", data={**fields, "email": f"flood{n}@example.test", "password": "wrong"}
            )
            statuses.append(answer.status_code)

        async with anyio.create_task_group() as tg:
            for n in range(40):
                tg.start_soon(attempt, n)
        listed = await http.get("/v1/traces", headers={"authorization": f"Bearer {secured.key_read}"})
    assert len(statuses) == 40
    assert set(statuses) <= {401, 429}
    assert statuses.count(429) >= 40 - 30  # past the per-address limit (and the hashing queue): refused at once
    assert listed.status_code == 200


async def test_client_registration_is_rate_limited_and_bounded(secured: Secured) -> None:
    async with httpx2.AsyncClient(base_url=secured.base, timeout=30.0) as http:
        huge = await http.post(
            "/api/oauth/register",
            json={"client_name": "x" * 20_000, "redirect_uris": ["http://127.0.0.1:7777/callback"]},
        )
        statuses = []
        for n in range(30):
            answer = await http.post(
                "/api/oauth/register",
                json={"client_name": f"spam {n}", "redirect_uris": ["http://127.0.0.1:7777/callback"]},
            )
            statuses.append(answer.status_code)
    assert huge.status_code == 400
    assert "limited to" in huge.json()["error_description"]
    assert 429 in statuses
    first_refusal = statuses.index(429)
    assert set(statuses[first_refusal:]) == {429}


def _initialize(n: int) -> dict[str, object]:
    return {
        "jsonrpc": "2.0",
        "id": n,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "session-flood", "version": "1"},
        },
    }


async def test_one_credential_cannot_open_unbounded_2025_sessions(secured: Secured) -> None:
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    limit = 64  # McpScopeGuard's sessions_per_credential default, used by `serve`
    async with httpx2.AsyncClient(base_url=secured.base, timeout=60.0, headers=headers) as http:
        statuses = []
        for n in range(limit + 2):
            opened = await http.post(
                "/mcp", json=_initialize(n), headers={"authorization": f"Bearer {secured.key_read}"}
            )
            statuses.append(opened.status_code)
        refused = opened
        other = await http.post("/mcp", json=_initialize(0), headers={"authorization": f"Bearer {secured.key_other}"})
    assert statuses[:limit] == [200] * limit
    assert statuses[limit:] == [429, 429]
    assert "open sessions" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) > 0
    assert other.status_code == 200  # another credential is not affected


# --- Rate limits count what the caller did: one MCP tool call is one unit of its org's `tool` budget ---


@asynccontextmanager
async def _agent(secured: Secured, key: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=60.0) as http,
        Client(streamable_http_client(secured.mcp_url, http_client=http), mode="2026-07-28") as client,  # type: ignore[arg-type]
    ):
        yield client


async def _a_trace(secured: Secured) -> str:
    async with secured.http(secured.key_all) as http:
        files = {"bundle": ("b.tar.gz", make_bundle(), "application/gzip")}
        stored = await http.post("/v1/traces/ingest", data={"scenario_slug": "budget"}, files=files)
        assert stored.status_code == 201, stored.text
        short_id: str = stored.json()["short_id"]
        return short_id


async def test_ten_agents_of_one_org_looping_tool_calls_are_not_refused_at_the_defaults(secured: Secured) -> None:
    # Each get_trace makes several internal reads of /v1; counted as REST reads (600 a minute), 10 agents
    # looping were refused within seconds. Counted as tool calls, 400 calls are well within the budget.
    trace = await _a_trace(secured)
    refused: list[str] = []
    done: list[int] = []

    async def agent(n: int) -> None:
        async with _agent(secured, secured.key_read if n % 2 else secured.key_all) as client:
            for _ in range(40):
                try:
                    result = await client.call_tool("get_trace", {"trace_id": trace})
                except MCPError as exc:
                    refused.append(exc.error.message)
                    continue
                assert not result.is_error, result.content
                done.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(agent, n)
    assert refused == []
    assert len(done) == 400


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    s = start_secured(tmp_path_factory.mktemp("budgeted") / "data", "--rate-limits", "read=5,tool=12", demo=False)
    try:
        yield s
    finally:
        stop(s.served)


async def test_a_tool_call_spends_one_unit_of_the_tool_budget_not_the_reads_it_makes(budgeted: Secured) -> None:
    trace = await _a_trace(budgeted)
    async with _agent(budgeted, budgeted.key_all) as client:
        started = time.monotonic()
        for _ in range(10):  # each reads the trace, its events and its history: 30+ internal reads
            result = await client.call_tool("get_trace", {"trace_id": trace})
            assert not result.is_error, result.content
        async with budgeted.http(budgeted.key_all) as http:
            reads = [(await http.get("/v1/traces")).status_code for _ in range(6)]
        # The bucket refills one call every 5 s (12 a minute): a slow machine earns a few more calls before
        # the refusal; count them rather than assume the calls took no time.
        allowed = 10
        refused: MCPError | None = None
        for _ in range(40):
            try:
                result = await client.call_tool("list_traces", {})
            except MCPError as error:
                refused = error
                break
            assert not result.is_error
            allowed += 1
        elapsed = time.monotonic() - started
    async with _agent(budgeted, budgeted.key_other) as other:
        other_org = await other.call_tool("list_traces", {})
    # Each tool call spent one unit however many internal reads it made: the full budget of 12 passed,
    # plus at most what refilled meanwhile (were internal reads counted, the second call would be refused).
    assert 12 <= allowed <= 12 + int(elapsed / 5) + 1, (allowed, elapsed)
    # The REST budget was untouched by the tool calls: 5 reads pass, the sixth is refused.
    assert reads == [200] * 5 + [429]
    assert refused is not None, allowed
    assert "rate limited" in refused.error.message
    assert "12 tool calls a minute" in refused.error.message
    assert refused.error.data["retry_after"] >= 1
    assert not other_org.is_error  # another org has its own budget
