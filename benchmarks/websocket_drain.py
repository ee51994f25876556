"""
WebSocket clients across one restart: how their closes spread, how large the
reconnect storm is, and how long a client takes to be served again, with and
without C{drain_spread}.

    PYTHONPATH=. python -m benchmarks.websocket_drain [--clients 1000] [--spreads 0,5]

For each spread: starts harness/programs/live.py (examples/websocket.py's
echo) on a free loopback port, opens C{--clients} WebSocket connections with
the C{websockets} library, sends SIGUSR1, and has every client reconnect as
soon as its connection closes.  Reports, per spread: the close codes, when the
closes came (first, median, last, seconds after the signal), the storm (the
most closes within any 100 ms), the reconnect time (close to the new process's
first message; median, p99, max), how many reconnections reached the new pid,
how many failed, and when the old process was gone.  Needs graceful[websocket]
and websockets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import processes as _procs
from harness.probes import probe_pid

ROOT = Path(__file__).resolve().parent.parent

#: Width of the window the storm is counted in, seconds.
STORM_WINDOW = 0.1


async def _client(
    port: int, opened: list[int], closes: list[tuple[float, int | None]], back: list[Any]
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    url = f"ws://127.0.0.1:{port}/ws"
    async with connect(url, open_timeout=60, close_timeout=5) as ws:
        first = await ws.recv()
        opened.append(int(str(first).split()[1]))
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
        closed_at = time.monotonic()
        closes.append((closed_at, ws.close_code))
    try:
        async with connect(url, open_timeout=30) as again:
            message = await asyncio.wait_for(again.recv(), 30)
            back.append((time.monotonic() - closed_at, int(str(message).split()[1])))
    except Exception as error:  # counted, never raised: one client's failure
        back.append((None, repr(error)))


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _round(port: int, clients: int, old: int, limit: float) -> dict[str, Any]:
    opened: list[int] = []
    closes: list[tuple[float, int | None]] = []
    back: list[Any] = []
    tasks = [asyncio.ensure_future(_client(port, opened, closes, back)) for _ in range(clients)]
    deadline = time.monotonic() + limit
    while len(opened) < clients:
        if time.monotonic() > deadline or any(t.done() for t in tasks):
            for t in tasks:
                t.cancel()
            raise RuntimeError(f"only {len(opened)} of {clients} clients connected")
        await asyncio.sleep(0.05)
    start = time.monotonic()
    os.kill(old, signal.SIGUSR1)
    gone = None
    while time.monotonic() - start < limit and (gone is None or len(back) < clients):
        if gone is None and not _procs.alive(old):
            gone = time.monotonic() - start
        if all(t.done() for t in tasks) and gone is not None:
            break
        await asyncio.sleep(0.02)
    for t in tasks:
        t.cancel()
    times = sorted(t - start for t, _ in closes)
    codes: dict[str, int] = {}
    for _, code in closes:
        codes[str(code)] = codes.get(str(code), 0) + 1
    storm = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - STORM_WINDOW:
            j += 1
        storm = max(storm, i - j + 1)
    waits = [w for w, _ in back if w is not None]
    return {
        "clients": clients,
        "close_codes": codes,
        "first_close": times[0] if times else None,
        "median_close": _quantile(times, 0.5),
        "last_close": times[-1] if times else None,
        "storm_per_100ms": storm,
        "reconnect_median": _quantile(waits, 0.5),
        "reconnect_p99": _quantile(waits, 0.99),
        "reconnect_max": max(waits) if waits else None,
        "reached_new_pid": sum(1 for w, pid in back if w is not None and pid != old),
        "failed_reconnects": sum(1 for w, _ in back if w is None),
        "old_gone": gone,
    }


def run(spread: float, clients: int, drain_timeout: float, workdir: Path) -> dict[str, Any]:
    [port] = _procs.free_ports(1)
    proc = _procs.Process(
        [sys.executable, "-m", "harness.programs.live", str(port),
         str(drain_timeout), str(spread)],
        log=workdir / f"server-{spread:g}.log",
        name=f"graceful-live-{spread:g}",
        cwd=ROOT,
    ).start()
    try:
        deadline = time.monotonic() + 30
        while (old := probe_pid(port)) is None:
            if time.monotonic() > deadline or not proc.running():
                raise RuntimeError(f"server did not start:\n{proc.log()[-2000:]}")
            time.sleep(0.05)
        result = asyncio.run(_round(port, clients, old, drain_timeout + 30))
        result["spread"] = spread
        return result
    finally:
        proc.stop(grace=3.0)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--spreads", default="0,5", help="drain_spread values, seconds")
    parser.add_argument("--drain-timeout", type=float, default=20.0)
    options = parser.parse_args(argv)
    _procs.install_cleanup()
    workdir = Path(tempfile.mkdtemp(prefix="graceful-ws-"))
    results = [
        run(float(s), options.clients, options.drain_timeout, workdir)
        for s in options.spreads.split(",")
    ]
    columns = [
        "spread", "clients", "close_codes", "first_close", "median_close", "last_close",
        "storm_per_100ms", "reconnect_median", "reconnect_p99", "reconnect_max",
        "reached_new_pid", "failed_reconnects", "old_gone",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in results:
        print("| " + " | ".join(_cell(r[c]) for c in columns) + " |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
