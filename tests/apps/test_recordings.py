"""The ticket shop's failure modes are real: recorded traces carry what each scenario promises."""

from __future__ import annotations

import json
import uuid
import zipfile
from pathlib import Path

import httpx2

from tests.apps.record import RecordedTraces, Recorder


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def lines(raw: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def test_the_app_serves_its_failure_modes(ticketshop: str) -> None:
    assert httpx2.post(ticketshop + "/api/checkout", json={}).status_code == 500
    assert httpx2.get(ticketshop + "/static/logo.png").status_code == 404
    key = uuid.uuid4().hex
    assert httpx2.get(ticketshop + f"/api/flaky?key={key}").status_code == 503
    assert httpx2.get(ticketshop + f"/api/flaky?key={key}").status_code == 200
    assert httpx2.get(ticketshop + "/api/events/sold-out").json()["stock"] == 0


def test_a_recorded_trace_is_a_version_10_library_trace_with_snapshots_and_sources(recorded: RecordedTraces) -> None:
    shot = recorded("wrong-text")
    assert shot.status == "failed"
    files = members(shot.path)
    events = lines(files["trace.trace"])
    assert events[0]["type"] == "context-options"
    assert events[0]["origin"] == "library"
    assert int(str(events[0]["version"])) >= 10
    kinds = {e["type"] for e in events}
    assert {"before", "after", "log", "frame-snapshot", "screencast-frame"} <= kinds
    assert any(name.startswith("src/") for name in files)
    assert any(b'unexpected value \\"Sold out\\"' in line for line in files["trace.trace"].splitlines())


def test_each_scenario_fails_the_way_it_should(recorded: RecordedTraces) -> None:
    checkout = members(recorded("http-500").path)
    assert any(e["snapshot"]["response"]["status"] == 500 for e in lines(checkout["trace.network"]))  # type: ignore[index]
    crash = lines(members(recorded("js-exception").path)["trace.trace"])
    assert any(e.get("method") == "pageError" for e in crash)
    overlay = members(recorded("overlay").path)["trace.trace"]
    assert b"intercepts pointer events" in overlay
    disabled = members(recorded("disabled").path)["trace.trace"]
    assert b"element is not enabled" in disabled
    missing = recorded("missing-selector")
    assert missing.status == "failed"
    assert "Timeout" in (missing.error or "")
    passing = recorded("passing")
    assert passing.status == "passed"
    statuses = [e["snapshot"]["response"]["status"] for e in lines(members(passing.path)["trace.network"])]  # type: ignore[index]
    assert 404 in statuses  # the tolerated logo
    assert recorded("slow").status == "passed"
    grouped = lines(members(recorded("grouped").path)["trace.trace"])
    assert any(e.get("method") == "tracingGroup" and e.get("parentId") for e in grouped)


def test_the_flaky_path_fails_once_then_passes(ticketshop: str, pw_recorder: Recorder, tmp_path: Path) -> None:
    key = uuid.uuid4().hex
    first = pw_recorder.record("flaky", ticketshop, tmp_path / "a1.zip", key=key)
    second = pw_recorder.record("flaky", ticketshop, tmp_path / "a2.zip", key=key)
    assert (first.status, second.status) == ("failed", "passed")


def test_chunks_are_separate_traces(ticketshop: str, pw_recorder: Recorder, tmp_path: Path) -> None:
    shots = pw_recorder.record_chunks(["passing", "wrong-text"], ticketshop, tmp_path)
    assert [s.status for s in shots] == ["passed", "failed"]
    for shot in shots:
        names = members(shot.path)
        assert any(n.endswith(".trace") for n in names)
