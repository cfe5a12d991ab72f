"""A bundle of more than one chunk is read by a forked child while the store writes its rows: the same trace
as read here, on both engines; a bad line, the event cap or a failed insert anywhere stores nothing; the
child is gone and its pipe closed on every path."""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import sqlite3
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from molar_mcp.compose import open_store
from molar_mcp.ingest import BundleError, ingest_bundle
from molar_mcp.ingest import bundle as bundle_module
from molar_mcp.ingest.bundle import open_bundle
from molar_mcp.models import Event
from molar_mcp.models.batch import gc_paused
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore, TraceQuery
from molar_mcp.store.child_reader import ChildReader, ChildReaderError, can_fork
from molar_mcp.store.port import IngestInterrupted, NewTrace, TooManyEvents
from tests.bundles import make_bundle, summary
from tests.ingest.test_streamed_bundles import EVENT_CHUNK, long_events

pytestmark = pytest.mark.skipif(not can_fork(), reason="bundles are read in a child only where processes fork")


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_module, "EVENT_CHUNK", EVENT_CHUNK)


def children() -> set[int]:
    """This process's child processes (Linux: /proc/self/task/*/children)."""
    found: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            found.update(int(pid) for pid in (task / "children").read_text().split())
    return found


def open_pipes() -> int:
    """This process's open pipe ends."""
    pipes = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor, closed since
            pipes += os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
    return pipes


@pytest.fixture
def nothing_left() -> Iterator[None]:
    """The test leaves no child process and no open pipe behind."""
    before_children, before_pipes = children(), open_pipes()
    yield
    assert children() == before_children
    assert open_pipes() == before_pipes


def store_with(tmp_path: Path, name: str, engine: dict[str, str], *, in_child: bool) -> SqliteTraceStore:
    store = open_store(tmp_path / name, **engine)
    store.read_in_child = in_child
    return store


def stored_rows(store: SqliteTraceStore, trace_id: str) -> dict[str, Any]:
    """Everything stored of a trace but its ids: its counts, steps and times, its events, its indexed text."""
    detail = store.get_trace(LOCAL_ORG_ID, trace_id)
    same = ("event_count", "event_counts", "duration_ms", "created_at", "steps", "status", "failure_signature")
    found = store.list_traces(LOCAL_ORG_ID, TraceQuery(q="zanzibar-checkout-exploded")).items
    return {
        "trace": {k: getattr(detail, k) for k in same},
        "events": store.list_events(LOCAL_ORG_ID, trace_id, limit=10_000).events,
        "found_by_text": trace_id in [t.id for t in found],
    }


def test_a_bundle_read_in_a_child_is_stored_as_one_read_here(
    tmp_path: Path, engine: dict[str, str], nothing_left: None
) -> None:
    data = make_bundle(summary(), long_events())
    answers = []
    for in_child in (True, False):
        store = store_with(tmp_path, f"child-{in_child}", engine, in_child=in_child)
        try:
            parsed_count, trace_id = _ingest(store, data)
            answers.append((parsed_count, stored_rows(store, trace_id)))
        finally:
            store.close()
    assert answers[0] == answers[1]
    assert answers[0][0] == len(long_events())
    assert answers[0][1]["found_by_text"] is True


def test_the_source_left_to_the_child_is_freed_with_the_ingest(
    tmp_path: Path, engine: dict[str, str], nothing_left: None
) -> None:
    """This process's copy of the chunk source (the child reads on from it) is closed once the child is
    forked: the bundle's decompressed block of lines goes with the ingest, by reference counting, rather
    than with the next full collection, rare in a server (api/memory.py): ~14 MB after three 100k bundles."""
    store = store_with(tmp_path, "freed", engine, in_child=True)
    gc.collect()
    try:
        with gc_paused():
            parsed = open_bundle(make_bundle(summary(), long_events()))
            assert parsed.trace.event_chunks is not None
            source = weakref.ref(parsed.trace.event_chunks)
            store.add_trace(LOCAL_ORG_ID, parsed.trace, parsed.blobs)
            assert parsed.trace.events_stored == len(long_events())
            del parsed
            assert source() is None
    finally:
        store.close()


@pytest.mark.parametrize("in_child", [True, False], ids=["child", "here"])
def test_the_source_of_a_bundle_refused_midway_is_freed_with_the_ingest(
    tmp_path: Path, engine: dict[str, str], monkeypatch: pytest.MonkeyPatch, in_child: bool, nothing_left: None
) -> None:
    """A bundle refused after some of its chunks (here the event cap) leaves its chunk generator suspended:
    it is closed however the ingest ends, so its block of lines goes with the ingest, not later."""
    monkeypatch.setenv("MOLAR_MAX_TRACE_EVENTS", str(2 * EVENT_CHUNK + 10))
    store = store_with(tmp_path, "refused", engine, in_child=in_child)
    gc.collect()
    try:
        with gc_paused():
            parsed = open_bundle(make_bundle(summary(), long_events()))
            assert parsed.trace.event_chunks is not None
            source = weakref.ref(parsed.trace.event_chunks)
            refused = False
            try:
                store.add_trace(LOCAL_ORG_ID, parsed.trace, parsed.blobs)
            except TooManyEvents:
                refused = True  # (the error and its traceback, which holds the ingest's frames, are dropped here)
            assert refused
            del parsed
            assert source() is None
            assert store.list_traces(LOCAL_ORG_ID, TraceQuery()).items == []
    finally:
        store.close()


