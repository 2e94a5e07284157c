"""A hostile tunnel client for the interop suite (tunnel.sh): upgrades to the relay with a
valid token, then floods OPEN frames as fast as the socket takes them and never reads a byte
(issue 7 item 10: such a peer once took a relay from 4 MB to 528 MB and wrote a WARN line per
OPEN). Standard library only: it speaks the WebSocket framing by hand (RFC 6455, masked client
frames) and the OPEN layout of docs/PROTOCOL.md.

Usage: python3 flood.py HOST:PORT TOKEN RELAY_PID [--opens N] [--seconds S]

Sends up to N OPENs (Dial 127.0.0.1:9, which the relay's rules refuse) for at most S seconds,
stops when the relay stops taking bytes for 3 s, then, with the connection still open, prints
one line: `sent OPENS BYTES rss_kib RSS` (RSS: the relay's VmRSS now). Exit status 1 with
`error: ...` on anything unexpected.
"""

import argparse
import base64
import os
import socket
import struct
import sys
import time

OPEN = 0x01
EARLY_WINDOW = 256 * 1024


def ws_frame(payload: bytes) -> bytes:
    """One masked binary WebSocket frame (FIN set) carrying `payload`."""
    head = bytes([0x82])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def open_frame(stream_id: int) -> bytes:
    host = b"127.0.0.1"
    body = struct.pack(">BII", OPEN, stream_id, EARLY_WINDOW)
    body += bytes([0]) + struct.pack(">H", 9) + bytes([len(host)]) + host
    return ws_frame(body)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("addr")
    p.add_argument("token")
    p.add_argument("pid", type=int)
    p.add_argument("--opens", type=int, default=200_000)
    p.add_argument("--seconds", type=float, default=20.0)
    a = p.parse_args()
    host, port = a.addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /burrow HTTP/1.1\r\nHost: {a.addr}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {a.token}\r\nBurrow-Version: 1\r\n"
            f"Burrow-Session: flood{os.getpid():010d}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            print("error: relay closed during the handshake")
            return 1
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status + b" ":
        print(f"error: upgrade refused: {status.decode(errors='replace')}")
        return 1
    # From here on nothing is ever read: the relay's answers pile up on its side.
    s.settimeout(3.0)
    sent = opened = 0
    deadline = time.monotonic() + a.seconds
    batch = 1000
    stream_id = 1
    while opened < a.opens and time.monotonic() < deadline:
        blob = b"".join(open_frame(stream_id + 2 * i) for i in range(batch))
        try:
            s.sendall(blob)
        except socket.timeout:
            break  # the relay stopped reading us: what the fix is for
        except OSError as e:
            print(f"error: send failed after {opened} OPENs: {e}")
            return 1
        sent += len(blob)
        opened += batch
        stream_id += 2 * batch
    print(f"sent {opened} {sent} rss_kib {rss_kib(a.pid)}")
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
