"""`molar-mcp users create` as a newcomer runs it: a piped password is read, bad input gets one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from molar_mcp.auth.db import AuthDB
from molar_mcp.auth.users import UserStore


def users_create(data_dir: Path, email: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "molar_mcp", "users", "create", "--email", email, "--data-dir", str(data_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_piped_password_is_the_accounts_password(tmp_path: Path) -> None:
    done = users_create(tmp_path, "ada@example.com", "correct horse battery\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # nothing generated, nothing printed
    db = AuthDB.open(tmp_path / "auth.sqlite3")
    try:
        assert UserStore(db).verify_password("ada@example.com", "correct horse battery") is not None
    finally:
        db.close()


def test_a_bad_email_or_a_short_password_gets_one_clear_line_and_no_account(tmp_path: Path) -> None:
    bad_email = users_create(tmp_path, "not-an-email", "correct horse battery\n")
    short = users_create(tmp_path, "bob@example.com", "short\n")
    for done, words in ((bad_email, "not an email address"), (short, "at least 8 characters")):
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert words in lines[0]
        assert "Traceback" not in done.stderr
    db = AuthDB.open(tmp_path / "auth.sqlite3")
    try:
        assert UserStore(db).all() == []
    finally:
        db.close()
