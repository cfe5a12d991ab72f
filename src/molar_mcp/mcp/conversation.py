"""An agent run read as a conversation for `get_trace`: each model call (model, tokens, cost, what it
answered or which tools it asked for) and each tool call (arguments, result or error), in order, with
the totals and the model's last output. Trace text is data: it is masked, cut and quoted, never obeyed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from molar_mcp.mcp.fence import defuse, fence
from molar_mcp.mcp.masking import mask, mask_text
from molar_mcp.mcp.tokens import estimate_tokens, json_tokens, shown
from molar_mcp.mcp.views import AgentCall, AgentConversation
from molar_mcp.models import Event

SAID_CHARS = 240
ARGUMENT_CHARS = 160
LAST_OUTPUT_CHARS = 600


def _cut(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _compact(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(mask(value), separators=(",", ":"), default=str)
    return _cut(mask_text(text), limit)


def is_agent_run(event_counts: dict[str, int]) -> bool:
    return any(k.startswith(("llm.", "tool.")) for k in event_counts)


def _model_call(e: Event) -> AgentCall:
    p = e.payload
    usage = p.get("usage") if isinstance(p.get("usage"), dict) else None
    error = p.get("error")
    calls = p.get("tool_calls") if isinstance(p.get("tool_calls"), list) else []
    if isinstance(error, dict):
        said = f"error {error.get('status') or ''} {error.get('type') or ''}: {error.get('message') or ''}"
    elif calls:
        said = "asks for " + ", ".join(
            f"{c.get('name')}({_compact(c.get('arguments'), ARGUMENT_CHARS) or ''})"
            for c in calls
            if isinstance(c, dict)
        )
    else:
        said = str(p.get("text") or "")
    return AgentCall(
        seq=e.seq,
        step=e.step,
        kind="model",
        name=str(p.get("model") or "model"),
        ok=e.ok,
        tokens=f"{usage.get('input_tokens', 0)}→{usage.get('output_tokens', 0)}" if usage else None,
        cost_usd=p.get("cost_usd") if isinstance(p.get("cost_usd"), int | float) else None,
        said=_compact(said, SAID_CHARS),
    )


def _tool_call(result: Event, call: Event | None) -> AgentCall:
    p = result.payload
    error = p.get("error")
    said: Any = p.get("result")
    if isinstance(error, dict):
        said = f"{error.get('type') or 'error'}: {error.get('message') or ''}"
    return AgentCall(
        seq=result.seq,
        step=result.step,
        kind="tool",
        name=str(p.get("tool") or "tool"),
        ok=result.ok,
        arguments=_compact((call.payload if call is not None else p).get("arguments"), ARGUMENT_CHARS),
        said=_compact(said, SAID_CHARS),
    )


def build_conversation(model_events: Sequence[Event], tool_events: Sequence[Event]) -> AgentConversation:
    """From the trace's `llm.response` and `tool.*` events (ordered by seq)."""
    calls_by_id = {
        str(e.payload.get("call_id") or e.payload.get("span_id")): e for e in tool_events if e.kind == "tool.call"
    }
    rows: list[AgentCall] = []
    totals = {"input_tokens": 0, "output_tokens": 0}
    cost = 0.0
    priced = False
    last_output: str | None = None
    for e in model_events:
        if e.kind != "llm.response":
            continue
        rows.append(_model_call(e))
        usage = e.payload.get("usage")
        if isinstance(usage, dict):
            for key in totals:
                value = usage.get(key)
                totals[key] += value if isinstance(value, int) else 0
        if isinstance(e.payload.get("cost_usd"), int | float):
            cost += float(e.payload["cost_usd"])
            priced = True
        if e.payload.get("text"):
            last_output = str(e.payload["text"])
    for e in tool_events:
        if e.kind == "tool.result":
            key = str(e.payload.get("call_id") or e.payload.get("span_id"))
            rows.append(_tool_call(e, calls_by_id.get(key)))
    rows.sort(key=lambda r: r.seq)
    return AgentConversation(
        calls=rows,
        model_calls=sum(1 for r in rows if r.kind == "model"),
        tool_calls=sum(1 for r in rows if r.kind == "tool"),
        input_tokens=totals["input_tokens"],
        output_tokens=totals["output_tokens"],
        cost_usd=round(cost, 6) if priced else None,
        last_output=_compact(last_output, LAST_OUTPUT_CHARS),
    )


CONVERSATION_FENCE = "agent conversation"


