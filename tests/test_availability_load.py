"""The bounded loopback load test of issue 'availability under faults': a short version runs in
CI; the full one (20,000 requests per phase) is `pytest -m slow` or `python -m bench.availability_load`."""

from __future__ import annotations

import pytest
from bench.availability_load import run


def check(results: dict) -> None:
    fallbacks, hashing = results["fallbacks"], results["hashing"]
    # One deployment fails 30% of calls, another is slow: fallbacks keep clients whole.
    assert fallbacks["success_rate"] >= 0.999
    assert fallbacks["upstream_calls"]["flaky"] > 0 and fallbacks["share"]["slow"] > 0
    assert hashing["success_rate"] >= 0.999
    assert hashing["sessions_with_one_home"] == 1.0
    assert hashing["stickiness_healthy_homes"] >= 0.99


def test_load_with_a_flaky_and_a_slow_deployment_short():
    check(run(requests=1500, concurrency=16, sessions=60))


@pytest.mark.slow
def test_load_with_a_flaky_and_a_slow_deployment_full():
    check(run(requests=20_000, concurrency=32, sessions=200))
