"""Live traces and runs for MCP clients: a client subscribed to `molar://traces/{id}` is told when events
arrive; one subscribed to `molar://runs/{id}` (or `molar://orgs/{org}/runs/{id}/trace`) when a result
arrives or the run finishes.

One follower task a trace or run, fed by the store's SSE stream (`TraceClient.follow`,
`TraceClient.follow_run`), not by polling. It publishes `ResourceUpdated` for the trace and its events
resource (a run: both run URIs) to:
- modern clients (2026-07-28): the `subscriptions/listen` streams, through the server's subscription bus;
  `listen_middleware` starts following each trace URI a listen request names, for as long as it lasts;
- legacy clients (2025-11-25): sessions that sent `resources/subscribe`, until `resources/unsubscribe`.

Every subscribe and listen reads the trace or run as its caller first: one the caller's org cannot see
(another org's, or none; a run URI naming another org) is refused with -32602, the protocol's
"resource not found", and followers are keyed by (org, trace or run), so one org's stream never
carries another org's updates. Modern updates go through `OrgBus`, which delivers updates only to
listen streams opened by that org.
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.subscriptions import ResourceUpdated, ServerEvent
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from molar_mcp.client import ApiClientError, TraceClient
from molar_mcp.models import TraceDetail
from molar_mcp.models.runs import Run

log = logging.getLogger("molar_mcp.mcp.live")

TRACE_URI = re.compile(r"^molar://traces/([A-Za-z0-9-]{1,64})(?:/events)?(?:\?.*)?$")
RUN_URI = re.compile(r"^molar://runs/([A-Za-z0-9-]{1,64})$")
ORG_RUN_URI = re.compile(r"^molar://orgs/([A-Za-z0-9_.-]{1,64})/runs/([A-Za-z0-9-]{1,64})/trace$")


@dataclass(frozen=True)
class Target:
    """What a subscribed URI follows: a trace, or a run (whose URI may name its org)."""

    kind: Literal["trace", "run"]
    ref: str
    org: str | None = None

    @property
    def name(self) -> str:
        return self.ref if self.kind == "trace" else f"run:{self.ref}"


def target_of(uri: str) -> Target | None:
    if match := TRACE_URI.match(uri):
        return Target("trace", match.group(1))
    if match := RUN_URI.match(uri):
        return Target("run", match.group(1))
    if match := ORG_RUN_URI.match(uri):
        return Target("run", match.group(2), match.group(1))
    return None


def trace_ref_of(uri: str) -> str | None:
    target = target_of(uri)
    return target.ref if target is not None and target.kind == "trace" else None


# The org of the listen request being served, set by `listen_middleware` for `OrgBus.subscribe`.
_listening_org: contextvars.ContextVar[str | None] = contextvars.ContextVar("molar_listening_org", default=None)


class OrgBus:
    """The `subscriptions/listen` fan-out, scoped by org: a listener registered while serving a listen
    request of org O gets only O's trace updates (`publish_to`) and the events meant for every stream
    (`publish`). A listen that names no trace has no org and gets only the latter."""

    def __init__(self) -> None:
        self._listeners: dict[object, tuple[str | None, Callable[[ServerEvent], None]]] = {}

    def _deliver(self, org: str | None, event: ServerEvent) -> None:
        for listener_org, listener in list(self._listeners.values()):
            if org is None or listener_org == org:
                try:
                    listener(event)
                except Exception:  # fan-out boundary: one bad listener must not starve the others
                    log.exception("subscription listener raised; continuing")

    async def publish(self, event: ServerEvent) -> None:
        self._deliver(None, event)
        await anyio.lowlevel.checkpoint()

    async def publish_to(self, org: str, event: ServerEvent) -> None:
        self._deliver(org, event)
        await anyio.lowlevel.checkpoint()

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        token = object()
        self._listeners[token] = (_listening_org.get(), listener)

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe


def not_found(uri: str) -> MCPError:
    """The same answer for another org's trace and for no trace at all."""
    return MCPError(INVALID_PARAMS, f"Resource not found: {uri}")


