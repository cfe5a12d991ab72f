"""The stdio wire of `molar-mcp stdio` (our transport on the event loop, `mcp/stdio.py`): bytes in, bytes out,
against what the SDK's own transport answers, and driven by the real SDK client."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from molar_mcp.mcp.stdio import loop_can_serve
from tests.servers import child_env

pytestmark = [pytest.mark.e2e]

INIT = {
    "jsonrpc": "2.0",
    "id": "init",
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "wire", "version": "1"}},
}
BIG = 2 * 1024 * 1024 + 17  # past the 64 KiB pipe buffer and past a mebibyte


def ping(request_id: object, **meta: object) -> bytes:
    params = {"params": {"_meta": meta}} if meta else {}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "ping", **params}).encode()


class Wire:
    """`molar-mcp stdio` as a child with raw pipes; its stdout read line by line on a thread."""

    def __init__(self, data_dir: Path, *, stderr_on_stdout: bool = False) -> None:
        cmd = [sys.executable, "-m", "molar_mcp", "--log-level", "WARNING", "stdio", "--data-dir", str(data_dir)]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if stderr_on_stdout else subprocess.PIPE,
            env=child_env(data_dir),
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.writers: list[threading.Thread] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(b"")

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        # On a thread: a big write must not wait for our reading of the answers.
        writer = threading.Thread(target=lambda: (self.proc.stdin.write(data), self.proc.stdin.flush()))  # type: ignore[union-attr]
        writer.start()
        self.writers.append(writer)

    def answers(self, count: int, timeout: float = 60) -> list[bytes]:
        got = []
        for _ in range(count):
            line = self.lines.get(timeout=timeout)
            assert line, f"the server closed stdout after {len(got)} of {count} answers"
            got.append(line)
        return got

    def finish(self, timeout: float = 30) -> tuple[int, bytes]:
        """Close stdin (EOF) and wait for the exit: the return code and what it wrote to stderr."""
        assert self.proc.stdin is not None
        for writer in self.writers:
            writer.join()
        self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        err = self.proc.stderr.read() if self.proc.stderr is not None else b""
        return code, err


def mixed_stream() -> tuple[bytes, int]:
    """Requests framed every way the SDK's reader accepts, with lines it drops between them; and how many
    answers they get."""
    big_name = "x" * BIG  # an unknown tool: its name comes back in the error, so the answer is as big
    parts = [
        json.dumps(INIT).encode() + b"\n",
        b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n',
        b"\n",  # an empty line: a parse error, dropped
        b"not json at all\n",
        b'{"jsonrpc":"2.0","id":"bad-utf8","method":"ping","params":{"_meta":{"x":"\xff\xfe\xc3"}}}\n',
        json.dumps({"jsonrpc": "2.0", "id": "big", "method": "tools/call", "params": {"name": big_name}}).encode()
        + b"\n",
        ping("crlf") + b"\r\n",
        ping("cr") + b"\r",
        b'{"jsonrpc":"2.0","id":"tail"' + b"\r\n",  # cut short by a line end: dropped
        *(ping(n, n=n) + b"\n" for n in range(200)),  # pipelined: all in one write
        ping("last") + b"\n",
    ]
    return b"".join(parts), 1 + 1 + 1 + 1 + 1 + 200 + 1


def test_the_wire_answers_byte_for_byte_what_the_sdk_transport_answers(tmp_path: Path) -> None:
    stream, count = mixed_stream()
    answers: dict[str, list[bytes]] = {}
    # stderr on the stdout pipe: `molar-mcp stdio` leaves such a wire to the SDK's transport (see below).
    for name, shared in (("ours", False), ("sdk", True)):
        wire = Wire(tmp_path / name, stderr_on_stdout=shared)
        wire.send(stream)
        answers[name] = wire.answers(count)
        code, err = wire.finish()
        assert code == 0, err
        assert b"Traceback" not in err
    ours = sorted(answers["ours"])  # handlers run concurrently: the order of answers is not the wire's
    assert ours == sorted(answers["sdk"])
    by_id = {json.loads(line)["id"]: line for line in ours}
    assert set(by_id) == {"init", "bad-utf8", "big", "crlf", "cr", "last", *range(200)}
    assert len(by_id["big"]) > BIG
    assert "x" * BIG in json.loads(by_id["big"])["result"]["content"][0]["text"]
    assert all(line.endswith(b"}\n") and line.count(b"\n") == 1 for line in ours)


def test_a_last_line_without_its_end_is_still_read_at_eof_as_the_sdk_transport_reads_it(tmp_path: Path) -> None:
    stream = json.dumps(INIT).encode() + b"\n" + ping("unended")
    answers: dict[str, list[bytes]] = {}
    for name, shared in (("ours", False), ("sdk", True)):
        wire = Wire(tmp_path / name, stderr_on_stdout=shared)
        wire.send(stream)
        assert json.loads(wire.answers(1)[0])["id"] == "init"
        code, err = wire.finish()
        assert code == 0, err
        answers[name] = list(iter(wire.lines.get, b""))
    # Ours answers the unended line before it exits. The SDK's transport reads it too, but its server stops
    # as soon as stdin ends, racing the handler of that last request: under load it exits without the
    # answer (seen once in a full suite at load ~9). So the SDK's answer, when it comes, must be the same.
    assert answers["ours"] == [b'{"jsonrpc":"2.0","id":"unended","result":{}}\n']
    assert answers["sdk"] in ([], answers["ours"])


def test_a_message_cut_off_by_eof_ends_the_server_cleanly(tmp_path: Path) -> None:
    wire = Wire(tmp_path / "data")
    wire.send(json.dumps(INIT).encode() + b"\n" + ping(1) + b"\n")
    assert {json.loads(line)["id"] for line in wire.answers(2)} == {"init", 1}
    wire.send(b'{"jsonrpc":"2.0","id":2,"meth')
    code, err = wire.finish()
    assert (code, b"Traceback" in err) == (0, False), err


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_sdk_client_sends_and_gets_messages_past_a_mebibyte_and_many_at_once(
    tmp_path: Path, mode: str
) -> None:
    data_dir = tmp_path / "data"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "molar_mcp", "stdio", "--data-dir", str(data_dir)], env=child_env(data_dir)
    )
    name = "y" * (BIG // 2)
    async with Client(params, mode=mode) as client:
        big = await client.call_tool(name, {})
        results: list[Any] = []

        async def one(n: int) -> None:
            results.append((n, await client.call_tool("list_traces", {"limit": 1 + n % 5})))

        async with anyio.create_task_group() as tg:
            for n in range(64):
                tg.start_soon(one, n)
    assert big.is_error
    assert name in big.content[0].text  # type: ignore[union-attr]
    assert len(results) == 64
    assert not any(result.is_error for _, result in results)


CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from molar_mcp.mcp.stdio import loop_can_serve, stdio_streams

    async def main() -> None:
        assert loop_can_serve(0, 1, 2)
        async with stdio_streams() as (read, write):
            assert os.read(0, 100) == b""  # fd 0 reads the null device while the wire is served
            os.write(1, b"stray\\n")  # fd 1 writes to stderr
            await write.send(await read.receive())  # echo one message
        os.write(1, b"released\\n")  # fd 1 is the wire again
        print("blocking", os.get_blocking(0), os.get_blocking(1), "read", os.read(0, 100), flush=True)

    asyncio.run(main())
    """
)


