"""CPU per upstream call of pointsman's HTTP client (providers/http.py), sequential keep-alive POSTs
to the fake upstream: the client's own cost, which a loaded machine disturbs far less than latency.

    python -m bench.upstream_client                 # 3 rounds of 3,000 calls, direct
    python -m bench.upstream_client --proxy URL     # the same through a forward proxy

The client runs on core 1 and the upstream on core 0 (as in bench.proxy_overhead). Prints the
client's CPU microseconds per call and the wall p50 per round, and the median of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench import harness
from bench.harness import DIRECT_PATH, chat_body
from pointsman.providers.http import HTTPClient


async def calls(url: str, body: bytes, count: int, proxy: str | None) -> tuple[float, float]:
    client = HTTPClient()
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
    extra = {"proxy": proxy} if proxy else {}  # older clients (the baseline) take no proxy argument
    for _ in range(200):  # warm up: connection, caches
        response = await client.post(url, body, headers, connect_s=5, read_s=30, total_s=60, **extra)
        await response.read()
    walls = []
    cpu = time.process_time()
    for _ in range(count):
        started = time.perf_counter()
        response = await client.post(url, body, headers, connect_s=5, read_s=30, total_s=60, **extra)
        await response.read()
        walls.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu
    await client.close()
    return cpu / count * 1e6, statistics.median(walls) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--proxy")
    args = parser.parse_args()
    try:
        os.sched_setaffinity(0, {int(harness.PROXY_CPUS.split(",")[0])})
    except (AttributeError, OSError, ValueError):
        pass
    with tempfile.TemporaryDirectory() as tmp:
        upstream = harness.start_upstream(Path(tmp))
        try:
            body = chat_body("bench-small")
            rounds = []
            for i in range(args.rounds):
                cpu_us, wall_ms = asyncio.run(calls(upstream.url + DIRECT_PATH, body, args.calls, args.proxy))
                rounds.append(cpu_us)
                print(f"round {i + 1}: {cpu_us:.1f} us CPU/call, wall p50 {wall_ms:.3f} ms")
        finally:
            upstream.stop()
    load = os.getloadavg()[0]
    median = statistics.median(rounds)
    print(f"median: {median:.1f} us CPU/call ({args.calls} calls x {args.rounds}; load {load:.2f})")


if __name__ == "__main__":
    main()
