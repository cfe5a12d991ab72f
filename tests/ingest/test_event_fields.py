"""A bundle's chunk of lines is validated into each event's fields (`ingest/bundle.py _EVENT_LIST`, built
from `Event`'s own field schemas), not into models: it accepts exactly what validating into `Event` models
accepts and gives their fields, on the shipped recordings of the demo shop and on edge cases; a chunk one of
them refuses, the other refuses too (the line-by-line pass then names the line)."""

from __future__ import annotations

import gzip
import io
import tarfile
from importlib import resources

import pytest
from pydantic import TypeAdapter, ValidationError

from molar_mcp.ingest.bundle import _EVENT_LIST
from molar_mcp.models import Event

MODELS = TypeAdapter(list[Event])


def _recorded_lines() -> list[bytes]:
    folder = resources.files("molar_mcp.demo") / "scenario_runs"
    lines: list[bytes] = []
    for run in sorted(p for p in folder.iterdir() if p.name.endswith(".tar.gz")):
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(run.read_bytes()))) as tf:
            for member in tf:
                if member.name.endswith("events.ndjson"):
                    fh = tf.extractfile(member)
                    assert fh is not None
                    lines.extend(line for line in fh.read().splitlines() if line.strip())
    assert lines
    return lines


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
