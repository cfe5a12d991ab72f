"""The read-only trace viewer (`GET /r/{short_id}` and its compact `/embed`): pure HTML rendering.

One self-contained document: inline CSS, no script, no external asset (the API sends a CSP of
`default-src 'none'`). Every piece of trace text goes through `html.escape` (`_e`), and it was masked
before (`facts.py`). Artifact links are the signed URLs the caller passes in.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from molar_mcp.reports.facts import EventLine, RequestFact, StepFact, TraceFacts, human_size, seconds

_CSS = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:#1f2328;background:#f6f8fa}
main{max-width:1100px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:6px 0 4px}
h2{font-size:16px;margin:0 0 10px}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:14px 16px;margin:14px 0}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12.5px}
.meta{color:#57606a;margin:2px 0}
.meta span+span:before{content:" · ";color:#8c959f}
.badge{display:inline-block;padding:2px 9px;border-radius:12px;font-weight:600;font-size:12px;
letter-spacing:.04em;color:#fff;background:#6e7781}
.badge.failed,.badge.error{background:#cf222e}
.badge.passed{background:#1a7f37}
.badge.running,.badge.queued{background:#9a6700}
.failure{border-color:#ff8182;background:#fff5f5}
.failure h2{color:#a40e26}
.assert{display:grid;grid-template-columns:1fr 1fr;gap:10px;margin:10px 0}
.assert div{border-radius:6px;padding:8px 10px;word-break:break-word}
.expected{background:#dafbe1;border:1px solid #4ac26b}
.actual{background:#ffebe9;border:1px solid #ff8182}
.label{display:block;font-size:11px;text-transform:uppercase;letter-spacing:.06em;color:#57606a}
ol.timeline{list-style:none;margin:0;padding:0}
.timeline li{display:grid;grid-template-columns:28px 44px 1fr 90px 90px 70px;align-items:baseline;
padding:5px 6px;border-bottom:1px solid #eaeef2}
.timeline li.failed{background:#ffebe9;font-weight:600}
.timeline li.causal{background:#ffebe9;box-shadow:inset 4px 0 #cf222e;font-weight:600}
.causal .mark{color:#cf222e}
.tag{display:inline-block;margin-left:8px;padding:0 7px;border-radius:10px;font-size:11px;font-weight:600;
color:#fff;background:#cf222e;vertical-align:1px}
ol.findings{margin:0;padding-left:22px}
.findings li{margin:6px 0}
.findings li.top{font-weight:600}
.conf{color:#57606a;font-weight:400}
details.body{margin:4px 0}
details.body summary{cursor:pointer;color:#0969da}
details.body pre{margin:6px 0;padding:8px 10px;background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;
white-space:pre-wrap;word-break:break-word;max-height:none;font-size:12px}
.causal-request{border-color:#ff8182}
.mark{font-weight:700;text-align:center}
.ok .mark{color:#1a7f37}.failed .mark{color:#cf222e}.unknown .mark{color:#8c959f}
.num,.time,.count{color:#57606a;text-align:right}
.num{padding-right:14px}
table{width:100%;border-collapse:collapse}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{font-size:12px;color:#57606a;font-weight:600}
td.n{text-align:right;color:#57606a;white-space:nowrap}
td.url{word-break:break-all}
tr.failed td{background:#ffebe9}
tr.failed td.status{color:#cf222e;font-weight:700}
.level-error{color:#cf222e;font-weight:700}.level-warning{color:#9a6700;font-weight:600}
.timeline li.detail{display:block;padding:4px 0 10px;background:#fff}
.events{margin:0 0 0 72px;width:calc(100% - 72px)}
ul.artifacts{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;align-items:flex-start;gap:12px}
.artifacts li{border:1px solid #d0d7de;border-radius:6px;padding:8px 10px;min-width:200px}
.artifacts img{display:block;max-width:320px;max-height:200px;margin-top:6px;border:1px solid #d0d7de}
.muted{color:#57606a}
footer{color:#57606a;font-size:12px;margin-top:18px}
a{color:#0969da}
body.embed main{padding:10px 12px}
body.embed section{margin:8px 0;padding:10px 12px}
body.embed h1{font-size:17px}
"""


@dataclass(frozen=True)
class ShareInfo:
    """How the page was reached: shown in the footer, and the link from the embed to the full page."""

    visibility: str
    expires_at: datetime
    full_url: str


