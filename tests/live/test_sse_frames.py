"""The SSE stream sends a batch's events as one chunk of frames (`api/live.py _frames`): each frame what
`ServerSentEvent` encodes for the event, and a follower reads exactly the appended events, in order, as a
read of the trace gives them."""

from __future__ import annotations

import json

import anyio
import httpx2
import pytest
from sse_starlette import ServerSentEvent

from molar_mcp.api.live import _frames
from molar_mcp.compose import Embedded
from molar_mcp.models import Event

pytestmark = pytest.mark.anyio

TS = 1_763_629_200_000


def test_each_frame_is_what_server_sent_event_encodes() -> None:
    events = [
        Event(seq=0, ts=TS, kind="log"),
        Event(seq=7, ts=TS + 7, kind="log", step_id="a\nb", step=3, message="line\r\nbreak \u2028 é ✓ \x00"),
        Event(
            seq=2**62,
            ts=TS,
            kind="network.response",
            ok=False,
            payload={"status": 500, "nested": {"list": [1, "two", None, {"x": 1.5}]}, "text": "a\nb"},
        ),
    ]
    expected = b"".join(
        ServerSentEvent(data=ev.model_dump_json(exclude_none=True), id=str(ev.seq)).encode() for ev in events
    )
    assert _frames(events) == expected
    assert _frames([]) == b""


async def test_a_follower_reads_every_appended_event_once_in_order_as_stored(embedded: Embedded) -> None:
    async with embedded.client_factory()() as client:
        http = client._http
        trace = (await http.post("/v1/traces", json={"scenario_slug": "frames"})).json()["id"]
        seen: list[dict[str, object]] = []
        connected = anyio.Event()

        async def follow() -> None:
            async with http.stream("GET", f"/v1/traces/{trace}/stream") as response:
                connected.set()
                async for sse in httpx2.EventSource(response):
                    if sse.event == "end":
                        return
                    assert sse.id == str(json.loads(sse.data)["seq"])
                    seen.append(json.loads(sse.data))

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await connected.wait()
            for first in range(0, 300, 100):
                batch = [
                    {"seq": s, "ts": TS + s, "kind": "log", "step_id": f"s{s // 50}", "message": f"é {s}"}
                    for s in range(first, first + 100)
                ]
                response = await http.post(f"/v1/traces/{trace}/events", json={"events": batch})
                assert response.json()["accepted"] == 100
            await http.post(f"/v1/traces/{trace}/events", json={"seq": 300, "ts": TS, "kind": "log"})
            assert (await http.post(f"/v1/traces/{trace}/finish", json={"status": "passed"})).status_code == 200
        stored = (await http.get(f"/v1/traces/{trace}/events", params={"limit": 1000})).json()["events"]
        assert [e["seq"] for e in seen] == list(range(301))
        assert seen == [{k: v for k, v in e.items() if v is not None} for e in stored]
