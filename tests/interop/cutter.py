"""A TCP forwarder that cuts its connections on purpose: the faulty link between `burrow client`
and `burrow server` for tests/interop/resume.sh.

Usage: python3 cutter.py TARGET_PORT [--cut-every BYTES --cuts N] [--kinds fin,rst,hole]

Listens on 127.0.0.1:0 and forwards every connection to 127.0.0.1:TARGET_PORT. Its first line
on stdout is `cutter listening on 127.0.0.1:PORT -> 127.0.0.1:TARGET_PORT`. A cut ends every
connection forwarded at that moment, the kinds taken in turn from --kinds (default fin,rst,hole):

  fin   both sockets are shut down for writing (a FIN each way, nothing forwarded after it);
        what still arrives is read and dropped until the peer closes (bounded: 10 s).
  rst   SO_LINGER 0 and close: an RST each way.
  hole  forwarding stops and both sockets stay open, unread: silence, until a keepalive
        declares the link dead (the sockets are closed when the cutter exits).

A cut happens on SIGUSR1, and with --cut-every BYTES each time BYTES more bytes (both directions
together) have been forwarded, at most --cuts N times. Connections made after a cut are
forwarded normally. Every event is one line on stdout:

  conn ID open
  cut K KIND conns=M at=BYTES        (K counts cuts from 1; M connections were cut)
  conn ID closed up=BYTES down=BYTES

Runs until killed; python3 stdlib only (asyncio, one thread, so an RST is sent at once).
"""

import argparse
import asyncio
import signal
import socket
import struct
import sys

CHUNK_HIGH_WATER = 256 * 1024  # bytes queued towards one side before the other is paused
FIN_DRAIN_SECS = 10.0  # after a FIN cut, how long to wait for the peer's close


def log(line: str) -> None:
    print(line, flush=True)


class Cutter:
    def __init__(self, target_port: int, every: int, cuts: int, kinds: list[str]) -> None:
        self.target_port = target_port
        self.every = every
        self.max_cuts = cuts
        self.kinds = kinds
        self.cut_count = 0
        self.total = 0
        self.next_at = every
        self.next_id = 0
        self.live: set["Pair"] = set()
        self.held: list["Pair"] = []  # blackholed pairs, kept open until exit

    def forwarded(self, n: int) -> None:
        self.total += n
        if self.every > 0 and self.cut_count < self.max_cuts and self.total >= self.next_at:
            self.next_at = self.total + self.every
            self.cut()

    def cut(self) -> None:
        kind = self.kinds[self.cut_count % len(self.kinds)]
        self.cut_count += 1
        pairs = list(self.live)
        log(f"cut {self.cut_count} {kind} conns={len(pairs)} at={self.total}")
        for p in pairs:
            p.cut(kind)


class Side(asyncio.Protocol):
    """One socket of a pair: what it reads goes to the other side's socket."""

    def __init__(self, pair: "Pair", name: str) -> None:
        self.pair = pair
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.other: "Side | None" = None
        self.count = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self is self.pair.down:
            transport.pause_reading()  # nothing is read from the client before the relay is there

    def data_received(self, data: bytes) -> None:
        if self.pair.state != "live" or self.other is None or self.other.transport is None:
            return  # a cut link: what arrives is dropped
        self.other.transport.write(data)
        self.count += len(data)
        self.pair.cutter.forwarded(len(data))

    def eof_received(self):
        if self.pair.state == "live" and self.other and self.other.transport:
            if self.other.transport.can_write_eof():
                self.other.transport.write_eof()
            return True  # keep our write side open: a half-close goes through
        return False

    def pause_writing(self) -> None:
        if self.other and self.other.transport and self.pair.state == "live":
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other and self.other.transport and self.pair.state == "live":
            self.other.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        self.transport = None
        self.pair.side_lost()


class Pair:
    def __init__(self, cutter: Cutter) -> None:
        cutter.next_id += 1
        self.id = cutter.next_id
        self.cutter = cutter
        self.state = "live"
        self.down = Side(self, "client")  # the accepted socket (burrow client)
        self.up = Side(self, "relay")  # the socket we dialed (burrow server)
        self.down.other, self.up.other = self.up, self.down
        self.logged = False

    def transports(self):
        return [s.transport for s in (self.down, self.up) if s.transport is not None]

    def side_lost(self) -> None:
        if self.state == "live":
            # One side went: end the other one too (its writes flushed first).
            self.state = "closing"
            for t in self.transports():
                t.close()
        if self.down.transport is None and self.up.transport is None and not self.logged:
            self.logged = True
            self.cutter.live.discard(self)
            log(f"conn {self.id} closed up={self.down.count} down={self.up.count}")

    def cut(self, kind: str) -> None:
        if self.state != "live":
            return
        self.cutter.live.discard(self)
        if kind == "fin":
            self.state = "fin"
            for t in self.transports():
                t.resume_reading()  # read and drop until the peer closes
                sock = t.get_extra_info("socket")
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            asyncio.get_running_loop().call_later(FIN_DRAIN_SECS, self.abort)
        elif kind == "rst":
            self.state = "rst"
            for t in self.transports():
                sock = t.get_extra_info("socket")
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
                t.abort()
        else:
            self.state = "hole"
            for t in self.transports():
                t.pause_reading()
            self.cutter.held.append(self)

    def abort(self) -> None:
        for t in self.transports():
            t.abort()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target_port", type=int)
    ap.add_argument("--cut-every", type=int, default=0, help="cut each time BYTES more passed")
    ap.add_argument("--cuts", type=int, default=0, help="at most N cuts by --cut-every")
    ap.add_argument("--kinds", default="fin,rst,hole", help="cut kinds, in turn")
    a = ap.parse_args()
    kinds = a.kinds.split(",")
    if not kinds or any(k not in ("fin", "rst", "hole") for k in kinds):
        ap.error("--kinds takes fin, rst and hole, comma-separated")
    cutter = Cutter(a.target_port, a.cut_every, a.cuts, kinds)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, cutter.cut)

    def accepted() -> Side:
        pair = Pair(cutter)
        cutter.live.add(pair)
        log(f"conn {pair.id} open")
        loop.create_task(dial(pair))
        return pair.down

    async def dial(pair: Pair) -> None:
        try:
            await loop.create_connection(lambda: pair.up, "127.0.0.1", cutter.target_port)
        except OSError as e:
            log(f"conn {pair.id} dial failed: {e}")
            if pair.down.transport is not None:
                pair.down.transport.abort()
            return
        if pair.state == "live" and pair.down.transport is not None:
            pair.down.transport.resume_reading()

    server = await loop.create_server(accepted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    log(f"cutter listening on 127.0.0.1:{port} -> 127.0.0.1:{a.target_port}")
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
