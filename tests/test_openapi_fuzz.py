"""Schemathesis against the server's own `/openapi.json`: generated bodies, valid and not, sent to
a real pointsman on loopback backed by the fake upstream; no answer may be a server error.

The short run (about 40 examples per operation, some 250 requests) runs with the suite. The long
run is the same test with more examples per operation (docs/hardening.md):

    POINTSMAN_FUZZ_EXAMPLES=900 pytest -q -s tests/test_openapi_fuzz.py
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from pointsman.router import Router
from pointsman.schemas import openapi_schema
from pointsman.testing import FakeUpstream
from tests.conftest import RunningServer, deployment

EXAMPLES = int(os.environ.get("POINTSMAN_FUZZ_EXAMPLES", "40"))
schema = schemathesis.openapi.from_dict(openapi_schema())
statuses: Counter[tuple[str, int]] = Counter()


@pytest.fixture(scope="module")
def fuzzed(_upstream_server: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    upstream = _upstream_server
    upstream.reset()
    config: dict[str, Any] = {
        "router": {"backoff_base_s": 0.0},
        "deployments": [
            deployment(upstream, "gpt"),
            deployment(upstream, "claude", provider="anthropic"),
            deployment(upstream, "embed", mode="embeddings"),
        ],
        "models": {
            "auto": {"deployments": ["gpt", "claude"]},
            "vectors": {"type": "embeddings", "deployments": ["embed"]},
        },
        # Every generated model name reaches a real route (and so the upstream), not only a 404.
        "aliases": {"*": "auto"},
    }
    db: Path = tmp_path_factory.mktemp("fuzz") / "records.db"
    server = RunningServer(Router.from_config(config, db=db), db)
    yield server.url
    server.stop()
    total = sum(statuses.values())
    by_status: Counter[int] = Counter()
    for (_, status), count in statuses.items():
        by_status[status] += count
    print(f"\nschemathesis: {total} requests, statuses {dict(sorted(by_status.items()))}")
    for (operation, status), count in sorted(statuses.items()):
        print(f"  {operation}: {status} x{count}")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_generated_request_gets_a_server_error(case: Any, fuzzed: str) -> None:
    response = case.call(base_url=fuzzed, timeout=30)
    statuses[(f"{case.method} {case.path}", response.status_code)] += 1
    case.validate_response(response, checks=[not_a_server_error])
