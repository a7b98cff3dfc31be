"""The dashboard in a real headless Chromium, its summary endpoint and `pointsman report`, against
a server with recorded traffic from the official openai client."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from pointsman.cli import main
from pointsman.report import money, pct
from pointsman.testing import Behaviour
from tests.conftest import deployment

MASTER = "mk-dashboard-master"
CHROMIUM = os.environ.get("POINTSMAN_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
ENGLISH = "Could you please tell me what the weather is usually like in London during the spring?"
FRENCH = (
    "Pouvez-vous me dire quel temps il fait habituellement à Paris pendant le printemps, s'il vous plaît ?"
)
CODE = "Write a python function that parses an ISO date and returns the weekday, with tests."


@pytest.fixture(autouse=True)
def master_key(monkeypatch):
    monkeypatch.setenv("POINTSMAN_MASTER_KEY", MASTER)


def config(upstream: Any) -> dict[str, Any]:
    return {
        "router": {"backoff_base_s": 0.0},
        "deployments": [
            deployment(upstream, "premium", price={"input": 10.0, "output": 30.0}),
            deployment(upstream, "mini", price={"input": 0.2, "output": 0.8}),
            deployment(upstream, "coder", price={"input": 1.0, "output": 4.0}),
            deployment(upstream, "flaky", price={"input": 0.5, "output": 1.0}),
        ],
        "models": {
            "auto": {
                "strategy": "tiers",
                "options": {
                    "tiers": {
                        "simple": {"deployments": ["mini"]},
                        "standard": {"deployments": ["coder"]},
                        "complex": {"deployments": ["premium"]},
                        "reasoning": {"deployments": ["premium"]},
                    }
                },
            },
            "code": {"strategy": "ordered", "deployments": ["flaky", "coder"]},
            "broken": {"strategy": "ordered", "deployments": ["flaky"]},
        },
        "budgets": {"teams": {"web": {"amount": 1.0, "period": "month"}}},
    }


def call(server: Any, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{server.url}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def create_key(server: Any, **spec: Any) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server.url}/admin/keys",
        method="POST",
        data=json.dumps(spec).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {MASTER}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def recorded(upstream: Any, serve: Any) -> Any:
    """A server with traffic from two keys in two languages over several deployments, one
    fallback and one failure, all recorded."""
    upstream.set("flaky", Behaviour(status=500))
    server = serve(config(upstream))
    web = create_key(server, name="web-app", budget=0.5, budget_period="day", metadata={"team": "web"})
    data = create_key(server, name="data-app", budget=0.01, budget_period="month")
    server.viewer = create_key(server, name="viewer", scopes=["dashboard"])
    server.keys = {"web-app": web, "data-app": data}
    web_client, data_client = server.client(api_key=web["key"]), server.client(api_key=data["key"])

    def ask(client: Any, model: str, text: str) -> None:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], max_tokens=64
        )

    for _ in range(3):
        ask(web_client, "auto", ENGLISH)
    ask(web_client, "auto", "hi")
    ask(web_client, "premium", ENGLISH)
    for _ in range(2):
        ask(data_client, "auto", FRENCH)
    ask(data_client, "code", CODE)  # flaky fails, coder answers: a fallback
    with pytest.raises(openai.InternalServerError):
        ask(data_client, "broken", FRENCH)  # the only deployment fails: an error
    return server


def expected_from_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The numbers the summary must show, computed straight from the records."""
    answered = [r for r in records if r["status"] == 200]
    per_deployment: dict[str, int] = {}
    for r in answered:
        per_deployment[r["deployment"]] = per_deployment.get(r["deployment"], 0) + 1
    cost = sum(r["cost"] for r in records)
    baseline = sum((r["prompt_tokens"] * 10.0 + r["completion_tokens"] * 30.0) / 1e6 for r in answered)
    return {"requests": len(records), "answered": len(answered), "per_deployment": per_deployment,
            "cost": cost, "baseline": baseline}  # fmt: skip


