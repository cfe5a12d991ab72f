"""A bundle's chunks read and built by a forked child process while this process stores the rows.

A bundle's ingest is two halves of about equal CPU: reading (gunzip, msgspec, the rows, the step tree,
the kinds and the indexed text) and storing (SQLite's insert). A thread cannot run the reading beside the
storing: both need the GIL, and SQLite's steps — the part that runs without it — are a quarter of the
work (bench/README.md, `bench_bundle.py`: a reader thread made the ingest ~40% slower, not faster). A
child process has an interpreter of its own. `read_in_child` forks one that goes on with the chunk
iterator where this process left it (the fork gives it the archive's state, the step tree and the
counts as they are), builds each chunk's rows and writes them to a pipe as msgpack frames; this process
decodes each frame and stores it while the child builds the next. When the source is spent the child
sends back what it gathered (`finish()`), or the error that stopped it.

Why fork is safe here: the child runs only the reading — msgspec, pure Python, zlib-ng on this thread's
own decompressor, pydantic while holding the GIL — never SQLite, a socket, a lock another thread may hold
(the collector is turned off directly, not through `gc_paused`'s lock) or an at-exit handler (it leaves by
`os._exit`); it closes every descriptor it inherited but stdio and its end of the pipe. Memory: the pipe
holds at most its buffer (1 MB) and each side one frame; the child's pages are the parent's,
shared until written.

The child ends on every path: it exits once it has sent its last frame (or when a write finds the pipe
closed); when this process stops reading early (its own error, a closed generator) the child is killed;
it is always reaped. This process waits at most `wait_seconds` for each read from the pipe: a child that
sends nothing for that long (stopped, or stuck) is killed, and the read fails with `ChildReaderError` (the
store's transaction rolls back: nothing is stored). A fork that fails (`OSError`: EAGAIN, ENOMEM) is the
caller's to handle: `start` raises it before anything was read, so the caller may read on itself.

Frames are read straight from the pipe into one buffer, grown to the biggest frame and reused (no buffered
stream, no bytes object a frame). No I/O here besides the pipe.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import pickle
import select
import signal
import struct
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import msgspec

from molar_mcp.store.db import CleanRows
from molar_mcp.store.port import IngestInterrupted

T = TypeVar("T")
S = TypeVar("S")

_FRAME = struct.Struct("<cQ")  # a frame: its kind, then its length
_ROWS, _DONE, _FAILED = b"R", b"D", b"F"
_PIPE_BUFFER = 1 << 20  # (Linux's default most an unprivileged process may ask: /proc/sys/fs/pipe-max-size)
# How long this process waits for the child's next bytes before it gives up on it. A chunk takes the child
# tens of milliseconds to build; only a stopped or stuck child (or a machine frozen that long) waits more.
WAIT_SECONDS = 30.0


class ChildReaderError(IngestInterrupted):
    """The child stopped without saying why (killed, or its error could not be sent back), or sent nothing
    for `wait_seconds` (it was killed)."""


def can_fork() -> bool:
    """Whether this platform forks (POSIX)."""
    return hasattr(os, "fork")


def _as_sent(exc: BaseException) -> bytes:
    """`exc` pickled if it comes back as the same type with the same message, else as `ChildReaderError`."""
    named = pickle.dumps(ChildReaderError(f"reading the bundle failed: {type(exc).__name__}: {exc}"))
    try:
        data = pickle.dumps(exc)
        back = pickle.loads(data)  # noqa: S301 — bytes this process just made
    except Exception:  # an error that does not pickle (or not back) is named instead
        return named
    return data if type(back) is type(exc) and str(back) == str(exc) else named


def _child(out_fd: int, source: Iterator[T], build: Callable[[T], list[Any]], finish: Callable[[], Any]) -> None:
    """The child's whole life: build and send every chunk, then `finish()` or the error; never returns."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent's handlers (a server's) are not the child's
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # The parent's other descriptors are not the child's to hold open: a listening socket, the database's
        # files, another bundle's pipe (whose reader would wait for this child to exit to see its end).
        os.closerange(3, out_fd)
        os.closerange(out_fd + 1, os.sysconf("SC_OPEN_MAX"))
        gc.disable()  # (directly: `gc_paused`'s lock may be held by a thread the fork did not copy)
        encode = msgspec.msgpack.Encoder().encode
        try:
            for item in source:
                data = encode(build(item))
                # Each frame whole into the pipe at once (not held in a buffer): the parent stores it while
                # this builds the next.
                _write_all(out_fd, _FRAME.pack(_ROWS, len(data)) + data)
                del data, item
            kind, data = _DONE, pickle.dumps(finish())
        except BaseException as exc:  # sent to the parent, raised there
            kind, data = _FAILED, _as_sent(exc)
        _write_all(out_fd, _FRAME.pack(kind, len(data)) + data)
    finally:
        os._exit(0)  # no at-exit handler, no flush of the parent's buffers


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class ChildReader(Generic[S]):
    """`build(item)` of each item of `source`, built in a forked child, as `CleanRows` (lists, not tuples);
    then `result`: `finish()`'s value, made in the child once `source` is spent. Use it as a context manager
    (entering it forks, unless `start` did): leaving the block kills a child still running and reaps it.
    `build` and `finish` run in the child only: state they change there is not this process's (take it
    from `result`). Each read waits at most `wait_seconds` for the child's next bytes."""

    def __init__(
        self,
        source: Iterator[Any],
        build: Callable[[Any], list[Any]],
        finish: Callable[[], S],
        *,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        self._source, self._build, self._finish = source, build, finish
        self._wait_seconds = wait_seconds
        self._pid: int | None = None
        self._fd: int | None = None
        self._result: tuple[S] | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs (None before `start` and once reaped)."""
        return self._pid

    def start(self) -> None:
        """Fork the child. An `OSError` (no pipe, or no fork: EAGAIN, ENOMEM) leaves nothing open and
        nothing of `source` read: the caller may read it itself."""
        if self._fd is not None:
            return
        read_fd, write_fd = os.pipe()
        # A pipe that holds a whole frame (a chunk's rows are ~0.5 MB): the child writes one and builds the next
        # while this process stores the one before (Linux; elsewhere the default size, and less overlap).
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_BUFFER)
        try:
            pid = os.fork()
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:  # the child
            os.close(read_fd)
            _child(write_fd, self._source, self._build, self._finish)
        os.close(write_fd)
        self._pid, self._fd = pid, read_fd

    def __enter__(self) -> ChildReader[S]:
        self.start()
        return self

    def _fill(self, fd: int, poller: select.poll, view: memoryview) -> None:
        """Read exactly `len(view)` bytes into `view`, waiting at most `wait_seconds` for each read."""
        wait_ms = max(1, round(self._wait_seconds * 1000))
        got = 0
        while got < len(view):
            if not poller.poll(wait_ms):  # (an interrupted poll is retried by Python with the time left)
                raise ChildReaderError(
                    f"the bundle's reading process sent nothing for {self._wait_seconds:g} s and was stopped; "
                    "nothing of the upload was stored: send it again"
                )
            read = os.readv(fd, [view[got:]])
            if read == 0:
                raise ChildReaderError("the bundle's reader process stopped before it was done")
            got += read

    def __iter__(self) -> Iterator[CleanRows]:
        fd = self._fd
        if fd is None:
            raise RuntimeError("use ChildReader in a with block")
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        decode = msgspec.msgpack.Decoder().decode
        header = bytearray(_FRAME.size)
        buffer = bytearray()  # every frame is read into it: grown to the biggest one, then reused
        while True:
            self._fill(fd, poller, memoryview(header))
            kind, size = _FRAME.unpack(header)
            if size > len(buffer):
                buffer = bytearray(max(size, 2 * len(buffer)))
            with memoryview(buffer) as whole, whole[:size] as data:
                self._fill(fd, poller, data)
                if kind == _ROWS:
                    rows = CleanRows(decode(data))
                elif kind == _DONE:
                    self._result = (pickle.loads(data),)  # noqa: S301 — from our own child, over our own pipe
                    return
                else:
                    raise pickle.loads(data)  # noqa: S301 — our own child's error (`_as_sent`)
            yield rows
            del rows

    @property
    def result(self) -> S:
        """`finish()`'s value, once every chunk has been read."""
        if self._result is None:
            raise RuntimeError("the child has not finished")
        return self._result[0]

    def __exit__(self, *exc: object) -> None:
        pid, self._pid = self._pid, None
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # a child still writing gets EPIPE and leaves
        if pid is None:
            return
        if self._result is None:  # stopped early: the child's work is not wanted
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # (reaped already by a handler of all children)
            os.waitpid(pid, 0)
