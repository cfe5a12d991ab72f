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
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from molar_mcp import __version__

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from molar_mcp.api.telemetry import RateLimits
    from molar_mcp.mcp.state import AppState

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
    from molar_mcp.data_dir import default_data_dir

    return Path(arg).expanduser() if arg else default_data_dir()


_DATABASE_HELP = (
    "PostgreSQL for metadata, events and search, e.g. postgresql://molar@db/molar (env MOLAR_DATABASE_URL); "
    "default: the embedded SQLite store in the data dir"
)
_BLOB_HELP = (
    "where blobs live: s3://bucket/prefix (S3-compatible; AWS_ENDPOINT_URL, AWS_DEFAULT_REGION and credentials "
    "from the environment) or file:///shared/dir (env MOLAR_BLOB_URL); default: the data dir"
)


def _engines(args: argparse.Namespace) -> dict[str, Any]:
    """`open_embedded`'s engine keywords: --database-url / --blob-url, else their environment variables."""
    database_url = getattr(args, "database_url", None) or os.environ.get("MOLAR_DATABASE_URL") or None
    blob_url = getattr(args, "blob_url", None) or os.environ.get("MOLAR_BLOB_URL") or None
    return {"database_url": database_url, "blob_url": blob_url}


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help=_DATABASE_HELP)
    parser.add_argument("--blob-url", help=_BLOB_HELP)


def parse_rate_limits(spec: str) -> RateLimits:
    """`read=600,write=120,ingest=1200,tool=6000` (any subset) → `RateLimits`; per minute per org."""
    from molar_mcp.api.telemetry import RateLimits

    values: dict[str, int] = {}
    for part in spec.split(","):
        name, _, raw = part.strip().partition("=")
        if name not in ("read", "write", "ingest", "otlp", "tool") or not raw.isdigit() or int(raw) < 1:
            raise ValueError(
                f"bad rate limit {part!r}: use read=N,write=N,ingest=N,otlp=N,tool=N with N ≥ 1 per minute"
            )
        values[name] = int(raw)
    return RateLimits(**values)


