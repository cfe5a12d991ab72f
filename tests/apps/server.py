"""A test app (the ticket shop, the task board, the clinic) served by uvicorn in a thread on a free 127.0.0.1
port (a context manager)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import uvicorn

from tests.apps.ticketshop import create_app
from tests.servers import free_port


@contextmanager
def serve_ticketshop() -> Iterator[str]:
    """Yield the base URL of a running ticket shop; stop it on exit."""
    with serve_app(create_app) as base:
        yield base


@contextmanager
def serve_app(factory: Callable[[], Any]) -> Iterator[str]:
    """Yield the base URL of a running app (tests/apps: ticketshop, board, clinic); stop it on exit."""
    port = free_port()
    config = uvicorn.Config(factory(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"ticketshop-{port}", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx2.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx2.TransportError:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the app {factory.__module__} did not start") from None
            time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
