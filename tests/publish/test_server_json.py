"""`manifests/server.json` is ready for the MCP registry: it validates against the registry's published
schema and names the package this repository really builds.

`server.schema.json` beside this file is the registry's published schema, unchanged, from
https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json (repository
modelcontextprotocol/static, `schemas/2025-12-11/server.schema.json`): CI reaches no host but the package
registries, so the tests read this copy.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft7Validator, FormatChecker

from molar_mcp import __version__
from molar_mcp.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_URL = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"


def _server_json() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((ROOT / "manifests/server.json").read_text(encoding="utf-8"))
    return doc


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((Path(__file__).parent / "server.schema.json").read_text(encoding="utf-8"))
    return schema


def test_the_vendored_schema_is_the_one_server_json_names() -> None:
    schema = _schema()
    assert schema["$id"] == SCHEMA_URL == _server_json()["$schema"]
    Draft7Validator.check_schema(schema)


def test_server_json_validates_against_the_registry_schema() -> None:
    validator = Draft7Validator(_schema(), format_checker=FormatChecker())
    errors = sorted(validator.iter_errors(_server_json()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_catches_what_the_registry_refuses() -> None:
    """The copy is a working validator, not a file that passes anything."""
    validator = Draft7Validator(_schema(), format_checker=FormatChecker())
    bad = _server_json()
    bad["name"] = "molar-mcp"  # no namespace
    bad["packages"][0]["version"] = "latest"
    bad["description"] = "x" * 101
    bad["remotes"] = [{"type": "streamable-http", "url": "not a url"}]
    paths = {tuple(e.absolute_path) for e in validator.iter_errors(bad)}
    assert {("name",), ("packages", 0, "version"), ("description",), ("remotes", 0)} <= paths


def test_the_package_entry_is_the_pypi_package_this_repository_builds() -> None:
    doc, project = _server_json(), _project()
    assert doc["version"] == project["version"] == __version__
    (package,) = doc["packages"]
    assert package["registryType"] == "pypi"
    assert package["identifier"] == project["name"]
    assert package["version"] == project["version"]
    assert package["transport"] == {"type": "stdio"}
    assert "molar-mcp" in project["scripts"]
    args = [a["value"] for a in package["packageArguments"]]
    assert build_parser().parse_args(args).command == "stdio"
    assert {v["name"] for v in package["environmentVariables"]} <= set(
        re.findall(r"`(MOLAR_[A-Z_]+)`", (ROOT / "README.md").read_text(encoding="utf-8"))
    )


def test_the_readme_names_the_server_and_the_repository_is_the_project_s() -> None:
    doc, project = _server_json(), _project()
    readme = (ROOT / project["readme"]).read_text(encoding="utf-8")
    assert f"mcp-name: {doc['name']}" in readme  # the registry's proof that the PyPI package is this server
    owner = doc["name"].split("/", 1)[0].removeprefix("io.github.")
    assert doc["repository"]["source"] == "github"
    assert doc["repository"]["url"] == project["urls"]["Repository"]
    assert doc["repository"]["url"].startswith(f"https://github.com/{owner}/")


def test_no_remote_points_at_a_loopback_or_private_address() -> None:
    for remote in _server_json().get("remotes", []):
        url = urlsplit(remote["url"])
        host = url.hostname or ""
        assert url.scheme == "https", remote
        assert host != "localhost", remote
        assert not host.endswith(".localhost"), remote
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            continue
        assert address.is_global, remote
