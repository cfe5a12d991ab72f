"""`POST /v1/traces/{id}/pin`, `/unpin` and `/share` (seed 000), in process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest

from molar_mcp.store import TraceNotFound
from molar_mcp.store.sharing import SqliteSharingStore
from tests.api.support import assert_error
from tests.sharing.conftest import Traces

pytestmark = pytest.mark.anyio

ACME = {"x-molar-org": "org_acme"}


async def test_pin_and_unpin_answer_the_new_state_and_the_trace_shows_it(
    client: httpx2.AsyncClient, traces: Traces
) -> None:
    pinned = await client.post(f"/v1/traces/{traces.failed_short}/pin")
    again = await client.post(f"/v1/traces/{traces.failed_id}/pin")
    detail = await client.get(f"/v1/traces/{traces.failed_short}")
    unpinned = await client.post(f"/v1/traces/{traces.failed_short}/unpin")
    after = await client.get(f"/v1/traces/{traces.failed_short}")
    assert (pinned.status_code, pinned.json()) == (200, {"pinned": True})
    assert again.json() == {"pinned": True}  # idempotent
    assert detail.json()["pinned"] is True
    assert unpinned.json() == {"pinned": False}
    assert after.json()["pinned"] is False


async def test_sharing_with_no_body_shares_org_only_for_seven_days(client: httpx2.AsyncClient, traces: Traces) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    resp = await client.post(f"/v1/traces/{traces.failed_id}/share")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"short_id", "url", "visibility", "expires_at"}
    assert body["short_id"] == traces.failed_short
    assert body["url"] == f"http://molar.test/r/{traces.failed_short}"
    assert body["visibility"] == "org-only"
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert body["expires_at"].endswith("Z")
    assert before + timedelta(days=7) <= expires <= datetime.now(UTC) + timedelta(days=7)


async def test_sharing_again_replaces_the_visibility_and_expiry(client: httpx2.AsyncClient, traces: Traces) -> None:
    first = await client.post(f"/v1/traces/{traces.failed_short}/share", json={"expires_days": 1})
    second = await client.post(
        f"/v1/traces/{traces.failed_short}/share", json={"visibility": "public-read", "expires_days": 365}
    )
    assert first.json()["visibility"] == "org-only"
    assert second.json()["visibility"] == "public-read"
    assert second.json()["short_id"] == first.json()["short_id"]
    assert second.json()["expires_at"] > first.json()["expires_at"]


@pytest.mark.parametrize(
    "body",
    [
        {"visibility": "public"},
        {"visibility": None},
        {"expires_days": 0},
        {"expires_days": 366},
        {"expires_days": -3},
        {"expires_days": "7"},
        {"expires_days": True},
        {"expires_days": 1.5},
        {"visibility": "org-only", "extra": 1},
        [],
        "public-read",
    ],
)
async def test_a_share_body_that_is_not_valid_is_a_422_that_says_what_is_allowed(
    client: httpx2.AsyncClient, traces: Traces, body: Any
) -> None:
    resp = await client.post(f"/v1/traces/{traces.failed_short}/share", json=body)
    error = assert_error(resp, 422, "validation_error")
    assert "org-only or public-read" in error["message"]
    assert "1-365" in error["message"]


async def test_a_share_body_that_is_not_json_is_refused(client: httpx2.AsyncClient, traces: Traces) -> None:
    path = f"/v1/traces/{traces.failed_short}/share"
    headers = {"content-type": "application/json"}
    assert_error(await client.post(path, content=b"{nope", headers=headers), 400, "bad_request")
    assert_error(
        await client.post(path, content=b"visibility=public-read", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert_error(await client.post(path, content=b" " * 5000, headers=headers), 413, "payload_too_large")


async def test_another_org_can_neither_pin_nor_share_a_trace(client: httpx2.AsyncClient, traces: Traces) -> None:
    for action in ("pin", "unpin", "share"):
        assert_error(await client.post(f"/v1/traces/{traces.failed_short}/{action}", headers=ACME), 404, "not_found")
    detail = await client.get(f"/v1/traces/{traces.failed_short}")
    assert detail.json()["pinned"] is False
    assert (await client.get(f"/r/{traces.failed_short}")).status_code == 404  # nothing was shared


async def test_an_unknown_trace_is_a_404(client: httpx2.AsyncClient, traces: Traces) -> None:
    assert_error(await client.post("/v1/traces/nope/pin"), 404, "not_found")
    assert_error(await client.post("/v1/traces/nope/share", json={}), 404, "not_found")


def test_the_store_scopes_pins_and_shares_by_org_but_finds_a_share_by_short_id_alone(
    sharing: SqliteSharingStore, traces: Traces
) -> None:
    with pytest.raises(TraceNotFound):
        sharing.pin("org_acme", traces.failed_short, True)
    with pytest.raises(TraceNotFound):
        sharing.share("org_acme", traces.failed_short, "public-read", 7)
    assert sharing.get_share_by_short_id(traces.failed_short) is None
    now = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    made = sharing.share("org_local", traces.failed_id, "public-read", 30, now=now)
    assert made == (traces.failed_short, "public-read", datetime(2026, 1, 31, 12, 0, tzinfo=UTC))
    found = sharing.get_share_by_short_id(traces.failed_short)
    assert found == ("org_local", traces.failed_id, "public-read", datetime(2026, 1, 31, 12, 0, tzinfo=UTC), None)
    assert sharing.get_share_by_short_id(traces.passed_short) is None
    swapped = traces.failed_short.swapcase()  # short ids are case-sensitive
    assert swapped == traces.failed_short or sharing.get_share_by_short_id(swapped) is None


@pytest.mark.parametrize(("visibility", "days"), [("public", 7), ("org-only", 0), ("org-only", 366)])
def test_the_store_refuses_a_share_the_api_would_refuse(
    sharing: SqliteSharingStore, traces: Traces, visibility: Any, days: int
) -> None:
    with pytest.raises(ValueError, match=r"(visibility|expires_days) must be"):
        sharing.share("org_local", traces.failed_short, visibility, days)


def test_a_revoked_share_is_found_revoked_until_shared_again(sharing: SqliteSharingStore, traces: Traces) -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert sharing.revoke("org_local", traces.failed_short, now=now) is False  # nothing to revoke
    sharing.share("org_local", traces.failed_short, "public-read", 7, now=now)
    with pytest.raises(TraceNotFound):
        sharing.revoke("org_acme", traces.failed_short)  # another org cannot revoke it
    assert sharing.revoke("org_local", traces.failed_short, now=now + timedelta(hours=1)) is True
    assert sharing.revoke("org_local", traces.failed_short) is False
    revoked = sharing.get_share_by_short_id(traces.failed_short)
    sharing.share("org_local", traces.failed_short, "org-only", 7, now=now)
    renewed = sharing.get_share_by_short_id(traces.failed_short)
    assert revoked is not None
    assert revoked.revoked_at == now + timedelta(hours=1)
    assert renewed is not None
    assert renewed.revoked_at is None
    assert renewed.visibility == "org-only"