def name_event_loop() -> None:
    """Say once, before the event loop starts, that asyncio runs it — what `anyio.run` does when it starts
    a loop ("we're in control of the event loop, we can cache the name"). Without it, where `sniffio` is
    installed (a dependency of some SDKs), anyio asks it on every checkpoint, cancel scope and memory
    stream, and it sniffs by looking up the current task: ~1 µs a time, a few hundred times per tool call
    (~4% of the server's CPU under load). Tasks inherit it; anyio clears it in its worker threads."""
    try:
        import sniffio
    except ImportError:  # anyio then asks asyncio directly
        return
    sniffio.current_async_library_cvar.set("asyncio")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from molar_mcp.api.context import OtlpSettings
    from molar_mcp.api.memory import settle_heap
    from molar_mcp.compose import create_serve_app, load_demo, open_embedded
    from molar_mcp.debugger.config import DebuggerConfig
    from molar_mcp.serve_auth import open_serve_auth, own_origins

    if args.no_auth and not _is_loopback(args.host):
        print(
            f"molar-mcp: --no-auth is only allowed on a loopback address, not {args.host!r}",
            file=sys.stderr,
        )
        return 2
    data_dir = _data_dir(args.data_dir)
    try:
        limits = parse_rate_limits(args.rate_limits) if args.rate_limits else None
        debugger = DebuggerConfig.from_env(os.environ, args.model)
    except ValueError as exc:
        print(f"molar-mcp: {exc}", file=sys.stderr)
        return 2
    otlp = OtlpSettings(quiet_seconds=args.otlp_quiet_seconds)
    if not args.live_quiet_seconds > 0 or not args.unused_client_hours > 0:
        print("molar-mcp: --live-quiet-seconds and --unused-client-hours must be more than 0", file=sys.stderr)
        return 2
    roots = _replay_roots(args.replay_root)
    if roots is None:
        return 2
    if args.workers < 1:
        print("molar-mcp: --workers must be 1 or more", file=sys.stderr)
        return 2
    if args.workers > 1 and args.worker is None:
        from molar_mcp.serve_workers import supervise

        return supervise(args.host, args.port, args.workers, args.raw_argv)
    place = None
    if args.worker is not None:
        from molar_mcp.api.workers import WorkerPlace

        place = WorkerPlace(Path(args.worker_run_dir), args.worker, args.workers)
    with open_embedded(
        data_dir,
        **_engines(args),
        max_bundle_bytes=args.max_bundle_mb * 1024 * 1024,
        rate_limits=limits,
        debugger=debugger,
        otlp_settings=otlp,
        live_quiet_seconds=args.live_quiet_seconds,
        replay_demo=args.demo,
        replay_roots=roots,
        workers=place,
    ) as embedded:
        if args.demo and (place is None or place.index == 0):  # worker 0 loads it before the others start
            log.info("demo data: %s", load_demo(embedded))
        allowed = [h.strip() for h in args.allowed_hosts.split(",") if h.strip()] if args.allowed_hosts else None
        base = f"http://{args.host}:{args.port}"
        with ExitStack() as stack:
            auth = (
                None
                if args.no_auth
                else stack.enter_context(
                    open_serve_auth(
                        data_dir,
                        args.issuer or base,
                        database_url=_engines(args)["database_url"],
                        unused_client_seconds=args.unused_client_hours * 3600,
                    )
                )
            )
            origins = own_origins(args.host, args.port, auth.config.issuer if auth else None, allowed or ())
            app = create_serve_app(
                embedded,
                host=args.host,
                allowed_hosts=allowed,
                auth=auth,
                allowed_origins=origins,
                workers=place,
                inline_reads=args.inline_reads,
            )
            if auth is None:
                auth_line = "none (--no-auth): anyone who can reach this loopback address can read and write"
            else:
                auth_line = (
                    f"OAuth 2.1 at {auth.config.issuer}/api/oauth (accounts: molar-mcp users create; "
                    "API keys: molar-mcp keys create)"
                )
            workers_line = f"\n  Workers:               {args.workers} processes" if place is not None else ""
            if place is None or place.index == 0:  # one banner for the server
                print(
                    f"molar-mcp {__version__}: data in {_where(args, data_dir)}\n"
                    f"  MCP (streamable HTTP): {base}/mcp\n"
                    f"  Trace REST API:        {base}/v1/traces\n"
                    f"  OTLP/HTTP traces:      OTEL_EXPORTER_OTLP_ENDPOINT={base}/otlp\n"
                    f"  Capabilities:          {base}/.well-known/molar-capabilities.json\n"
                    f"  Debugger model:        {debugger.model or 'none (answers are the detectors findings)'}\n"
                    f"  Replays:               {_replays_line(args.demo, roots)}\n"
                    f"  Auth:                  {auth_line}{workers_line}",
                    file=sys.stderr,
                    flush=True,
                )
            settle_heap()  # start-up's objects out of the collector's sight (api/memory.py)
            name_event_loop()
            # One log line per request costs every request its formatting and a write: off unless asked for.
            if place is None:
                uvicorn.run(
                    app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=args.access_log
                )
            else:  # the socket the supervisor listens on, and this worker's own (relayed sessions)
                from molar_mcp.serve_workers import serve_worker

                serve_worker(app, place, args.listen_fd, log_level=args.log_level.lower(), access_log=args.access_log)
    return 0


def _replay_roots(raw: Sequence[str] | None) -> list[Path] | None:
    """The --replay-root directories, checked; None (after saying why) when one is not a directory."""
    roots: list[Path] = []
    for item in raw or ():
        path = Path(item).expanduser()
        if not path.is_dir():
            print(f"molar-mcp: --replay-root {item}: not a directory", file=sys.stderr)
            return None
        roots.append(path.resolve())
    return roots


