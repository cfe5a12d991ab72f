"""`debug_run` with a model: the server's (a debugger chat over /v1, its stream read as progress), and the
client's own through MCP sampling (the SDK client's sampling callback), in both protocol eras."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp.client import Client
from mcp.client.session import ClientRequestContext
from mcp.types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    CreateMessageResultWithTools,
    ErrorData,
    SamplingCapability,
    SamplingToolsCapability,
    TextContent,
    ToolResultContent,
    ToolUseContent,
)

from molar_mcp.chat_tools import in_process_client_factory
from molar_mcp.debugger.providers import ScriptedProvider
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.mcp.tokens import estimate_tokens
from molar_mcp.models.chats import ModelTurn, ToolCallRequest
from tests.chats.conftest import AppFactory, Traces, http_for

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["auto", "legacy"])
def mode(request: pytest.FixtureRequest) -> str:
    """Both protocol eras: 2026-07-28 (sampling through InputRequiredResult) and 2025-11-25 (mid-call)."""
    return str(request.param)


async def test_debug_run_asks_the_servers_model_and_reports_its_tool_calls_as_progress(
    make_app: AppFactory, traces: Traces, mode: str
) -> None:
    provider = ScriptedProvider(
        [
            ModelTurn(
                text="Reading step 5.",
                tool_calls=[
                    ToolCallRequest(id="c1", name="get_trace", arguments={"trace_id": traces.failed_short, "step": 5})
                ],
            ),
            ModelTurn(text="The Stripe webhook at step 5 answered 404 (seq 18), so step 7's URL check failed."),
        ]
    )
    app = make_app(provider)
    server = create_mcp_server(in_process_client_factory(app))
    progress: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with Client(server, mode=mode) as client:
        result = await client.call_tool(
            "debug_run",
            {"trace_id": traces.failed_short, "question": "Why did step 7 fail?"},
            progress_callback=on_progress,
        )
        view = result.structured_content
        assert not result.is_error, result.content
        assert view is not None
        again = await client.call_tool("debug_run", {"trace_id": traces.failed_short, "chat_id": view["chat_id"]})

    assert view["model"] == "scripted:scripted"
    assert view["answer"] == "The Stripe webhook at step 5 answered 404 (seq 18), so step 7's URL check failed."
    model_calls = [c for c in view["tool_calls"] if c["tool"] == "get_trace"]
    assert model_calls[0]["arguments"] == {"trace_id": traces.failed_short, "step": 5}
    assert model_calls[0]["result_tokens"] > 0
    assert "The model called get_trace" in progress
    assert view["findings"]  # the findings stay beside the model's answer
    # Without a question, the chat's answer is read back; the model is not asked again.
    assert again.structured_content is not None
    assert again.structured_content["answer"] == view["answer"]
    assert len(provider.requests) == 2


def scripted_client_model(trace_short: str, seen: list[CreateMessageRequestParams]) -> Any:
    """The client's model: reads step 5 through the tool it was offered, then answers from what it read."""

    async def sample(
        context: ClientRequestContext, params: CreateMessageRequestParams
    ) -> CreateMessageResult | CreateMessageResultWithTools | ErrorData:
        seen.append(params)
        last = params.messages[-1].content_as_list
        results = [c for c in last if isinstance(c, ToolResultContent)]
        if not results:
            use = ToolUseContent(type="tool_use", id="u1", name="get_trace", input={"trace_id": trace_short, "step": 5})
            return CreateMessageResultWithTools(
                role="assistant", content=[use], model="client-llm", stop_reason="toolUse"
            )
        read = results[0].content[0]
        assert isinstance(read, TextContent)
        found = "404" if "/api/webhooks/stripe" in read.text else "nothing"
        return CreateMessageResultWithTools(
            role="assistant",
            content=[TextContent(type="text", text=f"Step 5's webhook answered {found}; that broke step 7.")],
            model="client-llm",
            stop_reason="endTurn",
        )

    return sample


