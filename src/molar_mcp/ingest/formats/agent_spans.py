"""Span records → Molar events: the span tree as nested steps, and the conventions agent code emits read
as model calls, tool calls and errors (pure: no I/O). docs/otlp.md has the full mapping.

Conventions, current and previous names alike:
- OpenTelemetry GenAI: `gen_ai.operation.name`, `gen_ai.provider.name` / `gen_ai.system`, request and
  response model, `gen_ai.usage.*` tokens (and the older prompt/completion names), finish reasons,
  `gen_ai.tool.*`, `gen_ai.input.messages` / `gen_ai.output.messages` (JSON), the older flattened
  `gen_ai.prompt.N.*` / `gen_ai.completion.N.*`, message span events (`gen_ai.user.message`,
  `gen_ai.choice`, …), `gen_ai.agent.name`, `error.type`;
- OpenInference: `openinference.span.kind`, `llm.model_name`, `llm.token_count.*`,
  `llm.input_messages.N.message.*` / `llm.output_messages.N.message.*`, `tool.name`, `input.value` /
  `output.value`;
- MCP: `mcp.method.name` (a `tools/call` is a tool call).

The root span of a trace is the run itself when it has children: its children are the top-level
steps, its exceptions and final output are run-level events (no step). Every other span is a step:
`step.start` (with `parent_step_id` and `category`), what the span says (`llm.request`/`llm.response`,
`tool.call`/`tool.result`, `error`, `log`), then `step.end`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from molar_mcp.debugger.detectors.agent import is_error_result
from molar_mcp.debugger.pricing import known_price
from molar_mcp.ingest.formats.otlp import SpanEvent, SpanRecord
from molar_mcp.models import Event
from molar_mcp.store.otlp import RUN, LiveParts, tree_layout

LAST_MESSAGES: Final = 4  # the messages an `llm.request` shows (the conversation's tail)
MESSAGE_CHARS: Final = 2_000
OUTPUT_CHARS: Final = 4_000
SLUG_CHARS: Final = 120

_LLM_OPERATIONS: Final = frozenset({"chat", "text_completion", "generate_content", "embeddings", "completion"})
_AGENT_OPERATIONS: Final = frozenset({"invoke_agent", "create_agent"})
_STATUS_IN_TEXT: Final = re.compile(r"(?:error code|status(?: code)?|http)[:= ]+([45]\d\d)\b", re.IGNORECASE)
_MESSAGE_EVENTS: Final = frozenset(
    {"gen_ai.system.message", "gen_ai.user.message", "gen_ai.assistant.message", "gen_ai.tool.message"}
)
_CHOICE_EVENTS: Final = frozenset({"gen_ai.choice"})
# One record of a whole model call, with `gen_ai.input.messages` / `gen_ai.output.messages` among its
# attributes (the current GenAI conventions' event, sent as a log record of the call's span).
_DETAILS_EVENTS: Final = frozenset({"gen_ai.client.inference.operation.details"})
_SLUG_BAD: Final = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(slots=True)
class Draft:
    """An event before the store numbers it (its `seq` and `step`): plain values this module made,
    with no model around them, which at OTLP rates is most of an event's cost."""

    ts: int
    kind: str
    step_id: str | None = None
    ok: bool | None = None
    message: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    def event(self, seq: int) -> Event:
        return Event.model_construct(
            seq=seq,
            ts=self.ts,
            kind=self.kind,
            step_id=self.step_id,
            step=None,
            ok=self.ok,
            message=self.message,
            payload=self.payload,
        )


def _event(*, seq: int = 0, **fields: Any) -> Draft:
    return Draft(**fields)


def step_id_of(span_id: str) -> str:
    return f"span-{span_id}"


