"""Task board: a second small web app for recording real runs (tests/corpus), with its own pages,
endpoints and failure modes — none of the detectors were written against it.

| path | behaviour |
|---|---|
| `/` | the board: `#tasks` from `/api/tasks`; the avatar `/api/me/avatar` answers 404, initials instead (harmless) |
| `/task/{id}` | `/api/tasks/{id}`; an unknown id answers 404, the page logs an error, shows "Task not found" |
| `/task/{id}` `#close` | POSTs `/api/tasks/{id}/close`; `locked` answers 409, the page shows "Could not close" |
| `/new` | `#title` + `#create` POST `/api/tasks`; a title with "boom" answers 500 |
| `/archive` | a modal dialog (`.modal`) covers the whole page, so `#archive` is never clickable |
| `/settings` | `#save` is disabled; `#advanced` is in the page but hidden (`display: none`) |
| `/report?ms=N` | `#total` is filled from `/api/report`, which answers after N ms |
| `/slowpage?ms=N` | the page itself answers after N ms |
| `/sync` | `#sync` fetches a port nothing listens on (connection refused); the page shows "Offline" |
| `/chart` | `#draw` throws an uncaught TypeError |
| `/retry?key=K` | `/api/flaky` answers 503 the first time for a key; the page retries once and shows "Synced" |
| `/stats` | `#count` says how many tasks are open (3) |

`python -m tests.apps.board --port N` runs it alone; `tests/apps/server.py` serves it in a thread.
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

TASKS = {
    "t1": {"title": "Write the release notes", "state": "open"},
    "t2": {"title": "Fix the login redirect", "state": "open"},
    "t3": {"title": "Review the invoice export", "state": "open"},
    "locked": {"title": "Quarterly audit", "state": "open"},
}
REFUSED = "http://127.0.0.1:47/sync"  # nothing listens there: the connection is refused

_tries: Counter[str] = Counter()


def page(title: str, body: str, script: str = "") -> HTMLResponse:
    return HTMLResponse(
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} · Board</title>
<style>
body {{ font-family: sans-serif; margin: 1rem; }}
.modal {{ position: fixed; inset: 0; background: rgba(20,20,40,.7); color: #fff; padding: 3rem; }}
#advanced {{ display: none; }}
</style></head>
<body><header><a href="/">Board</a></header><h1>{html.escape(title)}</h1>
{body}
<script>{script}</script>
</body></html>"""
    )


async def board(request: Request) -> Response:
    return page(
        "Board",
        '<span id="avatar"></span><ul id="tasks"></ul>',
        "fetch('/api/me/avatar').then(r => { if (!r.ok) document.getElementById('avatar').textContent = 'AL'; });"
        "fetch('/api/tasks').then(r => r.json()).then(items => { document.getElementById('tasks').innerHTML ="
        " items.map(t => `<li><a href=\"/task/${t.id}\">${t.title}</a></li>`).join(''); });",
    )


async def task(request: Request) -> Response:
    key = html.escape(request.path_params["id"])
    return page(
        "Task",
        '<h2 id="title">…</h2><p id="state"></p><button id="close">Close task</button>',
        f"const id = '{key}';"
        "fetch('/api/tasks/' + id).then(async r => { if (!r.ok) {"
        "  console.error('could not load task ' + id + ': HTTP ' + r.status);"
        "  document.getElementById('title').textContent = 'Task not found'; return; }"
        "  const t = await r.json(); document.getElementById('title').textContent = t.title;"
        "  document.getElementById('state').textContent = t.state; });"
        "document.getElementById('close').addEventListener('click', async () => {"
        "  const r = await fetch('/api/tasks/' + id + '/close', {method: 'POST'});"
        "  document.getElementById('state').textContent = r.ok ? 'closed' : 'Could not close'; });",
    )


async def api_tasks(request: Request) -> Response:
    return JSONResponse([{"id": k, **v} for k, v in TASKS.items() if k != "locked"])


async def api_task(request: Request) -> Response:
    key = request.path_params["id"]
    if key not in TASKS:
        return JSONResponse({"error": "not_found", "message": f"no task {key}"}, status_code=404)
    return JSONResponse({"id": key, **TASKS[key]})


async def api_close(request: Request) -> Response:
    key = request.path_params["id"]
    if key == "locked":
        return JSONResponse({"error": "conflict", "message": "the task is locked by an audit"}, status_code=409)
    if key not in TASKS:
        return JSONResponse({"error": "not_found", "message": f"no task {key}"}, status_code=404)
    return JSONResponse({"id": key, "state": "closed"})


