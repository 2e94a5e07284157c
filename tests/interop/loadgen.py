"""Load for the pool test (pools.sh): visitors at a steady rate, and the verdict on them.

  python3 loadgen.py run --target HOST:PORT --out RESULTS [--rate 200] [--big-every 50]
                         [--big-size BYTES] [--seed S] [--max-seconds 300]
      Opens a new connection per request (a visitor: one stream through the tunnel) and makes
      one HTTP/1.1 exchange on it, open loop at --rate per second: GET /short?i=N (the body must
      be "ok N"), and every --big-every-th request a --big-size body instead, alternately a
      download (GET /blob, sha256 checked against the bytes pool_origin.py makes from --seed)
      and an upload (POST /upload, the origin answers the sha256 it received). Prints
      `loadgen running` once started and a progress line every 5 s; on SIGTERM or SIGINT it
      stops starting requests, lets those in flight finish (each has a deadline), writes one
      JSON line per request to RESULTS (start and end as Unix times, ok, error, kind, replica)
      and prints the counts.

  python3 loadgen.py report RESULTS --events FILE [--after 1.0] [--failures FILE]
      The verdict. FILE has `UNIX-TIME LABEL` lines written as the test went (restarts, ...);
      two labels are required: `calm` (the last graceful step is done) and `kill` (the instant
      of the SIGKILL). A failed request is
        graceful      if it started before the kill and is not one of the next kind,
        in flight     if it started after `calm`, before the kill, and ended after it,
        in the window if it started less than --after seconds after the kill,
        late          if it started later than that.
      Prints the counts, the failures (each with the last event before it started) and a
      `verdict key=value ...` line for the shell to read.
"""

import argparse
import asyncio
import collections
import hashlib
import json
import random
import signal
import sys
import time

SHORT_TIMEOUT = 20.0  # seconds for a whole short exchange, connect included
BIG_TIMEOUT = 45.0  # seconds for a multi-MB exchange
MAX_IN_FLIGHT = 512  # more wait (their start slips, counted as `late starts`)
MAX_HEAD = 16 * 1024
CHUNK = 256 * 1024


def blob(size: int, seed: str) -> bytes:
    """The bytes pool_origin.py serves at /blob for this SIZE and SEED."""
    return random.Random(seed).randbytes(size)


