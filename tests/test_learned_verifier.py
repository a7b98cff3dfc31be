"""The learned verifier: trained on answers and their correctness, it escalates answers that
look wrong; served as the cascade judge `verifier` through the real server (non-streaming and
streaming), with its score in the record; trained from rated logs by `train-verifier`."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from pointsman.cli import main as cli_main
from pointsman.config import ConfigError, parse_config
from pointsman.learning.verifier import (
    VerifierArtifact,
    VerifierError,
    VerifierExample,
    VerifierTarget,
    load_verifier,
    train_verifier,
)
from pointsman.testing import Behaviour
from tests.conftest import deployment

QUESTION = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast and bakes muffins with four. "
    "She sells the rest for $2 each. How much does she make every day?"
)
GOOD = "She has 16 - 3 - 4 = 9 eggs left.\nShe makes 9 * 2 = $18 a day.\n#### 18"
WRONG_LOOKING = "I think the answer might be around 7.5, but I'm not sure."
STRONG = "16 - 3 - 4 = 9 eggs are sold, for 9 * 2 = 18 dollars.\n#### 18"


def synthetic(n: int, seed: int) -> list[VerifierExample]:
    """Sums and products with worked answers: right ones state the correct result; wrong ones
    slip in arithmetic, hedge, or never state a final answer (each wrong kind varies)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b, c = rng.randint(2, 40), rng.randint(2, 40), rng.randint(2, 9)
        prompt = f"A shop has {a} boxes and gets {b} more. Each box holds {c} pens. How many pens are there?"
        total = (a + b) * c
        kind = rng.random()
        if kind < 0.5:
            answer = f"There are {a} + {b} = {a + b} boxes.\nSo {a + b} * {c} = {total} pens.\n#### {total}"
            right = 1.0
        elif kind < 0.7:
            off = total + rng.randint(1, 9)
            answer = f"There are {a} + {b} = {a + b} boxes.\nSo {a + b} * {c} = {off} pens.\n#### {off}"
            right = 0.0
        elif kind < 0.85:
            answer = f"Assuming some boxes are empty, roughly {total // 2} pens, approximately."
            right = 0.0
        else:
            answer = f"The boxes are {a} and {b}, and each holds {c}, so it depends on the shop."
            right = 0.0
        out.append(VerifierExample(prompt, answer, right, strong_right=1.0))
    return out


@pytest.fixture(scope="module")
def small_verifier() -> VerifierArtifact:
    artifact, _ = train_verifier(synthetic(160, seed=1), folds=3, seed=0)
    return artifact


def test_verifier_trained_on_synthetic_answers_escalates_wrong_answers_more_than_right_ones(
    small_verifier: VerifierArtifact,
) -> None:
    fresh = synthetic(200, seed=2)
    scores = small_verifier.score_batch(fresh)
    escalated = scores < small_verifier.threshold
    wrong = [e.right == 0 for e in fresh]
    wrong_escalated = sum(1 for s, w in zip(escalated, wrong, strict=True) if s and w) / sum(wrong)
    right_escalated = sum(1 for s, w in zip(escalated, wrong, strict=True) if s and not w) / (
        len(wrong) - sum(wrong)
    )
    assert wrong_escalated > 0.5
    assert wrong_escalated > right_escalated + 0.4


def test_verifier_survives_a_save_and_load_with_identical_scores(small_verifier, tmp_path):
    folder = small_verifier.save(tmp_path / "v")
    loaded = VerifierArtifact.load(folder)
    fresh = synthetic(20, seed=3)
    assert loaded.threshold == small_verifier.threshold
    assert list(loaded.score_batch(fresh)) == pytest.approx(list(small_verifier.score_batch(fresh)), abs=1e-9)


def test_escalation_targets_map_to_thresholds_on_out_of_fold_scores(small_verifier):
    table = small_verifier.calibration
    for share in (0.1, 0.3, 0.5):
        threshold = small_verifier.threshold_for(VerifierTarget(escalation_share=share))
        assert (table["scores"] < threshold).mean() == pytest.approx(share, abs=0.02)
    with pytest.raises(VerifierError, match="cost ratio"):
        small_verifier.threshold_for(VerifierTarget(cost_share=0.3))


def test_shipped_gsm8k_verifier_keeps_a_worked_answer_and_rejects_a_guess():
    verifier = load_verifier("gsm8k")
    assert verifier.score(QUESTION, GOOD) >= verifier.threshold
    assert verifier.score(QUESTION, WRONG_LOOKING) < verifier.threshold
    # Its out-of-fold table gives the cheap call's cost share, so a cost target resolves.
    assert 0 < verifier.calibration["cost_ratio"] < 0.1
    assert verifier.threshold_for(VerifierTarget(cost_share=0.25)) < verifier.threshold


# -- served through the cascade ----------------------------------------------------------------


