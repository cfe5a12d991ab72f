"""MCP over stdio on the event loop: the process's stdin and stdout as asyncio pipe transports.

The SDK's `stdio_server()` reads and writes through `anyio.wrap_file`: a worker-thread hop for every line
read and two for every message written (write, flush), about a third of the server's CPU per tool call.
Here the same wire runs on the event loop itself, with what the SDK's transport guarantees kept:

- framing: one JSON-RPC message per line, read as UTF-8 with undecodable bytes replaced (U+FFFD); lines
  end at `\\n`, `\\r\\n` or a lone `\\r` (the universal newlines of the SDK's text wrapper); a last line
  without an end is still read at EOF; a line that does not parse (an empty one too) reaches the session as
  the parse exception, as the SDK's transport hands it on; no limit on a line's length;
- output: `model_dump_json(by_alias=True, exclude_unset=True)` plus `\\n`, UTF-8, each message whole;
- while serving, fd 0 reads the null device and fd 1 writes to stderr, so the tools' children and any
  stray `print` cannot read or tear the wire; both are restored (with their blocking mode) on exit.

The pipe transports need stdin and stdout to be pipes or sockets (what every MCP client spawns a server
with) that stderr does not share (putting the descriptions in non-blocking mode must not reach stderr's
writes); anything else (a file, a terminal) is served by the SDK's own transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import anyio
import mcp_types
from mcp.server import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

# Read ahead at most this much past what the session has taken; a longer line is still read whole (the
# reader resumes whenever the buffer holds no complete line).
READ_AHEAD = 1 << 20
# Give the client this long to read what is left to write when the server stops.
FLUSH_TIMEOUT = 10.0


async def run_stdio(server: MCPServer[Any]) -> None:
    """Serve `server` over this process's stdin/stdout until stdin ends (what `run_stdio_async` does)."""
    lowlevel = server._lowlevel_server
    async with stdio_streams() as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


@contextlib.asynccontextmanager
async def stdio_streams() -> AsyncIterator[tuple[Any, Any]]:
    """The session's read and write streams over fds 0 and 1: on the loop where both are pipes or
    sockets, through the SDK's threaded transport otherwise."""
    if not loop_can_serve(0, 1, 2):
        async with stdio_server() as streams:
            yield streams
        return
    loop = asyncio.get_running_loop()
    claimed_in = claimed_out = None
    inbox: Inbox | None = None
    outbox: Outbox | None = None
    try:
        claimed_in = Claim.take(0, os.open(os.devnull, os.O_RDONLY))
        claimed_out = Claim.take(1, os.dup(2))
        _, inbox = await loop.connect_read_pipe(Inbox, Descriptor(claimed_in.private))
        _, outbox = await loop.connect_write_pipe(Outbox, Descriptor(claimed_out.private))
        yield LineReadStream(inbox), MessageWriteStream(outbox)
    finally:
        if outbox is not None:
            await outbox.flush_and_close(FLUSH_TIMEOUT)
        if inbox is not None:
            inbox.close()
        for claim in (claimed_out, claimed_in):
            if claim is not None:
                claim.release()


def loop_can_serve(stdin: int, stdout: int, stderr: int) -> bool:
    """Whether stdin and stdout are pipes or sockets that stderr is not one of (stderr's writes stay
    blocking once ours are not)."""
    if sys.platform == "win32":
        return False
    try:
        ends = [os.fstat(fd) for fd in (stdin, stdout)]
    except OSError:
        return False
    if not all(stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode) for st in ends):
        return False
    try:
        err = os.fstat(stderr)
    except OSError:
        return True
    return all((st.st_dev, st.st_ino) != (err.st_dev, err.st_ino) for st in ends)


