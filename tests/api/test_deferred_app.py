"""`DeferredApp` (what `molar-mcp stdio` serves its tools from): the app is built on the first request, once;
a build that fails answers 503 `{error, message, request_id}` and the next request builds again."""

from __future__ import annotations

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from molar_mcp.api.deferred import DeferredApp

pytestmark = pytest.mark.anyio


def hello_app() -> Starlette:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/hello", hello)])


async def test_the_app_is_built_on_the_first_request_and_only_once() -> None:
    builds: list[int] = []

    def build() -> ASGIApp:
        builds.append(1)
        return hello_app()

    app = DeferredApp(build)
    assert not app.built
    assert builds == []
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://t") as http:
        answers = [(await http.get("/hello")).text for _ in range(3)]
    assert answers == ["hello"] * 3
    assert builds == [1]
    assert app.built


async def test_a_failed_build_is_a_503_with_its_reason_and_the_next_request_builds_again() -> None:
    attempts: list[int] = []

    def build() -> ASGIApp:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("database is locked")
        return hello_app()

    app = DeferredApp(build)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://t") as http:
        failed = await http.get("/hello")
        second = await http.get("/hello")
    assert failed.status_code == 503
    body = failed.json()
    assert body["error"] == "unavailable"
    assert body["message"] == "the trace store could not be opened: database is locked"
    assert body["request_id"] == failed.headers["x-request-id"]
    assert (second.status_code, second.text) == (200, "hello")
    assert len(attempts) == 2
