"""A long real run of the demo shop, for tests and benchmarks that need a big trace.

`long_scenario(n_events, steps)` writes a scenario of `steps` steps whose run records exactly `n_events`
events; `record_long_run` runs it with the scenario runner against the demo shop (in process) and packs
the trace as a Molar bundle. The run fails at its last step on the shop's coupon bug (checkout charges
$5.00 where $45.00 is expected); every step before it passes. Events: two run logs, then per step its
`step.start`, request, response, one `assertion` per check and `step.end`.
"""

from __future__ import annotations

import anyio
import httpx2

from molar_mcp.demo.shop.app import create_app
from molar_mcp.ingest.bundle import write_bundle
from molar_mcp.replay.recording import new_trace, scenario_blob
from molar_mcp.replay.runner import run_scenario
from molar_mcp.replay.scenario import parse_scenario

_FIXED_STEPS = 4  # create the cart, add mugs, apply the coupon, check out
_FIXED_EVENTS = 2 + 3 * 5 + 6  # run logs; three steps with one check; checkout with two checks
_CHECKS = (
    "expect json $.subtotal_cents == 5000",
    "expect json $.item_count == 4",
    'expect json $.coupon == "SAVE10"',
    'expect json $.items[0].sku == "mug"',
    "expect status 200",
)


def _step(number: int, title: str, request: str, checks: list[str]) -> str:
    bullets = "".join(f"- {check}\n" for check in checks)
    return f"## {number}. {title}\n\n```http\n{request}\n```\n\n{bullets}\n"


def long_scenario(n_events: int, *, steps: int = 50, slug: str = "long-checkout") -> str:
    """The text of a scenario whose run records exactly `n_events` events over `steps` steps."""
    middle = steps - _FIXED_STEPS
    checks = n_events - _FIXED_EVENTS - 4 * middle
    if middle < 0 or checks < 0:
        raise ValueError(f"{steps} steps need at least {_FIXED_EVENTS + 4 * max(middle, 0)} events")
    parts = [
        f"---\nslug: {slug}\ntitle: A long checkout with a coupon\napp: demo-shop\n---\n\n# A long checkout\n\n",
        _step(1, "Create a cart", "POST /api/carts", ["expect status 201", "capture cart_id = $.id"]),
        _step(
            2,
            "Add four mugs",
            'POST /api/carts/{{cart_id}}/items\nContent-Type: application/json\n\n{"sku": "mug", "qty": 4}',
            ["expect status 200"],
        ),
        _step(
            3,
            "Apply SAVE10",
            'POST /api/carts/{{cart_id}}/coupon\nContent-Type: application/json\n\n{"code": "SAVE10"}',
            ["expect status 200"],
        ),
    ]
    for index in range(middle):
        count = checks // middle + (1 if index < checks % middle else 0)
        bullets = [_CHECKS[i % len(_CHECKS)] for i in range(count)]
        parts.append(_step(4 + index, f"Review the cart ({index + 1})", "GET /api/carts/{{cart_id}}", bullets))
    parts.append(
        _step(
            steps,
            "Check out",
            'POST /api/checkout\n\n{"cart_id": "{{cart_id}}", "email": "ada@example.com"}',
            ["expect status 201", "expect json $.total_cents == 4500"],
        )
    )
    return "".join(parts)


async def record_long_run_async(n_events: int, *, steps: int = 50, slug: str = "long-checkout") -> bytes:
    text = long_scenario(n_events, steps=steps, slug=slug)
    scenario = parse_scenario(text, source=f"{slug}.molar.md")
    transport = httpx2.ASGITransport(app=create_app())
    async with httpx2.AsyncClient(transport=transport, base_url="http://demo-shop.test") as client:
        run = await run_scenario(scenario, client)
    assert len(run.events) == n_events, (len(run.events), n_events)
    trace, blobs = new_trace(
        scenario,
        status=run.status,
        events=run.events,
        failure_signature=run.failure_signature,
        duration_ms=run.duration_ms,
        blobs=[scenario_blob(text)],
    )
    return write_bundle(trace, blobs)


def record_long_run(n_events: int, *, steps: int = 50, slug: str = "long-checkout") -> bytes:
    """Run the long scenario against the demo shop and return the trace as a bundle (tar.gz)."""
    return anyio.run(lambda: record_long_run_async(n_events, steps=steps, slug=slug))


_RECORDED: dict[tuple[int, int], bytes] = {}


async def long_run_bundle(n_events: int, *, steps: int = 50) -> bytes:
    """`record_long_run_async`, recorded once per test session for each size (the run is the same)."""
    key = (n_events, steps)
    if key not in _RECORDED:
        _RECORDED[key] = await record_long_run_async(n_events, steps=steps)
    return _RECORDED[key]
