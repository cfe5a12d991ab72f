"""The OpenAI-compatible and Anthropic providers against fake servers speaking their wire formats on real
uvicorn: streaming, tool calls, usage, errors; and each driving a whole chat through /v1."""

from __future__ import annotations

import pytest
from starlette.responses import JSONResponse

from molar_mcp.debugger.chat import ModelError
from molar_mcp.debugger.config import DebuggerConfig
from molar_mcp.debugger.pricing import DEFAULT_PRICE, PRICES, Price, cost_millicents, parse_price, price_of
from molar_mcp.debugger.providers import AnthropicProvider, OpenAIProvider, provider_from_spec
from molar_mcp.models.chats import ToolCallRequest, ToolDef, TurnMessage, Usage
from tests.chats.conftest import AppFactory, Traces, http_for, post_sse
from tests.chats.fake_servers import Recorder, anthropic_app, anthropic_events, openai_app, openai_chunks, serving

pytestmark = pytest.mark.anyio

TOOLS = [
    ToolDef(
        name="get_trace",
        description="Explain one recorded run",
        input_schema={"type": "object", "properties": {"trace_id": {"type": "string"}, "step": {"type": "integer"}}},
    )
]
CONVERSATION = [
    TurnMessage(role="user", content="Why did step 7 fail?"),
    TurnMessage(
        role="assistant",
        content="Reading.",
        tool_calls=[
            ToolCallRequest(id="c1", name="get_trace", arguments={"trace_id": "abc", "step": 5}),
            ToolCallRequest(id="c2", name="get_trace", arguments={"trace_id": "abc", "step": 7}),
        ],
    ),
    TurnMessage(role="tool", content="step 5: 404", tool_call_id="c1"),
    TurnMessage(role="tool", content="no such step", tool_call_id="c2", is_error=True),
]


async def test_openai_streams_text_assembles_tool_calls_and_reads_usage() -> None:
    recorder = Recorder(
        [openai_chunks("Let me look.", [("call_a", "get_trace", {"trace_id": "abc", "step": 5})], usage=(321, 17))]
    )
    tokens: list[str] = []

    async def on_token(text: str) -> None:
        tokens.append(text)

    with serving(openai_app(recorder)) as base:
        provider = OpenAIProvider("gpt-4o-mini", base_url=f"{base}/v1", api_key="sk-test")
        turn = await provider.complete(CONVERSATION, TOOLS, system="You debug.", max_tokens=300, on_token=on_token)

    assert provider.name == "openai:gpt-4o-mini"
    assert turn.text == "Let me look. "
    assert "".join(tokens) == turn.text
    assert len(tokens) > 1  # streamed, not at once
    assert turn.tool_calls == [ToolCallRequest(id="call_a", name="get_trace", arguments={"trace_id": "abc", "step": 5})]
    assert turn.usage == Usage(input_tokens=321, output_tokens=17)
    assert turn.model == "gpt-4o-mini-2024-07-18"

    [sent] = recorder.requests
    assert recorder.headers[0]["authorization"] == "Bearer sk-test"
    assert sent["model"] == "gpt-4o-mini"
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == 300  # a compatible server: max_tokens (OpenAI itself: max_completion_tokens)
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_trace",
                "description": "Explain one recorded run",
                "parameters": TOOLS[0].input_schema,
            },
        }
    ]
    assert sent["messages"][0] == {"role": "system", "content": "You debug."}
    assert sent["messages"][1] == {"role": "user", "content": "Why did step 7 fail?"}
    assistant = sent["messages"][2]
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"][0] == {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_trace", "arguments": '{"trace_id": "abc", "step": 5}'},
    }
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": "c1", "content": "step 5: 404"}
    assert sent["messages"][4] == {"role": "tool", "tool_call_id": "c2", "content": "no such step"}


async def test_openai_compatible_servers_without_usage_or_streaming_are_read_too() -> None:
    whole = {
        "model": "llama3.1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "The webhook answered 404."}}],
    }
    recorder = Recorder([openai_chunks("Short answer."), JSONResponse(whole)])
    with serving(openai_app(recorder)) as base:
        provider = OpenAIProvider("llama3.1", base_url=f"{base}/v1")
        streamed = await provider.complete(CONVERSATION[:1], [], system="s" * 400)
        at_once = await provider.complete(CONVERSATION[:1], [], system="s")
    # No usage reported: estimated (~4 characters a token), never counted as free.
    assert streamed.usage.input_tokens >= 100
    assert streamed.usage.output_tokens >= 3
    assert at_once.text == "The webhook answered 404."
    assert at_once.tool_calls == []
    assert "authorization" not in recorder.headers[0]
    assert "tools" not in recorder.requests[0]


