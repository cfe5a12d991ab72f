"""Org isolation over real HTTP: another org's subscriber is refused with the protocol's not-found error
(both eras) and never hears of the trace; a stream of a revoked key stops within seconds; every /v1 route
and every MCP tool and resource refuses another org's trace and run; a credential cannot be switched into
another org; a foreign browser origin is refused; an org-only share needs a session of its org."""

from __future__ import annotations

import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, ResourceUpdatedNotification

from tests.listing import rows_of
from tests.security.conftest import Secured
from tests.servers import EVERY_SCOPE, molar_cli

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TS = 1_763_629_200_000


@asynccontextmanager
async def mcp_as(secured: Secured, key: str, mode: str, **kwargs: Any) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=30.0) as http,
        Client(streamable_http_client(secured.mcp_url, http_client=http), mode=mode, **kwargs) as client,  # type: ignore[arg-type]
    ):
        yield client


async def live_trace(secured: Secured, key: str) -> str:
    async with secured.http(key) as http:
        created = await http.post("/v1/traces", json={"scenario_slug": "isolation-live"})
        assert created.status_code == 201, created.text
        short_id: str = created.json()["short_id"]
        return short_id


async def append(secured: Secured, key: str, trace: str, first: int, count: int) -> None:
    events = [{"seq": s, "ts": TS + s, "kind": "log", "message": f"{s}"} for s in range(first, first + count)]
    async with secured.http(key) as http:
        response = await http.post(f"/v1/traces/{trace}/events", json={"events": events})
        assert response.status_code in (200, 202), response.text


async def test_another_org_cannot_listen_to_a_followed_trace(secured: Secured) -> None:
    trace = await live_trace(secured, secured.key_all)
    uri = f"molar://traces/{trace}"
    async with (
        mcp_as(secured, secured.key_all, "2026-07-28") as owner,
        owner.listen(resource_subscriptions=[uri]) as sub,
    ):
        async with mcp_as(secured, secured.key_other, "2026-07-28") as intruder:
            with pytest.raises(MCPError) as refused:
                async with intruder.listen(resource_subscriptions=[uri]):
                    pass
            missing = f"molar://traces/{'0' * 12}"
            with pytest.raises(MCPError) as absent:
                async with intruder.listen(resource_subscriptions=[missing]):
                    pass
        await append(secured, secured.key_all, trace, 0, 2)
        with anyio.fail_after(15):
            event = await sub.__anext__()
    assert str(event.uri) == uri  # type: ignore[attr-defined]
    assert refused.value.error.code == INVALID_PARAMS
    assert absent.value.error.code == INVALID_PARAMS
    # The same words for another org's trace and for none: nothing tells the intruder it exists.
    assert refused.value.error.message.replace(trace, "X") == absent.value.error.message.replace("0" * 12, "X")


async def test_another_org_cannot_subscribe_on_the_2025_wire_and_hears_nothing(secured: Secured) -> None:
    trace = await live_trace(secured, secured.key_all)
    uri = f"molar://traces/{trace}"
    heard: dict[str, list[str]] = {"owner": [], "intruder": []}
    got = anyio.Event()

    def handler(who: str) -> Any:
        async def on_message(message: Any) -> None:
            if isinstance(message, ResourceUpdatedNotification):
                heard[who].append(str(message.params.uri))
                if who == "owner":
                    got.set()

        return on_message

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resources/subscribe is the 2025-era API
        async with (
            mcp_as(secured, secured.key_all, "legacy", message_handler=handler("owner")) as owner,
            mcp_as(secured, secured.key_other, "legacy", message_handler=handler("intruder")) as intruder,
        ):
            await owner.subscribe_resource(uri)
            with pytest.raises(MCPError) as refused:
                await intruder.subscribe_resource(uri)
            await append(secured, secured.key_all, trace, 0, 1)
            with anyio.fail_after(15):
                await got.wait()
            await anyio.sleep(0.5)
    assert refused.value.error.code == INVALID_PARAMS
    assert uri in heard["owner"]
    assert heard["intruder"] == []


def _key_id(secured: Secured, name: str) -> str:
    listing = molar_cli(secured.served.data_dir, "keys", "list")
    line = next(line for line in listing.splitlines() if name in line)
    return next(word for word in line.split() if word.startswith("key_"))


async def test_a_stream_of_a_revoked_key_stops_within_seconds(secured: Secured) -> None:
    key = molar_cli(secured.served.data_dir, "keys", "create", "--scopes", EVERY_SCOPE, "--name", "soon-revoked")
    trace = await live_trace(secured, secured.key_all)
    uri = f"molar://traces/{trace}"
    async with mcp_as(secured, key, "2026-07-28") as client, client.listen(resource_subscriptions=[uri]) as sub:
        molar_cli(secured.served.data_dir, "keys", "revoke", _key_id(secured, "soon-revoked"))
        revoked_at = time.monotonic()
        with anyio.fail_after(10):
            try:
                async for _ in sub:
                    pass
            except Exception as exc:  # a dropped stream (SubscriptionLost) is a stop too
                print("stream ended:", type(exc).__name__)
        stopped_after = time.monotonic() - revoked_at
    assert stopped_after < 6


