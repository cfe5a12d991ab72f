"""`molar-mcp` commands: thin wrappers over `compose`. Logs go to stderr, never stdout."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from molar_mcp import __version__

if TYPE_CHECKING:
    from molar_mcp.api.telemetry import RateLimits

log = logging.getLogger("molar_mcp")

LOOPBACK_NAMES = ("localhost",)


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _data_dir(arg: str | None) -> Path:
    from molar_mcp.compose import default_data_dir

    return Path(arg).expanduser() if arg else default_data_dir()


def parse_rate_limits(spec: str) -> RateLimits:
    """`read=600,write=120,ingest=30` (any subset) → `RateLimits`; requests per minute per org."""
    from molar_mcp.api.telemetry import RateLimits

    values: dict[str, int] = {}
    for part in spec.split(","):
        name, _, raw = part.strip().partition("=")
        if name not in ("read", "write", "ingest") or not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"bad rate limit {part!r}: use read=N,write=N,ingest=N with N ≥ 1 per minute")
        values[name] = int(raw)
    return RateLimits(**values)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from molar_mcp.compose import create_serve_app, load_demo, open_embedded

    if args.no_auth and not _is_loopback(args.host):
        print(
            f"molar-mcp: --no-auth is only allowed on a loopback address, not {args.host!r}",
            file=sys.stderr,
        )
        return 2
    data_dir = _data_dir(args.data_dir)
    try:
        limits = parse_rate_limits(args.rate_limits) if args.rate_limits else None
    except ValueError as exc:
        print(f"molar-mcp: {exc}", file=sys.stderr)
        return 2
    with open_embedded(data_dir, max_bundle_bytes=args.max_bundle_mb * 1024 * 1024, rate_limits=limits) as embedded:
        if args.demo:
            loaded = load_demo(embedded.store)
            log.info("demo data: %s", f"loaded {loaded} traces" if loaded else "already loaded")
        allowed = [h.strip() for h in args.allowed_hosts.split(",") if h.strip()] if args.allowed_hosts else None
        app = create_serve_app(embedded, host=args.host, allowed_hosts=allowed)
        base = f"http://{args.host}:{args.port}"
        print(
            f"molar-mcp {__version__}: data in {data_dir}\n"
            f"  MCP (streamable HTTP): {base}/mcp\n"
            f"  Trace REST API:        {base}/v1/traces\n"
            f"  Capabilities:          {base}/.well-known/molar-capabilities.json\n"
            "  Auth: none yet — this server is open to anyone who can reach it; keep it on loopback.",
            file=sys.stderr,
            flush=True,
        )
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0


def cmd_stdio(args: argparse.Namespace) -> int:
    from molar_mcp.compose import create_stdio_server, load_demo, open_embedded, remote_client_factory

    api_url = args.api_url or os.environ.get("MOLAR_API_URL")
    api_key = args.api_key or os.environ.get("MOLAR_API_KEY")
    if api_url:
        server = create_stdio_server(remote_client_factory(api_url, api_key))
        asyncio.run(server.run_stdio_async())
        return 0
    with open_embedded(_data_dir(args.data_dir)) as embedded:
        if args.demo:
            load_demo(embedded.store)
        server = create_stdio_server(embedded.client_factory())
        asyncio.run(server.run_stdio_async())
    return 0


def _bundle_paths(paths: Sequence[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.name.endswith((".zip", ".tar.gz", ".tgz"))))
        else:
            found.append(path)
    return found


def _progress(done: int, total: int, label: str) -> None:
    width = 24
    filled = width * done // max(total, 1)
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if done == total or not sys.stderr.isatty() else "\r"
    print(f"[{bar}] {done}/{total} {label}", file=sys.stderr, end=end, flush=True)


def cmd_ingest(args: argparse.Namespace) -> int:
    paths = _bundle_paths(args.paths)
    if not paths:
        print("molar-mcp ingest: no bundles found", file=sys.stderr)
        return 2
    failures = asyncio.run(_ingest_remote(args, paths)) if args.api_url else _ingest_local(args, paths)
    return 1 if failures else 0


def _ingest_local(args: argparse.Namespace, paths: list[Path]) -> int:
    from molar_mcp.compose import open_embedded
    from molar_mcp.ingest import BundleError, ingest_bundle
    from molar_mcp.store import LOCAL_ORG_ID

    failures = 0
    with open_embedded(_data_dir(args.data_dir)) as embedded:
        for i, path in enumerate(paths, start=1):
            try:
                _, short_id = ingest_bundle(embedded.store, LOCAL_ORG_ID, path.read_bytes())
                _progress(i, len(paths), f"{path.name} → {short_id}")
            except (BundleError, OSError) as exc:
                failures += 1
                _progress(i, len(paths), f"{path.name} FAILED: {getattr(exc, 'message', exc)}")
    return failures


async def _ingest_remote(args: argparse.Namespace, paths: list[Path]) -> int:
    from molar_mcp.client import ApiClientError
    from molar_mcp.compose import remote_client_factory

    failures = 0
    api_key = args.api_key or os.environ.get("MOLAR_API_KEY")
    async with remote_client_factory(args.api_url, api_key)() as client:
        for i, path in enumerate(paths, start=1):
            try:
                data = path.read_bytes()
                slug = args.scenario_slug or _slug_of(data)
                result = await client.ingest_bundle(data, scenario_slug=slug, filename=path.name)
                _progress(i, len(paths), f"{path.name} → {result.short_id}")
            except (ApiClientError, OSError, ValueError) as exc:
                failures += 1
                _progress(i, len(paths), f"{path.name} FAILED: {exc}")
    return failures


def _slug_of(data: bytes) -> str:
    """The bundle's own scenario slug (the REST form requires one; the summary usually has it)."""
    from molar_mcp.ingest import BundleError, read_bundle

    try:
        return read_bundle(data).trace.scenario_slug
    except BundleError as exc:
        raise ValueError(exc.message) from exc


