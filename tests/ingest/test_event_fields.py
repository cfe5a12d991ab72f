"""A bundle's chunk of lines is validated into each event's fields (`ingest/bundle.py _EVENT_LIST`, built
from `Event`'s own field schemas), not into models: it accepts exactly what validating into `Event` models
accepts and gives their fields, on the shipped recordings of the demo shop and on edge cases; a chunk one of
them refuses, the other refuses too (the line-by-line pass then names the line)."""

from __future__ import annotations

import gzip
import io
import json
import random
import tarfile
from importlib import resources

import msgspec
import pytest
from pydantic import TypeAdapter, ValidationError

from molar_mcp.ingest.bundle import _EVENT_LIST, _fast_events, _FastEvent
from molar_mcp.models import Event

MODELS = TypeAdapter(list[Event])


def _recorded_runs() -> list[list[bytes]]:
    """The lines of each recorded run's events.ndjson."""
    folder = resources.files("molar_mcp.demo") / "scenario_runs"
    runs: list[list[bytes]] = []
    for run in sorted(p for p in folder.iterdir() if p.name.endswith(".tar.gz")):
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(run.read_bytes()))) as tf:
            for member in tf:
                if member.name.endswith("events.ndjson"):
                    fh = tf.extractfile(member)
                    assert fh is not None
                    runs.append([line for line in fh.read().splitlines(keepends=True) if line.strip()])
    assert runs
    return runs


def _recorded_lines() -> list[bytes]:
    return [line.rstrip(b"\n") for run in _recorded_runs() for line in run]


ACCEPTED = [
    b'{"seq": 0, "ts": 1, "kind": "log"}',
    b'{"seq": "5", "ts": 2.0, "kind": "x", "ok": "true", "step": 3, "step_id": null, "message": null}',
    b'{"seq": 1, "seq": 2, "ts": 1, "kind": "a", "payload": {"a": NaN, "n": 123456789012345678901234, "l": [1, {}]}}',
    b'{"seq": 9223372036854775807, "ts": 0, "kind": "' + b"k" * 64 + b'", "step_id": "' + b"s" * 128 + b'"}',
    '{"seq": 3, "ts": 4, "kind": "caf\u00e9", "message": "\\u0000 \u2603",'
    ' "payload": {"\u00e9": "\\ud83d\\ude00"}}'.encode(),
]
REFUSED = [
    b'{"seq": -1, "ts": 1, "kind": "log"}',
    b'{"seq": 9223372036854775808, "ts": 1, "kind": "log"}',
    b'{"seq": 1, "ts": 1, "kind": ""}',
    b'{"seq": 1, "ts": 1, "kind": "' + b"k" * 65 + b'"}',
    b'{"seq": 1, "ts": 1, "kind": "log", "step_id": "' + b"s" * 129 + b'"}',
    b'{"seq": 1, "ts": 1, "kind": "log", "step": 0}',
    b'{"seq": 1, "ts": 1, "kind": "log", "extra": 1}',
    b'{"seq": 1, "ts": 1}',
    b'{"seq": 1, "ts": 1, "kind": "log", "payload": []}',
    b'{"seq": 1, "ts": 1, "kind": "log", "ok": "maybe"}',
    b'{"seq": 1.5, "ts": 1, "kind": "log"}',
    b'{"seq": 1, "ts": 1, "kind": "log", "message": 5}',
    b'{"seq": 1, "ts": 1, "kind": "log", "message": "\\ud800"}',
    b"[]",
]


def _chunk(lines: list[bytes]) -> bytes:
    return b"[" + b",".join(lines) + b"]"


def test_the_fields_of_every_recorded_event_are_those_of_its_model() -> None:
    chunk = _chunk(_recorded_lines())
    fields = _EVENT_LIST.validate_json(chunk)
    models = MODELS.validate_json(chunk)
    assert fields == [m.__dict__ for m in models]
    assert all(list(f) == list(Event.model_fields) for f in fields)


@pytest.mark.parametrize("line", ACCEPTED, ids=range(len(ACCEPTED)))
def test_an_edge_case_both_accept_gives_the_same_fields(line: bytes) -> None:
    fields = _EVENT_LIST.validate_json(_chunk([line]))
    models = MODELS.validate_json(_chunk([line]))
    assert repr(fields) == repr([m.__dict__ for m in models])  # repr: NaN equals itself there


@pytest.mark.parametrize("line", REFUSED, ids=range(len(REFUSED)))
def test_a_line_one_refuses_the_other_refuses(line: bytes) -> None:
    good = b'{"seq": 0, "ts": 1, "kind": "log"}'
    with pytest.raises(ValidationError):
        MODELS.validate_json(_chunk([good, line]))
    with pytest.raises(ValidationError):
        _EVENT_LIST.validate_json(_chunk([good, line]))