async def test_metrics_need_a_credential(secured: Secured) -> None:
    async with secured.http() as anonymous:
        refused = await anonymous.get("/metrics")
    async with secured.http(secured.key_read) as http:
        allowed = await http.get("/metrics")
    assert refused.status_code == 401
    assert allowed.status_code == 200
    assert "molar" in allowed.text


async def owned_run(secured: Secured, key: str) -> dict[str, Any]:
    async with secured.http(key) as http:
        created = await http.post("/v1/runs", json={"name": "isolation-run"})
        assert created.status_code == 201, created.text
        run: dict[str, Any] = created.json()
        return run


async def upload_result(secured: Secured, key: str, run_id: str) -> None:
    from tests.bundles import make_bundle, summary

    async with secured.http(key) as http:
        answer = await http.post(
            "/v1/traces/ingest",
            files={"file": ("bundle.tar.gz", make_bundle(summary(scenario_slug="isolation-run-test")))},
            data={"run_id": run_id},
        )
        assert answer.status_code == 201, answer.text


async def test_another_org_cannot_read_or_follow_a_run(secured: Secured) -> None:
    run = await owned_run(secured, secured.key_all)
    uri = f"molar://runs/{run['short_id']}"
    trace_uri = f"molar://orgs/{run['org_id']}/runs/{run['short_id']}/trace"
    missing = "molar://runs/rNoSuchRun"
    heard: list[str] = []
    got = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            heard.append(str(message.params.uri))
            got.set()

    async with (
        mcp_as(secured, secured.key_all, "2026-07-28") as owner,
        owner.listen(resource_subscriptions=[uri]) as sub,
        mcp_as(secured, secured.key_other, "2026-07-28") as intruder,
    ):
        refusals: dict[str, MCPError] = {}
        for name, target in (("run", uri), ("trace", trace_uri), ("missing", missing)):
            with pytest.raises(MCPError) as refused:
                async with intruder.listen(resource_subscriptions=[target]):
                    pass
            refusals[name] = refused.value
            with pytest.raises(MCPError) as unread:
                await intruder.read_resource(target)
            assert "no such run" in unread.value.error.message
        # Naming its own org in the URI does not open another org's run either.
        with pytest.raises(MCPError):
            await intruder.read_resource(f"molar://orgs/org_other/runs/{run['short_id']}/trace")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # resources/subscribe is the 2025-era API
            async with mcp_as(secured, secured.key_other, "legacy", message_handler=on_message) as legacy:
                with pytest.raises(MCPError) as legacy_refused:
                    await legacy.subscribe_resource(uri)
                await upload_result(secured, secured.key_all, run["short_id"])
                with anyio.fail_after(15):
                    event = await sub.__anext__()
                await anyio.sleep(0.5)
    assert str(event.uri) == uri  # type: ignore[attr-defined]
    assert heard == []
    assert legacy_refused.value.error.code == INVALID_PARAMS
    assert all(r.error.code == INVALID_PARAMS for r in refusals.values())
    # The same words for another org's run and for none: nothing tells the intruder it exists.
    assert refusals["run"].error.message.replace(run["short_id"], "X") == refusals["missing"].error.message.replace(
        "rNoSuchRun", "X"
    )


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


# Org isolation probes, moved here from tests/authz: every /v1 route, the MCP tools and resources,
# the X-Molar-Org header, a foreign browser origin, org-only shares and resources/list.


async def test_x_molar_org_cannot_switch_a_credential_into_another_org(secured: Secured) -> None:
    async with httpx2.AsyncClient(base_url=secured.base) as http:
        response = await http.get("/v1/traces", headers={**_bearer(secured.key_other), "x-molar-org": "org_local"})
    assert response.status_code == 403


async def _local_trace(secured: Secured) -> dict[str, Any]:
    async with httpx2.AsyncClient(base_url=secured.base, headers=_bearer(secured.key_all)) as http:
        items = (await http.get("/v1/traces", params={"status": "failed"})).json()["items"]
        detail: dict[str, Any] = (await http.get(f"/v1/traces/{items[0]['id']}")).json()
    return detail


