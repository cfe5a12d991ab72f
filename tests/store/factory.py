"""Traces for store tests, built from the checkout events of tests/bundles.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from molar_mcp.models import Event
from molar_mcp.store import NewTrace
from tests.bundles import BASE_TS, checkout_events

# The `add` fixture: `add(org_id=…, events=…, blobs=…, **NewTrace fields)` → `(id, short_id)`.
AddTrace = Callable[..., tuple[str, str]]

T0 = datetime(2026, 5, 31, 10, 0, tzinfo=UTC)


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def new_trace(events: list[dict[str, Any]] | None = None, **fields: Any) -> NewTrace:
    """A failed checkout trace; `fields` override any `NewTrace` field."""
    base: dict[str, Any] = {
        "scenario_slug": "stripe-subscription-upgrade",
        "scenario_title": "Upgrade a subscription",
        "status": "failed",
        "source": "pr",
        "code_sha": "a1b2c3d4e5",
        "failure_signature": "webhook-404",
    }
    evs = checkout_events() if events is None else events
    return NewTrace(**(base | fields), events=[Event.model_validate(e) for e in evs])


def event(seq: int, kind: str, step_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """One raw event, `ts` derived from `seq`."""
    ev: dict[str, Any] = {"seq": seq, "ts": BASE_TS + 10 * seq, "kind": kind}
    if step_id is not None:
        ev["step_id"] = step_id
    return ev | fields
