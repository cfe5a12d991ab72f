"""`GET /v1/traces/{id}/report.md`, the markdown renderer, and the `molar://…/report.md` MCP resource."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx2
import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp.types import TextResourceContents

from molar_mcp.compose import Embedded
from molar_mcp.ingest import ingest_bundle
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.models import Event, StepSummary, TraceDetail
from molar_mcp.reports import render_report
from molar_mcp.reports.markdown import md_code, md_escape
from molar_mcp.store import LOCAL_ORG_ID
from tests.api.support import assert_error
from tests.bundles import make_bundle, summary
from tests.sharing.conftest import PNG, SECRET, Traces, failing_events

pytestmark = pytest.mark.anyio


async def test_the_report_is_a_markdown_attachment_named_by_short_id(
    client: httpx2.AsyncClient, traces: Traces
) -> None:
    resp = await client.get(f"/v1/traces/{traces.failed_id}/report.md")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/markdown; charset=utf-8"
    assert resp.headers["content-disposition"] == f'attachment; filename="trace-{traces.failed_short}.md"'


async def test_the_report_tells_the_failure_story(client: httpx2.AsyncClient, traces: Traces) -> None:
    report = (await client.get(f"/v1/traces/{traces.failed_short}/report.md")).text
    sections = [line for line in report.splitlines() if line.startswith("## ")]
    assert sections == [
        "## Summary",
        "## Timeline",
        "## Failing step 7: Verify",
        "## Network errors",
        "## Console errors and warnings",
        "## Artifacts",
    ]
    assert "| Status | **FAILED** |" in report
    assert "| Failure signature | `webhook-404` |" in report
    assert "Failed at step 7 (Verify): `expected url /billing?upgraded=true; got /billing?upgraded=false`." in report
    assert "| 7 | ✗ | **Verify** |" in report
    assert "| 5 | ✓ | Stripe webhook |" in report
    assert "- Expected: `/billing?upgraded=true`" in report
    assert "- Actual: `/billing?upgraded=false`" in report
    assert "7 requests, 1 failed." in report
    assert "| `POST` | `/api/webhooks/stripe` | 404 | 12 ms |" in report
    assert "| **error** | `Failed to load resource: 404` |" in report
    assert f"| screenshot | `shot.png` | image/png | {len(PNG)} B |" in report
    assert f"GET /v1/traces/{traces.failed_id}/blob/<sha256>" in report
    assert "/v1/signed/" not in report  # a report travels: no signed URL in it


async def test_the_report_masks_secrets(client: httpx2.AsyncClient, traces: Traces) -> None:
    report = (await client.get(f"/v1/traces/{traces.failed_short}/report.md")).text
    assert SECRET not in report
    assert "invalid key [masked]" in report


async def test_the_report_of_another_orgs_trace_is_a_404(client: httpx2.AsyncClient, traces: Traces) -> None:
    assert_error(
        await client.get(f"/v1/traces/{traces.failed_short}/report.md", headers={"x-molar-org": "org_acme"}),
        404,
        "not_found",
    )
    assert_error(await client.get("/v1/traces/nope/report.md"), 404, "not_found")


async def test_a_passed_trace_reports_no_failing_step(client: httpx2.AsyncClient, traces: Traces) -> None:
    report = (await client.get(f"/v1/traces/{traces.passed_short}/report.md")).text
    assert "## Failing step\n\nNo step failed." in report
    assert "7 requests, 0 failed." in report
    assert "✗" not in report


def test_markdown_from_the_trace_cannot_inject_markup() -> None:
    assert md_escape("*bold* <b>x</b> | [link](http://e.vil)\nnext") == (
        r"\*bold\* \<b\>x\</b\> \| \[link\](http://e.vil) next"
    )
    assert md_code("a `tick` here") == "``a `tick` here``"
    assert md_code("`edge`") == "`` `edge` ``"
    assert md_code("a|b", in_table=True) == r"`a\|b`"


def test_the_renderer_is_deterministic_and_escapes_titles() -> None:
    detail = TraceDetail(
        id="00000000-0000-4000-8000-000000000001",
        short_id="abcDEF123",
        status="failed",
        scenario_slug="s",
        scenario_title="<img src=x onerror=alert(1)> | *t*",
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        org_id=LOCAL_ORG_ID,
        s3_prefix="p/",
        steps=[StepSummary(step=1, step_id="a", title="Only `step`", ok=False, first_seq=0, last_seq=1, event_count=2)],
    )
    events = [
        Event(seq=0, ts=1000, kind="step.start", step_id="a", step=1, message="Only `step`"),
        Event(seq=1, ts=1500, kind="error", step_id="a", step=1, ok=False, message=f"boom {SECRET}"),
    ]
    at = datetime(2026, 1, 2, 4, 0, tzinfo=UTC)
    first = render_report(detail, events, generated_at=at)
    assert first == render_report(detail, events, generated_at=at)
    assert first.startswith(r"# Trace report: \<img src=x onerror=alert(1)\> \| \*t\*")
    assert "Failed at step 1 (Only \\`step\\`): `boom [masked]`." in first
    assert SECRET not in first
    assert first.endswith(
        "from 2 of 2 events at 2026-01-02T04:00:00Z. Secrets in the trace are masked as `[masked]`.\n"
    )


async def test_an_agent_reads_the_report_as_an_mcp_resource(embedded: Embedded) -> None:
    _, short = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(summary(), failing_events()))
    server = create_mcp_server(embedded.client_factory())
    async with Client(server) as client:
        templates = {t.uri_template: t for t in (await client.list_resource_templates()).resource_templates}
        result = await client.read_resource(f"molar://traces/{short}/report.md")
        with pytest.raises(MCPError, match="no such trace"):
            await client.read_resource("molar://traces/nope/report.md")
    assert templates["molar://traces/{trace_id}/report.md"].mime_type == "text/markdown"
    content = result.contents[0]
    assert isinstance(content, TextResourceContents)
    assert content.mime_type == "text/markdown"
    assert content.text.startswith("# Trace report: Upgrade a subscription")
    assert "## Failing step 7: Verify" in content.text
    assert "/api/webhooks/stripe" in content.text
    assert SECRET not in content.text
