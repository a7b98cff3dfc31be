"""Throughput and added latency with routing state in Redis against state in memory.

The request carries a virtual key with a rate limit and a budget, so every request pays the
shared backend's round trips (the key's rate window, the budget reservation; the settlement
goes in the background). Same pinning as the proxy benchmark: pointsman alone on core 1, the
fake upstream, Redis and the load driver on core 0.

    python -m bench.state_backends                   # 200 and 500 req/s, then saturation
    python -m bench.state_backends --duration 3 --rates 200 --json
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench.harness import (
    CLIENT_KEY,
    DIRECT_PATH,
    PROXY_CPUS,
    PROXY_PATH,
    Server,
    chat_body,
    conditions,
    fmt,
    free_port,
    pointsman_config,
    run_open,
    saturate,
    save,
    start_server,
    start_upstream,
    table,
    workspace,
)
from pointsman.keys import KeyStore

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_script_calls() -> int:
    """EVALSHA calls Redis has served so far (to count round trips per request)."""
    out = subprocess.run(["redis-cli", "info", "commandstats"], capture_output=True, text=True).stdout
    found = re.search(r"cmdstat_evalsha:calls=(\d+)", out)
    return int(found.group(1)) if found else 0


def start(workdir: Path, upstream: Server, backend: str) -> Server:
    db = workdir / f"{backend}.db"
    config = pointsman_config(upstream.url, db, "rules")
    config.pop("server")
    config["auth"] = {"enabled": True}
    if backend == "redis":
        config["state"] = {"url": REDIS_URL, "prefix": f"pm-bench-{uuid.uuid4().hex[:8]}"}
    store = KeyStore(db)
    store.create("bench", {"rpm": 10_000_000, "budget": 1_000_000.0}, secret=CLIENT_KEY)
    store.close()
    path = workdir / f"{backend}.yaml"
    path.write_bytes(orjson.dumps(config))
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "pointsman",
        "serve",
        "--config",
        str(path),
        "--port",
        str(port),
        "--db",
        str(db),
    ]
    env = {"POINTSMAN_MASTER_KEY": "mk-" + uuid.uuid4().hex}
    return start_server(f"pointsman-{backend}", argv, port, "/healthz", workdir, cpus=PROXY_CPUS, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="200,500", help="open-loop arrival rates, req/s")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r]
    body = chat_body()
    report: dict[str, Any] = {"conditions": conditions(), "runs": []}
    with workspace() as workdir:
        upstream = start_upstream(workdir)
        try:
            direct = {
                r: run_open("direct", upstream.url + DIRECT_PATH, body, r, args.duration) for r in rates
            }
            for backend in ("memory", "redis"):
                server = start(workdir, upstream, backend)
                try:
                    calls0 = redis_script_calls()
                    for rate in rates:
                        run = run_open(
                            backend, server.url + PROXY_PATH, body, rate, args.duration, server=server
                        )
                        added = {k: run.latency_ms[k] - direct[rate].latency_ms[k] for k in ("p50", "p99")}
                        report["runs"].append(
                            {"backend": backend, "rate": rate, "added_ms": added, "result": run.as_dict()}
                        )
                    sat = saturate(
                        backend,
                        server.url + PROXY_PATH,
                        body,
                        args.concurrency,
                        args.duration,
                        workdir,
                        server=server,
                    )
                    sent = (
                        sum(r["result"]["sent"] for r in report["runs"] if r["backend"] == backend) + sat.sent
                    )
                    report["runs"].append(
                        {
                            "backend": backend,
                            "saturation": sat.as_dict(),
                            "redis_round_trips_per_request": (redis_script_calls() - calls0) / max(1, sent),
                        }
                    )
                finally:
                    server.stop()
        finally:
            upstream.stop()
    path = save("state_backends", report)
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0
    rows = []
    for run in report["runs"]:
        if "rate" in run:
            r = run["result"]
            rows.append(
                [
                    run["backend"],
                    f"{run['rate']:g}/s",
                    fmt(r["latency_ms"]["p50"]),
                    fmt(r["latency_ms"]["p99"]),
                    fmt(run["added_ms"]["p50"]),
                    fmt(run["added_ms"]["p99"]),
                    sum(r["errors"].values()),
                ]
            )
        else:
            sat = run["saturation"]
            rows.append(
                [
                    run["backend"],
                    "saturation",
                    fmt(sat["latency_ms"].get("p50")),
                    fmt(sat["latency_ms"].get("p99")),
                    f"{sat['achieved_rate']:.0f} req/s",
                    f"{run['redis_round_trips_per_request']:.2f} Redis calls/req",
                    sum(sat["errors"].values()),
                ]
            )
    table(
        "State in memory vs in Redis (virtual key with a rate limit and a budget)",
        [
            "backend",
            "load",
            "p50 ms",
            "p99 ms",
            "added p50 / throughput",
            "added p99 / round trips",
            "errors",
        ],
        rows,
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
