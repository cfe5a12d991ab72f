"""An OTLP/HTTP sink inside a command replay's sandbox: `python -m molar_mcp.replay.otlp_sink DIR PORT -- CMD…`.

The sandbox's network is its own loopback, so the agent's OTLP exporter cannot reach the server (and no
credential of the server's enters the sandbox). This program listens on 127.0.0.1:PORT, saves every
`POST /v1/traces` body to DIR (`NNNN.<json|pb>`, gzip as sent), answers 200, runs CMD, and exits with
its exit code once CMD is done. The server ingests the saved bodies afterwards as the child trace.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY = 16 * 1024 * 1024
MAX_FILES = 2000


def main(argv: list[str]) -> int:
    folder, port, command = Path(argv[0]), int(argv[1]), argv[3:]
    folder.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    count = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if not self.path.rstrip("/").endswith("/v1/traces") or length > MAX_BODY:
                self.send_response(404 if length <= MAX_BODY else 413)
                self.end_headers()
                return
            body = self.rfile.read(length)
            json_body = "json" in (self.headers.get("content-type") or "")
            gz = ".gz" if (self.headers.get("content-encoding") or "").lower() == "gzip" else ""
            with lock:
                if count[0] < MAX_FILES:
                    count[0] += 1
                    (folder / f"{count[0]:04d}.{'json' if json_body else 'pb'}{gz}").write_bytes(body)
            self.send_response(200)
            self.send_header("content-type", "application/json" if json_body else "application/x-protobuf")
            self.send_header("content-length", "2" if json_body else "0")
            self.end_headers()
            if json_body:
                self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return subprocess.call(command)  # noqa: S603 - the project's registered command
    finally:
        server.shutdown()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
