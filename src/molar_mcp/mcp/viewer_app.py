"""The trace viewer as an MCP App (extension `io.modelcontextprotocol/ui`, spec 2026-01-26).

`get_trace` and `debug_run` carry `_meta.ui.resourceUri` = `VIEWER_URI`, a `ui://` resource served as
`text/html;profile=mcp-app`. A host that renders apps loads it in a sandboxed iframe; the page speaks
JSON-RPC over `postMessage`: it sends `ui/initialize`, then `ui/notifications/initialized`, and
renders the `ui/notifications/tool-result` the host sends (a `CallToolResult`). Hosts that do not
render apps ignore all of it: the tool result keeps its text and structured content.

What the page renders: when the client declared the extension, the result's `_meta["molar/viewer"]`
carries the share viewer's facts (`GET /v1/traces/{id}/view`: steps tree, the failing step, expected
vs actual, the detectors' findings, the causal request with its bodies) and the failure screenshot as
a `data:` URI; otherwise the page draws what the structured content holds (steps, failure, findings).

Self-contained: inline CSS (the share page's) and script, no external fetch; the document's own CSP
(`default-src 'none'`, inline script and style, `data:` images, `connect-src 'none'`) holds even where
a host enforces none. Trace text only ever enters the DOM as text nodes.
"""

from __future__ import annotations

import base64
from importlib.resources import files
from typing import Any

from mcp.server.apps import Apps, ResourceCsp, client_supports_apps
from mcp.server.mcpserver import Context

from molar_mcp import __version__
from molar_mcp.client import ApiClientError, TraceClient
from molar_mcp.reports.facts import TraceFacts, human_size
from molar_mcp.reports.html import VIEWER_CSS

VIEWER_URI = "ui://molar/viewer"
UI_META = {"ui": {"resourceUri": VIEWER_URI}}
RESULT_META_KEY = "molar/viewer"
APPS_PROTOCOL_VERSION = "2026-01-26"
# The failure screenshot travels inside the tool result, base64: past this size it is a link only.
SCREENSHOT_MAX_BYTES = 1_500_000

CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
    "connect-src 'none'; frame-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'"
)

_APP_CSS = """
#status-line{color:#57606a;margin:10px 0}
.shot img{display:block;max-width:100%;border:1px solid #d0d7de;border-radius:6px;margin-top:6px}
body{background:#fff}
main{padding:12px 14px 20px}
"""


def viewer_html() -> str:
    """The whole app: one HTML document, nothing fetched."""
    script = (files("molar_mcp.mcp") / "viewer_app.js").read_text(encoding="utf-8")
    script = script.replace("%(protocol)s", APPS_PROTOCOL_VERSION).replace("%(version)s", __version__)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Molar trace viewer</title><style>{VIEWER_CSS}{_APP_CSS}</style></head>"
        '<body><main id="app"><p id="status-line">Waiting for the trace…</p></main>'
        f"<script>{script}</script></body></html>\n"
    )


def extension() -> Apps:
    """The MCP Apps extension with the viewer resource (advertised in the server's capabilities)."""
    apps = Apps()
    apps.add_html_resource(
        VIEWER_URI,
        viewer_html(),
        name="trace-viewer",
        title="Molar trace viewer",
        description="Shows a trace: steps, the failing step, expected vs actual, findings, the causal request",
        csp=ResourceCsp(),  # no external origin of any kind
        prefers_border=True,
    )
    return apps


def wants_viewer(ctx: Context[Any]) -> bool:
    """Whether the client renders apps (it declared the extension with the app MIME type)."""
    try:
        return client_supports_apps(ctx)
    except (AttributeError, LookupError, ValueError):
        return False


async def viewer_meta(client: TraceClient, trace_id: str) -> dict[str, Any]:
    """The result `_meta` the viewer renders: the facts and the failure screenshot (a `data:` URI up to
    `SCREENSHOT_MAX_BYTES`). A failure to read them is said, not raised: the tool's answer stands."""
    try:
        facts = await client.get_view(trace_id)
    except ApiClientError as exc:
        return {RESULT_META_KEY: {"error": f"the viewer could not read the trace: {exc.message}"}}
    payload: dict[str, Any] = {"facts": facts.model_dump(mode="json")}
    shot = await _screenshot(client, facts)
    if shot is not None:
        payload["screenshot"] = shot
    return {RESULT_META_KEY: payload}


async def _screenshot(client: TraceClient, facts: TraceFacts) -> dict[str, Any] | None:
    images = [a for a in facts.artifacts if a.content_type.startswith("image/")]
    if not images:
        return None
    art = next((a for a in images if a.kind == "screenshot"), images[0])
    name = art.name or art.kind
    where = f"molar://traces/{facts.short_id}/blobs/{art.sha256}"
    if art.size > SCREENSHOT_MAX_BYTES:
        return {"name": name, "note": f"{human_size(art.size)}: too large to show here; it is at {where}"}
    try:
        data, content_type = await client.fetch_signed(await client.blob_url(facts.trace_id, art.sha256))
    except ApiClientError as exc:
        return {"name": name, "note": f"the screenshot could not be read: {exc.message}"}
    kind = content_type.split(";")[0].strip() if content_type.startswith("image/") else art.content_type
    return {"name": name, "data_uri": f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"}