def _ingest(store: SqliteTraceStore, data: bytes) -> tuple[int, str]:
    from molar_mcp.ingest.service import Upload, ingest_upload

    outcome = ingest_upload(store, LOCAL_ORG_ID, Upload(data=data, filename="b.tar.gz", format="bundle"))
    (stored,) = outcome.traces
    return stored.event_count, stored.trace_id


def test_a_bad_line_read_by_the_child_stores_nothing_and_names_the_line(
    tmp_path: Path, engine: dict[str, str], nothing_left: None
) -> None:
    raw = [json.dumps(e) for e in long_events()]
    bad_line = 3 * EVENT_CHUNK + 7  # in the fourth chunk: the child reads it
    raw[bad_line - 1] = '{"seq": "not a number", "ts": 1, "kind": "log"}'
    data = make_bundle(summary(), events_raw="\n".join(raw).encode())
    store = store_with(tmp_path, "bad", engine, in_child=True)
    try:
        with pytest.raises(BundleError) as caught:
            ingest_bundle(store, LOCAL_ORG_ID, data)
        assert caught.value.kind == "validation_error"
        assert f"line {bad_line}" in caught.value.message
        assert store.list_traces(LOCAL_ORG_ID, TraceQuery()).items == []
    finally:
        store.close()


def test_the_event_cap_passed_in_the_child_stores_nothing(
    tmp_path: Path, engine: dict[str, str], monkeypatch: pytest.MonkeyPatch, nothing_left: None
) -> None:
    monkeypatch.setenv("MOLAR_MAX_TRACE_EVENTS", str(2 * EVENT_CHUNK + 10))
    store = store_with(tmp_path, "cap", engine, in_child=True)
    try:
        with pytest.raises(TooManyEvents, match="more than 1,010"):
            ingest_bundle(store, LOCAL_ORG_ID, make_bundle(summary(), long_events()))
        assert store.list_traces(LOCAL_ORG_ID, TraceQuery()).items == []
    finally:
        store.close()


def test_an_insert_that_fails_while_the_child_reads_stores_nothing_and_ends_the_child(
    tmp_path: Path, nothing_left: None
) -> None:
    store = store_with(tmp_path, "fails", {}, in_child=True)
    try:
        # A real SQLite trigger refuses one row of the third chunk (the child built it; this process stores it).
        with store.db.tx() as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.message = 'line 1234'"
                " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        with pytest.raises(sqlite3.IntegrityError, match="refused by the test"):
            ingest_bundle(store, LOCAL_ORG_ID, make_bundle(summary(), long_events()))
        assert store.list_traces(LOCAL_ORG_ID, TraceQuery()).items == []
    finally:
        store.close()


def _numbers(item: int) -> list[Any]:
    return [(item, str(item))]


def test_a_reader_stopped_early_kills_and_reaps_its_child(nothing_left: None) -> None:
    reader: ChildReader[int] = ChildReader(iter(range(10**9)), _numbers, lambda: 0)
    with reader:
        for rows in reader:
            assert rows == [[0, "0"]]
            break
    with pytest.raises(RuntimeError, match="has not finished"):
        _ = reader.result


def test_what_the_child_gathers_comes_back_after_its_rows(nothing_left: None) -> None:
    seen: list[int] = []

    def build(item: int) -> list[Any]:
        seen.append(item)  # in the child: this process's list stays empty
        return _numbers(item)

    with ChildReader(iter(range(5)), build, lambda: list(seen)) as reader:
        rows = [row for chunk in reader for row in chunk]
    assert rows == [[n, str(n)] for n in range(5)]
    assert reader.result == [0, 1, 2, 3, 4]
    assert seen == []


class _Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a} and {b}")


def _fails(item: int) -> list[Any]:
    if item == 2:
        raise _Unpicklable(1, 2)
    return _numbers(item)


def test_an_error_in_the_child_is_raised_here_after_the_rows_before_it(nothing_left: None) -> None:
    rows: list[Any] = []

    def read_all() -> None:
        with ChildReader(iter(range(5)), _fails, list) as reader:
            for chunk in reader:
                rows.extend(chunk)

    with pytest.raises(ChildReaderError, match="_Unpicklable: 1 and 2"):
        read_all()
    assert rows == [[0, "0"], [1, "1"]]


@pytest.mark.parametrize(
    "error",
    [BundleError("validation_error", "events.ndjson line 7 is not JSON"), TooManyEvents(12, 10, streamed=True)],
)
def test_the_errors_of_a_bundle_cross_to_this_process_as_they_are(error: Exception, nothing_left: None) -> None:
    def build(item: int) -> list[Any]:
        raise error

    def read_all() -> None:
        with ChildReader(iter([1]), build, list) as reader:
            list(reader)

    with pytest.raises(type(error)) as caught:
        read_all()
    assert str(caught.value) == str(error)
    assert caught.value.__dict__ == error.__dict__