class Descriptor:
    """A descriptor as the pipe transports take it; closing the transport leaves it open (its claim closes
    it after putting the wire back on fd 0/1)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        pass


class Claim:
    """A standard descriptor taken for the wire: its pipe moved to a private descriptor (close-on-exec,
    above 2), the standard number pointed at a stand-in meanwhile, all put back by `release`."""

    def __init__(self, fd: int, private: int, was_blocking: bool) -> None:
        self.fd, self.private, self.was_blocking = fd, private, was_blocking

    @classmethod
    def take(cls, fd: int, stand_in: int) -> Claim:
        try:
            was_blocking = os.get_blocking(fd)
            private = _dup_above_std(fd)
            try:
                os.dup2(stand_in, fd)
            except OSError:
                os.close(private)
                raise
        finally:
            os.close(stand_in)
        return cls(fd, private, was_blocking)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.set_blocking(self.private, self.was_blocking)
            os.dup2(self.private, self.fd)
        with contextlib.suppress(OSError):
            os.close(self.private)


def _dup_above_std(fd: int) -> int:
    import fcntl  # POSIX only, as is this transport (`loop_can_serve`)

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


class Inbox(asyncio.Protocol):
    """Bytes from stdin, cut into lines (universal newlines) on demand."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.scanned = 0  # buf[:scanned] holds no line end (a trailing `\r` waits for its possible `\n`)
        self.eof = False
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > READ_AHEAD and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def next_line(self) -> bytes | None:
        """The next line without its end, or None until more bytes (or EOF) arrive."""
        buf = self.buf
        nl = buf.find(b"\n", self.scanned)
        cr = buf.find(b"\r", self.scanned, nl if nl >= 0 else len(buf))
        if cr >= 0:
            if cr + 1 < len(buf):
                end, skip = cr, 2 if buf[cr + 1] == 0x0A else 1
            elif self.eof:
                end, skip = cr, 1
            else:
                self.scanned = cr
                return None
        elif nl >= 0:
            end, skip = nl, 1
        elif self.eof and buf:
            end, skip = len(buf), 0
        else:
            self.scanned = len(buf)
            return None
        line = bytes(buf[:end])
        del buf[: end + skip]
        self.scanned = 0
        return line

    async def read_line(self) -> bytes:
        while True:
            line = self.next_line()
            if line is not None:
                return line
            if self.eof:
                raise anyio.EndOfStream
            if self.paused and self.transport is not None:
                self.paused = False
                self.transport.resume_reading()
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.eof = True
        self._wake()


def parse_line(line: bytes) -> SessionMessage | Exception:
    """One line as the SDK's transport reads it: UTF-8 (bad bytes replaced), one JSON-RPC message, or the
    exception that says why not."""
    text: bytes | str = line if line.isascii() else line.decode("utf-8", "replace")
    try:
        message = mcp_types.jsonrpc_message_adapter.validate_json(text, by_name=False)
    except Exception as exc:
        return exc
    return SessionMessage(message)


class LineReadStream:
    """The session's read stream (the SDK's `ReadStream` protocol): a message or parse exception a line."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.closed = False

    async def receive(self) -> SessionMessage | Exception:
        if self.closed:
            raise anyio.ClosedResourceError
        return parse_line(await self.inbox.read_line())

    async def aclose(self) -> None:
        self.closed = True

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> bool | None:
        await self.aclose()
        return None


class Outbox(asyncio.Protocol):
    """Writes to stdout with the transport's flow control: writers wait while its buffer is over the mark."""

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.paused = False
        self.lost = False
        self.waiters: list[asyncio.Future[None]] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_all()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake_all()
        if not self.done.done():
            self.done.set_result(None)

    def _wake_all(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()

    async def write(self, data: bytes) -> None:
        if self.lost or self.transport is None or self.transport.is_closing():
            raise anyio.BrokenResourceError
        self.transport.write(data)
        while self.paused and not self.lost:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            await waiter

    async def flush_and_close(self, grace: float) -> None:
        """Close once what is buffered is written (or the reader is gone, or `grace` seconds pass)."""
        if self.transport is None:
            return
        self.transport.close()  # a pipe transport writes out its buffer before it closes
        with anyio.move_on_after(grace, shield=True):
            await asyncio.shield(self.done)
        if not self.done.done():
            self.transport.abort()


class MessageWriteStream:
    """The session's write stream (the SDK's `WriteStream` protocol): one JSON line a message."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.closed = False

    async def send(self, item: SessionMessage, /) -> None:
        if self.closed:
            raise anyio.ClosedResourceError
        data = item.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
        await self.outbox.write(data)

    async def aclose(self) -> None:
        self.closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> bool | None:
        await self.aclose()
        return None
