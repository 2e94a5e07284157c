"""A second implementation of the burrow tunnel's client side, on python's `websockets`, for
the interop suite (tunnel.sh): it checks the relay against a WebSocket stack that is not
burrow's own, and the wire format against docs/PROTOCOL.md.

Usage: python3 ws_client.py MODE URL [--header 'Name: value']... [mode options]

  status   URL            the handshake only; prints `status 101 burrow-version=V` when the
                          relay upgrades, `status NNN` when it refuses with an HTTP status
  get      URL --target HOST:PORT --path PATH [--sha256]
                          OPEN a Dial stream to HOST:PORT, send `GET PATH HTTP/1.0` and FIN,
                          read to FIN while granting WINDOW credit; prints the response body
                          (or `sha256 HEX` of it), and fails on any flow-control or framing
                          violation by the relay
  send     URL (--hex HEX | --text TEXT)
                          send one binary (or text) message, then wait for the relay to close;
                          prints `close CODE`

Prints exactly one result line on stdout; anything unexpected is printed as
`error: ...` with exit status 1. Exit status 2: `websockets` is not importable.
Works with the new asyncio client (websockets >= 13, `additional_headers`, `InvalidStatus`)
and with the legacy one (websockets 10-12, `extra_headers`, `InvalidStatusCode`).
"""

import argparse
import asyncio
import hashlib
import struct
import sys

try:
    import websockets
    from websockets.exceptions import ConnectionClosed, InvalidHandshake
except ImportError as e:
    print(f"error: python websockets is not importable ({e}): pip3 install websockets, "
          "or run .ci/run")
    sys.exit(2)

try:  # websockets >= 13
    from websockets.asyncio.client import connect as ws_connect

    HEADERS_KW = "additional_headers"
except ImportError:  # websockets 10-12: the legacy client
    from websockets.client import connect as ws_connect

    HEADERS_KW = "extra_headers"

# docs/PROTOCOL.md
OPEN, OPEN_OK, OPEN_REFUSED, DATA, WINDOW, FIN, RESET = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
GO_AWAY = 0x13
HEADER = struct.Struct(">BI")
MAX_DATA = 64 * 1024
OUR_WINDOW = 256 * 1024
TIMEOUT = 10


class Failed(Exception):
    pass


def connect(args):
    headers = []
    for h in args.header:
        name, _, value = h.partition(":")
        headers.append((name.strip(), value.strip()))
    kwargs = {HEADERS_KW: headers, "open_timeout": TIMEOUT}
    return ws_connect(args.url, **kwargs)


def http_status(exc):
    """The HTTP status of a refused handshake: InvalidStatus (new) keeps the response,
    InvalidStatusCode (legacy) the code."""
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    if code is None:
        code = getattr(exc, "status_code", None)
    return code


def response_headers(ws):
    response = getattr(ws, "response", None)  # new client
    if response is not None and hasattr(response, "headers"):
        return response.headers
    return getattr(ws, "response_headers", {})  # legacy client


def close_code(exc):
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is not None:
        return rcvd.code
    return None


async def recv_frame(ws):
    msg = await asyncio.wait_for(ws.recv(), TIMEOUT)
    if isinstance(msg, str):
        raise Failed(f"relay sent a text message {msg[:60]!r}")
    if len(msg) < HEADER.size:
        raise Failed(f"relay sent a {len(msg)}-byte message, shorter than a frame header")
    ftype, sid = HEADER.unpack_from(msg)
    return ftype, sid, msg[HEADER.size:]


def text_field(body, at):
    n = body[at]
    return body[at + 1:at + 1 + n].decode("utf-8", "replace")


async def status(args):
    try:
        async with connect(args) as ws:
            version = response_headers(ws).get("Burrow-Version")
            return f"status 101 burrow-version={version}"
    except InvalidHandshake as e:
        code = http_status(e)
        if code is None:
            raise Failed(f"handshake failed without an HTTP status: {e!r}")
        return f"status {code}"