@pytest.mark.parametrize(("setting", "in_child"), [(None, False), ("0", False), ("1", True)])
def test_molar_ingest_child_turns_the_child_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str | None, in_child: bool, nothing_left: None
) -> None:
    if setting is None:
        monkeypatch.delenv("MOLAR_INGEST_CHILD", raising=False)
    else:
        monkeypatch.setenv("MOLAR_INGEST_CHILD", setting)
    store = open_store(tmp_path / "data")
    try:
        parsed = open_bundle(make_bundle(summary(), long_events()))
        store.add_trace(LOCAL_ORG_ID, parsed.trace, parsed.blobs)
    finally:
        store.close()
    # This process read the first two chunks; a child, when there is one, read the rest (and counted them).
    assert parsed.events_read == (2 * EVENT_CHUNK if in_child else len(long_events()))
    assert parsed.event_count == len(long_events())


def _stalls(item: int) -> list[Any]:
    if item == 2:
        time.sleep(3600)  # a child stuck for good (it is killed long before)
    return _numbers(item)


def test_a_child_that_sends_nothing_for_the_wait_is_killed_and_the_read_fails(nothing_left: None) -> None:
    rows: list[Any] = []
    started = time.monotonic()

    def read_all() -> None:
        with ChildReader(iter(range(5)), _stalls, list, wait_seconds=0.5) as reader:
            for chunk in reader:
                rows.extend(chunk)

    with pytest.raises(ChildReaderError, match=r"sent nothing for 0\.5 s and was stopped; nothing .* was stored"):
        read_all()
    assert rows == [[0, "0"], [1, "1"]]
    assert time.monotonic() - started < 30  # the wait, not the child's hour


def _stalled_chunks(events: list[Event]) -> Iterator[list[Event]]:
    """Chunks of `events`; the third one never comes (the child that would read it stalls)."""
    yield events[:EVENT_CHUNK]
    yield events[EVENT_CHUNK : 2 * EVENT_CHUNK]
    time.sleep(3600)
    yield events[2 * EVENT_CHUNK :]


def test_a_stalled_reading_child_fails_the_ingest_and_stores_nothing(
    tmp_path: Path, engine: dict[str, str], nothing_left: None
) -> None:
    events = [Event.model_validate(e) for e in long_events()]
    store = store_with(tmp_path, "stalled", engine, in_child=True)
    store.child_wait_seconds = 0.5
    try:
        trace = NewTrace(scenario_slug="stalled", status="passed", event_chunks=_stalled_chunks(events))
        with pytest.raises(IngestInterrupted, match=r"sent nothing for 0\.5 s"):
            store.add_trace(LOCAL_ORG_ID, trace, {})
        assert store.list_traces(LOCAL_ORG_ID, TraceQuery()).items == []
        # The store goes on: the same events, read here, are stored whole.
        again = NewTrace(scenario_slug="stalled", status="passed", events=events)
        trace_id, _ = store.add_trace(LOCAL_ORG_ID, again, {})
        assert store.get_trace(LOCAL_ORG_ID, trace_id).event_count == len(events)
    finally:
        store.close()


# Run as a process of its own: the store is opened (its thread started, the code of an ingest loaded by a
# first bundle), then the process gives up root (root is exempt from RLIMIT_NPROC) and may have no more
# processes than it has: a fork fails with EAGAIN, as on a server out of processes.
_NO_FORK = """
import os, resource, shutil, sys, tempfile
from pathlib import Path
from molar_mcp.ingest import bundle as bundle_module
from molar_mcp.ingest import ingest_bundle
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore, TraceQuery
bundle_module.EVENT_CHUNK = int(sys.argv[2])
data = Path(sys.argv[1]).read_bytes()
home = Path(tempfile.mkdtemp())
store = SqliteTraceStore(home / "data")
store.read_in_child = True
ingest_bundle(store, LOCAL_ORG_ID, data)  # a child reads it: the code of both ways is loaded now
if os.geteuid() == 0:
    for path in [home, *home.rglob("*")]:
        os.chown(path, 65534, 65534)
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
try:
    pid = os.fork()
except OSError as exc:
    print("fork refused:", exc.errno, flush=True)
else:
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print("fork allowed", flush=True)
trace_id, _ = ingest_bundle(store, LOCAL_ORG_ID, data)
stored = len(store.list_traces(LOCAL_ORG_ID, TraceQuery()).items)
print("stored", store.get_trace(LOCAL_ORG_ID, trace_id).event_count, stored)
store.close()
shutil.rmtree(home, ignore_errors=True)
"""


def test_a_fork_that_fails_leaves_the_reading_to_this_process(tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(make_bundle(summary(), long_events()))
    done = subprocess.run(
        [sys.executable, "-c", _NO_FORK, str(bundle), str(EVENT_CHUNK)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"fork refused: {errno.EAGAIN}"  # the process could not fork: the case under test
    assert lines[1] == f"stored {len(long_events())} 2"  # yet the bundle was stored, read here
    assert "no child process to read the bundle" in done.stderr
