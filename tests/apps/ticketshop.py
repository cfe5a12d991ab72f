"""Ticket shop: a small web app with its own failure modes, for recording real Playwright traces.

Pages and what goes wrong on them (each is a failure a browser test meets in real life):

| path | behaviour |
|---|---|
| `/` | home: a list of events, a "Buy" link each, a harmless 404 (`/static/logo.png`), console output |
| `/event/{id}` | an event page; `#stock` reads "In stock" or, for `sold-out`, "Sold out" (wrong text) |
| `/checkout` | `#pay` POSTs `/api/checkout` which answers HTTP 500; the page shows "Payment failed" |
| `/crash` | `#go` throws an uncaught TypeError (a page error) and nothing else happens |
| `/flaky?key=K` | `#result` reads "Loading failed" on the first visit with a key, "Ready" on later ones |
| `/slow?ms=N` | the page's data arrives after N ms (capped at 10 s) |
| `/overlay` | a cookie banner covers `#continue`, so a click is intercepted |
| `/disabled` | `#submit` is disabled |
| `/login` | a password form; login sends `Authorization: Bearer …` and sets a session cookie |
| `/api/*` | the JSON endpoints behind the pages |

Run it alone with `python -m tests.apps.ticketshop --port N` (the npm tests do); pytest starts it in a
thread on a free port (`tests/apps/server.py`). State (the flaky counters) is in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import html
from collections import Counter

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

EVENTS = {
    "jazz-night": {"title": "Jazz night", "stock": 12},
    "sold-out": {"title": "Sold-out concert", "stock": 0},
    "opera": {"title": "Opera matinee", "stock": 3},
}

_visits: Counter[str] = Counter()


def page(title: str, body: str, script: str = "") -> HTMLResponse:
    return HTMLResponse(
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} · Ticket shop</title>
<style>
body {{ font-family: sans-serif; margin: 2rem; }}
.banner {{ position: fixed; inset: 0; background: rgba(0,0,0,.6); color: white; padding: 4rem; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
{body}
<script>{script}</script>
</body></html>"""
    )


async def home(request: Request) -> Response:
    items = "".join(
        f'<li><a href="/event/{key}">{html.escape(ev["title"])}</a> '  # type: ignore[index]
        f'<a class="buy" href="/event/{key}">Buy</a></li>'
        for key, ev in EVENTS.items()
    )
    return page(
        "Events",
        f'<img src="/static/logo.png" alt=""><ul id="events">{items}</ul><a href="/login">Log in</a>',
        "console.log('ticket shop ready'); console.warn('logo is optional');",
    )


async def event(request: Request) -> Response:
    key = request.path_params["id"]
    if key not in EVENTS:
        return page("Not found", "<p>No such event</p>")
    title = str(EVENTS[key]["title"])
    raw_seats = request.query_params.get("seats", "0")
    seats = min(int(raw_seats), 5000) if raw_seats.isdigit() else 0
    return page(
        title,
        '<p id="stock">…</p><label>Tickets <input id="qty" type="number" value="1"></label>'
        '<a id="to-checkout" href="/checkout">Checkout</a>' + _seat_map(seats),
        f"fetch('/api/events/{key}').then(r => r.json()).then(ev => {{"
        "document.getElementById('stock').textContent = ev.stock > 0 ? 'In stock' : 'Sold out'; });"
        + (_SEAT_SCRIPT if seats else ""),
    )


# `?seats=N`: a seat map of N seats (a big page, as real shops have); typing a quantity marks that many
# seats chosen, so the page changes with every keystroke (the benchmark's big trace records it).
_SEAT_SCRIPT = """
document.getElementById('qty').addEventListener('input', (e) => {
  const n = Number(e.target.value) || 0;
  document.querySelectorAll('#seat-map td').forEach((td, i) => {
    td.className = i < n * 7 ? 'seat chosen' : 'seat free';
    td.title = (i < n * 7 ? 'Chosen: ' : 'Free: ') + td.dataset.seat;
  });
  document.getElementById('chosen').textContent = n + ' seat(s) chosen';
});"""


def _seat_map(seats: int) -> str:
    if not seats:
        return ""
    rows = []
    for row in range(0, seats, 20):
        cells = "".join(
            f'<td class="seat free" data-seat="R{row // 20 + 1}-{n + 1}" title="Free: R{row // 20 + 1}-{n + 1}">'
            f"{n + 1}</td>"
            for n in range(min(20, seats - row))
        )
        rows.append(f'<tr><th scope="row">Row {row // 20 + 1}</th>{cells}</tr>')
    return f'<p id="chosen">0 seat(s) chosen</p><table id="seat-map">{"".join(rows)}</table>'


