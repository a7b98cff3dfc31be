"""The benchmark scripts keep working: each runs for a second or two and writes its result table.

Smoke runs only: they check the shape of what a full run reports, never a timing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_bench(module: str, out: Path, *args: str, expect: int = 0) -> tuple[dict[str, Any], str]:
    """Run `python -m bench.<module> ... --out out` from the repository root; the JSON and stdout."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == expect, done.stdout + done.stderr
    return (json.loads(out.read_text()) if expect == 0 else {}), done.stdout + done.stderr


def test_strategy_latency_times_every_registered_strategy(tmp_path):
    from pointsman.strategies import STRATEGIES

    report, stdout = run_bench("strategy_latency", tmp_path / "s.json", "--iterations", "30")
    assert set(report["results"]) == set(STRATEGIES)
    for name in ("ordered", "weighted", "conditions"):
        for shape in ("short", "1 KB", "8 KB, 10 turns"):
            stats = report["results"][name][shape]
            assert {"p50", "p99", "decisions_per_s", "route", "plan"} <= set(stats)
            assert stats["route"].startswith(name) and stats["plan"]
    assert "decision latency" in stdout and "conditions" in stdout


def test_strategy_latency_times_a_route_of_a_given_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "store: {enabled: false}\n"
        "deployments:\n"
        "  - {name: a, provider: openai, model: m, api_base: 'http://127.0.0.1:9/v1'}\n"
        "models:\n"
        "  smart: {strategy: ordered, deployments: [a]}\n"
    )
    report, _ = run_bench(
        "strategy_latency",
        tmp_path / "s.json",
        "--iterations",
        "10",
        "--config",
        str(config),
        "--model",
        "smart",
    )
    assert report["results"]["c.yaml:smart"]["short"]["route"] == "ordered:order"


@pytest.mark.parametrize("driver", ["wrk", "python"])
def test_proxy_overhead_reports_added_latency_saturation_and_ttfb(tmp_path, driver):
    if driver == "wrk" and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install -y wrk); the Python driver is covered")
    args = ["--rates", "40", "--duration", "1", "--warmup", "0.2", "--saturation-s", "1"]
    args += ["--concurrency", "4", "--stream-rate", "20", "--slices", "2"]
    if driver == "python":
        args.append("--no-wrk")
    report, stdout = run_bench("proxy_overhead", tmp_path / "p.json", *args)

    assert report["upstream_check"]["saturation"]["achieved_rate"] > 0
    point = report["open_loop"][0]
    assert point["rate"] == 40
    for target in ("direct", "pointsman"):
        run = point["runs"][target]
        assert run["errors"] == {} and run["ok"] > 0
        assert {"p50", "p90", "p99", "p99.9"} <= set(run["latency_ms"])
    assert {"p50", "p99"} <= set(point["added_ms"]["pointsman"])
    assert point["runs"]["pointsman"]["server_cpu_us_per_request"] > 0
    tool = "wrk" if driver == "wrk" else "python-closed-loop"
    for target in ("direct", "pointsman"):
        assert report["saturation"][target]["tool"] == tool
        assert report["saturation"][target]["achieved_rate"] > 0
        assert report["saturation"][target]["errors"] == {}
    streaming = report["streaming"]
    assert streaming["runs"]["pointsman"]["ttfb_ms"]["p50"] > 0
    assert "p50" in streaming["added_ms"]["pointsman"]
    assert report["conditions"]["cpus"] and "loadavg_after" in report["conditions"]
    assert "open loop" in stdout and "closed loop at saturation" in stdout


def test_soak_samples_rss_and_counts_errors(tmp_path):
    args = ["--seconds", "3", "--rate", "50", "--sample-s", "0.5", "--interval-s", "1"]
    report, stdout = run_bench("soak", tmp_path / "soak.json", *args)
    assert len(report["rss_samples"]) >= 4
    assert report["rss_mb"]["baseline"] > 0 and report["rss_mb"]["end"] > 0
    assert len(report["windows"]) == 3
    assert report["requests"] > 0 and report["errors"] == 0 and report["server_alive"]
    assert isinstance(report["passed"], bool) and "rss_growth_pct" in report
    assert "RSS:" in stdout


def test_litellm_compare_without_litellm_measures_pointsman_and_says_how_to_set_up(tmp_path):
    _, stdout = run_bench("litellm_compare", tmp_path / "l.json", "--venv", str(tmp_path / "none"), expect=2)
    assert "--setup" in stdout

    args = ["--skip-litellm", "--rates", "5", "--duration", "1", "--warmup", "0.2"]
    args += ["--saturation-s", "1", "--concurrency", "4", "--stream-rate", "5", "--no-wrk", "--slices", "1"]
    report, _ = run_bench("litellm_compare", tmp_path / "l.json", *args)
    summary = report["summary"]
    assert summary["pointsman"]["saturation_rps"] > 0
    assert "p50" in summary["pointsman"]["added_ms"]["5.0"]
    assert "litellm" not in summary


def test_proxy_overhead_measures_a_multi_worker_server(tmp_path):
    args = ["--rates", "20", "--duration", "1", "--warmup", "0.2", "--saturation-s", "1", "--slices", "1"]
    args += ["--concurrency", "4", "--stream-rate", "0", "--no-wrk", "--workers", "2"]
    report, _ = run_bench("proxy_overhead", tmp_path / "w.json", *args)
    assert report["settings"]["workers"] == 2
    assert report["open_loop"][0]["runs"]["pointsman"]["errors"] == {}
    assert report["saturation"]["pointsman"]["ok"] > 0
    assert "streaming" not in report


def test_proxy_overhead_measures_the_responses_api_and_a_baseline(tmp_path):
    args = ["--rates", "20", "--duration", "1", "--warmup", "0.2", "--saturation-s", "1", "--slices", "1"]
    args += ["--concurrency", "4", "--stream-rate", "10", "--no-wrk", "--responses"]
    args += ["--baseline", str(REPO / "src")]
    report, stdout = run_bench("proxy_overhead", tmp_path / "r.json", *args)
    point = report["open_loop"][0]
    for target in ("responses", "baseline"):
        assert point["runs"][target]["errors"] == {} and point["runs"][target]["ok"] > 0
        assert "p50" in point["added_ms"][target]
        assert report["saturation"][target]["ok"] > 0
        assert report["streaming"]["runs"][target]["ttfb_ms"]["p50"] > 0
    assert "the Responses API through pointsman" in stdout and "vs through the baseline" in stdout


def test_validation_cost_reports_microseconds_per_check(tmp_path):
    report, stdout = run_bench("validation_cost", tmp_path / "v.json", "--number", "200")
    figures = report["us_per_check"]
    assert figures["chat (bench request): schema"] > 0 and figures["chat with tools: schema"] > 0
    assert "anthropic messages: schema" in stdout
