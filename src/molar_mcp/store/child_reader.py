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
it is always reaped. No I/O here besides the pipe.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import pickle
import signal
import struct
from collections.abc import Callable, Iterator
from typing import IO, Any, Generic, TypeVar

import msgspec

from molar_mcp.store.db import CleanRows

T = TypeVar("T")
S = TypeVar("S")

_FRAME = struct.Struct("<cQ")  # a frame: its kind, then its length
_ROWS, _DONE, _FAILED = b"R", b"D", b"F"
_PIPE_BUFFER = 1 << 20  # (Linux's default most an unprivileged process may ask: /proc/sys/fs/pipe-max-size)


class ChildReaderError(RuntimeError):
    """The child stopped without saying why (killed, or its error could not be sent back)."""


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


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ChildReaderError("the bundle's reader process stopped before it was done")
    return data


class ChildReader(Generic[S]):
    """`build(item)` of each item of `source`, built in a forked child, as `CleanRows` (lists, not tuples);
    then `result`: `finish()`'s value, made in the child once `source` is spent. Use it as a context manager:
    leaving the block kills a child still running and reaps it. `build` and `finish` run in the child only:
    state they change there is not this process's (take it from `result`)."""

    def __init__(self, source: Iterator[Any], build: Callable[[Any], list[Any]], finish: Callable[[], S]) -> None:
        self._source, self._build, self._finish = source, build, finish
        self._pid: int | None = None
        self._stream: IO[bytes] | None = None
        self._result: tuple[S] | None = None

    def __enter__(self) -> ChildReader[S]:
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
        self._pid = pid
        self._stream = os.fdopen(read_fd, "rb", buffering=_PIPE_BUFFER)
        return self

    def __iter__(self) -> Iterator[CleanRows]:
        stream = self._stream
        if stream is None:
            raise RuntimeError("use ChildReader in a with block")
        decode = msgspec.msgpack.Decoder().decode
        while True:
            kind, size = _FRAME.unpack(_read_exactly(stream, _FRAME.size))
            data = _read_exactly(stream, size)
            if kind == _ROWS:
                yield CleanRows(decode(data))
            elif kind == _DONE:
                self._result = (pickle.loads(data),)  # noqa: S301 — from our own child, over our own pipe
                return
            else:
                raise pickle.loads(data)  # noqa: S301 — our own child's error (`_as_sent`)
            del data

    @property
    def result(self) -> S:
        """`finish()`'s value, once every chunk has been read."""
        if self._result is None:
            raise RuntimeError("the child has not finished")
        return self._result[0]

    def __exit__(self, *exc: object) -> None:
        pid, self._pid = self._pid, None
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()  # a child still writing gets EPIPE and leaves
        if pid is None:
            return
        if self._result is None:  # stopped early: the child's work is not wanted
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # (reaped already by a handler of all children)
            os.waitpid(pid, 0)
