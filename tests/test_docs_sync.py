"""The checked-in capability manifest and the README's tool table equal what the code generates."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from molar_mcp.cli import build_parser
from molar_mcp.compose import manifest_document
from molar_mcp.mcp.capabilities import TABLE_END, TABLE_START, tools_table
from molar_mcp.mcp.skill import SKILL_NAME, check_calls, skill_markdown

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.anyio


async def test_the_checked_in_capability_manifest_matches_the_registered_tools() -> None:
    checked_in = json.loads((ROOT / ".well-known/molar-capabilities.json").read_text(encoding="utf-8"))
    assert checked_in == await manifest_document(), "run `molar-mcp manifest --write` and commit the result"


async def test_the_readme_tool_table_is_generated_from_the_registered_tools() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(TABLE_START), readme.index(TABLE_END) + len(TABLE_END)
    assert readme[start:end] == tools_table(await manifest_document()), "run `molar-mcp manifest --write`"


async def test_skill_md_is_generated_from_the_registered_tools() -> None:
    doc = await manifest_document()
    skill = (ROOT / "SKILL.md").read_text(encoding="utf-8")
    assert skill == skill_markdown(doc), "run `molar-mcp manifest --write`"
    head, _, body = skill.removeprefix("---\n").partition("\n---\n")
    front = dict(line.split(": ", 1) for line in head.splitlines())
    assert front["name"] == SKILL_NAME
    assert len(json.loads(front["description"])) <= 1024  # the agent-skill limit for a description
    for tool in doc["tools"]:
        assert f"### `{tool['name']}` — scope `{tool['scope']}`" in body
        for arg in tool["input_schema"]["properties"]:
            assert f"  - `{arg}` (" in body


async def test_skill_md_refuses_to_teach_a_call_the_server_does_not_accept() -> None:
    tools = {t["name"]: t for t in (await manifest_document())["tools"]}
    check_calls('get_trace(trace_id="x", step=3) then get_event(trace_id=…, seq=5)', tools)
    with pytest.raises(ValueError, match="get_trace does not accept"):
        check_calls("get_trace(trace_id=…, stepp=3)", tools)
    with pytest.raises(ValueError, match="not a registered tool"):
        check_calls('search_traces(q="x")', tools)
    renamed = [{**t, "name": "read_event"} if t["name"] == "get_event" else t for t in tools.values()]
    with pytest.raises(ValueError, match="get_event"):  # the workflow still teaches the old name
        skill_markdown({"tools": renamed, "resources": []})


async def test_the_manifest_names_a_scope_and_rest_equivalent_for_every_tool() -> None:
    doc = await manifest_document()
    assert {"list_traces", "get_trace", "debug_run"} <= {t["name"] for t in doc["tools"]}
    for tool in doc["tools"]:
        assert tool["scope"] in doc["scopes"]
        assert tool["rest"]
        assert tool["input_schema"]["type"] == "object"


def test_every_flag_the_readme_shows_exists_on_its_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    uses = re.findall(r"molar-mcp (serve|stdio|ingest|manifest)\b([^`\n]*)", readme)
    assert {cmd for cmd, _ in uses} == {"serve", "stdio", "ingest", "manifest"}
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for cmd, rest in uses:
        known = set(subparsers.choices[cmd]._option_string_actions)
        for flag in re.findall(r"--[a-z][a-z-]*", rest):
            assert flag in known, f"README shows `molar-mcp {cmd} {flag}`, which the CLI lacks"


def test_the_client_config_snippets_start_the_stdio_server() -> None:
    for name in ("claude-code.json", "cursor.json", "vscode.json"):
        doc = json.loads((ROOT / "manifests/clients" / name).read_text(encoding="utf-8"))
        servers = doc.get("mcpServers") or doc["servers"]
        stdio = next(s for s in servers.values() if s.get("command"))
        assert stdio["command"] == "molar-mcp"
        build_parser().parse_args(stdio["args"])
    server_json = json.loads((ROOT / "manifests/server.json").read_text(encoding="utf-8"))
    assert server_json["packages"][0]["identifier"] == "molar-mcp"
