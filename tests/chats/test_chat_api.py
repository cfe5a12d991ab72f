"""Debugger chats over /v1: a scripted model calls the trace tools through our MCP server, every call is
audited, the answer streams as SSE, the budget caps spend, and chats stay inside their org."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import anyio
import httpx2
import pytest

from molar_mcp.debugger.pricing import Price
from molar_mcp.debugger.providers import ScriptedProvider
from molar_mcp.models.chats import ModelTurn, ToolCallRequest, TurnMessage, Usage
from molar_mcp.store import SqliteTraceStore
from molar_mcp.store.chats import SqliteChatStore, month_of
from tests.api.support import assert_error
from tests.chats.conftest import AppFactory, Traces, http_for, post_sse

pytestmark = pytest.mark.anyio


def calls(*requests: tuple[str, dict[str, object]]) -> list[ToolCallRequest]:
    return [ToolCallRequest(id=f"call_{i}", name=name, arguments=args) for i, (name, args) in enumerate(requests)]


def investigating(short_id: str) -> ScriptedProvider:
    """Reads step 5 and lists failed runs, tries a trace that does not exist, then answers from what step 5 said."""

    def answer(messages: Sequence[TurnMessage]) -> ModelTurn:
        step5 = next(m.content for m in messages if m.role == "tool" and m.tool_call_id == "call_0")
        assert "/api/webhooks/stripe" in step5  # the model really read the tool's answer
        return ModelTurn(text="Step 5's Stripe webhook answered 404 (seq 18); step 7 failed because of it.")

    return ScriptedProvider(
        [
            ModelTurn(
                text="Let me read step 5.",
                tool_calls=calls(
                    ("get_trace", {"trace_id": short_id, "step": 5}),
                    ("list_traces", {"status": "failed"}),
                    ("get_trace", {"trace_id": "nope12345"}),
                ),
                usage=Usage(input_tokens=1200, output_tokens=60),
            ),
            lambda messages: answer(messages).model_copy(update={"usage": Usage(input_tokens=4000, output_tokens=30)}),
        ]
    )


async def test_a_new_chat_is_seeded_with_the_findings_rendered(make_app: AppFactory, traces: Traces) -> None:
    async with http_for(make_app()) as http:
        response = await http.post(f"/v1/traces/{traces.failed_short}/chats", json={"title": "Why did step 7 fail?"})
    assert response.status_code == 201
    chat = response.json()
    assert chat["trace_id"] == traces.failed_id
    assert chat["trace_short_id"] == traces.failed_short
    assert chat["title"] == "Why did step 7 fail?"
    assert chat["model"] is None
    assert chat["pending"] is None
    [seed] = chat["messages"]
    assert (seed["role"], seed["kind"], seed["status"]) == ("assistant", "findings", "done")
    text = seed["content"]
    assert "http_error at step 5" in text
    assert "seq 18 · step 5 · network.response (failed): POST /api/webhooks/stripe → 404" in text
    assert "Suggested replay: from step 5" in text
    assert "sk_live" not in text


async def test_the_model_calls_the_trace_tools_and_every_call_is_audited(make_app: AppFactory, traces: Traces) -> None:
    provider = investigating(traces.failed_short)
    async with http_for(make_app(provider)) as http:
        chat = (await http.post(f"/v1/traces/{traces.failed_short}/chats")).json()
        response, frames = await post_sse(http, f"/v1/chats/{chat['id']}/messages", {"content": "Why did step 7 fail?"})
        stored = (await http.get(f"/v1/chats/{chat['id']}")).json()

    assert response.headers["content-type"].startswith("text/event-stream")
    audit = [f.data for f in frames if f.event == "tool_call"]
    assert [(a["tool"], a["arguments"]) for a in audit] == [
        ("get_trace", {"step": 5, "trace_id": traces.failed_short}),
        ("list_traces", {"status": "failed"}),
        ("get_trace", {"trace_id": "nope12345"}),
    ]
    assert all(a["turn"] == 1 and a["duration_ms"] >= 0 for a in audit)
    assert audit[0]["result_chars"] > 200
    assert audit[0]["error"] is None
    assert audit[1]["error"] is None
    assert "No trace 'nope12345'" in audit[2]["error"]  # the tool's own error, as the model read it

    # The model was offered the read-only trace tools, never debug_run (no chat inside a chat).
    offered = {t.name for t in provider.requests[0].tools}
    assert {"list_traces", "get_trace"} <= offered
    assert "debug_run" not in offered
    assert traces.failed_short in provider.requests[0].system
    assert "http_error at step 5" in provider.requests[0].system

    answer = stored["messages"][-1]
    assert (answer["role"], answer["kind"], answer["status"]) == ("assistant", "answer", "done")
    assert answer["content"] == "Step 5's Stripe webhook answered 404 (seq 18); step 7 failed because of it."
    assert answer["model"] == "scripted:scripted"
    assert answer["usage"] == {"input_tokens": 5200, "output_tokens": 90}
    assert answer["cost_cents"] > 0
    assert [c["tool"] for c in answer["tool_calls"]] == ["get_trace", "list_traces", "get_trace"]
    assert [c["id"] for c in answer["tool_calls"]] == [a["id"] for a in audit]
    assert [m["kind"] for m in stored["messages"]] == ["findings", "question", "answer"]


async def test_the_answer_streams_as_server_sent_events_in_order(make_app: AppFactory, traces: Traces) -> None:
    async with http_for(make_app(investigating(traces.failed_short))) as http:
        chat = (await http.post(f"/v1/traces/{traces.failed_short}/chats")).json()
        _, frames = await post_sse(http, f"/v1/chats/{chat['id']}/messages", {"content": "Why?"})

    assert [int(f.id) for f in frames] == list(range(1, len(frames) + 1))
    events = [f.event for f in frames]
    assert events[0] == "message"
    assert (frames[0].data["role"], frames[0].data["content"]) == ("user", "Why?")
    assert events[-2:] == ["message", "end"]
    assert set(events) == {"message", "token", "tool_call", "end"}
    # Tokens of the first turn arrive before its tool calls, the answer's after them.
    first_tool = events.index("tool_call")
    tokens = [f.data["text"] for f in frames if f.event == "token"]
    assert "".join(tokens).startswith("Let me read step 5.")
    assert events.index("token") < first_tool < len(events) - 1 - events[::-1].index("token")
    final, end = frames[-2].data, frames[-1].data
    assert end == {"status": "done", "message_id": final["id"]}
    assert final["content"].endswith("step 7 failed because of it.")
    assert len(final["tool_calls"]) == 3


async def test_without_a_model_the_answer_is_the_findings_labelled_as_such(
    make_app: AppFactory, traces: Traces
) -> None:
    async with http_for(make_app(None)) as http:
        chat = (await http.post(f"/v1/traces/{traces.failed_short}/chats")).json()
        _, frames = await post_sse(http, f"/v1/chats/{chat['id']}/messages", {"content": "What was the cart total?"})
        usage = (await http.get("/v1/debugger/usage")).json()

    assert [f.event for f in frames] == ["message", "message", "end"]
    answer = frames[1].data
    assert answer["kind"] == "analysis"
    assert answer["model"] is None
    assert answer["content"].startswith("Analysis without a model:")
    assert "http_error at step 5" in answer["content"]
    assert answer["tool_calls"] == []
    assert (usage["model"], usage["spent_cents"]) == (None, 0)


async def test_a_follow_up_question_carries_the_earlier_exchange(make_app: AppFactory, traces: Traces) -> None:
    provider = ScriptedProvider([ModelTurn(text="The webhook 404."), ModelTurn(text="At seq 18.")])
    async with http_for(make_app(provider)) as http:
        chat = (await http.post(f"/v1/traces/{traces.failed_short}/chats")).json()
        await post_sse(http, f"/v1/chats/{chat['id']}/messages", {"content": "Why?"})
        await post_sse(http, f"/v1/chats/{chat['id']}/messages", {"content": "Where exactly?"})
    assert [(m.role, m.content) for m in provider.requests[1].messages] == [
        ("user", "Why?"),
        ("assistant", "The webhook 404."),
        ("user", "Where exactly?"),
    ]


async def test_a_failing_model_ends_the_answer_with_an_error_the_reader_can_act_on(
    make_app: AppFactory, traces: Traces
) -> None:
    provider = ScriptedProvider([])  # asked once, it fails: ModelError
    async with http_for(make_app(provider)) as http:
        chat = (await http.post(f"/v1/traces/{traces.failed_short}/chats")).json()
        _, frames = await post_sse(http, f"/v1/chats/{chat['id']}/messages", {"content": "Why?"})
    assert [f.event for f in frames] == ["message", "error", "message", "end"]
    assert frames[1].data["error"] == "model_error"
    assert frames[2].data["status"] == "error"
    assert "The model failed" in frames[2].data["content"]
    assert frames[3].data["status"] == "error"


async def test_a_spent_budget_is_a_429_with_retry_after_and_nothing_is_charged_twice(
    make_app: AppFactory, traces: Traces, store: SqliteTraceStore
) -> None:
    # Turn 1 costs (100k in × $1 + 10k out × $10) / 1M = $0.20 = 20 cents, over the 10-cent budget.
    expensive = Usage(input_tokens=100_000, output_tokens=10_000)
    provider = ScriptedProvider(
        [ModelTurn(text="Reading.", tool_calls=calls(("list_traces", {})), usage=expensive), ModelTurn(text="never")]
    )
    app = make_app(provider, budget_cents=10, model_price=Price(1.0, 10.0))
    async with http_for(app) as http:
        chat = (await http.post(f"/v1/traces/{traces.failed_short}/chats")).json()
        _, frames = await post_sse(http, f"/v1/chats/{chat['id']}/messages", {"content": "Why?"})
        refused, nothing = await post_sse(http, f"/v1/chats/{chat['id']}/messages", {"content": "And now?"})
        usage = (await http.get("/v1/debugger/usage")).json()
        other_org = (await http.get("/v1/debugger/usage", headers={"x-molar-org": "org_other"})).json()
        stored = (await http.get(f"/v1/chats/{chat['id']}")).json()

    # The answer under way stopped before its second model call, and says why.
    assert [f.event for f in frames] == ["message", "token", "tool_call", "error", "message", "end"]
    assert frames[3].data["error"] == "budget_exhausted"
    assert frames[4].data["status"] == "error"
    assert "budget" in frames[4].data["content"]
    assert len(provider.requests) == 1

    body = assert_error(refused, 429, "budget_exhausted")
    assert "MOLAR_DEBUGGER_BUDGET_CENTS" in body["message"]
    assert 0 < int(refused.headers["retry-after"]) <= 31 * 24 * 3600
    assert nothing == []

    assert (usage["spent_cents"], usage["budget_cents"], usage["remaining_cents"]) == (20.0, 10, 0)
    assert other_org["spent_cents"] == 0  # the budget is per org
    assert [m["kind"] for m in stored["messages"]] == ["findings", "question", "answer"]  # the refused one: not stored

    chats = SqliteChatStore(store.db)
    answer_id = frames[4].data["id"]
    again = chats.charge("org_local", answer_id, turn=1, model="x", usage=expensive, cost_millicents=20_000)
    assert again is False
    assert chats.spent_millicents("org_local", month_of(datetime.now(UTC))) == 20_000


async def test_chats_of_another_org_are_not_found(make_app: AppFactory, traces: Traces) -> None:
    app = make_app(None)
    async with http_for(app) as http:
        chat = (await http.post(f"/v1/traces/{traces.failed_short}/chats")).json()
    async with http_for(app, org="org_other") as other:
        assert_error(await other.get(f"/v1/chats/{chat['id']}"), 404, "not_found")
        refused, _ = await post_sse(other, f"/v1/chats/{chat['id']}/messages", {"content": "Why?"})
        assert_error(refused, 404, "not_found")
        assert_error(await other.post(f"/v1/traces/{traces.failed_short}/chats", json={}), 404, "not_found")


async def test_the_model_reads_only_its_own_orgs_traces(
    make_app: AppFactory, traces: Traces, store: SqliteTraceStore
) -> None:
    from molar_mcp.ingest import ingest_bundle
    from tests.bundles import make_bundle

    _, other_short = ingest_bundle(store, "org_other", make_bundle())
    provider = ScriptedProvider(
        [
            ModelTurn(tool_calls=calls(("get_trace", {"trace_id": traces.failed_short}), ("list_traces", {}))),
            ModelTurn(text="done"),
        ]
    )
    async with http_for(make_app(provider), org="org_other") as http:
        chat = (await http.post(f"/v1/traces/{other_short}/chats")).json()
        _, frames = await post_sse(http, f"/v1/chats/{chat['id']}/messages", {"content": "Why?"})
    audit = [f.data for f in frames if f.event == "tool_call"]
    assert "No trace" in audit[0]["error"]  # org_local's trace is invisible from org_other
    listing = next(m.content for m in provider.requests[1].messages if m.tool_call_id == "call_1")
    assert other_short in listing
    assert traces.failed_short not in listing


async def test_bad_requests_are_refused_with_the_api_error_shape(make_app: AppFactory, traces: Traces) -> None:
    async with http_for(make_app(None)) as http:
        assert_error(await http.post("/v1/traces/nope12345/chats", json={}), 404, "not_found")
        assert_error(
            await http.post(f"/v1/traces/{traces.failed_short}/chats", json={"bogus": 1}), 422, "validation_error"
        )
        chat = (await http.post(f"/v1/traces/{traces.failed_short}/chats")).json()
        empty, _ = await post_sse(http, f"/v1/chats/{chat['id']}/messages", {"content": ""})
        assert_error(empty, 422, "validation_error")
        model, _ = await post_sse(http, f"/v1/chats/{chat['id']}/messages", {"content": "x", "model": "gpt"})
        assert_error(model, 422, "validation_error")
        unasked, _ = await post_sse(http, f"/v1/chats/{chat['id']}/model-response", {"turn": 1, "text": "hi"})
        assert_error(unasked, 409, "conflict")


async def test_the_callers_model_drives_the_loop_one_turn_at_a_time(make_app: AppFactory, traces: Traces) -> None:
    async with http_for(make_app(None)) as http:
        chat = (await http.post(f"/v1/traces/{traces.failed_short}/chats")).json()
        path = f"/v1/chats/{chat['id']}"
        _, frames = await post_sse(http, f"{path}/messages", {"content": "Why?", "model": "client"})
        assert [f.event for f in frames] == ["message", "model_request", "end"]
        request = frames[1].data
        assert (request["turn"], request["messages"]) == (
            1,
            [{"role": "user", "content": "Why?", "tool_calls": [], "tool_call_id": None, "is_error": False}],
        )
        assert {t["name"] for t in request["tools"]} >= {"get_trace", "list_traces"}
        assert frames[2].data == {"status": "awaiting_model", "message_id": request["message_id"]}
        assert (await http.get(path)).json()["pending"]["turn"] == 1

        wrong, _ = await post_sse(http, f"{path}/model-response", {"turn": 2, "text": "?"})
        assert_error(wrong, 409, "conflict")
        use = {"id": "u1", "name": "get_trace", "arguments": {"trace_id": traces.failed_short, "step": 5}}
        reply = {"turn": 1, "text": "", "tool_calls": [use], "model": "their-llm"}
        _, frames = await post_sse(http, f"{path}/model-response", reply)
        assert [f.event for f in frames] == ["tool_call", "model_request", "end"]
        assert frames[0].data["tool"] == "get_trace"
        following = frames[1].data
        assert following["turn"] == 2
        assert [m["role"] for m in following["messages"]] == ["user", "assistant", "tool"]
        assert "/api/webhooks/stripe" in following["messages"][2]["content"]

        again, _ = await post_sse(http, f"{path}/model-response", reply)  # a retry never runs the tools twice
        assert_error(again, 409, "conflict")
        _, frames = await post_sse(
            http, f"{path}/model-response", {"turn": 2, "text": "The 404 at step 5.", "model": "their-llm"}
        )
        assert [f.event for f in frames] == ["message", "end"]
        stored = (await http.get(path)).json()
    answer = stored["messages"][-1]
    assert (answer["content"], answer["status"], answer["model"]) == ("The 404 at step 5.", "done", "client:their-llm")
    assert len(answer["tool_calls"]) == 1
    assert stored["pending"] is None


class Gated:
    """A model whose second answer waits for the test: the reader can leave while it is being written."""

    name = "gated:test"

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.calls = 0

    async def complete(self, messages: object, tools: object, **_: object) -> ModelTurn:
        self.calls += 1
        if self.calls == 1:
            return ModelTurn(text="Listing.", tool_calls=calls(("list_traces", {})))
        await self.release.wait()
        return ModelTurn(text="Finished after the reader left.")


async def test_an_answer_is_finished_and_stored_when_the_reader_leaves(make_app: AppFactory, traces: Traces) -> None:
    model = Gated()
    app = make_app(model)
    async with http_for(app) as http:
        chat = (await http.post(f"/v1/traces/{traces.failed_short}/chats")).json()
        async with http.stream("POST", f"/v1/chats/{chat['id']}/messages", json={"content": "Why?"}) as response:
            async for sse in httpx2.EventSource(response):
                if sse.event == "tool_call":
                    break  # the reader leaves mid-answer
        model.release.set()
    # Closing the client waited for the answer under way, as a server finishes it.
    async with http_for(app) as http:
        stored = (await http.get(f"/v1/chats/{chat['id']}")).json()
    answer = stored["messages"][-1]
    assert (answer["status"], answer["content"]) == ("done", "Finished after the reader left.")
    assert [c["tool"] for c in answer["tool_calls"]] == ["list_traces"]