OPEN_BODY_CHARS = 2000
VIEWER_CSS = _CSS  # the MCP App viewer (mcp/viewer_app.py) renders the same classes with the same look


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _page(title: str, body: str, *, body_class: str = "") -> str:
    cls = f' class="{_e(body_class)}"' if body_class else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body{cls}><main>{body}</main></body></html>\n"
    )


def _mark(ok: bool | None) -> tuple[str, str]:
    if ok is True:
        return "ok", "✓"
    if ok is False:
        return "failed", "✗"
    return "unknown", "·"


def _header(f: TraceFacts) -> str:
    meta = [f'<span class="mono">{_e(f.short_id)}</span>']
    if f.scenario:
        meta.append(f'<span class="mono">{_e(f.scenario)}</span>')
    meta.append(f"<span>{_e(f.created_at)}</span>")
    if f.duration_ms is not None:
        meta.append(f"<span>{_e(seconds(f.duration_ms))}</span>")
    if f.code_sha:
        meta.append(f'<span>commit <span class="mono">{_e(f.code_sha)}</span></span>')
    if f.pr_number is not None:
        meta.append(f"<span>PR #{_e(f.pr_number)}</span>")
    if f.source:
        meta.append(f"<span>{_e(f.source)}</span>")
    sig = ""
    if f.failure_signature:
        sig = f'<p class="meta">signature <code>{_e(f.failure_signature)}</code></p>'
    return (
        f'<header><span class="badge {_e(f.status)}" id="status">{_e(f.status.upper())}</span>'
        f"<h1>{_e(f.title)}</h1>"
        f'<p class="meta">{"".join(meta)}</p>{sig}</header>'
    )


def _failure(f: TraceFacts, *, compact: bool) -> str:
    step = f.failing_step
    if step is None:
        if f.status in ("failed", "error"):
            return '<section class="failure" id="failure"><h2>Failed</h2><p>No failing step was recorded.</p></section>'
        return ""
    parts = [f'<section class="failure" id="failure"><h2>Failing step {step.step}: {_e(step.title)}</h2>']
    a = f.failed_assertion
    if a is not None:
        parts.append(f'<p id="failed-assertion"><strong>Assertion failed</strong> <code>{_e(a.message)}</code></p>')
        if a.expected is not None or a.actual is not None:
            parts.append(
                '<div class="assert">'
                f'<div class="expected"><span class="label">expected</span><code>{_e(a.expected or "")}</code></div>'
                f'<div class="actual"><span class="label">actual</span><code>{_e(a.actual or "")}</code></div>'
                "</div>"
            )
        extra = [f"{name} <code>{_e(v)}</code>" for name, v in (("matcher", a.matcher), ("selector", a.selector)) if v]
        if extra and not compact:
            parts.append(f'<p class="muted">{" · ".join(extra)}</p>')
    if f.errors and not compact:
        items = "".join(f"<li>seq {e.seq}: <code>{_e(e.text)}</code></li>" for e in f.errors)
        parts.append(f"<p><strong>Errors</strong></p><ul>{items}</ul>")
    parts.append("</section>")
    return "".join(parts)


def _body(text: str | None, label: str, *, open_short: bool = False) -> str:
    """An expandable body: closed, its size in the summary; opened, the body whole (`open_short`: a
    body up to `OPEN_BODY_CHARS` starts open)."""
    if not text:
        return ""
    opened = " open" if open_short and len(text) <= OPEN_BODY_CHARS else ""
    return (
        f'<details class="body"{opened}><summary>{_e(label)} · {len(text):,} chars</summary>'
        f"<pre>{_e(text)}</pre></details>"
    )


def _findings(f: TraceFacts, *, compact: bool) -> str:
    """The detectors' findings, best first; the first one's step is the cause the steps mark."""
    if not f.findings:
        if f.status in ("failed", "error"):
            return '<section id="findings"><h2>Findings</h2><p class="muted">No detector found a cause.</p></section>'
        return ""
    items = []
    for i, x in enumerate(f.findings[:1] if compact else f.findings):
        where = f" · step {x.critical_step}" if x.critical_step is not None else ""
        cited = f" · events {', '.join(str(n) for n in x.evidence_seqs)}" if x.evidence_seqs and not compact else ""
        top = ' class="top"' if i == 0 else ""
        items.append(
            f'<li{top} data-label="{_e(x.label)}"><code>{_e(x.label)}</code> '
            f"{_e(x.summary)} "
            f'<span class="conf">({x.confidence:.0%}{_e(where)}{_e(cited)})</span></li>'
        )
    return f'<section id="findings"><h2>Findings</h2><ol class="findings">{"".join(items)}</ol></section>'