class Failure(Exception):
    pass


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.host, _, port = args.target.rpartition(":")
        self.port = int(port)
        self.args = args
        self.down_sha = hashlib.sha256(blob(args.big_size, args.seed)).hexdigest()
        self.up_body = blob(args.big_size, args.seed + "-upload")
        self.up_sha = hashlib.sha256(self.up_body).hexdigest()
        self.results: list[dict] = []
        self.stopping = asyncio.Event()
        self.in_flight: set[asyncio.Task] = set()
        self.slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.late_starts = 0

    def kind(self, i: int) -> str:
        every = self.args.big_every
        if every > 0 and i % every == every - 1:
            return "down" if (i // every) % 2 == 0 else "up"
        return "short"

    async def exchange(self, i: int, kind: str) -> str:
        """One visitor: connect, one request, the whole answer, checked. Returns the replica."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            if kind == "short":
                writer.write(
                    f"GET /short?i={i} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n".encode()
                )
            elif kind == "down":
                writer.write(b"GET /blob HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
            else:
                writer.write(
                    f"POST /upload HTTP/1.1\r\nHost: app\r\nConnection: close\r\n"
                    f"Content-Length: {len(self.up_body)}\r\n\r\n".encode()
                )
                for at in range(0, len(self.up_body), CHUNK):
                    writer.write(self.up_body[at : at + CHUNK])
                    await writer.drain()
            await writer.drain()
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as e:
                raise Failure(f"closed before the answer ({len(e.partial)} bytes of head)")
            except asyncio.LimitOverrunError:
                raise Failure("answer head too long")
            if len(head) > MAX_HEAD:
                raise Failure("answer head too long")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                raise Failure(f"bad status line {lines[0]!r}")
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            try:
                length = int(headers["content-length"])
            except (KeyError, ValueError):
                raise Failure("answer without a Content-Length")
            h = hashlib.sha256()
            body = b""
            left = length
            while left:
                try:
                    chunk = await reader.readexactly(min(CHUNK, left))
                except asyncio.IncompleteReadError as e:
                    raise Failure(f"body cut at {length - left + len(e.partial)} of {length} bytes")
                left -= len(chunk)
                h.update(chunk)
                if kind != "down":
                    body += chunk
            if parts[1] != "200":
                raise Failure(f"status {parts[1]}: {body[:80]!r}")
            if kind == "short" and body != f"ok {i}\n".encode():
                raise Failure(f"wrong body {body[:80]!r}")
            if kind == "down" and h.hexdigest() != self.down_sha:
                raise Failure(f"download sha256 {h.hexdigest()[:16]}.. want {self.down_sha[:16]}..")
            if kind == "up" and body.decode("latin-1").strip() != self.up_sha:
                raise Failure(f"upload arrived as sha256 {body[:16]!r}.. want {self.up_sha[:16]}..")
            return headers.get("x-replica", "?")
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass  # a reset on close after a complete answer changes nothing

    async def one(self, i: int) -> None:
        kind = self.kind(i)
        start = time.time()
        rec = {"i": i, "kind": kind, "start": start, "ok": False, "error": None, "replica": None}
        timeout = SHORT_TIMEOUT if kind == "short" else BIG_TIMEOUT
        try:
            rec["replica"] = await asyncio.wait_for(self.exchange(i, kind), timeout)
            rec["ok"] = True
        except Failure as e:
            rec["error"] = str(e)
        except asyncio.TimeoutError:
            rec["error"] = f"no complete answer within {timeout:.0f} s"
        except OSError as e:
            rec["error"] = f"{type(e).__name__}: {e}"
        finally:
            rec["end"] = time.time()
            self.results.append(rec)
            self.slots.release()

    async def progress(self) -> None:
        started = time.time()
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), 5.0)
            except asyncio.TimeoutError:
                pass
            failed = sum(1 for r in self.results if not r["ok"])
            print(
                f"loadgen +{time.time() - started:.0f}s: {len(self.results)} done, {failed} failed,"
                f" {len(self.in_flight)} in flight",
                flush=True,
            )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.call_later(self.args.max_seconds, self.stopping.set)
        reporter = asyncio.create_task(self.progress())
        print(f"loadgen running against {self.args.target} at {self.args.rate}/s", flush=True)
        period = 1.0 / self.args.rate
        t0 = time.monotonic()
        i = 0
        while not self.stopping.is_set():
            due = t0 + i * period
            now = time.monotonic()
            if due > now:
                try:
                    await asyncio.wait_for(self.stopping.wait(), due - now)
                    break
                except asyncio.TimeoutError:
                    pass
            elif now - due > 1.0:
                # Fell more than a second behind (a stalled machine): count it, don't burst.
                self.late_starts += 1
                t0 = now - i * period
            await self.slots.acquire()
            task = asyncio.create_task(self.one(i))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
            i += 1
        if self.in_flight:
            await asyncio.wait(list(self.in_flight))
        await reporter
        self.results.sort(key=lambda r: r["i"])
        with open(self.args.out, "w") as f:
            for rec in self.results:
                f.write(json.dumps(rec) + "\n")
        failed = sum(1 for r in self.results if not r["ok"])
        big = [r for r in self.results if r["kind"] != "short"]
        print(
            f"loadgen done: {len(self.results)} requests, {len(self.results) - failed} ok,"
            f" {failed} failed; {sum(r['ok'] for r in big)} of {len(big)} bodies verified;"
            f" {self.late_starts} late starts",
            flush=True,
        )


def report(args: argparse.Namespace) -> int:
    with open(args.results) as f:
        results = [json.loads(line) for line in f if line.strip()]
    events = []
    with open(args.events) as f:
        for line in f:
            at, _, label = line.strip().partition(" ")
            if label:
                events.append((float(at), label))
    events.sort()
    marks = {label: at for at, label in events}
    if "calm" not in marks or "kill" not in marks:
        print("report: the events file has no `calm` or no `kill` line", file=sys.stderr)
        return 2
    calm, kill, after = marks["calm"], marks["kill"], args.after

    def phase(r: dict) -> str:
        if r["start"] >= kill + after:
            return "late"
        if r["start"] >= kill:
            return "window"
        if r["start"] >= calm and r["end"] >= kill:
            return "inflight"
        return "graceful"

    def last_event(t: float) -> str:
        label, at0 = "start", results[0]["start"] if results else t
        for at, name in events:
            if at <= t:
                label, at0 = name, at
        return f"{label}+{t - at0:.2f}s"

    totals, fails = collections.Counter(), collections.Counter()
    for r in results:
        totals[phase(r)] += 1
        if not r["ok"]:
            fails[phase(r)] += 1
    failed = [r for r in results if not r["ok"]]
    big = [r for r in results if r["kind"] != "short"]
    big_ok = sum(r["ok"] for r in big)
    big_graceful = [r for r in big if phase(r) == "graceful"]
    # A body that arrived whole but wrong (not merely cut off): never allowed, not even at the kill.
    wrong = ("wrong body", "download sha256", "upload arrived")
    corrupt = [r for r in failed if r["error"].startswith(wrong)]
    replicas = collections.Counter(r["replica"] for r in results if r["ok"])
    late = [r for r in results if r["start"] >= kill + after]
    late_replicas = collections.Counter(r["replica"] for r in late if r["ok"])

    print(
        f"requests: {len(results)}, ok {len(results) - len(failed)}, failed {len(failed)};"
        f" bodies: {len(big)} ({sum(r['kind'] == 'down' for r in big)} down,"
        f" {sum(r['kind'] == 'up' for r in big)} up), {big_ok} verified"
    )
    print("carried by: " + ", ".join(f"{k} {v}" for k, v in sorted(replicas.items())))
    print(f"graceful steps: {totals['graceful']} requests, {fails['graceful']} failed")
    print(f"in flight at the SIGKILL: {totals['inflight']} requests, {fails['inflight']} failed")
    print(
        f"started < {after:g} s after the SIGKILL: {totals['window']} requests,"
        f" {fails['window']} failed"
    )
    print(
        f"started >= {after:g} s after the SIGKILL: {totals['late']} requests, {fails['late']}"
        " failed; carried by: " + ", ".join(f"{k} {v}" for k, v in sorted(late_replicas.items()))
    )
    lines = [
        f"{r['start']:.3f} [{last_event(r['start'])}] #{r['i']} {r['kind']} {phase(r)}:"
        f" {r['error']} (after {r['end'] - r['start']:.2f}s)"
        for r in failed
    ]
    if args.failures:
        with open(args.failures, "w") as f:
            f.write("".join(line + "\n" for line in lines))
    for line in lines[:10]:
        print(f"failed {line}")
    if len(lines) > 10:
        print(f"... and {len(lines) - 10} more failures (all in {args.failures or 'RESULTS'})")
    print(
        f"verdict total={len(results)} failed={len(failed)} big={len(big)} big_ok={big_ok}"
        f" big_graceful={len(big_graceful)} big_graceful_ok={sum(r['ok'] for r in big_graceful)}"
        f" corrupt={len(corrupt)}"
        f" graceful={totals['graceful']} graceful_failed={fails['graceful']}"
        f" inflight_failed={fails['inflight']} window_failed={fails['window']}"
        f" late={totals['late']} late_failed={fails['late']} replicas={len(replicas)}"
        f" late_replicas={len(late_replicas)}"
    )
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--target", required=True)
    run.add_argument("--out", required=True)
    run.add_argument("--rate", type=float, default=200.0)
    run.add_argument("--big-every", type=int, default=50)
    run.add_argument("--big-size", type=int, default=3 * 1024 * 1024)
    run.add_argument("--seed", default="burrow-pool")
    run.add_argument("--max-seconds", type=float, default=300.0)
    rep = sub.add_parser("report")
    rep.add_argument("results")
    rep.add_argument("--events", required=True)
    rep.add_argument("--after", type=float, default=1.0)
    rep.add_argument("--failures")
    args = p.parse_args()
    if args.cmd == "run":
        if args.rate <= 0:
            p.error("--rate must be positive")
        asyncio.run(Load(args).run())
        return 0
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
