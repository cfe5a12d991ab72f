"""The account and key commands (`molar-mcp users create`, `keys create|list|revoke`) open the auth database
and nothing of the server: no MCP SDK, no /v1 app, no trace store, no JWT stack. CI scripts and the test
fixtures run them before every authenticated server; each import of the SDK costs ~2 s of CPU here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import molar_mcp.auth
from molar_mcp.auth.apikeys import ApiKeyStore
from molar_mcp.auth.db import AuthDB

# A prefix matches the module and its submodules.
SERVER_ONLY = ("mcp", "mcp_types", "molar_mcp.api", "molar_mcp.store", "molar_mcp.compose", "joserfc", "authlib")

# The CLI in a child, as `python -m molar_mcp` runs it; the names it imported go to a file afterwards.
CHILD = """
import json, sys
from molar_mcp.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    json.dump(sorted(sys.modules), out)
sys.exit(code)
"""


def run_cli(tmp_path: Path, *args: str, stdin: str = "") -> tuple[subprocess.CompletedProcess[str], list[str]]:
    modules = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(modules), *args, "--data-dir", str(tmp_path / "data")],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    imported = json.loads(modules.read_text())
    return done, [m for m in imported if any(m == p or m.startswith(p + ".") for p in SERVER_ONLY)]


def test_account_and_key_commands_work_without_importing_the_server(tmp_path: Path) -> None:
    _, user_early = run_cli(tmp_path, "users", "create", "--email", "ada@example.com", stdin="correct horse battery\n")
    created, create_early = run_cli(tmp_path, "keys", "create", "--scopes", "mcp:trace:read")
    listed, list_early = run_cli(tmp_path, "keys", "list")
    key_id = listed.stdout.split("\t", 1)[0]
    _, revoke_early = run_cli(tmp_path, "keys", "revoke", key_id)
    assert (user_early, create_early, list_early, revoke_early) == ([], [], [], [])
    db = AuthDB.open(tmp_path / "data" / "auth.sqlite3")
    try:
        (key,) = ApiKeyStore(db, scopes_supported=["mcp:trace:read"]).list_keys("org_local", include_revoked=True)
    finally:
        db.close()
    assert created.stdout.strip().startswith(key.prefix)
    assert key.id == key_id
    assert key.revoked_at is not None


def test_the_auth_package_still_names_everything_it_exports() -> None:
    for name in molar_mcp.auth.__all__:
        assert getattr(molar_mcp.auth, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        molar_mcp.auth.Nope  # noqa: B018