def _call_line(r: AgentCall) -> str:
    mark = " ✗" if r.ok is False else ""
    step = f"step {r.step} " if r.step is not None else ""
    if r.kind == "model":
        extra = " ".join(
            p for p in (f"({r.tokens} tokens)" if r.tokens else "", f"${r.cost_usd:.6f}" if r.cost_usd else "") if p
        )
        return f"- {step}model {r.name}{mark} {extra}: “{r.said or ''}”".replace("  ", " ")
    return f"- {step}tool {r.name}({r.arguments or ''}){mark} → “{r.said or ''}”"


def _head(c: AgentConversation) -> str:
    cost = f", ${c.cost_usd:.6f}" if c.cost_usd is not None else ""
    return (
        f"Conversation: {c.model_calls} model calls, {c.tool_calls} tool calls, "
        f"{c.input_tokens}→{c.output_tokens} tokens{cost}"
    )


def conversation_text(c: AgentConversation) -> list[str]:
    """The conversation's lines: the totals, then what the run's model and tools said (recorded data:
    fenced, as every answer fences trace text)."""
    said = [_call_line(r) for r in c.calls]
    if c.last_output:
        said.append(f"Model's last output: “{c.last_output}”")
    return [_head(c), *([fence("\n".join(said), CONVERSATION_FENCE)] if said else [])]


def _frame_cost(view: AgentConversation) -> tuple[int, int]:
    """The conversation without its calls: the totals and the last output, as text (and the fence) and as
    structured content."""
    said = [f"Model's last output: “{view.last_output}”"] if view.last_output else []
    fenced = estimate_tokens(fence("\n".join(said), CONVERSATION_FENCE)) + 1
    return estimate_tokens(_head(view)) + fenced, json_tokens(view.model_dump(mode="json", exclude_none=True))


def _note(cut: int, total: int, sid: str) -> str:
    return f'{cut} of {total} model/tool calls; get_trace(trace_id="{sid}", kind="tool") or kind="llm" lists them'


def fit_conversation(
    c: AgentConversation, budget: int, sid: str
) -> tuple[AgentConversation | None, list[str], str | None, int]:
    """Keep the failing calls and as many of the last calls as fit `budget` tokens (the larger of the text
    and the structured content); say what was cut and which call lists it all. Each call's tokens are estimated
    once and the cut is arithmetic. Returns the view, its text lines, the cut note and an upper bound of
    their tokens (the note counted in both forms)."""
    rows = list(c.calls)
    n = len(rows)
    # A call's line (and the newline before it) and its JSON (and the comma after it).
    costs = [
        (estimate_tokens(defuse(_call_line(r))) + 1, json_tokens(r.model_dump(mode="json", exclude_none=True)) + 1)
        for r in rows
    ]
    # Sums over the failing calls before a point and over the calls from a point on, in each form.
    failing_before: list[tuple[int, int]] = [(0, 0)]
    failing_count = [0]
    for r, (text, data) in zip(rows, costs, strict=True):
        t, d = failing_before[-1]
        failing_before.append((t + text, d + data) if r.ok is False else (t, d))
        failing_count.append(failing_count[-1] + (r.ok is False))
    suffix = [(0, 0)] * (n + 1)
    for i in range(n - 1, -1, -1):
        suffix[i] = (suffix[i + 1][0] + costs[i][0], suffix[i + 1][1] + costs[i][1])

    def note_cost(note: str | None) -> tuple[int, int]:
        return (0, 0) if note is None else (estimate_tokens("\nLeft out: " + note), json_tokens(note) + 1)

    for drop_output in (False, True):
        if drop_output and not c.last_output:
            break
        frame_view = c.model_copy(update={"calls": [], **({"last_output": None} if drop_output else {})})
        frame = _frame_cost(frame_view)
        for keep in range(n, -1, -1):
            start = n - keep
            cut = start - failing_count[start]
            note = _note(cut, n, sid) if cut else None
            parts = (frame, failing_before[start], suffix[start], note_cost(note))
            spent = shown(sum(p[0] for p in parts), sum(p[1] for p in parts))
            if spent <= budget:
                shown_calls = [r for r in rows[:start] if r.ok is False] + rows[start:]
                view = frame_view.model_copy(update={"calls": shown_calls})
                return view, conversation_text(view), note, spent
    note = f'the conversation; get_trace(trace_id="{sid}", kind="tool") or kind="llm" lists it'
    return None, [], note, shown(*note_cost(note))