FollowKey = tuple[str, str]  # (org, trace reference as the client wrote it, or "run:" + the run's)


@dataclass
class _Follow:
    users: int = 0
    legacy: dict[int, tuple[Any, set[str]]] = field(default_factory=dict)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


class TraceWatcher:
    def __init__(self, client: TraceClient, bus: OrgBus, tg: TaskGroup) -> None:
        self._client = client
        self._bus = bus
        self._tg = tg
        self._follows: dict[FollowKey, _Follow] = {}

    def following(self, ref: str) -> bool:
        return any(key[1] == ref for key in self._follows)

    async def check(self, ref: str, uri: str) -> TraceDetail:
        """The trace as the current caller sees it (the access check), or -32602 "not found"."""
        try:
            return await self._client.get_trace(ref)
        except ApiClientError as exc:
            log.info("refused to follow %s: %s", uri, exc.message)
            raise not_found(uri) from exc

    async def check_target(self, target: Target, uri: str) -> TraceDetail | Run:
        """The trace or run as the current caller sees it, or -32602 "not found" (a run URI naming another
        org than the run's is not found either: the same words as for no run at all)."""
        if target.kind == "trace":
            return await self.check(target.ref, uri)
        try:
            run = await self._client.get_run(target.ref)
        except ApiClientError as exc:
            log.info("refused to follow %s: %s", uri, exc.message)
            raise not_found(uri) from exc
        if target.org is not None and target.org != run.org_id:
            raise not_found(uri)
        return run

    async def _acquire(self, key: FollowKey, seen: TraceDetail | Run) -> _Follow:
        """Follow `key` from what its subscriber saw. The start point is fixed before this returns, so
        a change stored after a client's subscribe is acknowledged is never missed (a trace's stream
        backfills after its last seq; a run's stream opens with the run, compared with `seen`)."""
        follow = self._follows.get(key)
        if follow is None:
            follow = self._follows[key] = _Follow()
            if isinstance(seen, Run):
                self._tg.start_soon(self._run_follower, key, follow, seen)
            else:
                try:
                    after = await self._start_seq(key[1], seen)
                except ApiClientError as exc:
                    self._follows.pop(key, None)
                    log.info("cannot follow %s: %s", key[1], exc.message)
                    raise not_found(f"molar://traces/{key[1]}") from exc
                # The follower task reads the store as this caller (the context is copied into it).
                self._tg.start_soon(self._run, key, follow, after)
        follow.users += 1
        return follow

    def _release(self, key: FollowKey) -> None:
        follow = self._follows.get(key)
        if follow is None:
            return
        follow.users -= 1
        if follow.users <= 0:
            follow.scope.cancel()
            self._follows.pop(key, None)

    @asynccontextmanager
    async def watching(self, target: Target, seen: TraceDetail | Run) -> AsyncIterator[None]:
        key = (seen.org_id, target.name)
        await self._acquire(key, seen)
        try:
            yield
        finally:
            self._release(key)

    async def subscribe_legacy(self, target: Target, uri: str, session: Any) -> None:
        seen = await self.check_target(target, uri)
        key = (seen.org_id, target.name)
        follow = self._follows.get(key)
        if follow is not None and id(session) in follow.legacy:
            follow.legacy[id(session)][1].add(uri)
            return
        follow = await self._acquire(key, seen)
        follow.legacy[id(session)] = (session, {uri})

    def unsubscribe_legacy(self, target: Target, uri: str, session: Any) -> None:
        for key, follow in list(self._follows.items()):
            if key[1] != target.name or id(session) not in follow.legacy:
                continue
            uris = follow.legacy[id(session)][1]
            uris.discard(uri)
            if not uris:
                del follow.legacy[id(session)]
                self._release(key)

    async def _start_seq(self, ref: str, detail: TraceDetail) -> int:
        """The last stored seq: followers report what arrives from now on, not the trace's past."""
        if detail.event_count == 0:
            return -1
        page = await self._client.get_events(ref, limit=1, offset=detail.event_count - 1)
        return page.events[-1].seq if page.events else -1

    async def _run(self, key: FollowKey, follow: _Follow, after: int) -> None:
        org, ref = key
        uris = (f"molar://traces/{ref}", f"molar://traces/{ref}/events")
        with follow.scope:
            try:
                async for _ in self._client.follow(ref, after_seq=after):
                    await self._notify(org, uris, follow)
                await self._notify(org, uris, follow)  # the trace finished: its summary changed too
            except ApiClientError as exc:
                log.info("stopped following %s: %s", ref, exc.message)

    async def _run_follower(self, key: FollowKey, follow: _Follow, seen: Run) -> None:
        org, name = key
        ref = name.removeprefix("run:")
        uris = (f"molar://runs/{ref}", f"molar://orgs/{org}/runs/{ref}/trace")
        last = _run_state(seen)
        with follow.scope:
            try:
                async for run in self._client.follow_run(ref):
                    state = _run_state(run)
                    if state != last:  # the stream opens with the run now: news only if it changed
                        last = state
                        await self._notify(org, uris, follow)
            except ApiClientError as exc:
                log.info("stopped following run %s: %s", ref, exc.message)

    async def _notify(self, org: str, uris: tuple[str, ...], follow: _Follow) -> None:
        for uri in uris:
            await self._bus.publish_to(org, ResourceUpdated(uri=uri))
        for key, (session, subscribed) in list(follow.legacy.items()):
            for uri in uris:
                if uri in subscribed:
                    try:
                        await session.send_resource_updated(uri)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        follow.legacy.pop(key, None)


