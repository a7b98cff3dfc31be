"""Availability under load: three equivalent deployments on the loopback fake upstream, one
failing 30% of its requests and one slow; measures the client success rate, latency and each
deployment's share with fallbacks on, then session stickiness with consistent hashing.

    python -m bench.availability_load                    # 20,000 requests per phase
    python -m bench.availability_load --requests 2000 --json

Results are printed as a table and written to bench/results/availability_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from pointsman.router import Router
from pointsman.server import ServerThread
from pointsman.store import read_records
from pointsman.testing import Behaviour, FakeUpstream

NAMES = ("steady", "flaky", "slow")
BODY = {"model": "group", "messages": [{"role": "user", "content": "What is the capital of France?"}]}


def config(upstream_url: str, method: str) -> dict[str, Any]:
    return {
        "router": {"backoff_base_s": 0.0, "max_attempts": 3},
        "store": {"flush_interval_s": 0.5},
        "deployments": [
            {
                "name": n,
                "provider": "openai",
                "model": n,
                "api_base": f"{upstream_url}/{n}/v1",
                "price": {"input": 1, "output": 2},
                "timeouts": {"total": 5},
            }
            for n in NAMES
        ],
        "models": {
            "group": {
                "strategy": "balance",
                "deployments": list(NAMES),
                "options": {"method": method, "seed": 0},
            }
        },
    }


async def _drive(url: str, requests: int, concurrency: int, sessions: int | None) -> dict[str, Any]:
    latencies: list[float] = []
    answered: Counter[str] = Counter()
    homes: dict[str, Counter[str]] = {}
    failures = 0
    queue = iter(range(requests))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def worker() -> None:
            nonlocal failures
            for i in queue:
                headers = {"x-pointsman-session": f"s{i % sessions}"} if sessions else {}
                # The session also travels as `user`, so the records tell sessions apart.
                body = {**BODY, "user": headers["x-pointsman-session"]} if sessions else BODY
                started = time.perf_counter()
                async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                    await r.read()
                    latencies.append(time.perf_counter() - started)
                    if r.status != 200:
                        failures += 1
                        continue
                    model = r.headers["x-pointsman-model"]
                    answered[model] += 1
                    if sessions:
                        homes.setdefault(headers["x-pointsman-session"], Counter())[model] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    latencies.sort()
    result: dict[str, Any] = {
        "requests": requests,
        "succeeded": requests - failures,
        "success_rate": (requests - failures) / requests,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "share": {n: answered[n] / max(1, sum(answered.values())) for n in NAMES},
    }
    if sessions:
        result["homes"] = homes
    return result


def run(requests: int = 20_000, concurrency: int = 32, sessions: int = 200) -> dict[str, Any]:
    """Both phases; returns the figures (also used by the test suite with small counts)."""
    results: dict[str, Any] = {}
    with FakeUpstream(seed=0, keep_requests=0) as upstream, tempfile.TemporaryDirectory() as tmp:
        upstream.set("flaky", Behaviour(failure_rate=0.3, failure_status=500))
        upstream.set("slow", Behaviour(latency_s=0.05))
        for phase, method, n_sessions in (
            ("fallbacks", "least_in_flight", None),
            ("hashing", "hash", sessions),
        ):
            router = Router.from_config(config(upstream.url, method), db=Path(tmp) / f"{phase}.db")
            with ServerThread(router) as server:
                started = time.perf_counter()
                figures = asyncio.run(_drive(server.url, requests, concurrency, n_sessions))
                figures["seconds"] = time.perf_counter() - started
                figures["upstream_calls"] = {n: upstream.calls(n) for n in NAMES}
            router.close()
            if n_sessions:
                figures["records"] = read_records(Path(tmp) / f"{phase}.db", limit=requests)
            upstream.reset()
            upstream.set("flaky", Behaviour(failure_rate=0.3, failure_status=500))
            upstream.set("slow", Behaviour(latency_s=0.05))
            results[phase] = figures
    hashing = results["hashing"]
    hashing.pop("homes")
    records = hashing.pop("records")
    # A session's home is the first deployment of its hashed plan. It must never change; and
    # while the home is healthy the session is answered there. The flaky deployment is not
    # healthy: its failures rightly send 30% of its sessions' requests to their next choice.
    homes: dict[str, set[str]] = {}
    for r in records:
        homes.setdefault(r["user"], set()).add(r["decision"]["plan"][0])
    healthy = [r for r in records if r["decision"]["plan"][0] != "flaky"]
    hashing["sessions"] = len(homes)
    hashing["sessions_with_one_home"] = sum(1 for h in homes.values() if len(h) == 1) / max(1, len(homes))
    hashing["stickiness_all"] = sum(r["deployment"] == r["decision"]["plan"][0] for r in records) / max(
        1, len(records)
    )
    hashing["stickiness_healthy_homes"] = sum(
        r["deployment"] == r["decision"]["plan"][0] for r in healthy
    ) / max(1, len(healthy))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run(args.requests, args.concurrency, args.sessions)
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "availability_load.json").write_text(json.dumps(results, indent=2))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for phase, r in results.items():
        print(
            f"{phase}: {r['succeeded']}/{r['requests']} succeeded ({r['success_rate']:.4%}), "
            f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['seconds']:.1f} s"
        )
        print("  answered share: " + ", ".join(f"{n} {s:.1%}" for n, s in r["share"].items()))
        print("  upstream calls: " + ", ".join(f"{n} {c}" for n, c in r["upstream_calls"].items()))
    h = results["hashing"]
    print(
        f"hashing: {h['sessions']} sessions, {h['sessions_with_one_home']:.0%} with a single home; answered "
        f"on their home deployment {h['stickiness_all']:.2%} of requests; "
        f"{h['stickiness_healthy_homes']:.2%} for sessions whose home is healthy"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
