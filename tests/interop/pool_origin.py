"""The app behind the pool test (pools.sh): one replica of it per pool member, each named, so
the load generator can count which member carried a request.

  GET  /short?i=N   -> "ok N\n"
  GET  /blob        -> SIZE bytes made from SEED (loadgen.py makes the same), X-Sha256 header
  POST /upload      -> reads Content-Length bytes, answers their sha256 (hex) as the body

Every answer carries X-Replica: NAME and Connection: close. It prints
`origin NAME listening on 127.0.0.1:PORT` once it listens (PORT 0 picks a free one).

Usage: python3 pool_origin.py NAME PORT SIZE SEED
"""

import hashlib
import http.server
import random
import sys

# Uploads larger than this are refused (413): the test sends a few MiB, never more.
MAX_UPLOAD = 64 * 1024 * 1024
CHUNK = 256 * 1024


def blob(size: int, seed: str) -> bytes:
    """The download body: the same bytes loadgen.py expects for this SIZE and SEED."""
    return random.Random(seed).randbytes(size)


def main() -> None:
    name, port, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    data = blob(size, seed)
    data_sha = hashlib.sha256(data).hexdigest()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, code: int, body: bytes, sha: str = "") -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Replica", name)
            if sha:
                self.send_header("X-Sha256", sha)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            if path == "/short":
                self.answer(200, f"ok {query.removeprefix('i=')}\n".encode())
            elif path == "/blob":
                self.answer(200, data, data_sha)
            else:
                self.answer(404, b"not found\n")

        def do_POST(self) -> None:
            if self.path != "/upload":
                self.answer(404, b"not found\n")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.answer(411, b"length required\n")
                return
            if not 0 <= length <= MAX_UPLOAD:
                self.answer(413, b"too large\n")
                return
            h = hashlib.sha256()
            left = length
            while left:
                chunk = self.rfile.read(min(CHUNK, left))
                if not chunk:
                    return  # the visitor went away mid-body: nothing to answer
                h.update(chunk)
                left -= len(chunk)
            self.answer(200, f"{h.hexdigest()}\n".encode())

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # one line per request at hundreds a second is noise; errors still print

    class Server(http.server.ThreadingHTTPServer):
        # The default backlog (5) overflows under a burst of visitors through the tunnel.
        request_queue_size = 512
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", port), Handler)
    print(f"origin {name} listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
