"""Proxy overhead: the same ~1 KB chat request straight to the fake upstream and through pointsman.

    python -m bench.proxy_overhead                       # full run, about 3 minutes
    python -m bench.proxy_overhead --duration 3 --rates 100,500 --saturation-s 5

Measures, pointsman on core 1 and the upstream plus load generators on core 0:
  1. the upstream alone at saturation (wrk), so it is shown not to be the bottleneck;
  2. open loop at fixed arrival rates, direct and through pointsman: latency percentiles and the
     added latency (through minus direct, same percentile, same rate);
  3. closed loop at saturation with wrk (or the Python driver when wrk is missing);
  4. streaming time to first byte at a fixed rate, direct and through pointsman.
With --responses, the same request also goes to pointsman's /v1/responses (the Responses API,
translated to the same chat request upstream) as a further target taking turns with the others.
With --baseline SRC, a second pointsman imported from SRC (another checkout's `src`, e.g. main's
from `git archive`) serves the same chat request as a further target, on the same core, taking
turns with the others: a change's effect on chat overhead, measured under the same conditions.
A table goes to the terminal and the JSON to bench/results/proxy-overhead-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import (
    DIRECT_PATH,
    PROXY_PATH,
    RESPONSES_PATH,
    LoadResult,
    Server,
    chat_body,
    fmt,
    responses_body,
)

PERCENTILES = ("p50", "p90", "p99", "p99.9")


def added(direct: dict[str, float], through: dict[str, float]) -> dict[str, float]:
    """Through-the-proxy minus direct, percentile by percentile."""
    return {q: round(through[q] - direct[q], 3) for q in PERCENTILES if q in direct and q in through}


def check_upstream(
    upstream: Server, workdir: Path, seconds: float, highest: float, *, use_wrk: bool = True
) -> dict[str, Any]:
    """The upstream's own saturation throughput, sharing its core with the load generator."""
    body = chat_body("bench-small")
    result = harness.saturate(
        "upstream alone",
        upstream.url + DIRECT_PATH,
        body,
        32,
        seconds,
        workdir,
        server=upstream,
        use_wrk=use_wrk,
    )
    ratio = result.achieved_rate / highest if highest else float("inf")
    print(
        f"upstream alone (sharing core {harness.LOAD_CPUS} with the load generator): "
        f"{result.achieved_rate:,.0f} req/s, {ratio:.1f}x the highest rate offered ({highest:,.0f})",
        file=sys.stderr,
    )
    if ratio < 3:
        print(
            "warning: the upstream is not far above the offered rates; results are suspect", file=sys.stderr
        )
    return {"saturation": result.as_dict(), "headroom_vs_highest_rate": round(ratio, 1)}


def open_loop_rates(
    targets: dict[str, tuple[str, Server | None]],
    rates: list[float],
    duration: float,
    arrivals: str,
    *,
    stream: bool = False,
    body_for: dict[str, bytes],
    warmup: float = 1.0,
    slices: int = 5,
) -> list[dict[str, Any]]:
    """For each rate, the targets in turn (interleaved slices), and the added latency."""
    rows = []
    for rate in rates:
        runs = harness.run_open_interleaved(
            {name: (url, body_for[name], server) for name, (url, server) in targets.items()},
            rate,
            duration,
            slices=slices,
            stream=stream,
            arrivals=arrivals,
            warmup=warmup,
        )
        for name, run in runs.items():
            print(f"  {rate:>6g} req/s {name:<10} {_brief(run, stream)}", file=sys.stderr)
        row: dict[str, Any] = {"rate": rate, "runs": {n: r.as_dict() for n, r in runs.items()}}
        key = "ttfb_ms" if stream else "latency_ms"
        direct = getattr(runs["direct"], key)
        row["added_ms"] = {
            name: added(direct, getattr(run, key)) for name, run in runs.items() if name != "direct"
        }
        rows.append(row)
    return rows


def _brief(run: LoadResult, stream: bool) -> str:
    lat = run.ttfb_ms if stream else run.latency_ms
    cpu = f" cpu {run.server_cpu_us_per_request:.0f} us/req" if run.server_cpu_us_per_request else ""
    return (
        f"achieved {run.achieved_rate:,.0f}/s p50 {fmt(lat.get('p50'))} p99 {fmt(lat.get('p99'))} ms "
        f"errors {run.error_count}{cpu}"
    )