async def test_openai_errors_say_what_to_check() -> None:
    refused = JSONResponse({"error": {"message": "Incorrect API key provided"}}, status_code=401)
    with serving(openai_app(Recorder([refused]))) as base:
        provider = OpenAIProvider("gpt-4o", base_url=f"{base}/v1", api_key="bad")
        with pytest.raises(ModelError, match=r"401.*Incorrect API key provided.*MOLAR_MODEL_API_KEY"):
            await provider.complete(CONVERSATION[:1], [], system="s")
    with pytest.raises(ModelError, match="could not reach"):
        await OpenAIProvider("gpt-4o", base_url=f"{base}/v1").complete(CONVERSATION[:1], [], system="s")


async def test_anthropic_streams_text_and_tool_use_and_reads_usage() -> None:
    recorder = Recorder(
        [anthropic_events("Looking at step 5.", [("toolu_1", "get_trace", {"trace_id": "abc", "step": 5})], (812, 44))]
    )
    tokens: list[str] = []

    async def on_token(text: str) -> None:
        tokens.append(text)

    with serving(anthropic_app(recorder)) as base:
        provider = AnthropicProvider("claude-sonnet-4-5", base_url=base, api_key="sk-ant-test")
        turn = await provider.complete(CONVERSATION, TOOLS, system="You debug.", max_tokens=500, on_token=on_token)

    assert provider.name == "anthropic:claude-sonnet-4-5"
    assert turn.text == "Looking at step 5. "
    assert "".join(tokens) == turn.text
    assert turn.tool_calls == [
        ToolCallRequest(id="toolu_1", name="get_trace", arguments={"trace_id": "abc", "step": 5})
    ]
    assert turn.usage == Usage(input_tokens=812, output_tokens=44)
    assert turn.model == "claude-sonnet-4-5-20250929"

    [sent] = recorder.requests
    headers = recorder.headers[0]
    assert headers["x-api-key"] == "sk-ant-test"
    assert headers["anthropic-version"] == "2023-06-01"
    assert (sent["model"], sent["max_tokens"], sent["system"], sent["stream"]) == (
        "claude-sonnet-4-5",
        500,
        "You debug.",
        True,
    )
    assert sent["tools"] == [
        {"name": "get_trace", "description": "Explain one recorded run", "input_schema": TOOLS[0].input_schema}
    ]
    assert sent["messages"][0] == {"role": "user", "content": "Why did step 7 fail?"}
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Reading."},
            {"type": "tool_use", "id": "c1", "name": "get_trace", "input": {"trace_id": "abc", "step": 5}},
            {"type": "tool_use", "id": "c2", "name": "get_trace", "input": {"trace_id": "abc", "step": 7}},
        ],
    }
    # Both results in one user message: the API wants roles to alternate.
    assert sent["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "step 5: 404", "is_error": False},
            {"type": "tool_result", "tool_use_id": "c2", "content": "no such step", "is_error": True},
        ],
    }
    assert len(sent["messages"]) == 3