async def api_event(request: Request) -> Response:
    key = request.path_params["id"]
    if key not in EVENTS:
        return JSONResponse({"error": "not_found", "message": f"no event {key}"}, status_code=404)
    return JSONResponse({"id": key, **EVENTS[key]})


async def checkout(request: Request) -> Response:
    return page(
        "Checkout",
        '<label>Card <input id="card" value="4242 4242 4242 4242"></label>'
        '<button id="pay">Pay</button><p id="status"></p>',
        "document.getElementById('pay').addEventListener('click', async () => {"
        "  const r = await fetch('/api/checkout', {method: 'POST', headers: {'content-type': 'application/json'},"
        "    body: JSON.stringify({event: 'jazz-night', qty: 1})});"
        "  if (!r.ok) { console.error('checkout failed with ' + r.status);"
        "    document.getElementById('status').textContent = 'Payment failed'; return; }"
        "  document.getElementById('status').textContent = 'Paid';"
        "});",
    )


async def api_checkout(request: Request) -> Response:
    await request.body()
    return JSONResponse({"error": "payment_gateway", "message": "upstream payment gateway timed out"}, status_code=500)


async def crash(request: Request) -> Response:
    return page(
        "Seat map",
        '<button id="go">Choose seats</button><p id="seats"></p>',
        "document.getElementById('go').addEventListener('click', () => {"
        "  const map = null; document.getElementById('seats').textContent = map.rows.length; });",
    )


async def flaky(request: Request) -> Response:
    key = request.query_params.get("key", "default")
    return page(
        "Flaky",
        '<p id="result">…</p>',
        f"fetch('/api/flaky?key={html.escape(key)}').then(r => r.ok ? 'Ready' : 'Loading failed')"
        ".then(t => { document.getElementById('result').textContent = t; });",
    )


async def api_flaky(request: Request) -> Response:
    key = request.query_params.get("key", "default")
    _visits[key] += 1
    if _visits[key] == 1:
        return JSONResponse({"error": "warming_up", "message": "cache is cold"}, status_code=503)
    return JSONResponse({"ok": True})


async def slow(request: Request) -> Response:
    ms = min(int(request.query_params.get("ms", "1500")), 10_000)
    return page(
        "Slow",
        '<p id="data">…</p>',
        f"fetch('/api/slow?ms={ms}').then(r => r.json()).then(d => "
        "{ document.getElementById('data').textContent = d.value; });",
    )


async def api_slow(request: Request) -> Response:
    ms = min(int(request.query_params.get("ms", "1500")), 10_000)
    await asyncio.sleep(ms / 1000)
    return JSONResponse({"value": "Loaded"})


async def overlay(request: Request) -> Response:
    return page(
        "Terms",
        '<button id="continue">Continue</button>'
        '<div class="banner" id="cookie-banner">We use cookies. <button id="accept">Accept</button></div>',
        "document.getElementById('accept').addEventListener('click', () =>"
        " document.getElementById('cookie-banner').remove());",
    )


async def disabled(request: Request) -> Response:
    return page("Newsletter", '<input id="email"><button id="submit" disabled>Subscribe</button>')


async def login(request: Request) -> Response:
    return page(
        "Log in",
        '<input id="user" autocomplete="username"><input id="password" type="password">'
        '<button id="login">Log in</button><p id="who"></p>',
        "document.getElementById('login').addEventListener('click', async () => {"
        "  const r = await fetch('/api/login?api_key=k-live-123456', {method: 'POST', headers: {"
        "    'authorization': 'Bearer tok-' + document.getElementById('password').value,"
        "    'x-api-key': 'k-live-123456'}});"
        "  document.getElementById('who').textContent = (await r.json()).user;"
        "});",
    )


async def api_login(request: Request) -> Response:
    resp = JSONResponse({"user": "ada"})
    resp.set_cookie("session", "s3cr3t-session-value", httponly=True)
    return resp


async def not_found(request: Request) -> Response:
    return Response("not found", status_code=404, media_type="text/plain")


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/", home),
            Route("/healthz", healthz),
            Route("/event/{id}", event),
            Route("/api/events/{id}", api_event),
            Route("/checkout", checkout),
            Route("/api/checkout", api_checkout, methods=["POST"]),
            Route("/crash", crash),
            Route("/flaky", flaky),
            Route("/api/flaky", api_flaky),
            Route("/slow", slow),
            Route("/api/slow", api_slow),
            Route("/overlay", overlay),
            Route("/disabled", disabled),
            Route("/login", login),
            Route("/api/login", api_login, methods=["POST"]),
            Route("/static/{name}", not_found),
        ]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Ticket shop test app")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
