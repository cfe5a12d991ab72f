from __future__ import annotations

from dataclasses import dataclass

import pytest
from mcp.server.mcpserver import MCPServer

from molar_mcp.compose import Embedded
from molar_mcp.ingest import ingest_bundle
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.mcp.state import AppState
from molar_mcp.store import LOCAL_ORG_ID
from tests.bundles import artifact_for, checkout_events, make_bundle, summary

PNG = b"\x89PNG\r\n\x1a\nnot-really-a-png"


@dataclass
class Seeded:
    server: MCPServer[AppState]
    failed_id: str
    failed_short: str
    passed_short: str


@pytest.fixture
def seeded(embedded: Embedded) -> Seeded:
    failed_id, failed_short = ingest_bundle(
        embedded.store,
        LOCAL_ORG_ID,
        make_bundle(summary(artifacts=[artifact_for(PNG)]), blobs={"png": PNG}),
    )
    _, passed_short = ingest_bundle(
        embedded.store,
        LOCAL_ORG_ID,
        make_bundle(
            summary(status="passed", failure_signature=None, scenario_slug="cart-basic", source="schedule"),
            checkout_events(fail=False),
        ),
    )
    return Seeded(create_mcp_server(embedded.client_factory()), failed_id, failed_short, passed_short)


@pytest.fixture(params=["auto", "legacy"])
def mode(request: pytest.FixtureRequest) -> str:
    """Both protocol eras: 2026-07-28 (auto discovers it) and 2025-11-25 (initialize handshake)."""
    return str(request.param)
