"""The response cache and tracing, measured through `pointsman serve` on loopback.

    python -m bench.cache_bench                       # about 2 minutes
    python -m bench.cache_bench --duration 4 --rate 200 --hit-s 3

1. Cache hits: latency (p50/p99, one request at a time) and throughput (closed loop, 32
   connections) of requests answered from the exact cache, and from the semantic cache (each
   request a paraphrase whose exact key misses: embedding, index search, then the answer).
2. Overhead, the method of bench.proxy_overhead (open loop at one rate, targets taking turns in
   slices, added latency = through pointsman minus straight to the fake upstream, same
   percentile): cache and tracing off; cache on but every request a miss (lookup, miss, store);
   tracing on, exporting over OTLP/HTTP to a loopback sink.
3. Memory per 10,000 cached entries (exact and semantic), in this process: RSS before and after.

A table goes to the terminal and the JSON to bench/results/cache-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from time import perf_counter
from typing import Any

import aiohttp
import orjson

from bench import harness
from bench.harness import CLIENT_KEY, DIRECT_PATH, PROXY_PATH, Server, chat_body

QUESTIONS = [
    "How do I install the S3 filesystem implementation?",
    "What is the command to install the S3 filesystem implementation?",
]


def cached_body(text: str, stream: bool = False) -> bytes:
    body: dict[str, Any] = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "You are a concise assistant for an operations team."},
            {"role": "user", "content": text},
        ],
        "max_tokens": 128,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


class OTLPSink:
    """Accepts OTLP/HTTP exports and counts them (a stand-in collector on loopback)."""

    def __init__(self) -> None:
        self.exports = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                self.rfile.read(int(self.headers.get("content-length") or 0))
                sink.exports += 1
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def start_variant(
    name: str, workdir: Path, upstream: Server, extra: dict[str, Any], env: dict[str, str] | None = None
) -> Server:
    """pointsman with the benchmark's usual config plus `extra` on the `auto` model and top level."""
    port = harness.free_port()
    config = harness.pointsman_config(upstream.url, workdir / f"{name}.db", harness.default_strategy())
    config["models"]["auto"].update(extra.get("model", {}))
    config.update(extra.get("top", {}))
    path = workdir / f"{name}.yaml"
    path.write_bytes(orjson.dumps(config))
    argv = [sys.executable, "-m", "pointsman", "serve", "--config", str(path), "--port", str(port)]
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return harness.start_server(
        name, argv, port, "/healthz", workdir, cpus=harness.PROXY_CPUS, env={**base, **(env or {})}
    )


