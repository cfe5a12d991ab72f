"""`get_event`'s answer: one event whole — its payload pretty-printed (masked), narrowed by a JSON path
or a key, searched by a substring, and paged by character offset when it exceeds the token budget.

Nothing of the event is out of reach: every page says which characters it holds and which call
returns the next ones.
"""

from __future__ import annotations

import json
import re
from typing import Any

from molar_mcp.mcp.fence import fence
from molar_mcp.mcp.masking import mask, mask_text
from molar_mcp.mcp.render import structured
from molar_mcp.mcp.tokens import estimate_tokens, shown
from molar_mcp.mcp.views import EventView
from molar_mcp.models import Event

MESSAGE_CHARS = 500
LINE_CHARS = 400
_PATH_TOKEN = re.compile(
    r"\.\.([A-Za-z_$][\w$-]*)|\.([A-Za-z_$][\w$-]*)|\[(\d+)\]|\[\*\]|\['([^']*)'\]|\[\"([^\"]*)\"\]"
)


class PathError(ValueError):
    """A JSON path the event cannot be narrowed by; the message says the syntax."""


def _parse_body(body: Any) -> tuple[Any, str | None]:
    """(JSON value, None) for a JSON body (recorded as JSON or as JSON text); (None, text) for text."""
    if isinstance(body, str):
        if body[:1] in ("{", "["):
            try:
                return json.loads(body), None
            except ValueError:
                pass
        return None, body
    return body, None


def event_document(ev: Event) -> tuple[Any, str]:
    """The event's payload as a JSON value (a JSON body parsed in place), and its text as shown:
    pretty-printed JSON, with a text body appended as its own lines (so a search finds its lines)."""
    payload = mask(ev.payload)
    body_text = None
    if "body" in payload:
        value, body_text = _parse_body(payload["body"])
        if body_text is None:
            payload = {**payload, "body": value}
        else:
            payload = {**payload, "body": f"<text, {len(body_text):,} chars: below>"}
    text = json.dumps(payload, indent=2, ensure_ascii=False, default=str)
    if body_text is not None:
        text += "\n--- body ---\n" + mask_text(body_text)
        payload = {**payload, "body": mask_text(body_text)}
    return payload, text


def select(doc: Any, path: str) -> list[tuple[str, Any]]:
    """The values at `path` in `doc`: a JSON path (`$.body.items[0].sku`, `$..discount_cents`,
    `$.items[*].sku`) or a bare key name (every value under that key, at any depth)."""
    if not path.startswith("$"):
        return [(p, v) for p, v in _walk(doc, "$") if p.endswith(f".{path}") or p.endswith(f"['{path}']")]
    rest, pos = path[1:], 0
    current: list[tuple[str, Any]] = [("$", doc)]
    while pos < len(rest):
        m = _PATH_TOKEN.match(rest, pos)
        if m is None:
            raise PathError(
                f"cannot read the JSON path {path!r} at {rest[pos:]!r}: use $.key, $..key, [n], [*] or ['key'], "
                "or a bare key name"
            )
        pos = m.end()
        deep, key, index, quoted1, quoted2 = m.groups()
        name = key if key is not None else quoted1 if quoted1 is not None else quoted2
        nxt: list[tuple[str, Any]] = []
        for p, v in current:
            if deep is not None:
                nxt.extend((q, w) for q, w in _walk(v, p) if q.endswith(f".{deep}"))
            elif name is not None:
                if isinstance(v, dict) and name in v:
                    nxt.append((f"{p}.{name}", v[name]))
            elif index is not None:
                if isinstance(v, list) and int(index) < len(v):
                    nxt.append((f"{p}[{index}]", v[int(index)]))
            else:  # [*]
                if isinstance(v, list):
                    nxt.extend((f"{p}[{i}]", w) for i, w in enumerate(v))
                elif isinstance(v, dict):
                    nxt.extend((f"{p}.{k}", w) for k, w in v.items())
        current = nxt
    return current


def _walk(value: Any, path: str) -> list[tuple[str, Any]]:
    """Every (path, value) under `value`, depth first, `value` itself excluded."""
    out: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            p = f"{path}.{k}" if re.fullmatch(r"[A-Za-z_$][\w$-]*", str(k)) else f"{path}['{k}']"
            out.append((p, v))
            out.extend(_walk(v, p))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            p = f"{path}[{i}]"
            out.append((p, v))
            out.extend(_walk(v, p))
    return out


