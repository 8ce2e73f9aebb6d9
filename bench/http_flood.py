"""The HTTP API under connection floods: what a client that plays fair gets.

    .venv/bin/python bench/http_flood.py [--seconds 25] [--sockets 200] [--addresses 10]

Starts `ragpg serve` (caps: --max-connections = --sockets, 20 per client; no database: the
client asks for /openapi.json, which needs none), then for each scene runs a flood from
`--addresses` loopback addresses (127.0.1.x) in a process of its own while a fair client
opens a fresh connection from 127.0.0.99 every 0.25 s and asks once:

- none: no flood;
- idle: `--sockets` connections that say nothing, each opened again when the server
  closes it (review 51, finding 3);
- hold: `--sockets` connections that pipeline 400 requests with a 4 KiB receive buffer and
  never read, each opened again when closed (review 51b, finding 1).

Prints one row per scene: the fair client's answers by status, median and 99th percentile
latency, and the lines the server logged (its access log included). The flood processes need the open-file limit their sockets take.
"""
from __future__ import annotations

import argparse
import collections
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = 8471
HOLD = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 400


def flood(kind: str, sockets: int, addresses: int, seconds: float) -> None:
    """The attacker: keeps `sockets` connections open from `addresses` addresses."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    froms = [f"127.0.1.{1 + i}" for i in range(addresses)]
    held: list[tuple[socket.socket, bool]] = []

    def connect(i: int) -> tuple[socket.socket, bool]:
        s = socket.socket()
        if kind == "hold":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        s.bind((froms[i % addresses], 0))
        try:
            s.connect(("127.0.0.1", PORT))
        except BlockingIOError:
            pass
        return s, False

    held = [connect(i) for i in range(sockets)]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i, (s, sent) in enumerate(held):
            state = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]   # 1 established, 2 SYN sent
            if state == 2:
                continue
            if state != 1:   # closed by the server: again
                s.close()
                held[i] = connect(i)
            elif kind == "hold" and not sent:
                try:
                    s.send(HOLD)
                    held[i] = (s, True)
                except OSError:
                    pass
        time.sleep(0.1)
    for s, _ in held:
        s.close()


def fair_client(seconds: float) -> tuple[collections.Counter, list[float]]:
    codes: collections.Counter = collections.Counter()
    times = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            with socket.socket() as s:
                s.settimeout(10)
                s.bind(("127.0.0.99", 0))
                s.connect(("127.0.0.1", PORT))
                s.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                head = s.recv(12)
                codes[head[9:12].decode() if head else "closed"] += 1
        except OSError as e:
            codes[type(e).__name__] += 1
        times.append(time.monotonic() - t0)
        time.sleep(0.25)
    return codes, sorted(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=25)
    ap.add_argument("--sockets", type=int, default=200)
    ap.add_argument("--addresses", type=int, default=10)
    ap.add_argument("--client", help="serve the ragpg_cli of this folder (another commit's client/), to compare")
    ap.add_argument("--flood", choices=["idle", "hold"], help=argparse.SUPPRESS)   # (the attacker's process)
    args = ap.parse_args()
    if args.flood:
        flood(args.flood, args.sockets, args.addresses, args.seconds)
        return 0
    env = dict(os.environ, PYTHONPATH=str(Path(args.client).resolve())) if args.client else None
    caps = ["--max-connections", str(args.sockets), "--max-connections-per-client", "20"]
    if args.client and "max-connections" not in (Path(args.client) / "ragpg_cli/main.py").read_text():
        caps = []   # (a client from before the caps)
    logged = tempfile.TemporaryFile()   # the server's log (stdout and stderr), counted in lines per scene
    server = subprocess.Popen(
        [sys.executable, "-m", "ragpg_cli.main", "serve", "--dsn", "host=127.0.0.1 port=1 user=x dbname=x connect_timeout=1",
         "--keys", "k=alice", "--port", str(PORT), *caps], env=env,
        stdout=logged, stderr=subprocess.STDOUT)

    def lines() -> int:
        logged.seek(0)
        return sum(chunk.count(b"\n") for chunk in iter(lambda: logged.read(1 << 20), b""))

    try:
        time.sleep(3)
        print(f"{'scene':<6} {'answers (status: count)':<34} {'p50 ms':>7} {'p99 ms':>7} {'log lines':>9}", flush=True)
        for scene in ("none", "idle", "hold"):
            before = lines()
            attacker = None
            if scene != "none":
                attacker = subprocess.Popen([sys.executable, __file__, "--flood", scene, "--seconds",
                                             str(args.seconds + 2), "--sockets", str(args.sockets),
                                             "--addresses", str(args.addresses)])
                time.sleep(2)
            codes, times = fair_client(args.seconds)
            if attacker is not None:
                attacker.wait(timeout=60)
            shown = ", ".join(f"{k}: {v}" for k, v in sorted(codes.items()))
            time.sleep(3)   # (and the server writes the last counts: every 10 s)
            print(f"{scene:<6} {shown:<34} {times[len(times) // 2] * 1000:>7.0f} "
                  f"{times[min(len(times) - 1, int(len(times) * 0.99))] * 1000:>7.0f} {lines() - before:>9}", flush=True)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=20)
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