def verifier_config(upstream: Any, **verifier: Any) -> dict[str, Any]:
    return {
        "router": {"backoff_base_s": 0.0},
        "store": {"store_content": True},
        "deployments": [
            deployment(upstream, "cheap", price={"input": 0.1, "output": 0.2}),
            deployment(upstream, "strong", price={"input": 5.0, "output": 15.0}),
        ],
        "models": {
            "auto": {
                "deployments": ["cheap", "strong"],
                "cascade": {"judges": ["verifier"], "verifier": {"artifact": "gsm8k", **verifier}},
            }
        },
    }


def ask(server: Any, stream: bool, question: str = QUESTION) -> tuple[str, str]:
    """(the deployment that answered, the answer text) as the openai client sees them."""
    messages = [{"role": "user", "content": question}]
    client = server.client()
    if not stream:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages)
        return raw.headers["x-pointsman-model"], raw.parse().choices[0].message.content or ""
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    text, usage = "", None
    for chunk in raw.parse():
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    assert usage is not None and usage.completion_tokens > 0
    return raw.headers["x-pointsman-model"], text


@pytest.mark.parametrize("stream", [False, True], ids=["non-streaming", "streaming"])
def test_wrong_looking_cheap_answer_escalates_to_the_strong_deployment(upstream, serve, stream):
    server = serve(verifier_config(upstream))
    upstream.set("cheap", Behaviour(reply=WRONG_LOOKING))
    upstream.set("strong", Behaviour(reply=STRONG))
    answered, text = ask(server, stream)
    assert (answered, text) == ("strong", STRONG)
    assert upstream.calls("cheap") == 1 and upstream.calls("strong") == 1
    # Trained on answers without logprobs, it does not ask upstreams for them.
    assert "logprobs" not in upstream.requests("cheap")[0].body
    record = server.records()[-1]
    assert record["stream"] == int(stream) and record["deployment"] == "strong"
    assert record["attempts"][0]["verdict"] == "verifier:likely_wrong"
    score = record["decision"]["scores"]["verifier:cheap"]
    assert 0 <= score < load_verifier("gsm8k").threshold
    assert any("verifier judge said likely_wrong (score" in r for r in record["decision"]["reasons"])
    assert record["cost"] == pytest.approx(sum(a["cost"] for a in record["attempts"]))
    assert record["answer"] == STRONG


@pytest.mark.parametrize("stream", [False, True], ids=["non-streaming", "streaming"])
def test_good_cheap_answer_is_returned_without_escalating(upstream, serve, stream):
    server = serve(verifier_config(upstream))
    upstream.set("cheap", Behaviour(reply=GOOD))
    answered, text = ask(server, stream)
    assert (answered, text) == ("cheap", GOOD)
    assert upstream.calls("strong") == 0
    record = server.records()[-1]
    assert record["attempts"][0]["verdict"] == "verifier:likely_right"
    assert record["decision"]["scores"]["verifier:cheap"] >= load_verifier("gsm8k").threshold


def test_client_that_asked_for_logprobs_still_gets_them_from_a_judged_stream(upstream, serve):
    server = serve(verifier_config(upstream))
    upstream.set("cheap", Behaviour(reply=GOOD))
    chunks = list(
        server.client().chat.completions.create(
            model="auto", messages=[{"role": "user", "content": QUESTION}], stream=True, logprobs=True
        )
    )
    assert chunks[0].choices[0].logprobs is not None and chunks[0].choices[0].logprobs.content


def test_threshold_from_config_decides_escalation(upstream, serve):
    server = serve(verifier_config(upstream, threshold=0.999))
    upstream.set("cheap", Behaviour(reply=GOOD))
    assert ask(server, False)[0] == "strong"


@pytest.mark.parametrize(
    ("verifier", "message"),
    [
        (
            {"artifact": "no-such-verifier"},
            "models.auto.cascade.verifier: no-such-verifier: not a verifier folder",
        ),
        ({"threshold": 0.5, "escalation_share": 0.2}, "give at most one of"),
        ({"threshold": 2}, "models.auto.cascade.verifier.threshold"),
    ],
)
def test_bad_verifier_settings_are_config_errors_naming_the_key(upstream, verifier, message):
    config = verifier_config(upstream)
    config["models"]["auto"]["cascade"]["verifier"] = verifier
    with pytest.raises(ConfigError) as caught:
        parse_config(config)
    assert message in str(caught.value)


# -- trained from logs ---------------------------------------------------------------------------