async def new(request: Request) -> Response:
    return page(
        "New task",
        '<input id="title" placeholder="Title"><button id="create">Create</button><p id="msg"></p>',
        "document.getElementById('create').addEventListener('click', async () => {"
        "  const r = await fetch('/api/tasks', {method: 'POST', headers: {'content-type': 'application/json'},"
        "    body: JSON.stringify({title: document.getElementById('title').value})});"
        "  document.getElementById('msg').textContent = r.ok ? 'Created' : 'Something went wrong'; });",
    )


async def api_create(request: Request) -> Response:
    body = await request.json()
    if "boom" in str(body.get("title", "")):
        return JSONResponse({"error": "internal", "message": "task index unavailable"}, status_code=500)
    return JSONResponse({"id": "t9", "title": body.get("title"), "state": "open"}, status_code=201)


async def archive(request: Request) -> Response:
    return page(
        "Archive",
        '<button id="archive">Archive done tasks</button>'
        '<div class="modal" id="whats-new">What is new this week. <button id="dismiss">Got it</button></div>',
        "document.getElementById('dismiss').addEventListener('click', () =>"
        " document.getElementById('whats-new').remove());",
    )


async def settings(request: Request) -> Response:
    return page(
        "Settings",
        '<label><input id="agree" type="checkbox"> I understand</label>'
        '<button id="save" disabled>Save</button><button id="advanced">Advanced</button>',
    )


async def report(request: Request) -> Response:
    ms = min(int(request.query_params.get("ms", "300")), 10_000)
    return page(
        "Report",
        '<p>Open tasks: <b id="total">…</b></p>',
        f"fetch('/api/report?ms={ms}').then(r => r.json()).then(d => "
        "{ document.getElementById('total').textContent = String(d.open); });",
    )


async def api_report(request: Request) -> Response:
    ms = min(int(request.query_params.get("ms", "300")), 10_000)
    await asyncio.sleep(ms / 1000)
    return JSONResponse({"open": 3})


async def slowpage(request: Request) -> Response:
    ms = min(int(request.query_params.get("ms", "300")), 10_000)
    await asyncio.sleep(ms / 1000)
    return page("Slow page", '<p id="ready">Ready</p>')


async def sync(request: Request) -> Response:
    return page(
        "Sync",
        '<button id="sync">Sync now</button><p id="sync-state">Not synced</p>',
        "document.getElementById('sync').addEventListener('click', () => {"
        f"  fetch('{REFUSED}', {{method: 'POST'}})"
        ".then(() => { document.getElementById('sync-state').textContent = 'Synced'; })"
        "  .catch(() => { document.getElementById('sync-state').textContent = 'Offline'; }); });",
    )


async def chart(request: Request) -> Response:
    return page(
        "Chart",
        '<button id="draw">Draw burndown</button><svg id="chart"></svg><p id="points"></p>',
        "document.getElementById('draw').addEventListener('click', () => {"
        "  const series = undefined; document.getElementById('points').textContent = series.points.join(','); });",
    )


async def retry(request: Request) -> Response:
    key = html.escape(request.query_params.get("key", "default"))
    return page(
        "Sync status",
        '<p id="status">…</p>',
        f"const load = () => fetch('/api/flaky?key={key}');"
        "load().then(r => r.ok ? r : new Promise(ok => setTimeout(ok, 200)).then(load))"
        ".then(r => { document.getElementById('status').textContent = r.ok ? 'Synced' : 'Failed'; });",
    )


async def api_flaky(request: Request) -> Response:
    key = request.query_params.get("key", "default")
    _tries[key] += 1
    if _tries[key] == 1:
        return JSONResponse({"error": "unavailable", "message": "replica warming up"}, status_code=503)
    return JSONResponse({"ok": True})


async def stats(request: Request) -> Response:
    return page(
        "Stats",
        '<p id="count">…</p>',
        "fetch('/api/tasks').then(r => r.json()).then(items => {"
        " document.getElementById('count').textContent = items.length + ' open tasks'; });",
    )


async def avatar(request: Request) -> Response:
    return JSONResponse({"error": "not_found", "message": "no avatar uploaded"}, status_code=404)


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/", board),
            Route("/healthz", healthz),
            Route("/task/{id}", task),
            Route("/api/tasks", api_tasks),
            Route("/api/tasks", api_create, methods=["POST"]),
            Route("/api/tasks/{id}", api_task),
            Route("/api/tasks/{id}/close", api_close, methods=["POST"]),
            Route("/api/me/avatar", avatar),
            Route("/new", new),
            Route("/archive", archive),
            Route("/settings", settings),
            Route("/report", report),
            Route("/api/report", api_report),
            Route("/slowpage", slowpage),
            Route("/sync", sync),
            Route("/chart", chart),
            Route("/retry", retry),
            Route("/api/flaky", api_flaky),
            Route("/stats", stats),
        ]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Task board test app")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