async def get(args):
    host, _, port = args.target.rpartition(":")
    hb = host.encode()
    sid = 1  # the client opens odd ids
    async with connect(args) as ws:
        await ws.send(HEADER.pack(OPEN, sid) + struct.pack(">IBHB", OUR_WINDOW, 0, int(port),
                                                            len(hb)) + hb)
        ftype, fsid, body = await recv_frame(ws)
        if ftype == OPEN_REFUSED and fsid == sid:
            raise Failed(f"OPEN refused: code {body[0]}, {text_field(body, 1)!r}")
        if ftype != OPEN_OK or fsid != sid or len(body) != 4:
            raise Failed(f"want OPEN_OK for stream {sid}, got type {ftype:#x} id {fsid} "
                         f"body {body[:40].hex()}")
        (their_window,) = struct.unpack(">I", body)
        request = f"GET {args.path} HTTP/1.0\r\nHost: {args.target}\r\n\r\n".encode()
        if len(request) > their_window:
            raise Failed(f"relay granted a {their_window}-byte window, too small for the request")
        await ws.send(HEADER.pack(DATA, sid) + request)
        await ws.send(HEADER.pack(FIN, sid))

        data = bytearray()
        credit = OUR_WINDOW  # what the relay may still send before we grant more
        consumed = 0
        while True:
            ftype, fsid, body = await recv_frame(ws)
            if fsid != sid:
                raise Failed(f"frame type {ftype:#x} for stream {fsid}, only {sid} is open")
            if ftype == DATA:
                if not 1 <= len(body) <= MAX_DATA:
                    raise Failed(f"DATA of {len(body)} bytes (1 to {MAX_DATA} allowed)")
                credit -= len(body)
                if credit < 0:
                    raise Failed(f"relay sent {-credit} bytes past the window we granted")
                data += body
                consumed += len(body)
                if consumed >= OUR_WINDOW // 2:
                    await ws.send(HEADER.pack(WINDOW, sid) + struct.pack(">I", consumed))
                    credit += consumed
                    consumed = 0
            elif ftype == WINDOW:
                continue
            elif ftype == FIN:
                break
            elif ftype == RESET:
                raise Failed(f"stream reset: code {body[0]}, {text_field(body, 1)!r}")
            else:
                raise Failed(f"unexpected frame type {ftype:#x} on stream {sid}")
        await ws.close()

    head, sep, payload = bytes(data).partition(b"\r\n\r\n")
    if not sep:
        raise Failed(f"no HTTP response head in {bytes(data[:80])!r}")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    if " 200 " not in status_line:
        raise Failed(f"origin answered {status_line!r}")
    if args.sha256:
        return f"sha256 {hashlib.sha256(payload).hexdigest()}"
    return payload.decode("utf-8", "replace").rstrip("\n")


async def send(args):
    async with connect(args) as ws:
        await ws.send(args.text if args.text is not None else bytes.fromhex(args.hex))
        try:
            while True:
                msg = await asyncio.wait_for(ws.recv(), TIMEOUT)
                shown = msg[:40] if isinstance(msg, str) else msg[:40].hex()
                print(f"# relay sent {shown!r} instead of closing", file=sys.stderr)
        except ConnectionClosed as e:
            code = close_code(e)
            if code is None:
                return "close none (the connection ended without a close frame)"
            return f"close {code}"
        except asyncio.TimeoutError:
            raise Failed(f"the relay did not close the session within {TIMEOUT} s")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["status", "get", "send"])
    p.add_argument("url")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--target")
    p.add_argument("--path", default="/")
    p.add_argument("--sha256", action="store_true")
    p.add_argument("--hex")
    p.add_argument("--text")
    args = p.parse_args()
    run = {"status": status, "get": get, "send": send}[args.mode]
    try:
        print(asyncio.run(asyncio.wait_for(run(args), 3 * TIMEOUT)))
    except Failed as e:
        print(f"error: {e}")
        sys.exit(1)
    except Exception as e:  # anything else is a failed check, shown in one line
        print(f"error: {type(e).__name__}: {e} (websockets {websockets.__version__})")
        sys.exit(1)


if __name__ == "__main__":
    main()