def test_while_serving_fds_0_and_1_are_stand_ins_and_afterwards_the_wire_is_back_blocking(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(ping(7) + b"\n")
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline()) == {"jsonrpc": "2.0", "id": 7, "method": "ping"}
    assert proc.stdout.readline() == b"released\n"  # the child has left the wire: what comes now is fd 0's
    out, err = proc.communicate(b"after\n", timeout=30)
    assert proc.returncode == 0, err
    assert out == b"blocking True True read b'after\\n'\n"
    assert err == b"stray\n"


def test_only_pipes_and_sockets_that_stderr_is_not_are_served_on_the_loop() -> None:
    r, w = os.pipe()
    r2, w2 = os.pipe()
    a, b = socket.socketpair()
    with tempfile.TemporaryFile() as file:
        try:
            assert loop_can_serve(r, w, w2)  # an MCP client's pipes
            assert loop_can_serve(a.fileno(), a.fileno(), w2)  # one socket both ways
            assert not loop_can_serve(r, w, w)  # stderr on the stdout pipe (2>&1)
            assert not loop_can_serve(file.fileno(), w, w2)  # `molar-mcp stdio < requests.jsonl`
            assert not loop_can_serve(r, file.fileno(), w2)
        finally:
            for fd in (r, w, r2, w2):
                os.close(fd)
            a.close()
            b.close()


def child_pids() -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):
            found |= {int(pid) for pid in (task / "children").read_text().split()}
    return found


@pytest.mark.anyio
async def test_stdio_reads_the_embedded_store_on_the_event_loop_without_starting_a_thread(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "molar_mcp", "stdio", "--data-dir", str(data_dir)], env=child_env(data_dir)
    )
    known = child_pids()
    async with Client(params) as client:
        (pid,) = child_pids() - known
        await client.list_tools()
        threads = len(os.listdir(f"/proc/{pid}/task"))
        listed = await client.call_tool("list_traces", {"status": "failed"})
        # The first tool call opens the store (docs/architecture.md, "Serving"), which starts one thread, its
        # WAL checkpointer (store/db.py); a read in a worker thread would start another.
        assert len(os.listdir(f"/proc/{pid}/task")) == threads + 1
        missing = await client.call_tool("get_trace", {"trace_id": "nope1234"})
        assert len(os.listdir(f"/proc/{pid}/task")) == threads + 1
    assert not listed.is_error
    assert missing.is_error
