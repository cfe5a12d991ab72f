"""Live traces for MCP clients: a client subscribed to `molar://traces/{id}` is told when events arrive.

One follower task a trace, fed by the store's SSE stream (`TraceClient.follow`), not by polling. It
publishes `ResourceUpdated` for the trace and its events resource to:
- modern clients (2026-07-28): the `subscriptions/listen` streams, through the server's subscription bus;
  `listen_middleware` starts following each trace URI a listen request names, for as long as it lasts;
- legacy clients (2025-11-25): sessions that sent `resources/subscribe`, until `resources/unsubscribe`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.subscriptions import ResourceUpdated, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from molar_mcp.client import ApiClientError, TraceClient

log = logging.getLogger("molar_mcp.mcp.live")

TRACE_URI = re.compile(r"^molar://traces/([A-Za-z0-9-]{1,64})(?:/events)?(?:\?.*)?$")


def trace_ref_of(uri: str) -> str | None:
    match = TRACE_URI.match(uri)
    return match.group(1) if match else None


@dataclass
class _Follow:
    users: int = 0
    legacy: dict[int, tuple[Any, set[str]]] = field(default_factory=dict)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


class TraceWatcher:
    def __init__(self, client: TraceClient, bus: SubscriptionBus, tg: TaskGroup) -> None:
        self._client = client
        self._bus = bus
        self._tg = tg
        self._follows: dict[str, _Follow] = {}

    def following(self, ref: str) -> bool:
        return ref in self._follows

    async def _acquire(self, ref: str) -> _Follow:
        """Follow `ref` from its current last event. The start point is fixed before this returns, so
        an event stored after a client's subscribe is acknowledged is never missed (the stream backfills)."""
        follow = self._follows.get(ref)
        if follow is None:
            follow = self._follows[ref] = _Follow()
            try:
                after = await self._start_seq(ref)
            except ApiClientError as exc:
                self._follows.pop(ref, None)
                log.info("cannot follow %s: %s", ref, exc.message)
                raise
            self._tg.start_soon(self._run, ref, follow, after)
        follow.users += 1
        return follow

    def _release(self, ref: str) -> None:
        follow = self._follows.get(ref)
        if follow is None:
            return
        follow.users -= 1
        if follow.users <= 0:
            follow.scope.cancel()
            self._follows.pop(ref, None)

    @asynccontextmanager
    async def watching(self, ref: str) -> AsyncIterator[None]:
        await self._acquire(ref)
        try:
            yield
        finally:
            self._release(ref)

    async def subscribe_legacy(self, ref: str, uri: str, session: Any) -> None:
        follow = self._follows.get(ref)
        key = id(session)
        if follow is not None and key in follow.legacy:
            follow.legacy[key][1].add(uri)
            return
        follow = await self._acquire(ref)
        follow.legacy[key] = (session, {uri})

    def unsubscribe_legacy(self, ref: str, uri: str, session: Any) -> None:
        follow = self._follows.get(ref)
        if follow is None or id(session) not in follow.legacy:
            return
        uris = follow.legacy[id(session)][1]
        uris.discard(uri)
        if not uris:
            del follow.legacy[id(session)]
            self._release(ref)

    async def _start_seq(self, ref: str) -> int:
        """The last stored seq: followers report what arrives from now on, not the trace's past."""
        detail = await self._client.get_trace(ref)
        if detail.event_count == 0:
            return -1
        page = await self._client.get_events(ref, limit=1, offset=detail.event_count - 1)
        return page.events[-1].seq if page.events else -1

    async def _run(self, ref: str, follow: _Follow, after: int) -> None:
        uris = (f"molar://traces/{ref}", f"molar://traces/{ref}/events")
        with follow.scope:
            try:
                async for _ in self._client.follow(ref, after_seq=after):
                    await self._notify(uris, follow)
                await self._notify(uris, follow)  # the trace finished: its summary changed too
            except ApiClientError as exc:
                log.info("stopped following %s: %s", ref, exc.message)

    async def _notify(self, uris: tuple[str, ...], follow: _Follow) -> None:
        for uri in uris:
            await self._bus.publish(ResourceUpdated(uri=uri))
        for key, (session, subscribed) in list(follow.legacy.items()):
            for uri in uris:
                if uri in subscribed:
                    try:
                        await session.send_resource_updated(uri)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        follow.legacy.pop(key, None)


def _watcher(ctx: ServerRequestContext[Any, Any]) -> TraceWatcher:
    watcher = getattr(ctx.lifespan_context, "watcher", None)
    assert isinstance(watcher, TraceWatcher), "the MCP server was started without its lifespan"
    return watcher


async def listen_middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Follow every trace a `subscriptions/listen` request names, while its stream is open."""
    if ctx.method != "subscriptions/listen" or not isinstance(ctx.params, dict):
        return await call_next(ctx)
    notifications = ctx.params.get("notifications")
    uris = notifications.get("resourceSubscriptions") if isinstance(notifications, dict) else None
    refs = sorted({ref for uri in uris or () if isinstance(uri, str) and (ref := trace_ref_of(uri))})
    async with AsyncExitStack() as stack:
        watcher = _watcher(ctx)
        for ref in refs:
            await stack.enter_async_context(watcher.watching(ref))
        return await call_next(ctx)


async def on_subscribe(ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
    ref = trace_ref_of(str(params.uri))
    if ref is not None:
        try:
            await _watcher(ctx).subscribe_legacy(ref, str(params.uri), ctx.session)
        except ApiClientError as exc:
            raise MCPError(INVALID_PARAMS, f"{params.uri}: {exc.message}") from exc
    return EmptyResult()


async def on_unsubscribe(ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
    ref = trace_ref_of(str(params.uri))
    if ref is not None:
        _watcher(ctx).unsubscribe_legacy(ref, str(params.uri), ctx.session)
    return EmptyResult()


@asynccontextmanager
async def running_watcher(client: TraceClient, bus: SubscriptionBus) -> AsyncIterator[TraceWatcher]:
    async with anyio.create_task_group() as tg:
        yield TraceWatcher(client, bus, tg)
        tg.cancel_scope.cancel()


__all__ = ["TraceWatcher", "listen_middleware", "on_subscribe", "on_unsubscribe", "running_watcher"]
