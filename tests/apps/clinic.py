"""Clinic bookings: a third small web app for recording real runs (tests/corpus) — doctors, slots,
bookings and a patient profile, each with its own failure modes; the detectors were not written
against it.

| path | behaviour |
|---|---|
| `/` | doctors from `/api/doctors`; the promotion banner `/api/banner` answers 404 and is left out (harmless) |
| `/doctor/{id}` | slots from `/api/doctors/{id}/slots`; `#book` stays hidden until a slot is chosen |
| `/book?slot=S` | `#confirm` POSTs `/api/bookings`; slot `past` answers 422, slot `full` answers 503 |
| `/patient/{id}` | `/api/patients/{id}`; an unknown id answers 404, the page logs it and shows "Unknown patient" |
| `/results?ms=N` | `#result` is filled from `/api/results`, which answers after N ms |
| `/waiting?ms=N` | the page itself answers after N ms |
| `/loading` | a spinner (`#spinner`) covers the page for 30 s, so `#start` is never clickable |
| `/consent` | `#next` is disabled until `#agree` is ticked |
| `/reminders` | `#send` posts to a port nothing listens on (connection refused); shows "Not sent" |
| `/invoice` | `#print` throws an uncaught TypeError |
| `/queue?key=K` | `/api/queue` answers 502 the first time for a key; the page retries and shows "3 ahead of you" |

`python -m tests.apps.clinic --port N` runs it alone; `tests/apps/server.py` serves it in a thread.
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

DOCTORS = {
    "okafor": {"name": "Dr. Okafor", "speciality": "Cardiology", "slots": ["09:00", "09:30", "11:00"]},
    "lind": {"name": "Dr. Lind", "speciality": "Dermatology", "slots": []},
}
PATIENTS = {"p-100": {"name": "Ada Lovelace", "insurer": "Northwind"}}
REFUSED = "http://127.0.0.1:47/reminders"  # nothing listens there: the connection is refused

_tries: Counter[str] = Counter()


def page(title: str, body: str, script: str = "") -> HTMLResponse:
    return HTMLResponse(
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} · Clinic</title>
<style>
body {{ font-family: serif; margin: 1.5rem; }}
#spinner {{ position: fixed; top: 0; left: 0; width: 100%; height: 100%; background: #fffc; }}
#book {{ visibility: hidden; }}
#book.ready {{ visibility: visible; }}
</style></head>
<body><nav><a href="/">Doctors</a></nav><h1>{html.escape(title)}</h1>
{body}
<script>{script}</script>
</body></html>"""
    )


async def home(request: Request) -> Response:
    return page(
        "Doctors",
        '<aside id="banner"></aside><ol id="doctors"></ol>',
        "fetch('/api/banner').then(r => r.ok ? r.text() : '')"
        ".then(t => { document.getElementById('banner').textContent = t; });"
        "fetch('/api/doctors').then(r => r.json()).then(ds => { document.getElementById('doctors').innerHTML ="
        " ds.map(d => `<li><a href=\"/doctor/${d.id}\">${d.name}</a> (${d.speciality})</li>`).join(''); });",
    )


async def doctor(request: Request) -> Response:
    key = html.escape(request.path_params["id"])
    return page(
        "Doctor",
        '<h2 id="name">…</h2><div id="slots"></div><button id="book">Book this slot</button>',
        f"fetch('/api/doctors/{key}/slots').then(r => r.json()).then(d => {{"
        " document.getElementById('name').textContent = d.name;"
        " document.getElementById('slots').innerHTML ="
        " d.slots.map(s => `<button class=\"slot\">${s}</button>`).join('');"
        " document.querySelectorAll('.slot').forEach(b => b.addEventListener('click', () =>"
        "   document.getElementById('book').classList.add('ready'))); });",
    )


async def api_doctors(request: Request) -> Response:
    return JSONResponse([{"id": k, "name": v["name"], "speciality": v["speciality"]} for k, v in DOCTORS.items()])


async def api_slots(request: Request) -> Response:
    key = request.path_params["id"]
    if key not in DOCTORS:
        return JSONResponse({"error": "not_found", "message": f"no doctor {key}"}, status_code=404)
    return JSONResponse({"name": DOCTORS[key]["name"], "slots": DOCTORS[key]["slots"]})


async def book(request: Request) -> Response:
    slot = html.escape(request.query_params.get("slot", "09:00"))
    return page(
        "Confirm booking",
        f'<p>Slot <b id="slot">{slot}</b></p><button id="confirm">Confirm</button><p id="outcome"></p>',
        "document.getElementById('confirm').addEventListener('click', async () => {"
        "  const r = await fetch('/api/bookings', {method: 'POST', headers: {'content-type': 'application/json'},"
        f"    body: JSON.stringify({{slot: '{slot}'}})}});"
        "  document.getElementById('outcome').textContent = r.ok ? 'Booked' : 'Booking failed'; });",
    )