async def closed_loop(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict[str, Any]:
    """`concurrency` connections sending `bodies` in turn for `seconds`; latency and throughput."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
    stop = perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession, offset: int) -> None:
        i = offset
        while perf_counter() < stop:
            started = perf_counter()
            async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as response:
                await response.read()
                state = response.headers.get("x-pointsman-cache", str(response.status))
            latencies.append((perf_counter() - started) * 1000)
            statuses[state] = statuses.get(state, 0) + 1
            i += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = perf_counter()
        await asyncio.gather(*(worker(session, k) for k in range(concurrency)))
        elapsed = perf_counter() - began
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "rate": round(len(latencies) / elapsed, 1),
        "latency_ms": harness.percentiles(latencies),
        "cache_header": statuses,
    }


def hit_runs(server: Server, bodies: list[bytes], warm: list[bytes], seconds: float) -> dict[str, Any]:
    url = server.url + PROXY_PATH
    harness.run_async(closed_loop(url, warm, 1, 0.5))  # fill the cache
    return {
        "one_at_a_time": harness.run_async(closed_loop(url, bodies, 1, seconds)),
        "saturation": harness.run_async(closed_loop(url, bodies, 32, seconds)),
    }


def memory_per_10k(entries: int = 10_000) -> dict[str, Any]:
    """RSS growth of this process when a memory cache (and a semantic index) takes `entries`
    answers of the benchmark's usual size."""
    from pointsman.cache import CachedAnswer, MemoryBackend, SemanticIndex

    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    answer = orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1,
            "model": "bench-small",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "x" * 600}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 230, "completion_tokens": 128, "total_tokens": 358},
        }
    )
    out: dict[str, Any] = {"answer_bytes": len(answer)}
    backend = MemoryBackend(entries * 2, 2**40)
    before = rss()

    async def fill() -> None:
        for i in range(entries):
            # A body of its own per entry (the same bytes object would be shared, not stored).
            body = answer.replace(b"chatcmpl-bench", f"chatcmpl-{i:08d}".encode())
            await backend.put(f"{i:064x}", CachedAnswer(body, "small", 0.0001, 0.0), 3600)

    asyncio.run(fill())
    out["exact_mib"] = round((rss() - before) / 2**20, 2)
    out["exact_bytes_per_entry"] = round((rss() - before) / entries)
    try:
        index = SemanticIndex(entries * 2)
    except RuntimeError as exc:
        out["semantic"] = str(exc)
        return out
    texts = [f"Question number {i} about the quarterly report for team {i % 97}?" for i in range(entries)]
    vectors = index.encoder.encode(texts)
    before = rss()
    for i in range(entries):
        index.add(("tenant", "auto"), f"context-{i % 50}", f"{i:064x}", vectors[i], 3600)
    out["semantic_index_mib"] = round((rss() - before) / 2**20, 2)
    out["semantic_index_bytes_per_entry"] = round((rss() - before) / entries)
    started = perf_counter()
    for i in range(1000):
        index.search(("tenant", "auto"), f"context-{i % 50}", vectors[i], 0.84, 8)
    out["semantic_search_us"] = round((perf_counter() - started) / 1000 * 1e6, 1)
    started = perf_counter()
    for text in texts[:1000]:
        index.embed(text)
    out["embed_us"] = round((perf_counter() - started) / 1000 * 1e6, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cache_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop rate of the overhead runs")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per overhead target")
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("--hit-s", type=float, default=5.0, help="seconds per cache-hit run")
    parser.add_argument("--max-load", type=float, default=0.5, help="warn above this load average")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    harness.check_quiet(args.max_load)
    pinned = harness.pin_self()
    report: dict[str, Any] = {"benchmark": "cache", "conditions": harness.conditions()}
    report["settings"] = {k: str(v) for k, v in vars(args).items()}
    report["memory"] = memory_per_10k()
    sink = OTLPSink()
    with harness.workspace() as workdir:
        upstream = harness.start_upstream(workdir)
        servers: list[Server] = []
        try:
            always = {"policy": "always"}
            off = start_variant("off", workdir, upstream, {})
            missing = start_variant(
                # Every entry expires at once: each request looks up, misses and stores.
                "cache-miss",
                workdir,
                upstream,
                {"model": {"cache": {**always, "ttl_s": 1e-6}}},
            )
            traced = start_variant(
                "tracing",
                workdir,
                upstream,
                {"top": {"tracing": {"enabled": True}}},
                {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{sink.url}/v1/traces"},
            )
            exact = start_variant("cache-exact", workdir, upstream, {"model": {"cache": {}}})
            semantic = start_variant(
                "cache-semantic", workdir, upstream, {"model": {"cache": {"semantic": {}}}}
            )
            servers += [off, missing, traced, exact, semantic]
            print("cache hits:", file=sys.stderr)
            report["exact_hits"] = hit_runs(
                exact, [cached_body(QUESTIONS[0])], [cached_body(QUESTIONS[0])], args.hit_s
            )
            # The paraphrase's own exact key is never stored (a hit stores nothing), so every
            # request misses the exact lookup and is answered through the semantic index.
            report["semantic_hits"] = hit_runs(
                semantic, [cached_body(QUESTIONS[1])], [cached_body(QUESTIONS[0])], args.hit_s
            )
            print("overhead:", file=sys.stderr)
            body = chat_body("auto")
            targets = {
                "direct": (upstream.url + DIRECT_PATH, chat_body("bench-small"), None),
                "off": (off.url + PROXY_PATH, body, off),
                "cache-miss": (missing.url + PROXY_PATH, body, missing),
                "tracing": (traced.url + PROXY_PATH, body, traced),
            }
            runs = harness.run_open_interleaved(targets, args.rate, args.duration, slices=args.slices)
            direct = runs["direct"].latency_ms
            report["overhead"] = {
                name: {
                    **run.as_dict(),
                    "added_ms": {q: round(run.latency_ms[q] - direct[q], 3) for q in ("p50", "p90", "p99")},
                }
                for name, run in runs.items()
            }
            report["otlp_exports_received"] = sink.exports
        finally:
            for server in servers:
                server.stop()
            upstream.stop()
    report["conditions"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    report["conditions"]["load_generator_pinned"] = pinned
    print_report(report)
    path = harness.save("cache", report, args.out)
    print(f"\nJSON: {path}")
    return 0


def print_report(report: dict[str, Any]) -> None:
    rows = []
    for name in ("exact_hits", "semantic_hits"):
        for mode, run in report[name].items():
            rows.append(
                [
                    name,
                    mode,
                    run["concurrency"],
                    run["rate"],
                    run["latency_ms"].get("p50"),
                    run["latency_ms"].get("p99"),
                    run["cache_header"],
                ]
            )
    harness.table(
        "cache hits", ["cache", "mode", "conns", "req/s", "p50 ms", "p99 ms", "x-pointsman-cache"], rows
    )
    rows = [
        [
            name,
            run["achieved_rate"],
            run["latency_ms"].get("p50"),
            run["latency_ms"].get("p99"),
            run["added_ms"]["p50"],
            run["added_ms"]["p99"],
            run["server_cpu_us_per_request"],
        ]
        for name, run in report["overhead"].items()
    ]
    harness.table(
        "overhead (open loop)",
        ["target", "req/s", "p50 ms", "p99 ms", "added p50", "added p99", "server CPU us/req"],
        rows,
    )
    print(f"memory: {report['memory']}")
    print(f"OTLP exports received by the sink: {report['otlp_exports_received']}")


if __name__ == "__main__":
    sys.exit(main())
