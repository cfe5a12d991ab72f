"""`resources/list`: the most recent traces as resources, newest first, a bounded page at a time with the
protocol's cursor, and no more than the newest RECENT_MAX in all (a client that walks every page stops
there). Over the real SDK client, in both eras, on a real embedded store. That another org's traces never
appear is tested over HTTP with API keys of two orgs (tests/authz/test_serve_auth.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, TextResourceContents

from molar_mcp.compose import Embedded, open_embedded
from molar_mcp.ingest import ingest_bundle
from molar_mcp.mcp.resources import RECENT_MAX, RECENT_PAGE
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.store import LOCAL_ORG_ID
from tests.bundles import checkout_events, make_bundle, summary

pytestmark = pytest.mark.anyio


def _store_traces(embedded: Embedded, n: int) -> list[str]:
    """`n` traces created a minute apart, oldest first; returns their short ids in that order."""
    shorts = []
    for i in range(n):
        status = "failed" if i % 3 == 0 else "passed"
        doc = summary(
            status=status,
            scenario_slug=f"checkout-{i % 4}",
            failure_signature="webhook-404" if status == "failed" else None,
            created_at=f"2026-11-{1 + i // 1440:02d}T{(i // 60) % 24:02d}:{i % 60:02d}:00Z",
        )
        shorts.append(ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(doc, checkout_events(fail=False)))[1])
    return shorts


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Embedded, list[str]]]:
    with open_embedded(tmp_path_factory.mktemp("many") / "data") as embedded:
        yield embedded, _store_traces(embedded, RECENT_MAX + 7)


async def test_resources_list_pages_the_most_recent_traces_with_a_cursor(
    many: tuple[Embedded, list[str]], mode: str
) -> None:
    embedded, shorts = many
    newest_first = list(reversed(shorts))
    pages: list[Any] = []
    async with Client(create_mcp_server(embedded.client_factory()), mode=mode) as client:
        page = await client.list_resources()
        pages.append(page)
        while page.next_cursor is not None and len(pages) < 10:
            page = await client.list_resources(cursor=page.next_cursor)
            pages.append(page)
        first = pages[0].resources[0]
        read = await client.read_resource(str(first.uri))
    assert [len(p.resources) for p in pages] == [RECENT_PAGE] * (RECENT_MAX // RECENT_PAGE)
    listed = [str(r.uri) for p in pages for r in p.resources]
    assert listed == [f"molar://traces/{s}" for s in newest_first[:RECENT_MAX]]  # newest first, no repeats
    assert pages[-1].next_cursor is None  # bounded: the 7 oldest are left to list_traces
    assert first.mime_type == "application/json"
    assert first.title is not None
    assert first.title.startswith(("FAILED", "PASSED"))
    assert first.annotations is not None
    assert first.annotations.last_modified is not None
    n = len(shorts) - 1
    assert first.annotations.last_modified == f"2026-11-01T{n // 60:02d}:{n % 60:02d}:00+00:00"
    (contents,) = read.contents
    assert isinstance(contents, TextResourceContents)
    assert newest_first[0] in contents.text


async def test_a_short_list_has_no_cursor_and_a_forged_cursor_is_refused(embedded: Embedded) -> None:
    shorts = _store_traces(embedded, 3)
    async with Client(create_mcp_server(embedded.client_factory())) as client:
        page = await client.list_resources()
        with pytest.raises(MCPError) as refused:
            await client.list_resources(cursor="not-a-cursor")
    assert [str(r.uri) for r in page.resources] == [f"molar://traces/{s}" for s in reversed(shorts)]
    assert page.next_cursor is None
    assert refused.value.error.code == INVALID_PARAMS
    assert "cursor" in refused.value.error.message
