"""The private web app for the e2e-browser scenario (run.sh starts it inside the private
network namespace; nothing outside that namespace can reach it except through burrow).

Usage: python3 app.py PORT MARKER BIG_FILE [CERT KEY]

  GET /                 an HTML page whose <h1 id="marker"> holds MARKER
  GET /big.bin?rate=N   BIG_FILE, paced to N bytes per second when rate is given (so a download
                        is still in flight when run.sh sends SIGTERM to the burrow client)
  anything else         404

With CERT and KEY it serves HTTPS. Every request is logged to stderr as
`request PEER "REQUEST LINE" host=HOST ua=USER-AGENT`, so run.sh can see where requests came from.
"""

import http.server
import os
import ssl
import sys
import time
import urllib.parse

CHUNK = 64 * 1024


def main() -> None:
    port, marker, big = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    tls = sys.argv[4:6]
    size = os.path.getsize(big)
    page = (
        "<!doctype html><html><head><meta charset=utf-8><title>burrow e2e app</title></head>"
        f'<body><h1 id="marker">{marker}</h1><p>Served from inside the private network.</p>'
        "</body></html>\n"
    ).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format, *args) -> None:  # noqa: A002 (http.server's name)
            pass

        def do_GET(self) -> None:
            host = self.headers.get("Host", "-")
            ua = self.headers.get("User-Agent", "-")
            print(f'request {self.client_address[0]} "{self.requestline}" host={host} ua={ua}',
                  file=sys.stderr, flush=True)
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/":
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
            elif url.path == "/big.bin":
                rate = int(urllib.parse.parse_qs(url.query).get("rate", ["0"])[0])
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                start = time.monotonic()
                sent = 0
                with open(big, "rb") as f:
                    while chunk := f.read(CHUNK):
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        if rate > 0:
                            ahead = sent / rate - (time.monotonic() - start)
                            if ahead > 0:
                                time.sleep(ahead)
            else:
                self.send_error(404)

    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls[0], tls[1])

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def finish_request(self, request, client_address) -> None:
            # The TLS handshake runs in the request's own thread, not in the accept loop.
            if ctx is not None:
                request.settimeout(30)
                request = ctx.wrap_socket(request, server_side=True)
                request.settimeout(None)
            super().finish_request(request, client_address)

    server = Server(("0.0.0.0", port), Handler)
    print(f"app listening on 0.0.0.0:{port}{' (tls)' if tls else ''}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