def _replays_line(demo: bool, roots: Sequence[Path]) -> str:
    parts = (["the demo shop"] if demo else []) + [f"projects under {r}" for r in roots]
    if not parts:
        return "off (--replay-root DIR for your projects, --demo for the demo shop)"
    return ", ".join(parts) + " (in a bubblewrap sandbox)"


def _serve_stdio(server: MCPServer[AppState]) -> int:
    """Serve `server` on this process's stdin and stdout until stdin ends."""
    from molar_mcp.mcp.stdio import run_stdio

    name_event_loop()
    asyncio.run(run_stdio(server))
    return 0


def cmd_stdio(args: argparse.Namespace) -> int:
    # Only what answering `initialize` and `tools/list` needs is imported before serving: the MCP server
    # and its tools. The embedded store and its /v1 app are opened on the first tool call that reads them
    # (`DeferredApp`), except where a start must prove them first: PostgreSQL and S3 (a bad URL or an
    # unreachable database fails the start, not a tool call later) and --demo (loaded before serving).
    from molar_mcp.mcp.server import create_mcp_server

    api_url = args.api_url or os.environ.get("MOLAR_API_URL")
    api_key = args.api_key or os.environ.get("MOLAR_API_KEY")
    if api_url:
        from molar_mcp.client.remote import remote_client_factory

        server = create_mcp_server(remote_client_factory(api_url, api_key))
        return _serve_stdio(server)
    from molar_mcp.debugger.config import DebuggerConfig

    try:
        debugger = DebuggerConfig.from_env(os.environ, args.model)
    except ValueError as exc:
        print(f"molar-mcp: {exc}", file=sys.stderr)
        return 2
    roots = _replay_roots(args.replay_root)
    if roots is None:
        return 2
    data_dir = _data_dir(args.data_dir)
    engines = _engines(args)
    if args.demo or engines["database_url"] or engines["blob_url"]:
        from molar_mcp.compose import load_demo, open_embedded

        with open_embedded(
            data_dir, **engines, debugger=debugger, replay_demo=args.demo, replay_roots=roots
        ) as embedded:
            if args.demo:
                log.info("demo data: %s", load_demo(embedded))
            # One client on the embedded store: its reads on the loop, without two thread hops each.
            return _serve_stdio(create_mcp_server(embedded.client_factory(inline_reads=True)))
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"molar-mcp: data dir {data_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    from molar_mcp.api.deferred import DeferredApp
    from molar_mcp.chat_tools import in_process_client_factory

    with ExitStack() as opened:

        def open_api() -> Any:
            from molar_mcp.compose import open_embedded

            embedded = opened.enter_context(
                open_embedded(data_dir, debugger=debugger, replay_demo=False, replay_roots=roots)
            )
            return embedded.api_app

        # The embedded SQLite store: one client, its reads on the loop, without two thread hops each.
        return _serve_stdio(create_mcp_server(in_process_client_factory(DeferredApp(open_api), inline_reads=True)))