def _run_state(run: Run) -> tuple[Any, ...]:
    """What a run's readers see change: status, counts and its tests' attempts."""
    return (
        run.status,
        run.counts,
        tuple((t.scenario_slug, t.status, tuple(t.trace_ids)) for t in run.failing + run.flaky),
    )


def _watcher(ctx: ServerRequestContext[Any, Any]) -> TraceWatcher:
    watcher = getattr(ctx.lifespan_context, "watcher", None)
    assert isinstance(watcher, TraceWatcher), "the MCP server was started without its lifespan"
    return watcher


async def listen_middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Follow every trace and run a `subscriptions/listen` request names, while its stream is open."""
    if ctx.method != "subscriptions/listen" or not isinstance(ctx.params, dict):
        return await call_next(ctx)
    notifications = ctx.params.get("notifications")
    uris = notifications.get("resourceSubscriptions") if isinstance(notifications, dict) else None
    named: dict[Target, str] = {}
    for uri in uris or ():
        if isinstance(uri, str) and (target := target_of(uri)) is not None:
            named.setdefault(target, uri)
    async with AsyncExitStack() as stack:
        watcher = _watcher(ctx)
        orgs: set[str] = set()
        followed: set[str] = set()
        for target in sorted(named, key=lambda t: (t.name, t.org or "")):
            seen = await watcher.check_target(target, named[target])
            orgs.add(seen.org_id)
            if target.name not in followed:  # a run named by both of its URIs: one follower
                followed.add(target.name)
                await stack.enter_async_context(watcher.watching(target, seen))
        token = _listening_org.set(orgs.pop() if len(orgs) == 1 else None)
        try:
            return await call_next(ctx)
        finally:
            _listening_org.reset(token)


async def on_subscribe(ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
    uri = str(params.uri)
    target = target_of(uri)
    if target is not None:  # other resources never change: the subscription is honoured and never fires
        await _watcher(ctx).subscribe_legacy(target, uri, ctx.session)
    return EmptyResult()


async def on_unsubscribe(ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
    target = target_of(str(params.uri))
    if target is not None:
        _watcher(ctx).unsubscribe_legacy(target, str(params.uri), ctx.session)
    return EmptyResult()


@asynccontextmanager
async def running_watcher(client: TraceClient, bus: OrgBus) -> AsyncIterator[TraceWatcher]:
    async with anyio.create_task_group() as tg:
        yield TraceWatcher(client, bus, tg)
        tg.cancel_scope.cancel()


__all__ = ["OrgBus", "TraceWatcher", "listen_middleware", "on_subscribe", "on_unsubscribe", "running_watcher"]
