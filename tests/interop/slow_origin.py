"""A throttled origin for the interop suite's drain check: answers every GET with one file,
paced to RATE bytes per second.

Usage: python3 slow_origin.py PORT FILE RATE

Why not `curl --limit-rate`: on loopback the kernel's socket buffers (several MiB) swallow the
whole download, so the proxy finishes relaying at once and only curl's reading is slow. The
drain check needs the proxy itself to be mid-transfer when it gets SIGTERM, so the origin is
the slow end.
"""

import http.server
import os
import sys
import time

CHUNK = 64 * 1024


def main() -> None:
    port, path, rate = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    size = os.path.getsize(path)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            start = time.monotonic()
            sent = 0
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    sent += len(chunk)
                    ahead = sent / rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
