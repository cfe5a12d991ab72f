"""How every tool is registered: listed whatever the caller's scopes (the scope is in its description
and `_meta`, and a call without it gets HTTP 403 `insufficient_scope`, so clients step up), strict
arguments (unknown ones refused, naming the accepted ones), and compact schemas.

`tools/list` is paid for in every conversation that loads the server, so its schemas say only what a
model needs: no generated titles, no `null` branches, no defaults of null; output schemas name the
top-level fields that are always there (the answer's text says what each holds).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from pydantic import ConfigDict, model_validator

from molar_mcp.mcp.tools.spec import ToolSpec

SCOPE_META_KEY = "scope"
# Generated titles repeat the names; string lengths are checked on the server and named in its refusals.
_LEFT_OUT = frozenset({"title", "maxLength", "minLength", "maxItems"})


def add_tool(
    server: MCPServer[Any],
    fn: Callable[..., Any],
    spec: ToolSpec,
    *,
    title: str,
    description: str,
    annotations: ToolAnnotations,
    meta: dict[str, Any] | None = None,
) -> None:
    """Register `fn` as the tool `spec.name`, strict and compact (see the module doc)."""
    server.add_tool(
        fn,
        name=spec.name,
        title=title,
        description=f"{description.strip()}\nScope: {spec.scope}.",
        annotations=_compact_annotations(annotations),
        meta={SCOPE_META_KEY: spec.scope, **(meta or {})},
    )
    tool = server._tool_manager.get_tool(spec.name)
    assert tool is not None
    tool.fn_metadata.arg_model = strict_model(spec.name, tool.fn_metadata.arg_model)
    tool.parameters = _prune_defs(compact_input(tool.parameters))
    if tool.fn_metadata.output_schema is not None:
        tool.fn_metadata.output_schema = compact_output(tool.fn_metadata.output_schema)
        tool.__dict__.pop("output_schema", None)  # a cached_property: read again from fn_metadata


def _compact_annotations(annotations: ToolAnnotations) -> ToolAnnotations:
    """The title is said once (the tool's own); a read-only tool's destructive and idempotent hints are
    meaningless (MCP: they apply only when readOnlyHint is false), so they are left out."""
    update: dict[str, Any] = {"title": None}
    if annotations.read_only_hint:
        update |= {"destructive_hint": None, "idempotent_hint": None}
    return annotations.model_copy(update=update)


def strict_model(tool: str, model: Any) -> Any:
    """`model` refusing arguments it does not know, with a message naming the ones it accepts."""
    accepted = [f.alias or name for name, f in model.model_fields.items()]

    def refuse_unknown(data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(k for k in data if k not in accepted)
            if unknown:
                names = ", ".join(repr(k) for k in unknown)
                raise ValueError(f"unknown argument {names}: {tool} accepts {', '.join(accepted)}")
        return data

    config = ConfigDict(model.model_config)  # type: ignore[misc]
    config["extra"] = "forbid"
    return type(
        model.__name__,
        (model,),
        {
            "__module__": model.__module__,
            "model_config": config,
            "_refuse_unknown": model_validator(mode="before")(refuse_unknown),
        },
    )


def _prune_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop `$defs` nothing refers to any more."""
    defs = schema.get("$defs")
    if not isinstance(defs, dict):
        return schema
    used: set[str] = set()
    pending = [json.dumps({k: v for k, v in schema.items() if k != "$defs"})]
    while pending:
        for name in re.findall(r'"#/\$defs/([^"]+)"', pending.pop()):
            if name not in used and name in defs:
                used.add(name)
                pending.append(json.dumps(defs[name]))
    kept = {name: d for name, d in defs.items() if name in used}
    rest = {k: v for k, v in schema.items() if k != "$defs"}
    return {**rest, "$defs": kept} if kept else rest


def _drop_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` → X, and the null branch dropped from a longer `anyOf` (a model leaves
    an optional argument out rather than send null)."""
    options = schema.get("anyOf")
    if isinstance(options, list):
        rest = [o for o in options if o != {"type": "null"}]
        if len(rest) == 1 and len(rest) < len(options):
            merged = {**{k: v for k, v in schema.items() if k != "anyOf"}, **rest[0]}
            return merged
        if rest and len(rest) < len(options):  # `int | str | None` → `anyOf: [int, str]`
            return {**schema, "anyOf": rest}
    return schema


def compact_input(schema: Any) -> Any:
    """An input schema without generated titles, null branches and null defaults; objects closed."""
    if isinstance(schema, list):
        return [compact_input(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    schema = _drop_null(schema)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _LEFT_OUT or (key == "default" and value is None):
            continue
        if key in ("properties", "$defs"):
            out[key] = {name: compact_input(sub) for name, sub in value.items()}
            if key == "$defs":  # a shared model's docstring is for us; the property using it says what it is
                out[key] = {
                    name: {k: v for k, v in sub.items() if k != "description"} for name, sub in out[key].items()
                }
            if key == "properties" and "edits" in out[key] and "$ref" in out[key]["edits"]:
                # replay_trace's REST-shaped alias of two arguments above it: named, not defined twice.
                out[key]["edits"] = {k: v for k, v in out[key]["edits"].items() if k != "$ref"} | {"type": "object"}
            if key == "properties" and "max_tokens" in out[key]:
                # Every tool has it; its bounds are named when a call is refused.
                out[key]["max_tokens"] = {"type": "integer", "default": value["max_tokens"].get("default")}
            if key == "properties" and "offset" in out[key]:
                # A page's start, from 0 (the first page) to an answer's next_offset; -1 is refused, saying so.
                out[key]["offset"] = {"type": "integer"}
        else:
            out[key] = compact_input(value)
    if out.get("type") == "object" and "properties" in out:
        out["additionalProperties"] = False
    return out


def compact_output(schema: dict[str, Any]) -> dict[str, Any]:
    """An output schema naming the top-level fields, without the detail below them: what a client
    validates `structuredContent` against; the answer's text says what each field holds."""
    return {"type": "object", "properties": {name: {} for name in schema.get("properties", {})}}
