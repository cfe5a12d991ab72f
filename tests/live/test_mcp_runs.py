"""Runs as MCP resources: `molar://runs/{id}` and `molar://orgs/{org}/runs/{id}/trace`, read and followed
by the real `mcp` client (both protocol eras) while results are uploaded through `POST /v1/traces/ingest`."""

from __future__ import annotations

import json
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, ResourceUpdatedNotification

from molar_mcp.compose import Embedded
from molar_mcp.mcp.server import create_mcp_server
from tests.bundles import checkout_events, make_bundle, summary

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def rest(embedded: Embedded) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=embedded.api_app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://molar") as http:
        yield http


async def new_run(embedded: Embedded) -> dict[str, Any]:
    async with rest(embedded) as http:
        created = await http.post("/v1/runs", json={"name": "CI #7", "kind": "pytest", "commit": "abc1234"})
        assert created.status_code == 201, created.text
        run: dict[str, Any] = created.json()
        return run


async def upload(embedded: Embedded, run_id: str, slug: str, *, fail: bool) -> dict[str, Any]:
    """One test's result: a bundle of the test's run, uploaded into the run."""
    bundle = make_bundle(
        summary(scenario_slug=slug, status="failed" if fail else "passed"),
        checkout_events(fail=fail),
    )
    async with rest(embedded) as http:
        answer = await http.post(
            "/v1/traces/ingest",
            files={"file": ("bundle.tar.gz", bundle, "application/gzip")},
            data={"run_id": run_id},
        )
        assert answer.status_code == 201, answer.text
        body: dict[str, Any] = answer.json()
        return body


async def finish(embedded: Embedded, run_id: str) -> dict[str, Any]:
    async with rest(embedded) as http:
        answer = await http.post(f"/v1/runs/{run_id}/finish", json={})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


def text(result: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(result.contents[0].text)
    return parsed


async def test_a_modern_listener_is_told_as_results_arrive_and_reads_the_run(embedded: Embedded) -> None:
    run = await new_run(embedded)
    uri = f"molar://runs/{run['short_id']}"
    trace_uri = f"molar://orgs/{run['org_id']}/runs/{run['short_id']}/trace"
    server = create_mcp_server(embedded.client_factory())
    async with Client(server, mode="2026-07-28") as client:
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert {"molar://runs/{run_id}", "molar://orgs/{org_id}/runs/{run_id}/trace"} <= templates
        before = text(await client.read_resource(uri))
        assert before["status"] == "running"
        assert before["counts"]["tests"] == 0
        nothing_failed = text(await client.read_resource(trace_uri))
        assert nothing_failed["traces"] == []
        assert "no test failed" in nothing_failed["why_a_list"]

        async with client.listen(resource_subscriptions=[uri, trace_uri]) as sub:
            first = await upload(embedded, run["short_id"], "checkout-upgrade", fail=True)
            with anyio.fail_after(15):
                heard = {str((await sub.__anext__()).uri) for _ in range(2)}  # type: ignore[attr-defined]
            assert heard == {uri, trace_uri}
            now = text(await client.read_resource(uri))
            assert now["counts"]["failed"] == 1
            assert now["failing"][0]["trace_id"] == first["trace_id"]
            assert now["trace"] == trace_uri
            one = text(await client.read_resource(trace_uri))
            assert one["trace"]["id"] == first["trace_id"]
            assert one["trace"]["status"] == "failed"

            await upload(embedded, run["short_id"], "checkout-downgrade", fail=False)
            second = await upload(embedded, run["short_id"], "checkout-refund", fail=True)
            with anyio.fail_after(15):
                while text(await client.read_resource(uri))["counts"]["tests"] < 3:
                    await sub.__anext__()
            several = text(await client.read_resource(trace_uri))
            assert "2 tests failed" in several["why_a_list"]
            listed = [t["id"] for t in several["traces"]]
            assert set(listed[:2]) == {first["trace_id"], second["trace_id"]}  # failed first
            assert len(listed) == 3

            await finish(embedded, run["short_id"])
            with anyio.fail_after(15):
                while text(await client.read_resource(uri))["status"] == "running":
                    await sub.__anext__()
        assert text(await client.read_resource(uri))["status"] == "failed"


async def test_a_legacy_subscriber_gets_resource_updated_for_the_run_it_subscribed(embedded: Embedded) -> None:
    run = await new_run(embedded)
    uri = f"molar://runs/{run['id']}"
    updated: list[str] = []
    got = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updated.append(str(message.params.uri))
            got.set()

    server = create_mcp_server(embedded.client_factory())
    async with Client(server, mode="legacy", message_handler=on_message) as client:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # resources/subscribe is the 2025-era API, deprecated for modern
            await client.subscribe_resource(uri)
        await upload(embedded, run["id"], "checkout-upgrade", fail=True)
        with anyio.fail_after(15):
            await got.wait()
        assert updated == [uri]  # only the URI it subscribed to
        assert text(await client.read_resource(uri))["counts"]["failed"] == 1


async def test_a_run_uri_naming_another_org_or_no_run_is_not_found(embedded: Embedded) -> None:
    run = await new_run(embedded)
    elsewhere = f"molar://orgs/org_elsewhere/runs/{run['short_id']}/trace"
    missing = "molar://runs/rNoSuchRun"
    server = create_mcp_server(embedded.client_factory())
    async with Client(server, mode="2026-07-28") as client:
        for uri in (elsewhere, missing):
            with pytest.raises(MCPError) as read:
                await client.read_resource(uri)
            assert "no such run" in read.value.error.message
            with pytest.raises(MCPError) as listen:
                async with client.listen(resource_subscriptions=[uri]):
                    pass
            assert listen.value.error.code == INVALID_PARAMS
