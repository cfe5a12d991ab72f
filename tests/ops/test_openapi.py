"""`/openapi.json` is valid OpenAPI 3.1 and describes every route the API serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from molar_mcp.api.app import create_api_app
from molar_mcp.api.context import ApiContext
from molar_mcp.api.openapi import openapi_document
from molar_mcp.compose import Embedded

pytestmark = pytest.mark.anyio


async def test_the_served_document_is_valid_openapi_3_1(embedded: Embedded) -> None:
    async with embedded.client_factory()() as client:
        response = await client._http.get("/openapi.json")
    doc: Any = response.json()
    assert response.status_code == 200
    validate(doc)
    assert doc["openapi"] == "3.1.0"


def test_every_served_route_and_method_is_in_the_document(tmp_path: Path) -> None:
    from molar_mcp.store import SqliteTraceStore

    store = SqliteTraceStore(tmp_path / "data")
    app = create_api_app(ApiContext.embedded(store))
    doc = openapi_document(app.routes)
    for route in app.routes:
        if isinstance(route, Route) and route.path != "/openapi.json":
            for method in (route.methods or set()) - {"HEAD"}:
                assert method.lower() in doc["paths"][route.path], f"{method} {route.path}"
    store.close()


def test_documented_routes_use_the_same_models_as_the_handlers(tmp_path: Path) -> None:
    from molar_mcp.store import SqliteTraceStore

    store = SqliteTraceStore(tmp_path / "data")
    doc = openapi_document(create_api_app(ApiContext.embedded(store)).routes)
    store.close()
    listing = doc["paths"]["/v1/traces"]["get"]
    assert listing["tags"] == ["trace"]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TraceListResponse"
    }
    assert {p["name"] for p in listing["parameters"]} >= {"status", "q", "from", "to", "limit", "cursor"}
    detail = doc["components"]["schemas"]["TraceDetail"]["properties"]
    assert {"signed_urls", "s3_prefix", "parent_trace_id", "replay_from_step", "blob_count"} <= set(detail)
    ingest = doc["paths"]["/v1/traces/ingest"]["post"]
    form = ingest["requestBody"]["content"]["multipart/form-data"]["schema"]
    # scenario_slug is optional for every format; the upload is `file` (`bundle`, its older name, still works).
    assert form["required"] == ["file"]
    assert {"format", "run_id", "result", "attachment", "scenario_slug", "bundle"} <= set(form["properties"])
    assert set(doc["components"]["schemas"]["ErrorBody"]["properties"]) == {"error", "message", "request_id"}


def test_no_internal_words_reach_users_in_the_openapi_document_or_the_docs(tmp_path: Path) -> None:
    """Users never saw the reference documents the API was built from: the rules are stated instead."""
    import re

    from molar_mcp.store import SqliteTraceStore

    store = SqliteTraceStore(tmp_path / "data")
    doc = openapi_document(create_api_app(ApiContext.embedded(store)).routes)
    store.close()
    root = Path(__file__).resolve().parents[2]
    texts = {"openapi": json.dumps(doc)}
    texts |= {str(p): p.read_text(encoding="utf-8") for p in [root / "README.md", *(root / "docs").glob("*.md")]}
    for name, text in texts.items():
        assert not re.search(r"\bseeds?\b|\bseed \d{3}", text, re.IGNORECASE), name
