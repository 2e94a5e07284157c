"""A TCP sink for the interop suite's stdio checks (tunnel.sh): reads each connection to EOF,
then answers with the sha256 (hex) and size of what it read, and closes. So a client that
half-closes after sending gets a proof of what arrived.

Usage: python3 sha_sink.py PORT
"""

import hashlib
import socketserver
import sys


class Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        h = hashlib.sha256()
        size = 0
        while chunk := self.request.recv(65536):
            h.update(chunk)
            size += len(chunk)
        self.request.sendall(f"{h.hexdigest()} {size}\n".encode())


def main() -> None:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