def search(text: str, needle: str) -> list[str]:
    """The lines of `text` holding `needle` (case-insensitive), numbered, long lines cut around it."""
    low = needle.lower()
    found: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        at = line.lower().find(low)
        if at < 0:
            continue
        if len(line) > LINE_CHARS:
            start = max(0, at - LINE_CHARS // 2)
            end = min(len(line), start + LINE_CHARS)
            shown = ("…" if start else "") + line[start:end] + ("…" if end < len(line) else "")
            line = f"{shown} [line of {len(line):,} chars; page it with offset]"
        found.append(f"{number}: {line}")
    return found


def _call(ref: str, seq: int, path: str | None, find: str | None, offset: int) -> str:
    args = [f'trace_id="{ref}"', f"seq={seq}"]
    if path is not None:
        args.append(f"path={json.dumps(path)}")
    if find is not None:
        args.append(f"find={json.dumps(find)}")
    args.append(f"offset={offset}")
    return f"get_event({', '.join(args)})"


def event_text(view: EventView) -> str:
    mark = " ✗ failed" if view.ok is False else ""
    step = f" step {view.step}" if view.step is not None else ""
    lines = [f"Event seq {view.seq}{step} {view.kind}{mark} of trace {view.trace_id}"]
    what = "payload"
    if view.path is not None:
        what = f"values at {view.path} ({view.matches} found)"
    if view.find is not None:
        what = f"lines holding {view.find!r} ({view.matches} found)"
    end = view.offset + len(view.content)
    lines.append(f"{what}, characters {view.offset}–{end} of {view.total_chars}:")
    said = f"message: {view.message}\n" if view.message else ""
    lines.append(fence(said + view.content, "event"))
    lines.extend(f"Left out: {o}" for o in view.omitted)
    return "\n".join(lines)


def build_event_view(
    ev: Event,
    trace_ref: str,
    *,
    path: str | None,
    find: str | None,
    offset: int,
    budget: int,
) -> tuple[EventView, str]:
    """The answer for one event, its content from `offset`, fitted to `budget` tokens."""
    doc, text = event_document(ev)
    matches = None
    if path is not None:
        hits = select(doc, path)
        matches = len(hits)
        chosen: Any = hits[0][1] if len(hits) == 1 and path.startswith("$") else {p: v for p, v in hits}
        text = json.dumps(chosen, indent=2, ensure_ascii=False, default=str) if hits else ""
    if find is not None:
        lines = search(text, find)
        matches = len(lines)
        text = "\n".join(lines)
    message = mask_text(ev.message) if ev.message else None
    message_cut = None
    if message is not None and len(message) > MESSAGE_CHARS:
        message_cut = len(message) - MESSAGE_CHARS
        message = message[:MESSAGE_CHARS] + f"…[+{message_cut:,} chars: molar://traces/{trace_ref}/events/{ev.seq}]"
    total = len(text)
    start = min(offset, total)

    def assemble(size: int) -> tuple[EventView, str]:
        chunk = text[start : start + size]
        end = start + len(chunk)
        omitted: list[str] = []
        if start > 0:
            omitted.append(f"characters 0–{start}: {_call(trace_ref, ev.seq, path, find, 0)}")
        next_offset = None
        if end < total:
            next_offset = end
            omitted.append(f"characters {end}–{total}: {_call(trace_ref, ev.seq, path, find, end)}")
        if path is not None and matches == 0:
            omitted.append(f"nothing at {path}; without path= the whole payload")
        view = EventView(
            trace_id=trace_ref,
            seq=ev.seq,
            step=ev.step,
            kind=ev.kind,
            ok=ev.ok,
            message=message,
            path=path,
            find=find,
            matches=matches,
            total_chars=total,
            offset=start,
            content=chunk,
            next_offset=next_offset,
            omitted=omitted,
        )
        return view, event_text(view)

    def spent(view: EventView, body: str) -> int:
        return shown(estimate_tokens(body), estimate_tokens(json.dumps(structured(view), ensure_ascii=False)))

    size = total - start
    view, body = assemble(size)
    for _ in range(8):
        cost = spent(view, body)
        if cost <= budget or size <= 1:
            break
        size = max(1, int(size * budget / cost * 0.9))
        # Prefer to end a page at a line break, so a JSON line is not split.
        cut = text.rfind("\n", start, start + size)
        if cut > start + size // 2:
            size = cut - start + 1
        view, body = assemble(size)
    return view, body