def test_summary_endpoint_counts_what_the_records_hold(recorded):
    records = recorded.records()
    expected = expected_from_records(records)
    status, summary = call(recorded, "/dashboard/api/summary?since=1h", MASTER)
    assert status == 200, summary
    totals = summary["totals"]
    assert totals["requests"] == expected["requests"] == 9
    assert totals["errors"] == 1 and summary["errors_by_status"] == {"503": 1}
    assert totals["fallbacks"] == 1 and totals["fallback_rate"] == pytest.approx(1 / 8)
    assert {d["name"]: d["requests"] for d in summary["deployments"] if d["requests"]} == expected[
        "per_deployment"
    ]
    flaky = next(d for d in summary["deployments"] if d["name"] == "flaky")
    assert flaky["requests"] == 0 and flaky["failed_attempts"] == 2
    assert summary["premium"] == "premium"
    assert totals["cost"] == pytest.approx(expected["cost"])
    assert totals["baseline_cost"] == pytest.approx(expected["baseline"])
    assert totals["saving"] == pytest.approx(expected["baseline"] - expected["cost"]) and totals["saving"] > 0
    # Tiers: the tier name under the tiers strategy, the route otherwise.
    tiers = {t["name"]: t["requests"] for t in summary["tiers"]}
    assert tiers["explicit:deployment"] == 1 and tiers["ordered:order"] == 2
    assert sum(n for name, n in tiers.items() if ":" not in name) == 6
    # Fairness: both languages and both keys, each with its tier mix.
    languages = {g["group"]: g for g in summary["fairness"]["by_language"]}
    assert {"en", "fr"} <= set(languages) and languages["fr"]["requests"] == 3
    keys = {g["group"]: g for g in summary["fairness"]["by_key"]}
    assert keys["web-app"]["requests"] == 5 and keys["data-app"]["requests"] == 4
    assert keys["data-app"]["error_rate"] == pytest.approx(1 / 4)
    # Budget burn: each key's spend this period against its budget, and the team's.
    budgets = {b["name"]: b for b in summary["budgets"]}
    web_spend = sum(r["cost"] for r in records if r["key_id"] == recorded.keys["web-app"]["id"])
    assert budgets["web-app"]["spent"] == pytest.approx(web_spend)
    assert budgets["web-app"]["burn"] == pytest.approx(web_spend / 0.5)
    assert budgets["web"]["scope"] == "team" and budgets["web"]["spent"] == pytest.approx(web_spend)
    assert "viewer" not in budgets
    # Recent decisions carry their explanation: plan, reasons and the failed attempt.
    fallback = next(r for r in summary["recent"] if r["fallback"])
    assert fallback["plan"] == ["flaky", "coder"] and fallback["deployment"] == "coder"
    assert [a["deployment"] for a in fallback["attempts"]] == ["flaky", "coder"]
    assert fallback["attempts"][0]["status"] == 500
    latency = summary["latency"]["total"]
    assert latency["count"] == 8 and 0 < latency["p50"] <= latency["p90"] <= latency["p99"]


def test_dashboard_needs_the_master_key_or_a_read_only_key(recorded):
    path = "/dashboard/api/summary"
    assert call(recorded, path)[0] == 401
    assert call(recorded, path, "pm-not-a-key")[0] == 401
    status, body = call(recorded, path, recorded.keys["web-app"]["key"])
    assert status == 403 and body["error"]["code"] == "dashboard_scope_required"
    assert call(recorded, path, recorded.viewer["key"])[0] == 200
    # A read-only key reads the dashboard and nothing else: no chat, no key administration.
    with pytest.raises(openai.PermissionDeniedError, match="read-only"):
        recorded.client(api_key=recorded.viewer["key"]).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}]
        )
    status, body = call(recorded, "/admin/keys", recorded.viewer["key"])
    assert status == 403 and body["error"]["code"] == "master_key_required"