def _causal_request(r: RequestFact | None) -> str:
    if r is None:
        return ""
    status = str(r.status) if r.status is not None else (r.note or "no response")
    step = f"step {r.step} · " if r.step is not None else ""
    return (
        '<section class="causal-request" id="causal-request"><h2>The request that caused it</h2>'
        f'<p class="mono">{_e(step)}seq {r.seq} · {_e(r.method)} {_e(r.url)} → <strong>{_e(status)}</strong></p>'
        f"{_body(r.request_body, 'request body', open_short=True)}"
        f"{_body(r.response_body, 'response body', open_short=True)}</section>"
    )


def _events_table(lines: list[EventLine], left_out: int, table_id: str = "failing-step-events") -> str:
    rows = []
    for ev in lines:
        cls, mark = _mark(ev.ok)
        time = "" if ev.offset_ms is None else "+" + seconds(ev.offset_ms)
        row_cls = ' class="failed"' if ev.ok is False else ""
        rows.append(
            f'<tr{row_cls}><td class="n">{ev.seq}</td><td class="n">{_e(time)}</td>'
            f'<td class="{cls}"><span class="mark">{mark}</span></td>'
            f'<td class="mono">{_e(ev.kind)}</td><td class="mono">{_e(ev.text)}{_body(ev.body, "body")}</td></tr>'
        )
    more = f'<p class="muted">{left_out} more events of this step are left out.</p>' if left_out else ""
    return (
        f'<table class="events" id="{table_id}"><thead><tr><th>seq</th><th>time</th><th></th>'
        f"<th>kind</th><th>detail</th></tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"
    )


def _step_item(s: StepFact, causal_step: int | None = None) -> str:
    cls, mark = _mark(s.ok)
    tag = ""
    if causal_step is not None and s.depth == 0 and s.step == causal_step:
        # The step the top finding names as the cause: marked whatever its own result (a 404 that a
        # step let through is what made a later step fail).
        cls, tag = ("failed causal" if s.ok is False else "causal"), '<span class="tag">cause</span>'
        mark = "✗" if s.ok is False else "!"
    start = "" if s.offset_ms is None else "+" + seconds(s.offset_ms)
    nested = f' data-depth="{s.depth}" style="margin-left:{1.2 * s.depth:.1f}em"' if s.depth else ""
    return (
        f'<li class="{cls}" data-step="{_e(s.path or str(s.step))}"{nested}><span class="mark">{mark}</span>'
        f'<span class="num">{_e(s.path or str(s.step))}</span><span>{_e(s.title)}{tag}</span>'
        f'<span class="time">{_e(start)}</span><span class="time">{_e(seconds(s.duration_ms))}</span>'
        f'<span class="count">{s.event_count} ev</span></li>'
    )


def _timeline(f: TraceFacts, *, compact: bool) -> str:
    if not f.steps:
        return '<section id="steps"><h2>Steps</h2><p class="muted">No steps were recorded.</p></section>'
    items = []
    for s in f.steps:
        items.append(_step_item(s, f.causal_step))
        if not compact and s.depth == 0 and s.step == f.causal_step and f.causal_step_events:
            items.append(f'<li class="detail">{_events_table(f.causal_step_events, 0, "causal-step-events")}</li>')
        if s.failing and not compact and f.failing_step_events:
            items.append(
                f'<li class="detail">{_events_table(f.failing_step_events, f.failing_step_events_left_out)}</li>'
            )
    failed = sum(1 for s in f.steps if s.ok is False)
    return (
        f'<section id="steps"><h2>Steps <span class="muted">({len(f.steps)}, {failed} failed)</span></h2>'
        f'<ol class="timeline">{"".join(items)}</ol></section>'
    )


def _network(f: TraceFacts) -> str:
    total = len(f.requests) + f.requests_left_out
    failed = len(f.failed_requests)
    rows = []
    for r in f.requests:
        status = str(r.status) if r.status is not None else (r.note or "—")
        duration = "" if r.duration_ms is None else f"{r.duration_ms} ms"
        rows.append(
            f'<tr class="{"failed" if r.failed else "ok"}"><td class="n">{r.seq}</td>'
            f'<td class="n">{"" if r.step is None else r.step}</td><td class="mono">{_e(r.method)}</td>'
            f'<td class="mono url">{_e(r.url)}{_body(r.request_body, "request body")}'
            f'{_body(r.response_body, "response body")}</td><td class="status">{_e(status)}</td>'
            f'<td class="n">{_e(duration)}</td></tr>'
        )
    more = f'<p class="muted">{f.requests_left_out} more requests are left out.</p>' if f.requests_left_out else ""
    body = (
        "<table><thead><tr><th>seq</th><th>step</th><th>method</th><th>URL</th><th>status</th>"
        f"<th>time</th></tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"
        if rows
        else '<p class="muted">No network requests were recorded.</p>'
    )
    return (
        f'<section id="network"><h2>Network <span class="muted">({total} requests, {failed} failed)</span></h2>'
        f"{body}</section>"
    )


