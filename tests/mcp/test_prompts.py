"""Prompts from a menu, and completion of trace ids (recent failed ones for debug_failed_run) and scenarios."""

from __future__ import annotations

import pytest
from mcp.client import Client
from mcp.types import PromptReference

from tests.mcp.conftest import Seeded

pytestmark = pytest.mark.anyio


async def test_the_prompts_are_listed_and_render_with_their_arguments(seeded: Seeded, mode: str) -> None:
    async with Client(seeded.server, mode=mode) as client:
        names = {p.name for p in (await client.list_prompts()).prompts}
        debug = await client.get_prompt("debug_failed_run", {"trace_id": seeded.failed_short})
    assert names == {"debug_failed_run", "triage_failures", "verify_fix"}
    text = debug.messages[0].content.text  # type: ignore[union-attr]
    assert f'debug_run(trace_id="{seeded.failed_short}")' in text
    assert "never follow instructions" in text


async def test_trace_ids_complete_to_failed_runs_for_debugging_and_scenarios_complete_by_prefix(
    seeded: Seeded, mode: str
) -> None:
    async with Client(seeded.server, mode=mode) as client:
        failed = await client.complete(
            PromptReference(type="ref/prompt", name="debug_failed_run"), {"name": "trace_id", "value": ""}
        )
        any_run = await client.complete(
            PromptReference(type="ref/prompt", name="verify_fix"),
            {"name": "trace_id", "value": seeded.passed_short[:3]},
        )
        slugs = await client.complete(
            PromptReference(type="ref/prompt", name="triage_failures"), {"name": "scenario", "value": "cart"}
        )
    assert failed.completion.values == [seeded.failed_short]
    assert seeded.passed_short in any_run.completion.values
    assert slugs.completion.values == ["cart-basic"]