def test_read_only_key_from_the_cli_opens_the_dashboard(recorded, capsys):
    assert main(["keys", "create", "auditor", "--read-only", "--db", str(recorded.db), "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["scopes"] == ["dashboard"]
    status, summary = call(recorded, "/dashboard/api/summary?since=1h", created["key"])
    assert status == 200 and summary["totals"]["requests"] == 9
    assert main(["keys", "list", "--db", str(recorded.db)]) == 0
    assert "auditor" in (listed := capsys.readouterr().out) and "read-only" in listed


def test_dashboard_in_headless_chromium_shows_the_recorded_traffic(recorded):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium (.ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    expected = expected_from_records(recorded.records())
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.goto(f"{recorded.url}/dashboard")
            # A wrong key is refused with the server's message.
            page.fill("#key", recorded.keys["web-app"]["key"])
            page.click("#login-form button")
            page.wait_for_function("document.getElementById('login-error').textContent.length > 0")
            assert "may not read the dashboard" in page.inner_text("#login-error")
            assert page.is_hidden("#main")
            problems.clear()  # the refused fetch logs its 403, as browsers do

            page.fill("#key", recorded.viewer["key"])
            page.click("#login-form button")
            page.wait_for_selector("body[data-state=ready]")
            assert page.inner_text("#kpi-requests .value") == str(expected["requests"])
            assert page.inner_text("#kpi-cost .value") == money(expected["cost"])
            saving = expected["baseline"] - expected["cost"]
            assert page.inner_text("#kpi-saving .value") == money(saving)
            assert "always premium" in page.inner_text("#kpi-saving .sub")
            assert page.inner_text("#kpi-errors .value") == pct(1 / 9)
            assert page.inner_text("#kpi-fallbacks .value") == pct(1 / 8)
            for name, count in expected["per_deployment"].items():
                row = f"#deployments tr[data-deployment='{name}']"
                assert page.inner_text(f"{row} td.requests") == str(count)
                assert page.inner_text(f"{row} td.share") == pct(count / expected["answered"])
            assert page.inner_text("#deployments tr[data-deployment='flaky'] td.failed") == "2"
            assert page.inner_text("#tiers tr[data-tier='ordered:order'] td.requests") == "2"
            assert page.inner_text("#errors tr[data-fact='errors-by-status'] td.value") == "503 × 1"
            web_budget = page.inner_text(
                f"#budgets tr[data-budget='{recorded.keys['web-app']['id']}'] td.limit"
            )
            assert web_budget == "$0.50 / day"
            assert page.inner_text("#fair-language tr[data-group='fr'] td.requests") == "3"
            assert page.inner_text("#fair-key tr[data-group='data-app'] td.requests") == "4"
            assert page.locator("#recent tbody tr").count() == expected["requests"]
            assert page.locator("#recent .tag", has_text="fallback").count() == 1
            # Every chart drew on its canvas.
            for canvas in ("traffic", "cost", "deployments", "tiers"):
                assert page.evaluate(f"Chart.getChart('chart-{canvas}').data.datasets.length") >= 1
            doughnut = page.evaluate(
                "(c => Object.fromEntries(c.data.labels.map((l, i) => [l, c.data.datasets[0].data[i]])))"
                "(Chart.getChart('chart-deployments'))"
            )
            assert doughnut == expected["per_deployment"]
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            assert problems == []
        finally:
            browser.close()


def test_report_prints_the_same_summary_and_draws_a_png(recorded, upstream, tmp_path, capsys):
    records = recorded.records()
    expected = expected_from_records(records)
    config_file = tmp_path / "pointsman.yaml"
    config_file.write_text(yaml.safe_dump(config(upstream), sort_keys=False))
    assert (
        main(["report", "--since", "1h", "--db", str(recorded.db), "--config", str(config_file), "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["totals"]["requests"] == expected["requests"]
    assert summary["totals"]["cost"] == pytest.approx(expected["cost"])
    assert summary["totals"]["baseline_cost"] == pytest.approx(expected["baseline"])
    assert {d["name"]: d["requests"] for d in summary["deployments"] if d["requests"]} == expected[
        "per_deployment"
    ]
    budgets = {b["name"]: b for b in summary["budgets"]}
    assert budgets["data-app"]["spent"] == pytest.approx(
        sum(r["cost"] for r in records if r["key_id"] == recorded.keys["data-app"]["id"])
    )
    # The terminal tables.
    assert main(["report", "--since", "1h", "--db", str(recorded.db), "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "share per deployment" in out and "routing fairness by language" in out and "web-app" in out
    pytest.importorskip("matplotlib")
    png = ARTIFACTS / "report.png"
    assert main(["report", "--since", "1h", "--db", str(recorded.db), "--config", str(config_file),
                 "--png", str(png)]) == 0  # fmt: skip
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_report_without_a_config_has_no_baseline_but_still_counts(recorded, tmp_path, capsys):
    recorded.records()  # flushed
    assert main(["report", "--db", str(recorded.db), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["totals"]["requests"] == 9 and summary["totals"]["baseline_cost"] is None
    assert main(["report", "--db", str(tmp_path / "missing.db")]) == 1


def test_report_without_matplotlib_says_how_to_get_it(recorded, tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(["report", "--db", str(recorded.db), "--png", str(tmp_path / "x.png")]) == 1
    assert "pip install 'pointsman[report]'" in capsys.readouterr().err


def test_summary_of_an_empty_window_is_zeros_not_errors():
    from pointsman.dashboard.summary import summarise

    summary = summarise([], since=0.0, until=1.0)
    assert summary["totals"]["requests"] == 0 and summary["totals"]["error_rate"] == 0.0
    assert summary["latency"]["total"] == {"p50": None, "p90": None, "p99": None, "count": 0}
    assert summary["series"]["t"] == [] and summary["fairness"]["by_language"] == []


def test_percentiles_interpolate_between_ranks():
    from pointsman.dashboard.summary import percentiles

    assert percentiles([40.0, 10.0, 30.0, 20.0]) == {
        "p50": 25.0,
        "p90": pytest.approx(37.0),
        "p99": pytest.approx(39.7),
    }
    assert percentiles([5.0]) == {"p50": 5.0, "p90": 5.0, "p99": 5.0}