async def test_without_a_server_model_debug_run_samples_the_clients_model_which_calls_the_tools(
    make_app: AppFactory, traces: Traces, mode: str
) -> None:
    app = make_app(None)
    server = create_mcp_server(in_process_client_factory(app))
    seen: list[CreateMessageRequestParams] = []
    async with Client(
        server,
        mode=mode,
        sampling_callback=scripted_client_model(traces.failed_short, seen),
        sampling_capabilities=SamplingCapability(tools=SamplingToolsCapability()),
    ) as client:
        result = await client.call_tool("debug_run", {"trace_id": traces.failed_short, "question": "Why?"})
    view = result.structured_content
    assert not result.is_error, result.content
    assert view is not None
    assert view["model"] == "client:client-llm"
    assert view["answer"] == "Step 5's webhook answered 404; that broke step 7."
    assert [c["arguments"] for c in view["tool_calls"] if c["tool"] == "get_trace" and "step" in c["arguments"]] == [
        {"trace_id": traces.failed_short, "step": 5}
    ]

    first, second = seen
    assert first.system_prompt is not None
    assert "http_error at step 5" in first.system_prompt
    assert first.tools is not None
    offered = {t.name for t in first.tools}
    assert "get_trace" in offered
    assert "debug_run" not in offered
    assert first.messages[-1].content_as_list[0] == TextContent(type="text", text="Why?")
    assert [c.type for c in second.messages[-2].content_as_list] == ["tool_use"]

    async with http_for(app) as http:
        chat = (await http.get(f"/v1/chats/{view['chat_id']}")).json()
    answer = chat["messages"][-1]
    assert (answer["kind"], answer["status"], answer["model"]) == ("answer", "done", "client:client-llm")
    assert [c["tool"] for c in answer["tool_calls"]] == ["get_trace"]
    assert answer["cost_cents"] == 0  # the client's model: not charged to the org's budget
    assert chat["pending"] is None


async def test_a_client_that_samples_without_tools_gets_an_answer_from_the_findings(
    make_app: AppFactory, traces: Traces, mode: str
) -> None:
    seen: list[CreateMessageRequestParams] = []

    async def sample(context: ClientRequestContext, params: CreateMessageRequestParams) -> CreateMessageResult:
        seen.append(params)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text="The 404 at step 5."), model="tiny"
        )

    server = create_mcp_server(in_process_client_factory(make_app(None)))
    async with Client(server, mode=mode, sampling_callback=sample) as client:
        result = await client.call_tool("debug_run", {"trace_id": traces.failed_short, "question": "Why?"})
    assert result.structured_content is not None
    assert result.structured_content["answer"] == "The 404 at step 5."
    assert result.structured_content["model"] == "client:tiny"
    [params] = seen
    assert params.tools is None  # the client did not declare sampling.tools


async def test_a_client_without_sampling_and_a_server_without_a_model_get_the_findings(
    make_app: AppFactory, traces: Traces, mode: str
) -> None:
    server = create_mcp_server(in_process_client_factory(make_app(None)))
    async with Client(server, mode=mode) as client:
        result = await client.call_tool("debug_run", {"trace_id": traces.failed_short, "question": "Why?"})
    assert result.structured_content is not None
    assert result.structured_content["model"] is None
    assert result.structured_content["chat_id"] is None
    assert result.structured_content["answer"].startswith("Analysis without a model:")


async def test_a_long_model_answer_still_fits_the_token_budget(make_app: AppFactory, traces: Traces) -> None:
    long_answer = " ".join(f"Step {n % 7 + 1} shows the webhook 404 at seq 18 again." for n in range(400))
    server = create_mcp_server(in_process_client_factory(make_app(ScriptedProvider([ModelTurn(text=long_answer)]))))
    async with Client(server) as client:
        result = await client.call_tool("debug_run", {"trace_id": traces.failed_short, "question": "Why?"})
    view = result.structured_content
    assert view is not None
    block = result.content[0]
    assert isinstance(block, TextContent)
    assert max(estimate_tokens(block.text), estimate_tokens(json.dumps(view, ensure_ascii=False))) <= 2000
    assert view["answer"].startswith("Step 1 shows the webhook 404")
    assert any("answer" in note for note in view["omitted"])  # says it was cut, and where the rest is
