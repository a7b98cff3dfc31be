"""`pointsman route --explain/--json/--file`: every signal, each policy's verdict, the ranking and
the plan; the same decision lands in the record and, condensed, in the response headers."""

from __future__ import annotations

import json
from importlib import resources

from pointsman.cli import main
from tests.conftest import deployment

SHIPPED = str(resources.files("pointsman").joinpath("data/tiers-default.yaml"))


def test_explain_prints_signals_policies_ranking_and_plan(capsys):
    assert (
        main(["route", "--config", SHIPPED, "--explain", "Prove that the square root of 2 is irrational."])
        == 0
    )
    out = capsys.readouterr().out
    assert "route: tiers:reasoning" in out and "plan:  reasoning-model -> strong-model" in out
    assert "language: en" in out and "math:" in out
    assert "capability: kept small-model: ok" in out
    assert "tiers: score" in out and "-> reasoning" in out


def test_json_output_is_one_document_with_the_same_story(capsys):
    assert main(["route", "--config", SHIPPED, "--json", "--header", "x-pointsman-role=tester", "hi"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["route"] == "tiers:simple" and report["plan"] == ["small-model", "strong-model"]
    assert report["signals"]["role"] == "tester" and report["policies"]


def test_a_file_of_prompts_gives_one_json_line_each(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hi\nProve that there are infinitely many primes.\n", encoding="utf-8")
    assert main(["route", "--config", SHIPPED, "--json", "--file", str(prompts)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["route"] for r in lines] == ["tiers:simple", "tiers:reasoning"]
    assert main(["route", "--config", SHIPPED, "--file", str(prompts)]) == 0
    assert "2 prompts" in capsys.readouterr().out


def test_record_and_headers_tell_the_same_story(upstream, serve):
    config = {
        "deployments": [deployment(upstream, "small"), deployment(upstream, "deep")],
        "models": {
            "auto": {
                "strategy": "tiers",
                "options": {
                    "tiers": {
                        "simple": {"deployments": ["small"]},
                        "standard": {"deployments": ["small"]},
                        "complex": {"deployments": ["deep"]},
                        "reasoning": {"deployments": ["deep"]},
                    }
                },
            }
        },
    }
    server = serve(config)
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Prove that sqrt 2 is irrational."}]
    )
    assert (
        raw.headers["x-pointsman-route"] == "tiers:reasoning" and raw.headers["x-pointsman-model"] == "deep"
    )
    decision = server.records()[-1]["decision"]
    assert decision["route"] == "tiers:reasoning" and decision["plan"] == ["deep"]
    assert decision["signals"]["reasoning"] > 0 and "estimated_tokens" in decision["signals"]
    assert any(r.startswith("tiers: score") for r in decision["reasons"])


def test_a_decision_as_data_carries_every_field_and_the_attempts_only_when_asked():
    from dataclasses import fields

    from pointsman.decision import Attempt, Decision

    decision = Decision("req_1", "auto", "tiers", "simple", ["a", "b"], ["removed c: region"], {"a": 0.5})
    decision.attempts.append(Attempt("a", status=200))
    decision.answered_by = "a"
    decision.signals = {"language": "en", "tokens": 12}

    full = decision.as_dict()
    assert set(full) == {f.name for f in fields(Decision)} | {"route"}
    assert full["route"] == "tiers:simple" and full["attempts"][0]["deployment"] == "a"
    row = decision.as_dict(attempts=False)
    assert "attempts" not in row and {k: v for k, v in full.items() if k != "attempts"} == row
    # Plain data, not the decision's own lists: changing one leaves the other alone.
    row["plan"].append("z")
    assert decision.plan == ["a", "b"]