def _bundle_paths(paths: Sequence[str]) -> list[Path]:
    """Files to ingest: each file named, and in each folder named either the folder itself (a Playwright
    report folder: it has a report.json or JUnit XML) or the bundles and trace.zip files in it."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            if _report_file(path) is not None:
                found.append(path)
            else:
                found.extend(sorted(p for p in path.iterdir() if p.name.endswith((".zip", ".tar.gz", ".tgz"))))
        else:
            found.append(path)
    return found


def _report_file(folder: Path) -> Path | None:
    for candidate in sorted(folder.iterdir()):
        if candidate.is_file() and candidate.suffix == ".json" and "report" in candidate.name.lower():
            return candidate
    for candidate in sorted(folder.iterdir()):
        if candidate.is_file() and candidate.suffix == ".xml":
            return candidate
    return None


def _read_upload(path: Path) -> tuple[bytes, str]:
    """A file as it is; a report folder as one zip of the report and every file under the folder (test-results/)."""
    if not path.is_dir():
        return path.read_bytes(), path.name
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for file in sorted(path.rglob("*")):
            if file.is_file() and not file.is_symlink():
                zf.write(file, file.relative_to(path).as_posix())
    return buf.getvalue(), path.name + ".zip"


def _progress(done: int, total: int, label: str) -> None:
    width = 24
    filled = width * done // max(total, 1)
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if done == total or not sys.stderr.isatty() else "\r"
    print(f"[{bar}] {done}/{total} {label}", file=sys.stderr, end=end, flush=True)


def cmd_ingest(args: argparse.Namespace) -> int:
    paths = _bundle_paths(args.paths)
    if not paths:
        print("molar-mcp ingest: nothing to ingest found", file=sys.stderr)
        return 2
    failures = asyncio.run(_ingest_remote(args, paths)) if args.api_url else _ingest_local(args, paths)
    return 1 if failures else 0


def _describe(short_ids: list[str], rejected: list[tuple[str, str]], run_id: str | None) -> str:
    text = " ".join(short_ids[:5]) + (f" … ({len(short_ids)} traces)" if len(short_ids) > 5 else "")
    if run_id:
        text += f" in run {run_id}"
    for name, message in rejected:
        text += f"\n  not stored: {name}: {message}"
    return text


def _ingest_local(args: argparse.Namespace, paths: list[Path]) -> int:
    from molar_mcp.api.context import ApiContext
    from molar_mcp.api.errors import ApiError
    from molar_mcp.api.runs import ingest_for_run
    from molar_mcp.compose import open_embedded
    from molar_mcp.ingest import BundleError, Overrides
    from molar_mcp.ingest.service import Upload
    from molar_mcp.store import LOCAL_ORG_ID

    failures = 0
    with open_embedded(_data_dir(args.data_dir), **_engines(args)) as embedded:
        ctx = ApiContext.embedded(embedded.store, max_bundle_bytes=args.max_mb * 1024 * 1024)
        for i, path in enumerate(paths, start=1):
            try:
                data, name = _read_upload(path)
                upload = Upload(
                    data=data,
                    filename=name,
                    format=args.format,
                    overrides=Overrides(scenario_slug=args.scenario_slug),
                    keep_secrets=args.keep_secrets,
                    max_bytes=ctx.max_bundle_bytes,
                )
                outcome = ingest_for_run(ctx, LOCAL_ORG_ID, upload, args.run)
                rejected = [(r.name, r.message) for r in outcome.rejected]
                failures += len(rejected)
                label = _describe([t.short_id for t in outcome.traces], rejected, outcome.run_id)
                _progress(i, len(paths), f"{path.name} → {label}")
            except (BundleError, ApiError, OSError) as exc:
                failures += 1
                _progress(i, len(paths), f"{path.name} FAILED: {getattr(exc, 'message', exc)}")
    return failures


async def _ingest_remote(args: argparse.Namespace, paths: list[Path]) -> int:
    from molar_mcp.client import ApiClientError
    from molar_mcp.client.remote import remote_client_factory

    failures = 0
    api_key = args.api_key or os.environ.get("MOLAR_API_KEY")
    async with remote_client_factory(args.api_url, api_key)() as client:
        for i, path in enumerate(paths, start=1):
            try:
                data, name = _read_upload(path)
                result = await client.ingest_file(
                    data,
                    filename=name,
                    scenario_slug=args.scenario_slug,
                    format=args.format,
                    run_id=args.run,
                    keep_secrets=args.keep_secrets,
                )
                rejected = [(r.name, r.message) for r in result.rejected]
                failures += len(rejected)
                ids = [t.short_id for t in result.traces] or [result.short_id]
                _progress(i, len(paths), f"{path.name} → {_describe(ids, rejected, result.run_id)}")
            except (ApiClientError, OSError, ValueError) as exc:
                failures += 1
                _progress(i, len(paths), f"{path.name} FAILED: {exc}")
    return failures


def cmd_demo(args: argparse.Namespace) -> int:
    """Record real demo traces: start the demo shop, run its scenarios, store the traces (replayable)."""
    from molar_mcp.compose import open_embedded, record_demo

    data_dir = _data_dir(args.data_dir)
    with open_embedded(data_dir) as embedded:
        try:
            runs = record_demo(embedded.store)
        except Exception as exc:
            print(f"molar-mcp demo: recording failed: {exc}", file=sys.stderr)
            return 1
    for run in runs:
        outcome = run.status.upper() + (f" {run.failure_signature}" if run.failure_signature else "")
        print(f"{run.short_id}  {run.slug}: {outcome}", file=sys.stderr)
    failed = sum(1 for r in runs if r.status != "passed")
    print(
        f"recorded {len(runs)} demo traces in {data_dir} ({len(runs) - failed} passed, {failed} failed); "
        "replay a failed one with replay_trace or POST /v1/traces/{id}/replay",
        file=sys.stderr,
    )
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    from molar_mcp.compose import manifest_document

    doc = asyncio.run(manifest_document())
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if args.write:
        from molar_mcp.mcp.capabilities import replace_table, tools_table
        from molar_mcp.mcp.skill import skill_markdown

        Path(".well-known/molar-capabilities.json").write_text(text, encoding="utf-8")
        readme = Path("README.md")
        readme.write_text(replace_table(readme.read_text(encoding="utf-8"), tools_table(doc)), encoding="utf-8")
        Path("SKILL.md").write_text(skill_markdown(doc), encoding="utf-8")
        print("wrote .well-known/molar-capabilities.json, the README tool table and SKILL.md", file=sys.stderr)
    elif args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from molar_mcp.compose import open_embedded
    from molar_mcp.store.tiers import RetentionPolicy

    policy = RetentionPolicy(warm_after_days=args.warm_days, cold_after_days=args.cold_days)
    with open_embedded(_data_dir(args.data_dir), **_engines(args)) as embedded:
        result = embedded.context.tiers.apply(policy)
    print(
        f"retention: {result.warmed} traces warm, {result.frozen} cold ({result.events_archived} events archived)",
        file=sys.stderr,
    )
    return 0


def _where(args: argparse.Namespace, data_dir: Path) -> str:
    engines = _engines(args)
    if engines["database_url"] is None:
        return str(data_dir) + (f" (blobs in {engines['blob_url']})" if engines["blob_url"] else "")
    from molar_mcp.store.postgres.db import redacted

    return f"{redacted(engines['database_url'])} (blobs in {engines['blob_url'] or data_dir})"


def cmd_migrate(args: argparse.Namespace) -> int:
    """Create or upgrade every component's schema (and the auth database's), then exit."""
    from molar_mcp.compose import open_embedded
    from molar_mcp.serve_auth import open_auth_db

    data_dir = _data_dir(args.data_dir)
    engines = _engines(args)
    try:
        with open_embedded(data_dir, **engines) as embedded:
            versions = embedded.store.db.versions()
        auth = open_auth_db(data_dir, database_url=engines["database_url"])
        auth.close()
    except (RuntimeError, ValueError) as exc:
        print(f"molar-mcp migrate: {exc}", file=sys.stderr)
        return 1
    listed = ", ".join(f"{name} {version}" for name, version in sorted(versions.items()))
    print(f"schema up to date in {_where(args, data_dir)}: {listed}", file=sys.stderr)
    return 0


def cmd_signing_rotate(args: argparse.Namespace) -> int:
    from molar_mcp.compose import rotate_url_signing_key

    kid = rotate_url_signing_key(_data_dir(args.data_dir), keep=args.keep, database_url=_engines(args)["database_url"])
    kept = "every older signed URL is now invalid" if args.keep == 1 else f"keeping {args.keep - 1} older key(s)"
    print(f"signing key {kid} is now used for new URLs; {kept}", file=sys.stderr)
    return 0


_MODEL_HELP = (
    "the debugger chats' model as provider:model, e.g. openai:gpt-4o-mini or anthropic:claude-sonnet-4-5 "
    "(env MOLAR_MODEL; endpoint MOLAR_MODEL_BASE_URL, key MOLAR_MODEL_API_KEY)"
)


def _auth_db(args: argparse.Namespace) -> Any:
    """The auth database, as `serve` opens it; on the embedded store without importing what serving needs."""
    database_url = _engines(args)["database_url"]
    if database_url:
        from molar_mcp.serve_auth import open_auth_db

        return open_auth_db(_data_dir(args.data_dir), database_url=database_url)
    from molar_mcp.auth.db import AUTH_DB_FILE, AuthDB

    return AuthDB.open(_data_dir(args.data_dir) / AUTH_DB_FILE)


def cmd_users_create(args: argparse.Namespace) -> int:
    import getpass
    import time

    from molar_mcp.auth import UserExistsError, UserStore, generate_password

    password = args.password
    generated = False
    if password is None and sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.email} (empty: generate one): ") or None
    elif password is None:
        # Piped (`echo "$PASSWORD" | molar-mcp users create …`): the first line is the password.
        password = sys.stdin.readline().rstrip("\r\n") or None
    if password is None:
        password, generated = generate_password(), True
    db = _auth_db(args)
    try:
        user = UserStore(db).create(args.email, password, org_id=args.org, now=int(time.time()))
    except UserExistsError:
        print(f"molar-mcp: a user {args.email} exists already", file=sys.stderr)
        return 1
    except ValueError as exc:  # a bad email address or a short password: one line, no traceback
        print(f"molar-mcp: {exc}", file=sys.stderr)
        return 2
    finally:
        db.close()
    print(f"created user {user.email} in org {user.org_id}", file=sys.stderr)
    if generated:
        print(password)  # stdout: the only place the generated password is ever shown
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    import time

    from molar_mcp.auth import ALL_SCOPES, ApiKeyStore

    scopes = [s for s in args.scopes.replace(",", " ").split() if s]
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown or not scopes:
        got = " ".join(unknown) or "none"
        print(f"molar-mcp: scopes must be some of {' '.join(ALL_SCOPES)}; got {got}", file=sys.stderr)
        return 2
    db = _auth_db(args)
    try:
        created = ApiKeyStore(db, scopes_supported=ALL_SCOPES).create(
            org_id=args.org, scopes=scopes, name=args.name or "cli", now=int(time.time())
        )
    finally:
        db.close()
    print(f"API key {created.key.id} ({' '.join(scopes)}) for org {args.org}; shown once:", file=sys.stderr)
    print(created.secret)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from molar_mcp.auth import ALL_SCOPES, ApiKeyStore

    db = _auth_db(args)
    try:
        keys = ApiKeyStore(db, scopes_supported=ALL_SCOPES).list_keys(args.org)
    finally:
        db.close()
    for key in keys:
        state = "revoked" if key.revoked_at else "active"
        print(f"{key.id}\t{key.prefix}…\t{state}\t{' '.join(sorted(key.scopes))}\t{key.name or ''}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    import time

    from molar_mcp.auth import ALL_SCOPES, ApiKeyStore

    db = _auth_db(args)
    try:
        done = ApiKeyStore(db, scopes_supported=ALL_SCOPES).revoke(args.key_id, org_id=args.org, now=int(time.time()))
    finally:
        db.close()
    if not done:
        print(f"molar-mcp: no active key {args.key_id} in org {args.org}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}", file=sys.stderr)
    return 0


_REPLAY_ROOT_HELP = "a directory whose git repositories (with a molar.toml) replays may run; repeatable; default: none"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="molar-mcp", description="Traces of test and agent runs, for AI agents.")
    parser.add_argument("--version", action="version", version=f"molar-mcp {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="/v1 API, /mcp streamable HTTP and well-knowns in one process")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=4173)
    serve.add_argument("--data-dir", help="default: $MOLAR_DATA_DIR, else the per-user data directory")
    _add_engine_options(serve)
    serve.add_argument(
        "--demo", action="store_true", help="load the demo traces (once per data dir); replays may run the demo shop"
    )
    serve.add_argument("--replay-root", action="append", metavar="DIR", help=_REPLAY_ROOT_HELP)
    serve.add_argument("--no-auth", action="store_true", help="no authentication (loopback only)")
    serve.add_argument("--issuer", help="public origin of this server for OAuth (default http://HOST:PORT)")
    serve.add_argument("--allowed-hosts", help="comma-separated Host names to accept behind a proxy")
    serve.add_argument("--max-bundle-mb", type=int, default=25, help="ingest size limit (MB)")
    serve.add_argument(
        "--rate-limits",
        help="per minute per org: REST read/write/ingest (uploads, live appends) requests, OTLP exports, "
        "MCP tool calls "
        "(the defaults: read=600,write=120,ingest=1200,otlp=6000,tool=6000)",
    )
    serve.add_argument("--model", help=_MODEL_HELP)
    serve.add_argument(
        "--otlp-quiet-seconds",
        type=float,
        default=float(os.environ.get("MOLAR_OTLP_QUIET_SECONDS", "30")),
        help="an OTLP trace whose root span has arrived finishes after this long without new spans "
        "(env MOLAR_OTLP_QUIET_SECONDS; default 30)",
    )
    serve.add_argument(
        "--live-quiet-seconds",
        type=float,
        default=float(os.environ.get("MOLAR_LIVE_QUIET_SECONDS", "600")),
        help="a live trace that nothing was appended to for this long is marked interrupted (its producer "
        "crashed) (env MOLAR_LIVE_QUIET_SECONDS; default 600)",
    )
    serve.add_argument(
        "--unused-client-hours",
        type=float,
        default=float(os.environ.get("MOLAR_UNUSED_CLIENT_HOURS", "24")),
        help="an OAuth client registered this long ago and never used (no authorization, no token) is deleted "
        "(env MOLAR_UNUSED_CLIENT_HOURS; default 24)",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        default=os.environ.get("MOLAR_ACCESS_LOG", "") not in ("", "0"),
        help="log one line per HTTP request (env MOLAR_ACCESS_LOG=1; default off: it costs every request)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("MOLAR_WORKERS", "1")),
        help="worker processes accepting on the one port, to use more than one core (env MOLAR_WORKERS; "
        "default 1; docs/deploy.md)",
    )
    serve.add_argument(
        "--inline-reads",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("MOLAR_INLINE_READS", "1").strip().lower() not in ("0", "false", "no", "off"),
        help="the MCP tools' short reads of the embedded SQLite store run on the event loop, not in a worker "
        "thread (default on; --no-inline-reads or env MOLAR_INLINE_READS=0 for the thread; docs/architecture.md)",
    )
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # this process is worker N (serve_workers.py)
    serve.add_argument("--worker-run-dir", help=argparse.SUPPRESS)
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    stdio = sub.add_parser("stdio", help="MCP over stdio for IDE agents")
    stdio.add_argument("--data-dir")
    _add_engine_options(stdio)
    stdio.add_argument(
        "--demo", action="store_true", help="load the demo traces (once per data dir); replays may run the demo shop"
    )
    stdio.add_argument("--replay-root", action="append", metavar="DIR", help=_REPLAY_ROOT_HELP)
    stdio.add_argument("--api-url", help="proxy to a remote store (env MOLAR_API_URL)")
    stdio.add_argument("--api-key", help="API key for --api-url (env MOLAR_API_KEY)")
    stdio.add_argument("--model", help=_MODEL_HELP + " (embedded store only)")
    stdio.set_defaults(func=cmd_stdio)

    ingest = sub.add_parser(
        "ingest",
        help="load Molar bundles, Playwright trace.zip files, report folders (report.json + test-results/) "
        "or JUnit XML into the store",
    )
    ingest.add_argument("paths", nargs="+")
    target = ingest.add_mutually_exclusive_group()
    target.add_argument("--data-dir")
    target.add_argument("--api-url", help="send to a remote store instead")
    ingest.add_argument("--api-key")
    _add_engine_options(ingest)
    ingest.add_argument("--scenario-slug", help="the scenario slug (default: from each file)")
    ingest.add_argument(
        "--format",
        choices=("bundle", "playwright-trace", "playwright-report", "junit"),
        help="the files' format (default: detected)",
    )
    ingest.add_argument("--run", help="link the traces to this run (id or short id)")
    ingest.add_argument(
        "--keep-secrets", action="store_true", help="store passwords, tokens and cookies unmasked (default: masked)"
    )
    ingest.add_argument("--max-mb", type=int, default=100, help="size limit of one file (MB) for a local ingest")
    ingest.set_defaults(func=cmd_ingest)

    retention = sub.add_parser("retention", help="storage tiers: apply the retention policy now")
    retention_sub = retention.add_subparsers(dest="retention_command", required=True)
    run = retention_sub.add_parser("run", help="move old traces to warm and cold (pinned ones stay hot)")
    run.add_argument("--data-dir")
    _add_engine_options(run)
    run.add_argument("--warm-days", type=float, default=7, help="age after which a trace is warm (default 7)")
    run.add_argument("--cold-days", type=float, default=30, help="age after which its events are archived (30)")
    run.set_defaults(func=cmd_retention)

    users = sub.add_parser("users", help="local accounts of the embedded authorization server")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    create_user = users_sub.add_parser("create", help="add an account (prompts for the password when omitted)")
    create_user.add_argument("--email", required=True)
    create_user.add_argument(
        "--password",
        help="default: prompt (a terminal) or the first line of stdin (piped); empty: generate and print one",
    )
    create_user.add_argument("--org", default="org_local")
    create_user.add_argument("--data-dir")
    _add_engine_options(create_user)
    create_user.set_defaults(func=cmd_users_create)

    keys = sub.add_parser("keys", help="API keys for the /v1 API and /mcp (CI, scripts, stdio proxies)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create_key = keys_sub.add_parser("create", help="mint a key; it is printed once")
    create_key.add_argument("--scopes", required=True, help="e.g. 'mcp:trace:read mcp:trace:write'")
    create_key.add_argument("--name")
    list_keys = keys_sub.add_parser("list", help="the org's keys (never their secrets)")
    revoke_key = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke_key.add_argument("key_id")
    for parser_, func in ((create_key, cmd_keys_create), (list_keys, cmd_keys_list), (revoke_key, cmd_keys_revoke)):
        parser_.add_argument("--org", default="org_local")
        parser_.add_argument("--data-dir")
        _add_engine_options(parser_)
        parser_.set_defaults(func=func)

    signing = sub.add_parser("signing", help="the key that signs artifact URLs")
    signing_sub = signing.add_subparsers(dest="signing_command", required=True)
    rotate = signing_sub.add_parser("rotate", help="sign new URLs with a new key")
    rotate.add_argument("--data-dir")
    _add_engine_options(rotate)
    rotate.add_argument("--keep", type=int, default=2, help="keys kept in all, newest first (1 revokes older URLs)")
    rotate.set_defaults(func=cmd_signing_rotate)

    demo = sub.add_parser("demo", help="record real demo traces: run the demo shop's scenarios (some fail)")
    demo.add_argument("--data-dir", help="default: $MOLAR_DATA_DIR, else the per-user data directory")
    demo.set_defaults(func=cmd_demo)

    migrate = sub.add_parser("migrate", help="create or upgrade the database schema (every component), then exit")
    migrate.add_argument("--data-dir")
    _add_engine_options(migrate)
    migrate.set_defaults(func=cmd_migrate)

    manifest = sub.add_parser("manifest", help="print the capability manifest")
    manifest.add_argument("-o", "--output", default="-")
    manifest.add_argument(
        "--write",
        action="store_true",
        help="update .well-known/, the README tool table and SKILL.md (run at the repo root)",
    )
    manifest.set_defaults(func=cmd_manifest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw)
    args.raw_argv = raw  # `serve --workers N` starts its workers with the same arguments
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