# The fast reader (msgspec): it reads a chunk only when it gives exactly what validating into `Event` gives,
# and leaves every other chunk to pydantic (None), which then accepts or refuses it as before.


def _fast_fields(lines: list[bytes]) -> list[dict[str, object]] | None:
    """What the fast reader makes of `lines` (each ended as events.ndjson's are: "\n" added where no line
    end is), as each event's fields; None: left to pydantic."""
    lines = [line if line.endswith((b"\n", b"\r")) else line + b"\n" for line in lines]
    events = _fast_events(_chunk(lines), len(lines), -1)
    return None if events is None else [{name: getattr(ev, name) for name in Event.model_fields} for ev in events]


def _deep(levels: int) -> dict[str, object]:
    value: dict[str, object] = {"x": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_the_fast_reader_mirrors_the_fields_of_event() -> None:
    fields = msgspec.structs.fields(_FastEvent)
    assert [f.name for f in fields] == list(Event.model_fields)
    for f in fields:
        info = Event.model_fields[f.name]
        assert f.required == info.is_required()
        if not f.required:
            assert (f.default_factory() if f.default_factory is not msgspec.NODEFAULT else f.default) == (
                info.get_default(call_default_factory=True)
            )


def test_the_fast_reader_reads_every_recorded_event_as_its_model() -> None:
    for lines in _recorded_runs():
        fast = _fast_fields(lines)
        assert fast is not None  # the ingest hot path: recorded events never need pydantic
        assert fast == [m.__dict__ for m in MODELS.validate_json(_chunk(lines))]


@pytest.mark.parametrize("line", ACCEPTED, ids=range(len(ACCEPTED)))
def test_an_edge_case_the_fast_reader_takes_gives_the_fields_of_the_model(line: bytes) -> None:
    fast = _fast_fields([line])
    if fast is not None:
        assert repr(fast) == repr([m.__dict__ for m in MODELS.validate_json(_chunk([line]))])


def test_the_fast_reader_leaves_what_pydantic_reads_laxly_to_pydantic() -> None:
    for line in ACCEPTED[1:3]:  # "5" and 2.0 for ints, "true" for a bool; NaN in a payload
        assert _fast_fields([line]) is None


@pytest.mark.parametrize("line", REFUSED, ids=range(len(REFUSED)))
def test_a_line_pydantic_refuses_the_fast_reader_refuses(line: bytes) -> None:
    good = b'{"seq": 0, "ts": 1, "kind": "log"}'
    assert _fast_fields([good, line]) is None
    assert _fast_fields([good, b"\xff" + line]) is None  # not UTF-8


def test_the_fast_reader_reads_numbers_and_text_as_pydantic_does() -> None:
    rng = random.Random(16)
    values: list[object] = [
        0.1,
        -0.0,
        1e-7,
        1.5e300,
        2**63,
        -(2**64) - 1,
        10**30,
        "é\u2603\U0001f600",
        '\\"/\b\f\n\r\t',
    ]
    values += [rng.uniform(-1e6, 1e6) for _ in range(300)] + [
        rng.random() * 10 ** rng.randint(-300, 300) for _ in range(300)
    ]
    values += [rng.randint(-(2**70), 2**70) for _ in range(100)]
    lines = [
        json.dumps(
            {"seq": n, "ts": 1, "kind": "log", "payload": {"v": v, "l": [v, {"v": v}]}}, ensure_ascii=n % 2 == 0
        ).encode()
        for n, v in enumerate(values + values)
    ]
    fast = _fast_fields(lines)
    assert fast is not None
    assert repr(fast) == repr([m.__dict__ for m in MODELS.validate_json(_chunk(lines))])


def test_a_payload_nested_deeper_than_the_fast_reader_checks_goes_to_pydantic() -> None:
    def line(payload: object) -> bytes:
        return json.dumps({"seq": 1, "ts": 1, "kind": "log", "payload": payload}).encode() + b"\n"

    # A line's depth is the event (1) and its payload's: 128 at most is read fast, deeper goes to pydantic.
    assert _fast_fields([line(_deep(127))]) is not None
    assert _fast_fields([line(_deep(128))]) is None
    assert _fast_fields([line(_deep(300))]) is None
    with pytest.raises(ValidationError):  # what pydantic does with it: refused (JSON nested too deep)
        MODELS.validate_json(_chunk([line(_deep(300))]))
    # Many brackets, shallow: measured, then read fast, with the same fields.
    wide = [line({"items": [{"n": n} for n in range(400)]})]
    assert _fast_fields(wide) == [m.__dict__ for m in MODELS.validate_json(_chunk(wide))]
    # A line ended by "\r" alone: the deep event cannot be told from its neighbour's line, so pydantic reads.
    shallow = line({}).replace(b'"seq": 1', b'"seq": 0').rstrip(b"\n") + b"\r"
    assert _fast_fields([shallow, line(_deep(140))]) is None
    assert _fast_fields([shallow, line(_deep(3))]) is not None
