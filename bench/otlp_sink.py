"""``python -m bench.otlp_sink``: an OTLP/HTTP traces endpoint that drops what it receives.

The services export spans as shipped (``TRACE_EXPORTER=otlp``, the batch span processor, the
OTLP/HTTP protobuf exporter) to this stand-in for Jaeger, so that making, batching, encoding
and posting spans count in the services' CPU while nothing is stored. It runs as its own
process so its CPU is reported apart (it is not the project's cost).

Prints ``ready PORT`` on stdout; ``GET /stats`` answers ``{"requests": N, "bytes": B}`` (the
benchmark checks that spans arrived). Stops when its stdin closes or on SIGTERM.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()
_stats = {"requests": 0, "bytes": 0}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(size)
        with _lock:
            _stats["requests"] += 1
            _stats["bytes"] += size
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        with _lock:
            body = json.dumps(_stats).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None  # one line per export would be most of this process's work


def main() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"ready {server.server_address[1]}", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin (or goes away)
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
