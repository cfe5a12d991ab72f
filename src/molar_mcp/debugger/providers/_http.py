"""What the HTTP providers share: their settings, one streamed POST with its client's lifetime and error
wording, and a usage estimate for servers that report none (a budget must never see a call as free
because the server kept quiet)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Final

import httpx2

from molar_mcp.debugger.chat import ModelError
from molar_mcp.models.chats import ToolDef, TurnMessage, Usage

TIMEOUT: Final = httpx2.Timeout(120.0, connect=10.0)


@asynccontextmanager
async def client_for(http: httpx2.AsyncClient | None) -> AsyncIterator[httpx2.AsyncClient]:
    """The injected client, or one opened for this call (a model call is seconds long: a new
    connection per call costs nothing that matters, and nothing is left open between calls)."""
    if http is not None:
        yield http
        return
    async with httpx2.AsyncClient(timeout=TIMEOUT) as own:
        yield own


def http_error(provider: str, url: str, response: httpx2.Response) -> ModelError:
    """A failed answer, worded for the person reading the chat."""
    detail = response.text[:300].strip()
    try:
        body = response.json()
        if isinstance(body, dict):
            err = body.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                detail = err["message"]
            elif isinstance(err, str):
                detail = err
    except ValueError:
        pass
    status = response.status_code
    hint = ""
    if status in (401, 403):
        hint = " Check MOLAR_MODEL_API_KEY."
    elif status == 404:
        hint = " Check the model name and MOLAR_MODEL_BASE_URL."
    elif status == 429:
        hint = " The provider is rate-limiting this key; try again shortly."
    return ModelError(f"{provider} answered {status} at {url}: {detail}.{hint}")


def unreachable(provider: str, url: str, exc: Exception) -> ModelError:
    return ModelError(f"could not reach {provider} at {url}: {type(exc).__name__}: {exc}. Is it running?")


def estimate_usage(system: str, messages: Sequence[TurnMessage], tools: Sequence[ToolDef], output: str) -> Usage:
    """About 4 characters a token, rounded up: used only when the server reports no usage."""
    sent = len(system) + sum(len(m.content) + len(json.dumps([c.model_dump() for c in m.tool_calls])) for m in messages)
    sent += sum(len(json.dumps(t.model_dump())) for t in tools)
    return Usage(input_tokens=-(-sent // 4), output_tokens=-(-len(output) // 4))


def parse_arguments(raw: str) -> dict[str, Any]:
    """A model's JSON tool arguments. Malformed ones are passed on as they are, under `_unparsed`: the
    tool then refuses them and the model reads why."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"_unparsed": raw}
    return value if isinstance(value, dict) else {"_unparsed": raw}


class HttpProvider:
    """A model behind an HTTP API: its name, base URL, key and (in tests) an injected client. A subclass
    names its `family` (the provider's name prefix), how errors call the far end (`label`) and its
    default base URL."""

    family: ClassVar[str]
    label: ClassVar[str]
    default_base_url: ClassVar[str]

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        http: httpx2.AsyncClient | None = None,
    ) -> None:
        self.model = model
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self._api_key = api_key
        self._http = http

    @property
    def name(self) -> str:
        return f"{self.family}:{self.model}"

    @asynccontextmanager
    async def streamed_post(
        self, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> AsyncIterator[httpx2.Response]:
        """POST `body` and yield the answer once its status says success; a refusal, an unreachable server
        and an answer of an unexpected shape (read inside the block) become a `ModelError` worded for
        the person reading the chat."""
        try:
            async with client_for(self._http) as http, http.stream("POST", url, json=body, headers=headers) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise http_error(self.label, url, resp)
                yield resp
        except httpx2.TransportError as exc:
            raise unreachable(self.label, url, exc) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{self.label} at {url} answered an unexpected shape: {exc}") from exc