async def api_bookings(request: Request) -> Response:
    body = await request.json()
    slot = str(body.get("slot"))
    if slot == "past":
        return JSONResponse({"error": "validation_error", "message": "the slot is in the past"}, status_code=422)
    if slot == "full":
        return JSONResponse({"error": "unavailable", "message": "calendar service down"}, status_code=503)
    return JSONResponse({"id": "b-1", "slot": slot}, status_code=201)


async def patient(request: Request) -> Response:
    key = html.escape(request.path_params["id"])
    return page(
        "Patient",
        '<h2 id="patient-name">…</h2><p id="insurer"></p>',
        f"fetch('/api/patients/{key}').then(async r => {{ if (!r.ok) {{"
        f"  console.error('patient {key} could not be loaded: ' + r.status);"
        "  document.getElementById('patient-name').textContent = 'Unknown patient'; return; }"
        "  const p = await r.json(); document.getElementById('patient-name').textContent = p.name;"
        "  document.getElementById('insurer').textContent = p.insurer; });",
    )


async def api_patient(request: Request) -> Response:
    key = request.path_params["id"]
    if key not in PATIENTS:
        return JSONResponse({"error": "not_found", "message": f"no patient {key}"}, status_code=404)
    return JSONResponse({"id": key, **PATIENTS[key]})


async def results(request: Request) -> Response:
    ms = min(int(request.query_params.get("ms", "300")), 10_000)
    return page(
        "Lab results",
        '<p id="result">Waiting for the lab…</p>',
        f"fetch('/api/results?ms={ms}').then(r => r.json()).then(d => "
        "{ document.getElementById('result').textContent = d.summary; });",
    )


async def api_results(request: Request) -> Response:
    ms = min(int(request.query_params.get("ms", "300")), 10_000)
    await asyncio.sleep(ms / 1000)
    return JSONResponse({"summary": "All values normal"})


async def waiting(request: Request) -> Response:
    ms = min(int(request.query_params.get("ms", "300")), 10_000)
    await asyncio.sleep(ms / 1000)
    return page("Waiting room", '<p id="queue">You are next</p>')


async def loading(request: Request) -> Response:
    return page(
        "Check-in",
        '<button id="start">Start check-in</button><div id="spinner">Loading…</div>',
        "setTimeout(() => document.getElementById('spinner').remove(), 30000);",
    )


async def consent(request: Request) -> Response:
    return page(
        "Consent",
        '<label><input id="agree" type="checkbox"> I consent</label><button id="next" disabled>Next</button>',
        "document.getElementById('agree').addEventListener('change', e =>"
        " { document.getElementById('next').disabled = !e.target.checked; });",
    )


async def reminders(request: Request) -> Response:
    return page(
        "Reminders",
        '<button id="send">Send reminder</button><p id="sent"></p>',
        "document.getElementById('send').addEventListener('click', () => {"
        f"  fetch('{REFUSED}', {{method: 'POST'}})"
        ".then(() => { document.getElementById('sent').textContent = 'Sent'; })"
        "  .catch(() => { document.getElementById('sent').textContent = 'Not sent'; }); });",
    )


async def invoice(request: Request) -> Response:
    return page(
        "Invoice",
        '<button id="print">Print invoice</button><pre id="lines"></pre>',
        "document.getElementById('print').addEventListener('click', () => {"
        "  const inv = JSON.parse('{}');"
        "  document.getElementById('lines').textContent = inv.items.map(i => i.name); });",
    )


async def queue(request: Request) -> Response:
    key = html.escape(request.query_params.get("key", "default"))
    return page(
        "Queue",
        '<p id="ahead">…</p>',
        f"const get = () => fetch('/api/queue?key={key}');"
        "get().then(r => r.ok ? r : new Promise(ok => setTimeout(ok, 150)).then(get)).then(r => r.json())"
        ".then(d => { document.getElementById('ahead').textContent = d.ahead + ' ahead of you'; });",
    )


async def api_queue(request: Request) -> Response:
    key = request.query_params.get("key", "default")
    _tries[key] += 1
    if _tries[key] == 1:
        return JSONResponse({"error": "bad_gateway", "message": "queue service restarting"}, status_code=502)
    return JSONResponse({"ahead": 3})


async def banner(request: Request) -> Response:
    return JSONResponse({"error": "not_found", "message": "no promotion running"}, status_code=404)


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/", home),
            Route("/healthz", healthz),
            Route("/doctor/{id}", doctor),
            Route("/api/doctors", api_doctors),
            Route("/api/doctors/{id}/slots", api_slots),
            Route("/api/banner", banner),
            Route("/book", book),
            Route("/api/bookings", api_bookings, methods=["POST"]),
            Route("/patient/{id}", patient),
            Route("/api/patients/{id}", api_patient),
            Route("/results", results),
            Route("/api/results", api_results),
            Route("/waiting", waiting),
            Route("/loading", loading),
            Route("/consent", consent),
            Route("/reminders", reminders),
            Route("/invoice", invoice),
            Route("/queue", queue),
            Route("/api/queue", api_queue),
        ]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Clinic bookings test app")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