async def test_every_v1_route_refuses_another_orgs_trace(secured: Secured) -> None:
    """Walks the API's own route table as a member of org_other: never 2xx, never org_local's data."""
    from starlette.routing import Route

    from molar_mcp.api.app import api_routes

    detail = await _local_trace(secured)
    secret_markers = [detail["scenario_slug"], detail["short_id"]]
    values = {
        "trace_id": detail["id"],
        "sha256": (detail["artifacts"][0]["sha256"] if detail["artifacts"] else "0" * 64),
        "name": "report.md",
    }
    bodies: dict[str, Any] = {
        "/share": {"visibility": "public-read", "expires_days": 1},
        "/events": {"events": [{"seq": 10_000, "ts": 1, "kind": "log"}]},
        "/finish": {"status": "passed"},
        "/replay": {"from_step": 1},
        "/chats": {"title": "x"},
        "/promote-fix": {"replay_id": "x", "summary": "x"},
    }
    checked = 0
    async with httpx2.AsyncClient(base_url=secured.base, headers=_bearer(secured.key_other)) as http:
        for route in api_routes():
            if not isinstance(route, Route) or "{trace_id}" not in route.path or route.path.startswith("/v1/signed"):
                continue
            path = route.path
            for key, value in values.items():
                path = path.replace("{" + key + "}", value)
            if "{" in path:
                continue
            for method in sorted((route.methods or set()) - {"HEAD"}):
                body = next((b for suffix, b in bodies.items() if route.path.endswith(suffix)), None)
                response = await http.request(method, path, json=body if method != "GET" else None)
                checked += 1
                assert response.status_code in (403, 404), f"{method} {route.path}: {response.status_code}"
                assert not any(m in response.text for m in secret_markers[:1]), f"{method} {route.path} leaked"
        listed = (await http.get("/v1/traces")).json()["items"]
    assert detail["id"] not in {t["id"] for t in listed}
    assert checked >= 10


async def test_mcp_tools_and_resources_refuse_another_orgs_trace(secured: Secured) -> None:
    detail = await _local_trace(secured)
    async with (
        httpx2.AsyncClient(headers=_bearer(secured.key_other), timeout=30.0) as http,
        Client(streamable_http_client(secured.mcp_url, http_client=http), cache=None) as client,
    ):
        listed: Any = (await client.call_tool("list_traces", {})).structured_content
        got = await client.call_tool("get_trace", {"trace_id": detail["short_id"]})
        debugged = await client.call_tool("debug_run", {"trace_id": detail["short_id"]})
        with pytest.raises(Exception, match=r"(?i)no such trace|not found"):
            await client.read_resource(f"molar://traces/{detail['short_id']}")
    assert detail["short_id"] not in {row["short_id"] for row in rows_of(listed)}
    assert got.is_error
    assert debugged.is_error


async def test_a_browser_request_from_a_foreign_origin_is_refused(secured: Secured) -> None:
    async with httpx2.AsyncClient(base_url=secured.base) as http:
        foreign = await http.post("/mcp", json={}, headers={"origin": "http://evil.example"})
        foreign_api = await http.get(
            "/v1/traces", headers={"origin": "http://evil.example", **_bearer(secured.key_all)}
        )
        own = await http.get("/v1/traces", headers={"origin": secured.base, **_bearer(secured.key_all)})
    assert foreign.status_code == 403
    assert foreign_api.status_code == 403
    assert own.status_code == 200


async def test_an_org_only_share_needs_a_signed_in_browser_of_that_org(secured: Secured) -> None:
    from tests.auth.conftest import Browser, Pkce, authorize_url, register_client

    detail = await _local_trace(secured)
    async with httpx2.AsyncClient(base_url=secured.base, headers=_bearer(secured.key_all)) as http:
        shared = await http.post(f"/v1/traces/{detail['id']}/share", json={"visibility": "org-only", "expires_days": 1})
        client = await register_client(http)
    assert shared.status_code == 200
    viewer_path = f"/r/{detail['short_id']}"
    browser = Browser(secured.base)
    try:
        anonymous = await browser.http.get(viewer_path)
        # Sign in through the real login form (an authorization request starts the session).
        await browser.visit(authorize_url(secured, client["client_id"], Pkce.new()))
        signed_in = await browser.http.get(viewer_path)
    finally:
        await browser.aclose()
    assert anonymous.status_code == 401
    assert signed_in.status_code == 200
    assert detail["short_id"] in signed_in.text


async def test_resources_list_shows_only_the_callers_orgs_recent_traces(secured: Secured) -> None:
    detail = await _local_trace(secured)
    uris: dict[str, set[str]] = {}
    for who, key in (("local", secured.key_read), ("other", secured.key_other)):
        async with (
            httpx2.AsyncClient(headers=_bearer(key), timeout=30.0) as http,
            Client(streamable_http_client(secured.mcp_url, http_client=http), cache=None) as client,
        ):
            uris[who] = {str(r.uri) for r in (await client.list_resources()).resources}
    assert f"molar://traces/{detail['short_id']}" in uris["local"]
    assert not uris["other"] & uris["local"]
    assert uris["other"] == set()  # org_other has recorded nothing