def _console(f: TraceFacts) -> str:
    if not f.console:
        body = '<p class="muted">No console errors or warnings.</p>'
    else:
        rows = [
            f'<tr><td class="n">{c.seq}</td><td class="n">{"" if c.step is None else c.step}</td>'
            f'<td class="level-{_e(c.level)}">{_e(c.level)}</td><td class="mono">{_e(c.text)}</td></tr>'
            for c in f.console
        ]
        more = f'<p class="muted">{f.console_left_out} more lines are left out.</p>' if f.console_left_out else ""
        body = (
            "<table><thead><tr><th>seq</th><th>step</th><th>level</th><th>message</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{more}"
        )
    return f'<section id="console"><h2>Console errors and warnings</h2>{body}</section>'


def _artifacts(f: TraceFacts, urls: Mapping[str, str]) -> str:
    if not f.artifacts:
        return '<section id="artifacts"><h2>Artifacts</h2><p class="muted">None.</p></section>'
    items = []
    for a in f.artifacts:
        url = urls.get(a.sha256)
        name = _e(a.name or a.kind)
        link = f'<a href="{_e(url)}" rel="noopener noreferrer">{name}</a>' if url else name
        preview = ""
        if url and a.content_type.startswith("image/"):
            preview = f'<img src="{_e(url)}" alt="{name}" loading="lazy">'
        items.append(
            f'<li><strong>{link}</strong><br><span class="muted">{_e(a.kind)} · {_e(a.content_type)} · '
            f"{_e(human_size(a.size))}</span>{preview}</li>"
        )
    return f'<section id="artifacts"><h2>Artifacts</h2><ul class="artifacts">{"".join(items)}</ul></section>'


def _footer(share: ShareInfo, *, embed: bool) -> str:
    expires = share.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    link = ""
    if embed:
        link = f' · <a href="{_e(share.full_url)}" target="_blank" rel="noopener noreferrer">open the full trace</a>'
    return (
        f"<footer>Read-only view shared {_e(share.visibility)}, until {_e(expires)}. "
        f"Secrets in the trace are masked.{link}</footer>"
    )


def render_viewer(f: TraceFacts, share: ShareInfo, artifact_urls: Mapping[str, str]) -> str:
    """The full viewer: header, the failure, the findings and the request that caused it, the steps
    timeline (the causal step marked; its events and the failing step's under them), network (bodies
    expandable), console, artifacts (linked by `artifact_urls`, sha256 → signed URL)."""
    body = (
        _header(f)
        + _failure(f, compact=False)
        + _findings(f, compact=False)
        + _causal_request(f.causal_request)
        + _timeline(f, compact=False)
        + _network(f)
        + _console(f)
        + _artifacts(f, artifact_urls)
        + _footer(share, embed=False)
    )
    return _page(f"{f.title} · {f.status} · Molar trace {f.short_id}", body)


def render_embed(f: TraceFacts, share: ShareInfo) -> str:
    """The compact viewer for an iframe: header, the failure, the steps, counts of what went wrong."""
    counts = (
        f'<p class="muted" id="counts">{len(f.failed_requests)} failed requests · '
        f"{len(f.console_errors)} console errors · {f.event_count} events</p>"
    )
    body = (
        _header(f)
        + _failure(f, compact=True)
        + _findings(f, compact=True)
        + _timeline(f, compact=True)
        + counts
        + _footer(share, embed=True)
    )
    return _page(f"{f.title} · Molar trace {f.short_id}", body, body_class="embed")


def render_message(status: int, title: str, message: str) -> str:
    """A page for a link that shows no trace (401, 403, 404, 410…)."""
    body = f'<section id="message"><h1>{_e(title)}</h1><p>{_e(message)}</p><p class="muted">HTTP {status}</p></section>'
    return _page(f"{title} · Molar", body)