def test_train_verifier_from_rated_logs_then_serve_it(upstream, serve, tmp_path, capsys):
    config = verifier_config(upstream)
    config["models"]["plain"] = {"deployments": ["cheap"]}
    server = serve(config)
    rng = random.Random(0)
    for i in range(24):
        good = i % 2 == 0
        a, b = rng.randint(2, 50), rng.randint(2, 50)
        reply = f"{a} + {b} = {a + b}.\n#### {a + b}" if good else f"Maybe about {a}, I'm not sure."
        upstream.set("cheap", Behaviour(reply=reply))
        raw = server.client().chat.completions.with_raw_response.create(
            model="plain", messages=[{"role": "user", "content": f"What is {a} plus {b}?"}]
        )
        rated = httpx.post(
            f"{server.url}/v1/feedback",
            json={"request_id": raw.headers["x-pointsman-request-id"], "thumbs": "up" if good else "down"},
        )
        assert rated.status_code == 200
    out = tmp_path / "from-logs"
    code = cli_main(
        [
            "train-verifier",
            "--from-logs",
            "--db",
            str(server.db),
            "--deployments",
            "cheap",
            "--folds",
            "2",
            "--escalation-share",
            "0.5",
            "--out",
            str(out),
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["examples"] == 24
    assert report["selection_metric"].startswith("AUC")  # no strong outcomes in logs
    assert report["target"] == {"escalation_share": 0.5}
    # Logs hold no strong-model outcome per prompt: a quality target cannot be met, and says so.
    with pytest.raises(ConfigError, match="needs the strong model's outcomes"):
        parse_config(verifier_config(upstream, artifact=str(out), quality=0.9))
    # Served: a fresh wrong-looking answer escalates, a worked one is kept.
    served = serve(verifier_config(upstream, artifact=str(out)))
    upstream.set("cheap", Behaviour(reply="Maybe about 12, I'm not sure."))
    assert ask(served, False)[0] == "strong"
    upstream.set("cheap", Behaviour(reply="30 + 12 = 42.\n#### 42"))
    assert ask(served, False)[0] == "cheap"


def test_train_verifier_from_logs_without_stored_answers_says_what_to_change(
    upstream, serve, tmp_path, capsys
):
    config = verifier_config(upstream)
    config["store"] = {"store_content": False}
    server = serve(config)
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": QUESTION}]
    )
    httpx.post(
        f"{server.url}/v1/feedback", json={"request_id": raw.headers["x-pointsman-request-id"], "score": 1}
    )
    code = cli_main(
        ["train-verifier", "--from-logs", "--db", str(server.db), "--out", str(tmp_path / "x"), "--json"]
    )
    assert code == 1
    assert "store_content: true" in json.loads(capsys.readouterr().out)["error"]


def test_train_verifier_on_a_jsonl_file_holds_out_the_test_split(tmp_path, capsys):
    rows = synthetic(120, seed=4)
    data = tmp_path / "answers.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": e.prompt, "answer": e.answer, "right": e.right}) + "\n" for e in rows)
    )
    code = cli_main(["train-verifier", str(data), "--folds", "3", "--out", str(tmp_path / "v"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["examples"] < 120 and "held out" in report["split"]
    assert Path(report["artifact"], "verifier.json").exists()


# -- a second cheap opinion ----------------------------------------------------------------------


def with_second_opinions(n: int, seed: int) -> list[VerifierExample]:
    """Answers that look alike whether right or not; a second cheap answer is right 90% of the
    time, so agreeing with it is the only sign of a right answer."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(10, 90), rng.randint(10, 90)
        truth = a + b
        stated = truth if rng.random() < 0.6 else truth + rng.choice([-2, -1, 1, 2])
        second = truth if rng.random() < 0.9 else truth + 3
        out.append(
            VerifierExample(
                f"Add {a} and {b}.",
                f"Adding them gives {stated}.\n#### {stated}",
                float(stated == truth),
                strong_right=1.0,
                second=f"The sum is {second}.\n#### {second}",
            )
        )
    return out


def test_second_cheap_opinion_that_disagrees_escalates(upstream, serve, tmp_path):
    artifact, report = train_verifier(with_second_opinions(200, seed=5), folds=3, seed=0)
    assert artifact.second_opinion and report["selection"][0]["auc"] > 0.8
    folder = artifact.save(tmp_path / "second")
    # Disagreements are ~46% of the training answers: a budget that escalates them all.
    config = verifier_config(upstream, artifact=str(folder), second_opinion="second", escalation_share=0.5)
    config["deployments"].append(deployment(upstream, "second", price={"input": 0.1, "output": 0.2}))
    server = serve(config)
    upstream.set("cheap", Behaviour(reply="Adding them gives 42.\n#### 42"))
    upstream.set("second", Behaviour(reply="The sum is 42.\n#### 42"))
    assert ask(server, False, "Add 30 and 12.")[0] == "cheap"
    upstream.set("second", Behaviour(reply="The sum is 45.\n#### 45"))
    assert ask(server, True, "Add 30 and 12.")[0] == "strong"
    record = server.records()[-1]
    judge = [a for a in record["attempts"] if a["role"] == "judge"]
    assert [a["deployment"] for a in judge] == ["second"] and judge[0]["cost"] > 0
    assert record["cost"] == pytest.approx(sum(a["cost"] for a in record["attempts"]))
    # The second deployment got the client's request, not a streaming one.
    assert "stream" not in upstream.requests("second")[-1].body


def test_second_opinion_needs_a_verifier_trained_with_one(upstream):
    config = verifier_config(upstream, second_opinion="cheap")
    with pytest.raises(ConfigError, match="trained without second answers"):
        parse_config(config)
    config = verifier_config(upstream, second_opinion="nowhere")
    with pytest.raises(ConfigError, match="second_opinion: unknown deployment 'nowhere'"):
        parse_config(config)


def test_verifier_trained_with_logprobs_asks_the_cheap_upstream_for_them(upstream, serve, tmp_path):
    examples = synthetic(120, seed=6)
    for e in examples:
        # Right answers come with confident tokens, wrong ones with unsure ones.
        e.logprobs = [-0.05] * 10 if e.right else [-2.5] * 10
    artifact, _ = train_verifier(examples, folds=3, seed=0)
    assert artifact.uses_logprobs
    # Half the training answers are wrong: a budget that escalates every one that looks it.
    folder = artifact.save(tmp_path / "lp")
    server = serve(verifier_config(upstream, artifact=str(folder), escalation_share=0.5))
    question = "A shop has 12 boxes and gets 30 more. Each box holds 3 pens. How many pens are there?"
    upstream.set("cheap", Behaviour(reply="There are 12 + 30 = 42 boxes.\nSo 42 * 3 = 126 pens.\n#### 126"))
    assert ask(server, False, question)[0] == "cheap"
    assert upstream.requests("cheap")[-1].body["logprobs"] is True
    upstream.set(
        "cheap",
        Behaviour(reply="There are 12 + 30 = 42 boxes.\nSo 42 * 3 = 126 pens.\n#### 126", logprob=-2.5),
    )
    answered, _ = ask(server, False, question)
    assert answered == "strong"
    # The client did not ask for logprobs, so the answer it got carries none.
    record = server.records()[-1]
    assert record["attempts"][0]["verdict"] == "verifier:likely_wrong"


def test_anthropic_streaming_client_gets_the_strong_answer_after_escalation(upstream, serve):
    server = serve(verifier_config(upstream))
    upstream.set("cheap", Behaviour(reply=WRONG_LOOKING))
    upstream.set("strong", Behaviour(reply=STRONG))
    client = anthropic.Anthropic(base_url=server.url, api_key="sk-ant-test", max_retries=0)
    messages = [{"role": "user", "content": QUESTION}]
    with client.messages.stream(model="auto", max_tokens=200, messages=messages) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert final.content[0].text == STRONG and final.usage.output_tokens > 0
    assert server.records()[-1]["attempts"][0]["verdict"] == "verifier:likely_wrong"


def test_latency_benchmark_reports_percentiles(tmp_path):
    out = tmp_path / "latency.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.verifier_latency",
            "--iterations",
            "20",
            "--warmup",
            "2",
            "--out",
            str(out),
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())["results"][0]
    assert result["iterations"] == 20 and 0 < result["judge"]["p50_ms"] <= result["judge"]["p99_ms"]
    assert 0 < result["judge_cpu"]["p50_ms"]
    assert "target p50 <= 3 ms" in done.stdout


def test_train_verifier_names_missing_columns_of_a_csv(tmp_path, capsys):
    data = tmp_path / "other.csv"
    data.write_text("prompt,model-a\nWhat is 2+2?,True\n")
    code = cli_main(["train-verifier", str(data), "--out", str(tmp_path / "v"), "--json"])
    assert code == 1
    assert "missing column(s)" in json.loads(capsys.readouterr().out)["error"]


@pytest.mark.parametrize(
    "reply",
    [
        "9" * 20_000,  # a number too long for a float
        "1+" * 20_000,  # a long run of arithmetic that never states a result
        "<<" + "1" * 5_000 + "=1>>",  # more digits than Python will parse
        ("= " + " " * 4_000) * 5,
    ],
    ids=["huge-number", "endless-sum", "too-many-digits", "blank-results"],
)
def test_hostile_cheap_answers_are_judged_not_crashed_on(upstream, serve, reply):
    server = serve(verifier_config(upstream))
    config_rules = verifier_config(upstream)
    config_rules["models"]["auto"]["cascade"] = {"judges": ["rules", "verifier"], "check_arithmetic": True}
    rules_server = serve(config_rules)
    upstream.set("cheap", Behaviour(reply=reply))
    for each in (server, rules_server):
        assert ask(each, False)[0] == "strong"
        assert each.records()[-1]["status"] == 200