def saturation(
    targets: dict[str, tuple[str, Server | None]],
    seconds: float,
    concurrency: int,
    workdir: Path,
    body_for: dict[str, bytes],
    use_wrk: bool = True,
) -> dict[str, dict[str, Any]]:
    out = {}
    for name, (url, server) in targets.items():
        result = harness.saturate(
            name, url, body_for[name], concurrency, seconds, workdir, server=server, use_wrk=use_wrk
        )
        print(f"  saturation {name:<10} {result.achieved_rate:,.0f} req/s ({result.tool})", file=sys.stderr)
        out[name] = result.as_dict()
    return out


def profile_saturation(
    server: Server, url: str, body: bytes, seconds: float, concurrency: int, workdir: Path
) -> dict[str, Any]:
    """py-spy samples the proxy while wrk saturates it: the top functions by own and total time."""
    raw = workdir / "profile.txt"
    pid = server.pids()[-1]  # the worker process when there are several
    exe = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if exe is None:
        print("note: --profile needs py-spy: pip install -e '.[bench]'", file=sys.stderr)
        return {}
    spy = subprocess.Popen(
        [exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "250", "-f", "raw", "-o", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    harness.saturate("pointsman", url, body, concurrency, seconds, workdir, server=server)
    spy.wait(timeout=seconds + 30)
    return summarise_profile(raw)


# Where a sample's time goes: the frame nearest the leaf that carries a marker names the component.
COMPONENTS = (
    ("records writer thread (SQLite)", "RecordStore._run"),
    ("metrics", "Router._observe"),
    ("record row", "Router._record"),
    ("dispatch + upstream HTTP client", "Dispatcher."),
    ("dispatch + upstream HTTP client", "pointsman/providers/"),
    ("routing decision", "Router.route "),
    ("router, other", "Router.handle "),
    ("server.py handler", "pointsman/server.py"),
    ("uvicorn HTTP protocol", "uvicorn/protocols"),
)
# py-spy counts a thread parked in a timed wait as busy on some kernels; those samples are idle.
IDLE_LEAVES = ("Condition.wait ", "Event.wait ")


def summarise_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Top functions by own and total time, and a breakdown by component, idle waits left out."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    parts: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES):
            continue
        samples += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + n
        part = next((name for name, marker in COMPONENTS if marker in stack), "event loop (uvloop, syscalls)")
        parts[part] = parts.get(part, 0) + n

    def ranked(counts: dict[str, int], limit: int) -> list[str]:
        best = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
        return [f"{100 * n / max(samples, 1):5.1f}% {frame}" for frame, n in best]

    return {
        "samples": samples,
        "components": ranked(parts, len(COMPONENTS)),
        "own": ranked(own, top),
        "total": ranked(total, top * 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.proxy_overhead", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rates", default="100,250,500,1000", help="open-loop arrival rates, req/s")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per open-loop point")
    parser.add_argument("--arrivals", choices=("uniform", "poisson"), default="uniform")
    parser.add_argument("--saturation-s", type=float, default=15.0, help="seconds per saturation run")
    parser.add_argument("--concurrency", type=int, default=50, help="connections at saturation")
    parser.add_argument("--stream-rate", type=float, default=250.0, help="streaming TTFB rate; 0 skips")
    parser.add_argument(
        "--strategy",
        choices=("rules", "conditions"),
        default=harness.default_strategy(),
        help="pointsman's routing strategy (default: rules where available)",
    )
    parser.add_argument("--workers", type=int, default=1, help="pointsman worker processes")
    parser.add_argument("--proxy-cpus", default=harness.PROXY_CPUS, help="taskset list for pointsman")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each point")
    parser.add_argument(
        "--slices", type=int, default=5, help="direct and pointsman take turns in this many slices per point"
    )
    parser.add_argument("--no-wrk", action="store_true", help="saturate with the Python driver")
    parser.add_argument("--profile", action="store_true", help="py-spy profile at saturation")
    parser.add_argument(
        "--responses", action="store_true", help="also measure /v1/responses (a further target)"
    )
    parser.add_argument(
        "--baseline", type=Path, help="also measure chat through a pointsman imported from this src dir"
    )
    parser.add_argument("--max-load", type=float, default=0.5, help="warn above this load average")
    parser.add_argument("--out", type=Path, help="JSON file (default bench/results/...)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, records)")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    harness.check_quiet(args.max_load)
    harness.warn_without_wrk()
    pinned = harness.pin_self()
    report: dict[str, Any] = {"benchmark": "proxy_overhead", "conditions": harness.conditions()}
    report["settings"] = {k: v for k, v in vars(args).items() if k != "out"} | {"rates": rates}
    report["settings"]["baseline"] = str(args.baseline) if args.baseline else None
    report["request_bytes"] = len(chat_body())
    with harness.workspace(args.keep) as workdir:
        upstream = harness.start_upstream(workdir)
        proxy = baseline = None
        try:
            proxy = harness.start_pointsman(
                workdir, upstream, workers=args.workers, cpus=args.proxy_cpus, strategy=args.strategy
            )
            targets: dict[str, tuple[str, Server | None]] = {
                "direct": (upstream.url + DIRECT_PATH, None),
                "pointsman": (proxy.url + PROXY_PATH, proxy),
            }
            bodies = {"direct": chat_body("bench-small"), "pointsman": chat_body("auto")}
            if args.responses:
                targets["responses"] = (proxy.url + RESPONSES_PATH, proxy)
                bodies["responses"] = responses_body("auto")
            if args.baseline is not None:
                (workdir / "baseline").mkdir()
                baseline = harness.start_pointsman(
                    workdir / "baseline",
                    upstream,
                    workers=args.workers,
                    cpus=args.proxy_cpus,
                    strategy=args.strategy,
                    env={"PYTHONPATH": str(args.baseline.resolve())},
                )
                targets["baseline"] = (baseline.url + PROXY_PATH, baseline)
                bodies["baseline"] = chat_body("auto")
            report["upstream_check"] = check_upstream(
                upstream, workdir, min(5.0, args.saturation_s), max(rates), use_wrk=not args.no_wrk
            )
            print("open loop:", file=sys.stderr)
            report["open_loop"] = open_loop_rates(
                targets,
                rates,
                args.duration,
                args.arrivals,
                body_for=bodies,
                warmup=args.warmup,
                slices=args.slices,
            )
            print("closed loop:", file=sys.stderr)
            report["saturation"] = saturation(
                targets, args.saturation_s, args.concurrency, workdir, bodies, use_wrk=not args.no_wrk
            )
            if args.stream_rate > 0:
                print("streaming:", file=sys.stderr)
                stream_bodies = {
                    "direct": chat_body("bench-small", stream=True),
                    "pointsman": chat_body("auto", stream=True),
                }
                if args.responses:
                    stream_bodies["responses"] = responses_body("auto", stream=True)
                if baseline is not None:
                    stream_bodies["baseline"] = chat_body("auto", stream=True)
                report["streaming"] = open_loop_rates(
                    targets,
                    [args.stream_rate],
                    args.duration,
                    args.arrivals,
                    stream=True,
                    body_for=stream_bodies,
                    warmup=args.warmup,
                    slices=args.slices,
                )[0]
            if args.profile:
                report["profile"] = profile_saturation(
                    proxy,
                    proxy.url + PROXY_PATH,
                    bodies["pointsman"],
                    args.saturation_s,
                    args.concurrency,
                    workdir,
                )
            report["pointsman_rss_mb"] = round(proxy.rss_bytes() / 2**20, 1)
        finally:
            for server in (proxy, baseline):
                if server is not None:
                    server.stop()
            upstream.stop()
    report["conditions"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    report["conditions"]["load_generator_pinned"] = pinned
    print_report(report)
    path = harness.save("proxy-overhead", report, args.out)
    print(f"\nJSON: {path}")
    return 0


def print_report(report: dict[str, Any]) -> None:
    rows = []
    for row in report["open_loop"]:
        direct = row["runs"]["direct"]
        via = row["runs"]["pointsman"]
        extra = row["added_ms"]["pointsman"]
        rows.append(
            [
                f"{row['rate']:g}",
                fmt(direct["latency_ms"].get("p50")),
                fmt(direct["latency_ms"].get("p99")),
                fmt(via["latency_ms"].get("p50")),
                fmt(via["latency_ms"].get("p99")),
                fmt(extra.get("p50")),
                fmt(extra.get("p99")),
                f"{via['achieved_rate']:,.0f}",
                str(sum(via["errors"].values())),
                fmt(via["server_cpu_us_per_request"], 0),
            ]
        )
    harness.table(
        "open loop, non-streaming (ms); added = through pointsman minus direct",
        [
            "req/s",
            "direct p50",
            "direct p99",
            "pm p50",
            "pm p99",
            "added p50",
            "added p99",
            "achieved/s",
            "errors",
            "cpu us/req",
        ],
        rows,
    )
    if "responses" in report["open_loop"][0]["runs"]:
        harness.table(
            "open loop, non-streaming: chat completions vs the Responses API through pointsman (ms)",
            [
                "req/s",
                "chat added p50",
                "chat added p99",
                "responses added p50",
                "responses added p99",
                "chat cpu us/req",
                "responses cpu us/req",
                "responses errors",
            ],
            [
                [
                    f"{row['rate']:g}",
                    fmt(row["added_ms"]["pointsman"].get("p50")),
                    fmt(row["added_ms"]["pointsman"].get("p99")),
                    fmt(row["added_ms"]["responses"].get("p50")),
                    fmt(row["added_ms"]["responses"].get("p99")),
                    fmt(row["runs"]["pointsman"]["server_cpu_us_per_request"], 0),
                    fmt(row["runs"]["responses"]["server_cpu_us_per_request"], 0),
                    str(sum(row["runs"]["responses"]["errors"].values())),
                ]
                for row in report["open_loop"]
            ],
        )
    if "baseline" in report["open_loop"][0]["runs"]:
        harness.table(
            "open loop, non-streaming: chat through this tree vs through the baseline (ms)",
            [
                "req/s",
                "added p50",
                "added p99",
                "baseline added p50",
                "baseline added p99",
                "cpu us/req",
                "baseline cpu us/req",
            ],
            [
                [
                    f"{row['rate']:g}",
                    fmt(row["added_ms"]["pointsman"].get("p50")),
                    fmt(row["added_ms"]["pointsman"].get("p99")),
                    fmt(row["added_ms"]["baseline"].get("p50")),
                    fmt(row["added_ms"]["baseline"].get("p99")),
                    fmt(row["runs"]["pointsman"]["server_cpu_us_per_request"], 0),
                    fmt(row["runs"]["baseline"]["server_cpu_us_per_request"], 0),
                ]
                for row in report["open_loop"]
            ],
        )
    sat = report["saturation"]
    harness.table(
        "closed loop at saturation",
        ["target", "req/s", "p50 ms", "p99 ms", "errors", "tool", "cpu us/req"],
        [
            [
                name,
                f"{r['achieved_rate']:,.0f}",
                fmt(r["latency_ms"].get("p50")),
                fmt(r["latency_ms"].get("p99")),
                str(sum(r["errors"].values())),
                r["tool"],
                fmt(r["server_cpu_us_per_request"], 0),
            ]
            for name, r in [("upstream alone", report["upstream_check"]["saturation"]), *sat.items()]
        ],
    )
    if "streaming" in report:
        s = report["streaming"]
        d, p = s["runs"]["direct"]["ttfb_ms"], s["runs"]["pointsman"]["ttfb_ms"]
        a = s["added_ms"]["pointsman"]
        rows = [
            ["direct", fmt(d.get("p50")), fmt(d.get("p90")), fmt(d.get("p99"))],
            ["pointsman", fmt(p.get("p50")), fmt(p.get("p90")), fmt(p.get("p99"))],
            ["added", fmt(a.get("p50")), fmt(a.get("p90")), fmt(a.get("p99"))],
        ]
        for name, label in (("responses", "added, /v1/responses"), ("baseline", "added, baseline")):
            if name in s["added_ms"]:
                r = s["added_ms"][name]
                rows.append([label, fmt(r.get("p50")), fmt(r.get("p90")), fmt(r.get("p99"))])
        harness.table(
            f"streaming time to first byte at {s['rate']:g} req/s (ms)", ["", "p50", "p90", "p99"], rows
        )
    if report.get("profile"):
        print("profile at saturation (share of busy samples):")
        for line in report["profile"]["components"]:
            print("  " + line)
    c = report["conditions"]
    print(
        f"conditions: {c['cpus']} CPUs ({c['cpu']}), pointsman on CPU {c['proxy_cpus']}, load on CPU "
        f"{c['load_cpus']}; load average {c['loadavg_1m_5m_15m'][0]} before, {c['loadavg_after'][0]} after"
    )
    if c["other_busy_processes"]:
        print("other busy processes: " + "; ".join(c["other_busy_processes"]))


if __name__ == "__main__":
    raise SystemExit(main())