def _first(attrs: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def _text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return value
    return value


def _ms(ns: int) -> int:
    return max(0, ns // 1_000_000)


def category_of(span: SpanRecord) -> str:
    """`llm`, `tool`, `agent`, the OpenInference kind in lowercase (`chain`, `retriever`, …), `mcp`, or `span`."""
    a = span.attributes
    op = str(a.get("gen_ai.operation.name") or "")
    oi = str(a.get("openinference.span.kind") or "").upper()
    loop = str(a.get("traceloop.span.kind") or "").lower()
    mcp = str(a.get("mcp.method.name") or "")
    if op in _LLM_OPERATIONS or oi in ("LLM", "EMBEDDING") or a.get("llm.request.type") in ("chat", "completion"):
        return "llm"
    if op == "execute_tool" or oi == "TOOL" or mcp == "tools/call" or loop == "tool":
        return "tool"
    if op in _AGENT_OPERATIONS or oi == "AGENT" or loop == "agent":
        return "agent"
    if oi:
        return oi.lower()
    if mcp:
        return "mcp"
    return "span"


# ---------------------------------------------------------------------------------------------------
# Messages


def _indexed(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """`prefix.0.a`, `prefix.0.b`, `prefix.1.a` → [{a, b}, {a}] (flattened lists in attributes)."""
    groups: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if key.startswith(prefix):
            index, _, sub = key[len(prefix) :].partition(".")
            if index.isdigit() and sub:
                groups.setdefault(int(index), {})[sub] = value
    return [groups[i] for i in sorted(groups)]


def _message(role: Any, content: Any, tool_calls: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": str(role or "unknown")}
    text = _text(content, MESSAGE_CHARS)
    if text:
        out["content"] = text
    if tool_calls:
        out["tool_calls"] = tool_calls
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def _semconv_messages(value: Any) -> list[dict[str, Any]]:
    """`gen_ai.input.messages` / `gen_ai.output.messages`: [{role, parts: [{type, content|name|…}]}]."""
    data = _maybe_json(value)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return [_message("unknown", data)] if data else []
    out = []
    for item in data:
        if not isinstance(item, dict):
            continue
        texts, calls, responses = [], [], []
        parts = item.get("parts")
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "tool_call":
                calls.append({"id": part.get("id"), "name": part.get("name"), "arguments": part.get("arguments")})
            elif kind == "tool_call_response":
                responses.append(part.get("response"))
            elif "content" in part:
                texts.append(str(part["content"]))
        content = "\n".join(texts) if texts else (responses[0] if responses else item.get("content"))
        out.append(_message(item.get("role"), content, calls, finish_reason=item.get("finish_reason")))
    return out


def _openinference_messages(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    out = []
    for m in _indexed(attrs, prefix):
        calls = [
            {
                "id": c.get("tool_call.id"),
                "name": c.get("tool_call.function.name"),
                "arguments": _maybe_json(c.get("tool_call.function.arguments")),
            }
            for c in _indexed(m, "message.tool_calls.")
        ]
        content = m.get("message.content")
        if content is None:
            parts = [p.get("message_content.text") for p in _indexed(m, "message.contents.")]
            content = "\n".join(str(p) for p in parts if p) or None
        out.append(_message(m.get("message.role"), content, calls, tool_call_id=m.get("message.tool_call_id")))
    return out


def _flat_messages(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """The older GenAI names: `gen_ai.prompt.N.role` / `.content`, `gen_ai.completion.N.*`."""
    out = []
    for m in _indexed(attrs, prefix):
        calls = [
            {"id": c.get("id"), "name": c.get("name"), "arguments": _maybe_json(c.get("arguments"))}
            for c in _indexed(m, "tool_calls.")
        ]
        out.append(_message(m.get("role"), m.get("content"), calls, finish_reason=m.get("finish_reason")))
    return out


def _tool_calls(value: Any) -> list[dict[str, Any]] | None:
    """Tool calls as {id, name, arguments}, from either shape: flat, or OpenAI's `function: {name, arguments}`."""
    if not isinstance(value, list):
        return None
    out = []
    for call in value:
        if not isinstance(call, dict):
            continue
        found = call.get("function")
        function: dict[str, Any] = found if isinstance(found, dict) else {}
        out.append(
            {
                "id": call.get("id"),
                "name": call.get("name") or function.get("name"),
                "arguments": _maybe_json(call.get("arguments", function.get("arguments"))),
            }
        )
    return out or None


def _event_messages(events: Iterable[SpanEvent], names: frozenset[str]) -> list[dict[str, Any]]:
    """Messages sent as span events or as log records of the span (`gen_ai.user.message`, …, and
    `gen_ai.choice`, whose body holds the `message`)."""
    out = []
    for ev in events:
        if ev.name not in names:
            continue
        a = ev.attributes
        body = _maybe_json(_first(a, "message", "gen_ai.event.content", "content", "body"))
        role = a.get("role") or ev.name.removeprefix("gen_ai.").removesuffix(".message")
        finish_reason = a.get("finish_reason")
        if isinstance(body, dict) and isinstance(
            body.get("message"), dict
        ):  # a choice: {index, finish_reason, message}
            finish_reason = finish_reason or body.get("finish_reason")
            body = body["message"]
        if isinstance(body, dict):
            out.append(
                _message(
                    body.get("role") or ("assistant" if ev.name == "gen_ai.choice" else role),
                    body.get("content"),
                    _tool_calls(body.get("tool_calls")),
                    finish_reason=finish_reason,
                    tool_call_id=body.get("id") if ev.name == "gen_ai.tool.message" else None,
                )
            )
        else:
            out.append(_message(role, body, finish_reason=finish_reason))
    return out


def _details_messages(events: Iterable[SpanEvent], key: str) -> list[dict[str, Any]]:
    for ev in events:
        if ev.name in _DETAILS_EVENTS and key in ev.attributes:
            return _semconv_messages(ev.attributes[key])
    return []


def input_messages(span: SpanRecord) -> list[dict[str, Any]]:
    a = span.attributes
    ways: tuple[Callable[[], list[dict[str, Any]]], ...] = (  # the first that finds any, tried in order
        lambda: _semconv_messages(a["gen_ai.input.messages"]) if "gen_ai.input.messages" in a else [],
        lambda: _details_messages(span.events, "gen_ai.input.messages"),
        lambda: _openinference_messages(a, "llm.input_messages."),
        lambda: _flat_messages(a, "gen_ai.prompt."),
        lambda: _event_messages(span.events, _MESSAGE_EVENTS),
    )
    for way in ways:
        if found := way():
            return found
    value = a.get("input.value")
    return [_message("input", value)] if value is not None else []


def output_messages(span: SpanRecord) -> list[dict[str, Any]]:
    a = span.attributes
    ways: tuple[Callable[[], list[dict[str, Any]]], ...] = (  # the first that finds any, tried in order
        lambda: _semconv_messages(a["gen_ai.output.messages"]) if "gen_ai.output.messages" in a else [],
        lambda: _details_messages(span.events, "gen_ai.output.messages"),
        lambda: _openinference_messages(a, "llm.output_messages."),
        lambda: _flat_messages(a, "gen_ai.completion."),
        lambda: _event_messages(span.events, _CHOICE_EVENTS),
    )
    for way in ways:
        if found := way():
            return found
    value = a.get("output.value")
    return [_message("output", value)] if value is not None else []


# ---------------------------------------------------------------------------------------------------
# What a span says


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _exception(span: SpanRecord) -> SpanEvent | None:
    return next((e for e in span.events if e.name == "exception"), None)


def error_of(span: SpanRecord) -> dict[str, Any] | None:
    """The span's error: its status, `error.type`, an `exception` event; the HTTP status when one is named."""
    exc = _exception(span)
    if span.status != "error" and exc is None and not span.attributes.get("error.type"):
        return None
    a = span.attributes
    exc_attrs = exc.attributes if exc is not None else {}
    kind = _first(a, "error.type") or exc_attrs.get("exception.type")
    message = span.status_message or exc_attrs.get("exception.message") or ""
    status = _int(_first(a, "http.response.status_code", "http.status_code"))
    if status is None:
        found = _STATUS_IN_TEXT.search(f"{message} {kind or ''}")
        status = int(found.group(1)) if found else None
    error: dict[str, Any] = {"type": str(kind) if kind else "error", "message": _text(message, OUTPUT_CHARS) or ""}
    if status is not None:
        error["status"] = status
    return error


def usage_of(a: dict[str, Any]) -> dict[str, int] | None:
    inp = _int(_first(a, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"))
    out = _int(_first(a, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"))
    if inp is None and out is None:
        return None
    return {"input_tokens": inp or 0, "output_tokens": out or 0}


def _cost_usd(model: str | None, usage: dict[str, int] | None) -> float | None:
    if not model or usage is None:
        return None
    price = known_price(model)
    if price is None:
        return None
    dollars = (usage["input_tokens"] * price.input_per_mtok + usage["output_tokens"] * price.output_per_mtok) / 1e6
    return round(dollars, 6)


def _tool_name(span: SpanRecord) -> str:
    a = span.attributes
    name = _first(a, "gen_ai.tool.name", "tool.name", "mcp.tool.name")
    if name is None:
        name = span.name.removeprefix("execute_tool ").removeprefix("tools/call ")
    return str(name)


def _tool_result(span: SpanRecord) -> tuple[Any, bool]:
    """The tool's result, and whether it says it is an error (MCP `isError`, `is_error`, error text)."""
    a = span.attributes
    raw = _first(a, "gen_ai.tool.call.result", "output.value", "tool.result", "mcp.tool.result")
    result = _maybe_json(raw)
    return (_text(result, OUTPUT_CHARS) if isinstance(result, str) else result), is_error_result(result)


def _result_text(result: Any) -> str:
    """The words of a tool result: MCP `content` text parts, else the result itself."""
    if isinstance(result, dict) and isinstance(result.get("content"), list):
        texts = [str(p.get("text")) for p in result["content"] if isinstance(p, dict) and p.get("text")]
        if texts:
            return _text("\n".join(texts), OUTPUT_CHARS) or ""
    return _text(result, OUTPUT_CHARS) or ""


def _payload_base(span: SpanRecord) -> dict[str, Any]:
    return {"span_id": span.span_id}


def llm_events(span: SpanRecord, step_id: str | None) -> list[Draft]:
    a = span.attributes
    provider = _first(a, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
    requested = _first(a, "gen_ai.request.model", "llm.request.model", "llm.model_name")
    answered = _first(a, "gen_ai.response.model", "llm.response.model", "llm.model_name") or requested
    messages = input_messages(span)
    request: dict[str, Any] = {
        **_payload_base(span),
        "model": requested,
        "provider": provider,
        "operation": a.get("gen_ai.operation.name"),
        "messages": len(messages),
        "last_messages": messages[-LAST_MESSAGES:],
    }
    for key in ("gen_ai.request.max_tokens", "gen_ai.request.temperature"):
        if key in a:
            request[key.rsplit(".", 1)[-1]] = a[key]
    tools = [t.get("tool.name") for t in _indexed(a, "llm.tools.") if t.get("tool.name")]
    if tools:
        request["tools"] = tools
    out = output_messages(span)
    usage = usage_of(a)
    reasons = a.get("gen_ai.response.finish_reasons")
    if reasons is None:
        reasons = [m["finish_reason"] for m in out if m.get("finish_reason")] or None
    error = error_of(span)
    calls = [c for m in out for c in m.get("tool_calls", [])]
    text = "\n".join(m["content"] for m in out if m.get("content"))
    response: dict[str, Any] = {**_payload_base(span), "model": answered, "provider": provider}
    if usage is not None:
        response["usage"] = usage
        cost = _cost_usd(str(answered) if answered else None, usage)
        if cost is not None:
            response["cost_usd"] = cost
    if reasons:
        response["finish_reasons"] = reasons if isinstance(reasons, list) else [reasons]
    if text:
        response["text"] = _text(text, OUTPUT_CHARS)
    if calls:
        response["tool_calls"] = calls
    if error is not None:
        response["error"] = error
    response["duration_ms"] = _ms(span.end_ns - span.start_ns)
    label = str(answered or requested or "model")
    if error is not None:
        said = f"error {' '.join(str(p) for p in (error.get('status'), error['type']) if p)}"
    elif calls:
        said = "tool_calls " + ", ".join(str(c.get("name")) for c in calls)
    else:
        said = _text(text, 120) or ",".join(str(r) for r in response.get("finish_reasons", [])) or "answered"
    return [
        _event(
            seq=0,
            ts=_ms(span.start_ns),
            kind="llm.request",
            step_id=step_id,
            message=f"{requested or 'model'}: {len(messages)} messages",
            payload={k: v for k, v in request.items() if v is not None},
        ),
        _event(
            seq=0,
            ts=_ms(span.end_ns),
            kind="llm.response",
            step_id=step_id,
            ok=error is None,
            message=f"{label}: {said}",
            payload={k: v for k, v in response.items() if v is not None},
        ),
    ]


def tool_events(span: SpanRecord, step_id: str | None) -> list[Draft]:
    a = span.attributes
    tool = _tool_name(span)
    call_id = _first(a, "gen_ai.tool.call.id", "tool_call.id", "tool.call.id")
    arguments = _maybe_json(_first(a, "gen_ai.tool.call.arguments", "tool.arguments", "input.value"))
    result, flagged = _tool_result(span)
    error = error_of(span)
    if error is None and flagged:
        # An error handed back as the tool's normal result: the call "succeeded", the tool failed.
        error = {"type": "is_error" if isinstance(result, dict) else "error_result", "message": _result_text(result)}
    base = {**_payload_base(span), "tool": tool, "call_id": call_id}
    if a.get("mcp.method.name"):
        base["via"] = "mcp"
    call = {**base, "arguments": arguments}
    done: dict[str, Any] = {**base, "result": result, "duration_ms": _ms(span.end_ns - span.start_ns)}
    if error is not None:
        done["error"] = error
    args_text = _text(arguments, 200) if arguments is not None else ""
    outcome = f"{error['type']}: {error['message']}" if error is not None else (_text(result, 200) or "ok")
    return [
        _event(
            seq=0,
            ts=_ms(span.start_ns),
            kind="tool.call",
            step_id=step_id,
            message=f"{tool}({args_text})",
            payload={k: v for k, v in call.items() if v is not None},
        ),
        _event(
            seq=0,
            ts=_ms(span.end_ns),
            kind="tool.result",
            step_id=step_id,
            ok=error is None,
            message=_text(f"{tool} → {outcome}", 500),
            payload={k: v for k, v in done.items() if v is not None},
        ),
    ]


def span_event_events(span: SpanRecord, step_id: str | None) -> list[Draft]:
    """The span's own events: exceptions → `error`; others → `log` (message events fold into the
    model call)."""
    return _own_events(span.events, step_id)


def log_record_events(record: dict[str, Any], step_id: str | None) -> list[Draft]:
    """A log record (`{name, ts_ns, attributes}`) of a span already shown while its run is running, as
    events of the span's step, so followers see it now: a GenAI message record (`gen_ai.user.message`,
    `gen_ai.choice`, `gen_ai.client.inference.operation.details`, …) as a `log` with its messages, any
    other as the span's own events are. The finish makes the span again with the record folded in (the
    messages then in its model call's events)."""
    ev = SpanEvent(str(record["name"]), int(record["ts_ns"]), dict(record["attributes"]))
    if ev.name in _DETAILS_EVENTS:
        messages = _details_messages([ev], "gen_ai.input.messages") + _details_messages([ev], "gen_ai.output.messages")
    elif ev.name in _MESSAGE_EVENTS or ev.name in _CHOICE_EVENTS:
        messages = _event_messages([ev], _MESSAGE_EVENTS | _CHOICE_EVENTS)
    else:
        return _own_events([ev], step_id)
    said = " · ".join(f"{m['role']}: {m.get('content', '')}" for m in messages)
    return [
        _event(
            ts=_ms(ev.ts_ns),
            kind="log",
            step_id=step_id,
            message=_text(f"{ev.name}: {said}", 500),
            payload={"level": "info", "text": ev.name, "messages": messages},
        )
    ]


def _own_events(events: Iterable[SpanEvent], step_id: str | None) -> list[Draft]:
    out = []
    for ev in events:
        if ev.name in _MESSAGE_EVENTS or ev.name in _CHOICE_EVENTS or ev.name in _DETAILS_EVENTS:
            continue
        if ev.name == "exception":
            a = ev.attributes
            name = str(a.get("exception.type") or "Exception")
            message = str(a.get("exception.message") or "")
            payload: dict[str, Any] = {"name": name, "message": message}
            if a.get("exception.stacktrace"):
                payload["stack"] = a["exception.stacktrace"]
            out.append(
                _event(
                    seq=0,
                    ts=_ms(ev.ts_ns),
                    kind="error",
                    step_id=step_id,
                    ok=False,
                    message=_text(f"{name}: {message}", 500),
                    payload=payload,
                )
            )
        else:
            out.append(
                _event(
                    seq=0,
                    ts=_ms(ev.ts_ns),
                    kind="log",
                    step_id=step_id,
                    message=ev.name,
                    payload={"level": "info", "text": ev.name, "attributes": ev.attributes},
                )
            )
    return out


def _span_info(span: SpanRecord, category: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "span_id": span.span_id,
        "trace_id": span.trace_id,
        "kind": span.kind,
        "category": category,
        "service": span.service,
        "attributes": span.attributes,
    }
    if span.scope:
        info["scope"] = span.scope
    if span.links:
        info["links"] = list(span.links)
    if span.cut:
        info["cut"] = list(span.cut)
    return info


def step_events(span: SpanRecord, parent_step_id: str | None) -> tuple[list[Draft], list[Draft], list[Draft]]:
    """A span as a step: (opening events, its own events in between, closing events)."""
    category = category_of(span)
    step_id = step_id_of(span.span_id)
    start_payload: dict[str, Any] = {"title": span.name, "category": category, **_span_info(span, category)}
    if parent_step_id is not None:
        start_payload["parent_step_id"] = parent_step_id
    opening = [
        _event(
            seq=0, ts=_ms(span.start_ns), kind="step.start", step_id=step_id, message=span.name, payload=start_payload
        )
    ]
    closing: list[Draft] = []
    middle = span_event_events(span, step_id)
    tool_failed = False
    if category == "llm":
        request, response = llm_events(span, step_id)
        opening.append(request)
        closing.append(response)
    elif category == "tool":
        call, result = tool_events(span, step_id)
        opening.append(call)
        closing.append(result)
        tool_failed = result.ok is False
    elif span.status == "error" and _exception(span) is None:
        error = error_of(span) or {}
        middle.append(
            _event(
                seq=0,
                ts=_ms(span.end_ns),
                kind="error",
                step_id=step_id,
                ok=False,
                message=_text(f"{error.get('type', 'error')}: {error.get('message', '')}", 500),
                payload={"name": error.get("type", "error"), "message": error.get("message", "")},
            )
        )
    # A tool that answered with an error as its result (`isError`) failed, whatever its span status says.
    ok = span.status != "error" and not (category == "tool" and tool_failed)
    duration = _ms(span.end_ns - span.start_ns)
    end_payload: dict[str, Any] = {"duration_ms": duration, "status": span.status}
    if span.status_message:
        end_payload["status_message"] = span.status_message
    closing.append(
        _event(
            seq=0,
            ts=_ms(span.end_ns),
            kind="step.end",
            step_id=step_id,
            ok=ok,
            message=f"{span.name}: {'passed' if ok else 'failed'} in {duration} ms",
            payload=end_payload,
        )
    )
    return opening, middle, closing


def run_events(span: SpanRecord) -> tuple[list[Draft], list[Draft], list[Draft]]:
    """A root span with children as the run itself: run-level events (no step)."""
    category = category_of(span)
    agent = _first(span.attributes, "gen_ai.agent.name", "agent.name")
    said = " · ".join(str(p) for p in (span.service, span.name, agent) if p)
    opening = [
        _event(
            seq=0,
            ts=_ms(span.start_ns),
            kind="log",
            message=f"agent run: {said}",
            payload={"level": "info", "text": f"agent run: {said}", "run": _span_info(span, category)},
        )
    ]
    middle = span_event_events(span, None)
    closing: list[Draft] = []
    out = output_messages(span)
    final = "\n".join(m["content"] for m in out if m.get("content"))
    if final:
        closing.append(
            _event(
                seq=0,
                ts=_ms(span.end_ns),
                kind="log",
                message=_text(f"final output: {final}", 500),
                payload={"level": "info", "text": _text(final, OUTPUT_CHARS), "final_output": True},
            )
        )
    if span.status == "error" and _exception(span) is None:
        error = error_of(span) or {}
        closing.append(
            _event(
                seq=0,
                ts=_ms(span.end_ns),
                kind="error",
                ok=False,
                message=_text(f"{error.get('type', 'error')}: {error.get('message', '')}", 500),
                payload={"name": error.get("type", "error"), "message": error.get("message", "")},
            )
        )
    duration = _ms(span.end_ns - span.start_ns)
    closing.append(
        _event(
            seq=0,
            ts=_ms(span.end_ns),
            kind="log",
            message=f"agent run {'failed' if span.status == 'error' else 'ended'} after {duration} ms",
            payload={
                "level": "error" if span.status == "error" else "info",
                "status": span.status,
                "status_message": span.status_message,
                "duration_ms": duration,
            },
        )
    )
    return opening, middle, closing


# ---------------------------------------------------------------------------------------------------
# The tree


def span_parts(span: SpanRecord, run: bool, parent_span: str | None) -> tuple[list[Draft], list[Draft], list[Draft]]:
    """A span's (opening, in between, closing) events: as the run itself (`run`: a root with children),
    else as a step inside the step of `parent_span` (None: under the run, or at the top)."""
    if run:
        return run_events(span)
    return step_events(span, step_id_of(parent_span) if parent_span else None)


def trace_drafts(spans: Iterable[SpanRecord]) -> list[Draft]:
    """Every event of a trace's spans in span-tree order (a parent's opening, then its own events and
    its children's subtrees by time, then its closing). The same spans give the same events whatever
    order they arrived in."""

    def parts(
        span: SpanRecord, run: bool, parent: str | None
    ) -> tuple[list[Draft], list[tuple[int, Draft]], list[Draft]]:
        opening, middle, closing = span_parts(span, run, parent)
        return opening, [(d.ts, d) for d in middle], closing

    return tree_layout([(s.span_id, s.parent_id, s.start_ns, s) for s in spans], parts)


def trace_events(spans: Iterable[SpanRecord]) -> list[Event]:
    """`trace_drafts` as events numbered seq 0…n-1 (steps not numbered: the store does that)."""
    return [d.event(i) for i, d in enumerate(trace_drafts(spans))]


def live_parts(span: SpanRecord, *, parent_stored: bool, parent_is_root: bool, has_children: bool) -> LiveParts:
    """One newly arrived span's events for a running trace (seq 0; the store numbers them), and how they
    show it. Its parent is named only when the parent's step is already stored (and is not the run): a
    child that came first is a top-level step until the trace finishes and it is made again there."""
    if span.parent_id is None and has_children:
        opening, middle, closing = run_events(span)
        shown = RUN
    else:
        parent = span.parent_id if span.parent_id and parent_stored and not parent_is_root else None
        opening, middle, closing = step_events(span, step_id_of(parent) if parent else None)
        shown = step_id_of(parent) if parent else ""
    return LiveParts(opening, sorted(middle, key=lambda e: e.ts), closing, shown)


def shown_finally(span_id: str, parent_id: str | None, parents: dict[str, str | None], has_children: bool) -> str:
    """How the finished trace shows a span (`LiveParts.shown_as`): the run (a root with children), or
    the step it sits in (its parent's, unless that parent is the run or was never stored: '')."""
    if parent_id is None and has_children:
        return RUN
    if parent_id is None or parent_id not in parents:
        return ""
    if parents[parent_id] is None:  # a root: with this child, it is the run
        return ""
    return step_id_of(parent_id)


# ---------------------------------------------------------------------------------------------------
# The run as a whole


def run_root(spans: Sequence[SpanRecord]) -> SpanRecord | None:
    """The root span (no parent), the earliest when there are several."""
    roots = [s for s in spans if s.parent_id is None]
    return min(roots, key=lambda s: (s.start_ns, s.span_id)) if roots else None


def run_status(spans: Sequence[SpanRecord]) -> str:
    """`failed` when the root span failed (or, with no root, a top-level span did); else `passed`."""
    root = run_root(spans)
    if root is not None:
        return "failed" if root.status == "error" or _exception(root) is not None else "passed"
    ids = {s.span_id for s in spans}
    tops = [s for s in spans if s.parent_id not in ids]
    return "failed" if any(s.status == "error" for s in tops) else "passed"


def run_duration_ms(spans: Sequence[SpanRecord]) -> int | None:
    if not spans:
        return None
    root = run_root(spans)
    if root is not None:
        return _ms(root.end_ns - root.start_ns)
    return _ms(max(s.end_ns for s in spans) - min(s.start_ns for s in spans))


def slug_of(text: str) -> str:
    """A scenario slug from free text."""
    slug = _SLUG_BAD.sub("-", text).strip("-._")
    return slug[:SLUG_CHARS].rstrip("-._") or "run"


def scenario_of(spans: Sequence[SpanRecord]) -> tuple[str, str]:
    """(slug, title): the service name plus the agent's name (`gen_ai.agent.name`) or the root span's name."""
    service = next((s.service for s in spans), "unknown_service")
    agent = next((_first(s.attributes, "gen_ai.agent.name", "agent.name") for s in spans if s.parent_id is None), None)
    if agent is None:
        agent = next((_first(s.attributes, "gen_ai.agent.name", "agent.name") for s in spans), None)
    root = run_root(spans)
    name = str(agent) if agent else (root.name if root is not None else "run")
    return slug_of(f"{service}.{name}"), f"{service}: {name}"[:500]