def cmd_manifest(args: argparse.Namespace) -> int:
    from molar_mcp.compose import manifest_document

    doc = asyncio.run(manifest_document())
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if args.write:
        from molar_mcp.mcp.capabilities import replace_table, tools_table

        Path(".well-known/molar-capabilities.json").write_text(text, encoding="utf-8")
        readme = Path("README.md")
        readme.write_text(replace_table(readme.read_text(encoding="utf-8"), tools_table(doc)), encoding="utf-8")
        print("wrote .well-known/molar-capabilities.json and the README tool table", file=sys.stderr)
    elif args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from molar_mcp.compose import open_embedded
    from molar_mcp.store.tiers import RetentionPolicy

    policy = RetentionPolicy(warm_after_days=args.warm_days, cold_after_days=args.cold_days)
    with open_embedded(_data_dir(args.data_dir)) as embedded:
        result = embedded.context.tiers.apply(policy)
    print(
        f"retention: {result.warmed} traces warm, {result.frozen} cold ({result.events_archived} events archived)",
        file=sys.stderr,
    )
    return 0


def cmd_signing_rotate(args: argparse.Namespace) -> int:
    from molar_mcp.store.signing import UrlSigner

    signer = UrlSigner(_data_dir(args.data_dir) / "signing-keys.json")
    kid = signer.rotate(keep=args.keep)
    kept = "every older signed URL is now invalid" if args.keep == 1 else f"keeping {args.keep - 1} older key(s)"
    print(f"signing key {kid} is now used for new URLs; {kept}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="molar-mcp", description="Traces of test and agent runs, for AI agents.")
    parser.add_argument("--version", action="version", version=f"molar-mcp {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="/v1 API, /mcp streamable HTTP and well-knowns in one process")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=4173)
    serve.add_argument("--data-dir", help="default: $MOLAR_DATA_DIR, else the per-user data directory")
    serve.add_argument("--demo", action="store_true", help="load the demo traces (once per data dir)")
    serve.add_argument("--no-auth", action="store_true", help="no authentication (loopback only)")
    serve.add_argument("--allowed-hosts", help="comma-separated Host names to accept behind a proxy")
    serve.add_argument("--max-bundle-mb", type=int, default=25, help="ingest size limit (MB)")
    serve.add_argument(
        "--rate-limits", help="requests a minute per org, e.g. read=600,write=120,ingest=30 (the defaults)"
    )
    serve.set_defaults(func=cmd_serve)

    stdio = sub.add_parser("stdio", help="MCP over stdio for IDE agents")
    stdio.add_argument("--data-dir")
    stdio.add_argument("--demo", action="store_true")
    stdio.add_argument("--api-url", help="proxy to a remote store (env MOLAR_API_URL)")
    stdio.add_argument("--api-key", help="API key for --api-url (env MOLAR_API_KEY)")
    stdio.set_defaults(func=cmd_stdio)

    ingest = sub.add_parser("ingest", help="load bundles (files or folders of them) into the store")
    ingest.add_argument("paths", nargs="+")
    target = ingest.add_mutually_exclusive_group()
    target.add_argument("--data-dir")
    target.add_argument("--api-url", help="send to a remote store instead")
    ingest.add_argument("--api-key")
    ingest.add_argument("--scenario-slug", help="override the bundles' scenario slug")
    ingest.set_defaults(func=cmd_ingest)

    retention = sub.add_parser("retention", help="storage tiers: apply the retention policy now")
    retention_sub = retention.add_subparsers(dest="retention_command", required=True)
    run = retention_sub.add_parser("run", help="move old traces to warm and cold (pinned ones stay hot)")
    run.add_argument("--data-dir")
    run.add_argument("--warm-days", type=float, default=7, help="age after which a trace is warm (default 7)")
    run.add_argument("--cold-days", type=float, default=30, help="age after which its events are archived (30)")
    run.set_defaults(func=cmd_retention)

    signing = sub.add_parser("signing", help="the key that signs artifact URLs")
    signing_sub = signing.add_subparsers(dest="signing_command", required=True)
    rotate = signing_sub.add_parser("rotate", help="sign new URLs with a new key")
    rotate.add_argument("--data-dir")
    rotate.add_argument("--keep", type=int, default=2, help="keys kept in all, newest first (1 revokes older URLs)")
    rotate.set_defaults(func=cmd_signing_rotate)

    manifest = sub.add_parser("manifest", help="print the capability manifest")
    manifest.add_argument("-o", "--output", default="-")
    manifest.add_argument(
        "--write", action="store_true", help="update .well-known/ and the README tool table (run at the repo root)"
    )
    manifest.set_defaults(func=cmd_manifest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # stdout belongs to JSON-RPC in stdio mode: every log line goes to stderr.
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # One line per internal /v1 call drowns the useful lines: the HTTP client logs warnings only.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
