"""Check a replay's edits before it is queued, so a diff that does not apply is a 422, not a failed replay.

Source diffs are checked against a scratch copy of only the files they touch (copying a whole app for
a check would cost as much as the replay); they apply in order, so a later diff may build on an earlier.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from molar_mcp.replay.apps import DiffDoesNotApply, apply_unified_diff
from molar_mcp.replay.scenario import Scenario, apply_scenario_diff, parse_scenario

SCENARIO_FILE = "scenario.molar.md"


def edited_scenario(text: str, scenario_diff: str | None) -> tuple[Scenario, str]:
    """The scenario after `scenario_diff` (if any), and its text. Raises DiffDoesNotApply or ScenarioError."""
    if scenario_diff:
        text = apply_scenario_diff(text, scenario_diff)
    return parse_scenario(text, source=SCENARIO_FILE), text


def touched_paths(diff: str, *, label: str) -> list[PurePosixPath]:
    """The source paths a unified diff reads or writes, relative to the app's source directory.

    Raises DiffDoesNotApply for a path that leaves the source directory (absolute, or with `..`).
    """
    lines = diff.splitlines()
    olds = [_header_path(line) for line in lines if line.startswith("--- ")]
    news = [_header_path(line) for line in lines if line.startswith("+++ ")]
    named = [p for p in (*olds, *news) if p is not None]
    prefixed = (
        bool(named)
        and all(p.startswith("a/") for p in filter(None, olds))
        and all(p.startswith("b/") for p in filter(None, news))
    )
    paths: list[PurePosixPath] = []
    for raw in named:
        path = PurePosixPath(raw[2:] if prefixed else raw)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise DiffDoesNotApply(label, reason="names a path outside the app's source directory", file=raw)
        if path not in paths:
            paths.append(path)
    return paths


def check_source_diffs(source_dir: Path, diffs: Sequence[tuple[str, str]]) -> None:
    """Apply `(label, diff)` pairs in order to a scratch copy of the files they touch.

    Raises DiffDoesNotApply naming the diff, the file and the hunk, exactly as the replay itself would.
    """
    if not diffs:
        return
    wanted: list[PurePosixPath] = []
    for label, diff in diffs:
        if not diff.strip():
            raise DiffDoesNotApply(label, reason="is empty")
        wanted.extend(p for p in touched_paths(diff, label=label) if p not in wanted)
    with tempfile.TemporaryDirectory(prefix="molar-check-") as tmp:
        root = Path(tmp)
        for rel in wanted:
            source = source_dir / rel
            if source.is_file():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, root / rel)
        for label, diff in diffs:
            apply_unified_diff(root, diff, label=label)


def _header_path(line: str) -> str | None:
    path = line[4:].split("\t", 1)[0].strip()
    return None if path == "/dev/null" or not path else path
