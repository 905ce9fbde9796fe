"""What every emulator shares: an HTTPS server on 127.0.0.1 in a background thread, JSON replies."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from emulators.tls import server_context


def error_body(code: str, message: str) -> dict:
    """Azure's error shape: {error: {code, message, details: [{code, message}]}}."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"error": {"code": code, "message": f"Please provide below info when asking for support: timestamp = "
                                              f"{stamp}, correlationId = emulator.",
                      "details": [{"code": code, "message": message}]}}


class JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: HttpsEmulator

    def log_message(self, format: str, *args) -> None:  # quiet: the stats tell the story
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def drop_connection(self) -> None:
        self.close_connection = True
        self.connection.close()

    def send_json(self, status: int, payload: dict | None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode() if payload is not None else b""
        gzipped = "gzip" in (self.headers.get("Accept-Encoding") or "") and len(data) > 1024
        if gzipped:
            data = gzip.compress(data)
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", hashlib.md5(data).hexdigest())
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class HttpsEmulator:
    """Base for the emulators: set `handler` to a JsonHandler subclass; use as a context manager."""

    handler: type[JsonHandler] = JsonHandler

    def __init__(self, *, ca_out: str | Path | None = None, port: int = 0) -> None:
        self._context, self.ca_path = server_context(ca_out)
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        assert self._server is not None, "emulator not started"
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self):
        handler = type(f"{type(self).__name__}Handler", (self.handler,), {"owner": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self._requested_port), handler)
        self._server.daemon_threads = True
        self._server.socket = self._context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