async def test_anthropic_errors_mid_stream_and_by_status_are_model_errors() -> None:
    overloaded = [{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]
    refused = JSONResponse(
        {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}, status_code=401
    )
    with serving(anthropic_app(Recorder([overloaded, refused]))) as base:
        provider = AnthropicProvider("claude-haiku-4-5", base_url=base)
        with pytest.raises(ModelError, match="overloaded_error: Overloaded"):
            await provider.complete(CONVERSATION[:1], [], system="s")
        with pytest.raises(ModelError, match=r"401.*invalid x-api-key.*MOLAR_MODEL_API_KEY"):
            await provider.complete(CONVERSATION[:1], [], system="s")


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
async def test_a_whole_chat_runs_on_each_provider_with_tool_calls_usage_and_cost(
    make_app: AppFactory, traces: Traces, flavour: str
) -> None:
    step = {"trace_id": traces.failed_short, "step": 5}
    if flavour == "openai":
        recorder = Recorder(
            [
                openai_chunks("Reading step 5.", [("call_1", "get_trace", step)], usage=(2000, 40)),
                openai_chunks("The Stripe webhook at step 5 answered 404 (seq 18).", usage=(3500, 30)),
            ]
        )
        app, model = openai_app(recorder), "gpt-4o-mini"
    else:
        recorder = Recorder(
            [
                anthropic_events("Reading step 5.", [("toolu_1", "get_trace", step)], (2000, 40)),
                anthropic_events("The Stripe webhook at step 5 answered 404 (seq 18).", usage=(3500, 30)),
            ]
        )
        app, model = anthropic_app(recorder), "claude-haiku-4-5"
    with serving(app) as base:
        provider = provider_from_spec(f"{flavour}:{model}", base_url=f"{base}/v1" if flavour == "openai" else base)
        async with http_for(make_app(provider)) as http:
            chat = (await http.post(f"/v1/traces/{traces.failed_short}/chats")).json()
            assert chat["model"] == f"{flavour}:{model}"
            _, frames = await post_sse(http, f"/v1/chats/{chat['id']}/messages", {"content": "Why did step 7 fail?"})

    answer = frames[-2].data
    assert frames[-1].data == {"status": "done", "message_id": answer["id"]}
    assert answer["content"] == "The Stripe webhook at step 5 answered 404 (seq 18). "
    assert answer["model"] == f"{flavour}:{model}"
    assert answer["usage"] == {"input_tokens": 5500, "output_tokens": 70}
    price = PRICES[model]
    expected = cost_millicents(Usage(input_tokens=2000, output_tokens=40), price) + cost_millicents(
        Usage(input_tokens=3500, output_tokens=30), price
    )
    assert answer["cost_cents"] == expected / 1000
    [audit] = answer["tool_calls"]
    assert (audit["tool"], audit["arguments"], audit["error"]) == ("get_trace", step, None)
    assert audit["result_chars"] > 200
    # The second request carried the tool's real answer back to the model.
    second = str(recorder.requests[1]["messages"])
    assert "/api/webhooks/stripe" in second
    assert "sk_live_abcdefghijklmnop" not in second  # masked by the tool before any model saw it


def test_a_model_is_configured_as_provider_colon_model_from_flag_or_environment() -> None:
    env = {
        "MOLAR_MODEL": "anthropic:claude-sonnet-4-5",
        "MOLAR_MODEL_BASE_URL": "http://localhost:8080",
        "MOLAR_MODEL_API_KEY": "k",
        "MOLAR_DEBUGGER_BUDGET_CENTS": "250",
        "MOLAR_MODEL_PRICE": "0,0",
    }
    config = DebuggerConfig.from_env(env)
    assert (config.model, config.base_url, config.api_key, config.budget_cents) == (
        "anthropic:claude-sonnet-4-5",
        "http://localhost:8080",
        "k",
        250,
    )
    assert config.price == Price(0.0, 0.0)
    provider = config.provider()
    assert isinstance(provider, AnthropicProvider)
    assert provider.base_url == "http://localhost:8080"
    flag = DebuggerConfig.from_env(env, "openai:llama3.1")  # --model wins
    assert isinstance(flag.provider(), OpenAIProvider)
    assert DebuggerConfig.from_env({}).provider() is None
    assert DebuggerConfig.from_env({}).budget_cents == 500
    for bad in ({"MOLAR_MODEL": "gpt-4o"}, {"MOLAR_MODEL": "mistral:large"}, {"MOLAR_DEBUGGER_BUDGET_CENTS": "ten"}):
        with pytest.raises(ValueError, match=r"provider:model|unknown model provider|whole number"):
            DebuggerConfig.from_env(bad)
    with pytest.raises(ValueError, match="INPUT,OUTPUT"):
        parse_price("3")


def test_models_are_priced_by_the_longest_matching_name_and_unknown_ones_dearly() -> None:
    assert price_of("openai:gpt-4o-mini-2024-07-18") == PRICES["gpt-4o-mini"]
    assert price_of("openai:gpt-4o-2024-08-06") == PRICES["gpt-4o"]
    assert price_of("anthropic:claude-sonnet-4-5-20250929") == PRICES["claude-sonnet-4"]
    assert price_of("openai:llama3.1") == DEFAULT_PRICE
    assert price_of("openai:llama3.1", Price(0, 0)) == Price(0, 0)
    # $0.15 and $0.60 per million tokens: 1,000 in + 100 out = $0.00021 = 21 millicents.
    assert cost_millicents(Usage(input_tokens=1000, output_tokens=100), PRICES["gpt-4o-mini"]) == 21
    assert cost_millicents(Usage(input_tokens=1, output_tokens=0), PRICES["gpt-4o-mini"]) == 1  # rounded up
    assert cost_millicents(Usage(input_tokens=10**6), Price(0, 0)) == 0
