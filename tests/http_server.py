"""A local HTTP file server for the download tests (CI has no internet): threaded, on
127.0.0.1, with ``Range`` support and the failures a real download meets. It stops by itself
after ``lifetime`` seconds, and every handler gives up when it stops.

Per file (``FileServer.files``: name -> bytes; any other name is a 404):

* ``stall``: names whose answer sends the headers, then no byte until the server stops;
* ``cut``: name -> (bytes, times): the first ``times`` answers close the connection after
  that many bytes of the body;
* ``slow``: name -> seconds spent sending the file (in 32 KiB pieces).

``requests`` lists (name, Range header or None) in arrival order.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    def __init__(self, files: dict[str, bytes], lifetime: float = 120.0) -> None:
        self.files = dict(files)
        self.stall: set[str] = set()
        self.cut: dict[str, tuple[int, int]] = {}
        self.slow: dict[str, float] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._timer = threading.Timer(lifetime, self.close)
        self._timer.daemon = True

    def __enter__(self) -> FileServer:
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        self._timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()

    def full_gets(self, name: str) -> int:
        """How many requests for ``name`` asked for the whole file (no Range)."""
        return sum(1 for n, r in self.requests if n == name and r is None)

    def take_cut(self, name: str) -> int | None:
        with self._lock:
            at, times = self.cut.get(name, (0, 0))
            if times <= 0:
                return None
            self.cut[name] = (at, times - 1)
            return at


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            rng = self.headers.get("Range")
            server.requests.append((name, rng))
            if name not in server.files:
                self.send_error(404, "Not Found")
                return
            data = server.files[name]
            start = _range_start(rng)
            if start is not None and start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if start is not None else 200)
            if start is not None:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            body = data[start or 0 :]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._send(name, body)

        def _send(self, name: str, body: bytes) -> None:
            if name in server.stall:
                self.wfile.flush()
                server.stopped.wait()
                return
            cut = server.take_cut(name)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            seconds = server.slow.get(name, 0.0)
            piece = 32 << 10
            pieces = max(1, -(-len(body) // piece))
            for i in range(0, len(body), piece):
                if server.stopped.is_set():
                    return
                self.wfile.write(body[i : i + piece])
                if seconds:
                    self.wfile.flush()
                    time.sleep(seconds / pieces)

    return Handler


def _range_start(header: str | None) -> int | None:
    if not header:
        return None
    m = re.fullmatch(r"bytes=(\d+)-", header.strip())
    return int(m.group(1)) if m else None
