"""Soak: a steady open-loop rate through pointsman for a long time, its memory sampled.

    python -m bench.soak                          # 30 minutes at 250 req/s
    python -m bench.soak --minutes 2 --rate 200   # a shorter look
    python -m bench.soak --seconds 6 --sample-s 1 # what CI runs (tests/test_bench.py)

Reports RSS of the pointsman process at the baseline (minute 5 of a 30-minute run; for shorter
runs the same sixth of the run) and at the end, the growth between them, every error, and
latency percentiles per interval. A table goes to the terminal and the JSON (with every RSS
sample) to bench/results/soak-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path
from time import perf_counter
from typing import Any

from bench import harness
from bench.harness import PROXY_PATH, Server, chat_body, fmt, percentiles


class _Sampler(threading.Thread):
    """Samples the proxy's RSS and CPU every `every` seconds, off the load generator's loop."""

    def __init__(self, server: Server, every: float) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.every = every
        self.samples: list[dict[str, float]] = []
        self.done = threading.Event()
        self.started = perf_counter()

    def run(self) -> None:
        while True:
            self.samples.append(
                {
                    "t_s": round(perf_counter() - self.started, 2),
                    "rss_mb": round(self.server.rss_bytes() / 2**20, 2),
                    "cpu_s": round(self.server.cpu_seconds(), 2),
                }
            )
            if self.done.wait(self.every):
                return


async def _drive(url: str, body: bytes, rate: float, seconds: float, interval: float) -> list[dict[str, Any]]:
    """Open loop for `seconds`, one latency/error summary per `interval`."""
    windows: list[dict[str, Any]] = []
    elapsed = 0.0
    while elapsed < seconds - 1e-9:
        span = min(interval, seconds - elapsed)
        tally = await harness.open_loop(url, body, rate, span, warmup=0.0)
        windows.append(
            {
                "start_s": round(elapsed, 1),
                "seconds": round(span, 1),
                "sent": tally.sent,
                "ok": tally.ok,
                "errors": dict(tally.errors),
                "latency_ms": percentiles(tally.latency),
            }
        )
        elapsed += span
        print(
            f"  {elapsed:7.0f}s sent {tally.sent} errors {sum(tally.errors.values())} "
            f"p50 {fmt(windows[-1]['latency_ms'].get('p50'))} p99 "
            f"{fmt(windows[-1]['latency_ms'].get('p99'))} ms",
            file=sys.stderr,
            flush=True,
        )
    return windows


def rss_at(samples: list[dict[str, float]], t: float) -> float:
    """The RSS sample nearest to `t` seconds."""
    return min(samples, key=lambda s: abs(s["t_s"] - t))["rss_mb"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=30.0, help="length of the soak (default 30)")
    length.add_argument("--seconds", type=float, help="length in seconds (for smoke runs)")
    parser.add_argument("--rate", type=float, default=250.0, help="arrival rate, req/s (default 250)")
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--interval-s", type=float, default=60.0, help="seconds per latency window")
    parser.add_argument("--baseline-fraction", type=float, default=5 / 30, help="baseline point")
    parser.add_argument("--max-growth", type=float, default=10.0, help="allowed RSS growth, percent")
    parser.add_argument(
        "--strategy",
        choices=("rules", "conditions"),
        default=harness.default_strategy(),
        help="pointsman's routing strategy (default: rules where available)",
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-load", type=float, default=0.5, help="warn above this load average")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    interval = min(args.interval_s, seconds)

    harness.check_quiet(args.max_load)
    harness.pin_self()
    report: dict[str, Any] = {"benchmark": "soak", "conditions": harness.conditions()}
    report["settings"] = {
        "seconds": seconds,
        "rate": args.rate,
        "sample_s": args.sample_s,
        "strategy": args.strategy,
    }
    with harness.workspace(args.keep) as workdir:
        upstream = harness.start_upstream(workdir)
        proxy = None
        try:
            proxy = harness.start_pointsman(workdir, upstream, workers=args.workers, strategy=args.strategy)
            sampler = _Sampler(proxy, args.sample_s)
            cpu0 = proxy.cpu_seconds()
            sampler.start()
            windows = harness.run_async(
                _drive(proxy.url + PROXY_PATH, chat_body("auto"), args.rate, seconds, interval)
            )
            sampler.done.set()
            sampler.join()
            cpu = proxy.cpu_seconds() - cpu0
            alive = proxy.popen.poll() is None
            db = workdir / "records.db"
            report["records_db_mb"] = round(db.stat().st_size / 2**20, 1) if db.exists() else None
        finally:
            if proxy is not None:
                proxy.stop()
            upstream.stop()

    samples = sampler.samples
    baseline_t = seconds * args.baseline_fraction
    base = rss_at(samples, baseline_t)
    end = samples[-1]["rss_mb"]
    growth = (end - base) / base * 100 if base else 0.0
    sent = sum(w["sent"] for w in windows)
    errors = sum(sum(w["errors"].values()) for w in windows)
    report.update(
        {
            "windows": windows,
            "rss_samples": samples,
            "rss_mb": {
                "start": samples[0]["rss_mb"],
                "baseline": base,
                "end": end,
                "max": max(s["rss_mb"] for s in samples),
            },
            "baseline_s": round(baseline_t, 1),
            "rss_growth_pct": round(growth, 2),
            "requests": sent,
            "errors": errors,
            "server_alive": alive,
            "server_cpu_us_per_request": round(cpu / sent * 1e6, 1) if sent else None,
            "passed": errors == 0 and alive and growth < args.max_growth,
        }
    )
    report["conditions"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    harness.table(
        f"soak: {seconds / 60:g} min at {args.rate:g} req/s through pointsman",
        ["window start s", "sent", "errors", "p50 ms", "p99 ms", "p99.9 ms"],
        [
            [
                f"{w['start_s']:g}",
                str(w["sent"]),
                str(sum(w["errors"].values())),
                fmt(w["latency_ms"].get("p50")),
                fmt(w["latency_ms"].get("p99")),
                fmt(w["latency_ms"].get("p99.9")),
            ]
            for w in windows
        ],
    )
    print(
        f"RSS: {samples[0]['rss_mb']:.1f} MB at start, {base:.1f} MB at {baseline_t:.0f}s, "
        f"{end:.1f} MB at the end (growth {growth:+.2f}%, limit {args.max_growth:g}%); "
        f"{sent} requests, {errors} errors; {'PASS' if report['passed'] else 'FAIL'}"
    )
    path = harness.save("soak", report, args.out)
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
