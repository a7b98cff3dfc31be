"""pointsman and LiteLLM's proxy side by side: same fake upstream, same request, same run.

    python -m bench.litellm_compare --setup      # once: LiteLLM into bench/.litellm-venv
    python -m bench.litellm_compare              # the comparison, about 6 minutes

LiteLLM is never a dependency of pointsman: `--setup` makes its own virtualenv
(bench/.litellm-venv, git-ignored) with `pip install 'litellm[proxy]==<pinned>'`. Both proxies
get one worker on core 1 (taskset), one at a time; the fake upstream and the load generators
share core 0. Measured for the upstream directly, pointsman and LiteLLM: saturation (wrk, or the
Python closed-loop driver without it), open-loop latency at rates stepped up to LiteLLM's
saturation (`--rates auto`: every rate measured is reported), and
streaming time to first byte. The summary gives the throughput ratio and the ratio of added p50
latency at the highest rate LiteLLM sustains. JSON to bench/results/litellm-compare-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import DIRECT_PATH, PROXY_PATH, LoadResult, Server, chat_body, fmt
from bench.proxy_overhead import added, check_upstream

VENV = harness.REPO / "bench" / ".litellm-venv"
# 1.106 is the release the figures were taken with. Its metadata asks for a certifi
# newer than PyPI may carry; `--setup` then installs the same pins with certifi left free.
LITELLM = "1.106.10"
RELAXED = ("certifi",)


def _pip(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *args], text=True)


def setup(venv: Path, version: str) -> bool:
    """Create `venv` with LiteLLM's proxy; True when it is usable."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    spec = f"litellm[proxy]=={version}"
    print(f"installing {spec} into {venv} ...", file=sys.stderr)
    if _pip(venv, spec).returncode != 0:
        print(f"pip could not resolve {spec}; retrying with {', '.join(RELAXED)} unpinned", file=sys.stderr)
        if _pip(venv, "--no-deps", f"litellm=={version}", "packaging").returncode != 0:
            return False
        listing = subprocess.run(
            [str(venv / "bin" / "python"), "-c", _REQUIREMENTS, *RELAXED],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
        if _pip(venv, *[r for r in listing if r.strip()]).returncode != 0:
            return False
    return litellm_binary(venv) is not None


# Run inside the LiteLLM venv: LiteLLM's requirements with the proxy extra, named ones unpinned.
_REQUIREMENTS = """
import sys
from importlib.metadata import requires
from packaging.requirements import Requirement
relaxed = set(sys.argv[1:])
for text in requires("litellm"):
    r = Requirement(text)
    if r.marker and not r.marker.evaluate({"extra": "proxy"}):
        continue
    name = r.name + (f"[{','.join(sorted(r.extras))}]" if r.extras else "")
    print(name if r.name in relaxed else name + str(r.specifier))
"""


def litellm_binary(venv: Path) -> Path | None:
    binary = venv / "bin" / "litellm"
    return binary if binary.exists() else None


def litellm_version(venv: Path) -> str | None:
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() or None


def start_litellm(workdir: Path, upstream: Server, venv: Path) -> Server:
    """LiteLLM's proxy, one worker, routing `auto` to the same upstream deployment as pointsman."""
    port = harness.free_port()
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: auto\n"
        "    litellm_params:\n"
        "      model: openai/bench-small\n"
        f"      api_base: {upstream.url}/small/v1\n"
        "      api_key: sk-upstream\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "general_settings:\n"
        f"  master_key: {harness.CLIENT_KEY}\n"
    )
    binary = litellm_binary(venv)
    assert binary is not None
    argv = [
        str(binary),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    env = {
        # Offline: no model-price download at start, no telemetry, quiet logs.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
    }
    return harness.start_server(
        "litellm", argv, port, "/health/liveliness", workdir, cpus=harness.PROXY_CPUS, env=env, timeout=180
    )


def measure(
    proxies: dict[str, Server],
    upstream: Server,
    args: argparse.Namespace,
    workdir: Path,
    rates: list[float],
) -> dict[str, Any]:
    """Saturation of each proxy in turn, then open-loop points with direct and every proxy
    taking turns (interleaved slices), then streaming time to first byte the same way."""
    out: dict[str, Any] = {name: {"open_loop": {}, "streaming": None} for name in ["direct", *proxies]}
    body, stream_body = chat_body("auto"), chat_body("auto", stream=True)
    urls = {name: server.url + PROXY_PATH for name, server in proxies.items()}
    for name, server in proxies.items():
        sat = harness.saturate(
            name,
            urls[name],
            body,
            args.concurrency,
            args.saturation_s,
            workdir,
            server=server,
            use_wrk=not args.no_wrk,
        )
        out[name]["saturation"] = sat.as_dict()
        print(f"  {name:<10} saturation {sat.achieved_rate:,.1f} req/s ({sat.tool})", file=sys.stderr)

    def targets(stream: bool) -> dict[str, tuple[str, bytes, Server | None]]:
        direct = chat_body("bench-small", stream=stream)
        chosen: dict[str, tuple[str, bytes, Server | None]] = {
            "direct": (upstream.url + DIRECT_PATH, direct, None)
        }
        for name, server in proxies.items():
            chosen[name] = (urls[name], stream_body if stream else body, server)
        return chosen

    auto = not rates
    if auto:
        # Step up towards LiteLLM's saturation (pointsman's when LiteLLM is skipped) and stop
        # after the first rate it does not sustain: the comparison is at the highest it does.
        reference = out["litellm" if "litellm" in proxies else "pointsman"]["saturation"]["achieved_rate"]
        rates += stepped_rates(reference)
    for rate in rates:
        runs = harness.run_open_interleaved(
            targets(False), rate, args.duration, slices=args.slices, warmup=args.warmup
        )
        for name, run in runs.items():
            out[name]["open_loop"][str(rate)] = run.as_dict()
            print(f"  {name:<10} {rate:>5g} req/s {_brief(run)}", file=sys.stderr)
        # 10 and 30 req/s always run (a noisy miss there must not end the search).
        if auto and rate > 30 and not runs["litellm" if "litellm" in runs else "pointsman"].sustained():
            del rates[rates.index(rate) + 1 :]
            break
    if args.stream_rate > 0:
        runs = harness.run_open_interleaved(
            targets(True),
            args.stream_rate,
            args.duration,
            slices=args.slices,
            stream=True,
            warmup=args.warmup,
        )
        for name, run in runs.items():
            out[name]["streaming"] = run.as_dict()
            print(
                f"  {name:<10} streaming {args.stream_rate:g} req/s "
                f"ttfb p50 {fmt(run.ttfb_ms.get('p50'))} ms",
                file=sys.stderr,
            )
    for name, server in proxies.items():
        out[name]["rss_mb"] = round(server.rss_bytes() / 2**20, 1)
    return out


STEPS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # shares of the saturation throughput, after 10 and 30 req/s


def stepped_rates(saturation: float) -> list[float]:
    """The open-loop rates `--rates auto` tries: 10 and 30 req/s, then shares of `saturation`."""
    steps = [10.0, 30.0] + [float(max(1, round(saturation * share))) for share in STEPS]
    return sorted({r for r in steps if r <= max(saturation, 30.0)})


def _brief(run: LoadResult) -> str:
    return (
        f"achieved {run.achieved_rate:,.1f}/s p50 {fmt(run.latency_ms.get('p50'))} "
        f"p99 {fmt(run.latency_ms.get('p99'))} ms errors {run.error_count}"
        + (" (not sustained)" if not run.sustained() else "")
    )


def summarise(report: dict[str, Any], rates: list[float]) -> dict[str, Any]:
    direct = report["direct"]
    pm = report["pointsman"]
    ll = report.get("litellm")
    summary: dict[str, Any] = {}
    for name, runs in (("pointsman", pm), ("litellm", ll)):
        if runs is None:
            continue
        summary[name] = {
            "saturation_rps": runs["saturation"]["achieved_rate"],
            "cpu_us_per_request_at_saturation": runs["saturation"]["server_cpu_us_per_request"],
            "added_ms": {
                str(rate): added(
                    direct["open_loop"][str(rate)]["latency_ms"], runs["open_loop"][str(rate)]["latency_ms"]
                )
                for rate in rates
            },
            "sustained": {str(rate): runs["open_loop"][str(rate)]["sustained"] for rate in rates},
        }
        if runs.get("streaming") and direct.get("streaming"):
            summary[name]["streaming_added_ttfb_ms"] = added(
                direct["streaming"]["ttfb_ms"], runs["streaming"]["ttfb_ms"]
            )
    if ll is not None:
        sustained = [r for r in rates if summary["litellm"]["sustained"][str(r)]]
        best = max(sustained) if sustained else None
        summary["highest_rate_litellm_sustains"] = best
        summary["throughput_ratio"] = round(
            summary["pointsman"]["saturation_rps"] / max(summary["litellm"]["saturation_rps"], 1e-9), 1
        )
        if best is not None:
            pm_p50 = summary["pointsman"]["added_ms"][str(best)].get("p50")
            ll_p50 = summary["litellm"]["added_ms"][str(best)].get("p50")
            if pm_p50 is not None and ll_p50 is not None:
                summary["added_p50_ms_at_that_rate"] = {"pointsman": pm_p50, "litellm": ll_p50}
                # Below ~0.05 ms the difference is inside the measurement noise; clamp it there.
                summary["added_p50_ratio"] = round(ll_p50 / max(pm_p50, 0.05), 1)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.litellm_compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--setup", action="store_true", help="create bench/.litellm-venv first")
    parser.add_argument("--litellm-version", default=LITELLM)
    parser.add_argument("--venv", type=Path, default=VENV)
    parser.add_argument(
        "--rates",
        default="auto",
        help="open-loop rates, req/s; auto: 10, 30, then 50-100%% of LiteLLM's saturation, stopping "
        "after the first rate it does not sustain",
    )
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per open-loop point")
    parser.add_argument("--saturation-s", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--stream-rate", type=float, default=10.0, help="streaming TTFB rate; 0 skips")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each point")
    parser.add_argument("--no-wrk", action="store_true", help="saturate with the Python driver")
    parser.add_argument("--slices", type=int, default=4, help="turns each target takes per open-loop point")
    parser.add_argument(
        "--strategy",
        choices=("rules", "conditions"),
        default=harness.default_strategy(),
        help="pointsman's routing strategy (default: rules where available)",
    )
    parser.add_argument("--skip-litellm", action="store_true", help="pointsman and direct only")
    parser.add_argument("--max-load", type=float, default=0.5)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    rates = [] if args.rates == "auto" else [float(r) for r in args.rates.split(",") if r.strip()]

    if args.setup and not setup(args.venv, args.litellm_version):
        print("LiteLLM could not be installed; see pip's output above", file=sys.stderr)
        return 1
    use_litellm = not args.skip_litellm
    if use_litellm and litellm_binary(args.venv) is None:
        print(
            f"LiteLLM is not installed in {args.venv}: run `python -m bench.litellm_compare --setup` "
            "(or pass --skip-litellm)",
            file=sys.stderr,
        )
        return 2

    harness.check_quiet(args.max_load)
    harness.warn_without_wrk()
    harness.pin_self()
    report: dict[str, Any] = {"benchmark": "litellm_compare", "conditions": harness.conditions()}
    report["conditions"]["litellm"] = litellm_version(args.venv) if use_litellm else None
    report["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()} | {
        "rates": rates
    }
    with harness.workspace(args.keep) as workdir:
        upstream = harness.start_upstream(workdir)
        proxies: dict[str, Server] = {}
        try:
            report["upstream_check"] = check_upstream(
                upstream, workdir, min(5.0, args.saturation_s), max(rates or [30.0]), use_wrk=not args.no_wrk
            )
            # Both proxies stay up (on the same core) so that their open-loop slices interleave;
            # only the one under load is busy.
            proxies["pointsman"] = harness.start_pointsman(workdir, upstream, strategy=args.strategy)
            if use_litellm:
                proxies["litellm"] = start_litellm(workdir, upstream, args.venv)
            report.update(measure(proxies, upstream, args, workdir, rates))
        finally:
            for server in proxies.values():
                server.stop()
            upstream.stop()
    report["conditions"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    report["settings"]["rates"] = rates  # as measured (auto: the steps taken)
    report["summary"] = summarise(report, rates)
    print_report(report, rates)
    path = harness.save("litellm-compare", report, args.out)
    print(f"JSON: {path}")
    return 0


def print_report(report: dict[str, Any], rates: list[float]) -> None:
    summary = report["summary"]
    names = [n for n in ("pointsman", "litellm") if n in summary]
    rows = []
    for name in names:
        runs = report[name]
        s = summary[name]
        rows.append(
            [
                name,
                f"{s['saturation_rps']:,.1f}",
                fmt(s["cpu_us_per_request_at_saturation"], 0),
                *[
                    fmt(s["added_ms"][str(r)].get("p50")) + ("" if s["sustained"][str(r)] else "*")
                    for r in rates
                ],
                fmt(s.get("streaming_added_ttfb_ms", {}).get("p50")),
                fmt(runs.get("rss_mb"), 0),
            ]
        )
    harness.table(
        "pointsman vs LiteLLM proxy (one worker, one core each); added = proxy minus direct; "
        "* = rate not sustained",
        [
            "proxy",
            "saturation req/s",
            "cpu us/req",
            *[f"added p50 @{r:g}/s ms" for r in rates],
            "stream TTFB added p50",
            "RSS MB",
        ],
        rows,
    )
    if "throughput_ratio" in summary:
        best = summary.get("highest_rate_litellm_sustains")
        line = f"pointsman saturation = {summary['throughput_ratio']}x LiteLLM's"
        if "added_p50_ratio" in summary:
            p = summary["added_p50_ms_at_that_rate"]
            line += (
                f"; at {best:g} req/s (the highest rate LiteLLM sustains) LiteLLM adds "
                f"{p['litellm']:.2f} ms at p50, pointsman {p['pointsman']:.2f} ms "
                f"({summary['added_p50_ratio']}x)"
            )
        print(line)
    c = report["conditions"]
    print(
        f"conditions: {c['cpus']} CPUs, proxies on CPU {c['proxy_cpus']}, load on CPU {c['load_cpus']}; "
        f"load average {c['loadavg_1m_5m_15m'][0]} before, {c['loadavg_after'][0]} after; "
        f"LiteLLM {c.get('litellm')}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
