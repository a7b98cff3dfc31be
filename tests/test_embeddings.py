"""The inbound embeddings API (`POST /v1/embeddings`), driven by the official `openai` client
through a served pointsman: embeddings virtual models, strategies, fallback, cost records,
budgets, and the wall between chat and embeddings models."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from pointsman.config import ConfigError, load_config
from pointsman.testing import Behaviour
from pointsman.testing.upstream import embedding_of
from tests.conftest import deployment

PRICE = {"input": 0.5, "output": 0.0}


def config(upstream: Any, **extra: Any) -> dict[str, Any]:
    return {
        "router": {"backoff_base_s": 0.0, "cooldown_s": 0.0},
        "deployments": [
            deployment(upstream, "gpt"),
            deployment(upstream, "emb-a", mode="embeddings", price=PRICE),
            deployment(upstream, "emb-b", mode="embeddings", price={"input": 0.02, "output": 0.0}),
        ],
        "models": {
            "auto": {"deployments": ["gpt"]},
            "embed": {"type": "embeddings", "deployments": ["emb-a", "emb-b"]},
            "embed-spread": {
                "type": "embeddings",
                "strategy": "weighted",
                "deployments": ["emb-a", "emb-b"],
                "options": {"weights": {"emb-a": 1, "emb-b": 1}, "seed": 7},
            },
        },
        **extra,
    }


def test_single_and_batch_inputs_get_deterministic_vectors_and_usage(upstream, serve):
    server = serve(config(upstream))
    client = server.client()
    raw = client.embeddings.with_raw_response.create(model="embed", input="hello world")
    single = raw.parse()
    assert raw.headers["x-pointsman-model"] == "emb-a" and raw.headers["x-pointsman-request-id"]
    assert len(single.data) == 1 and single.data[0].embedding == pytest.approx(embedding_of("hello world"))
    assert single.usage.prompt_tokens == 3 and single.usage.total_tokens == 3

    batch = client.embeddings.create(model="embed", input=["hello world", "second text", "third"])
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert batch.data[0].embedding == pytest.approx(single.data[0].embedding)
    assert batch.data[1].embedding != batch.data[0].embedding
    floats = client.embeddings.create(
        model="embed", input=["a b", "c"], encoding_format="float", dimensions=4
    )
    assert [len(d.embedding) for d in floats.data] == [4, 4]
    sent = upstream.requests("emb-a")[-1]
    assert sent.path == "/emb-a/v1/embeddings" and sent.body["model"] == "model-emb-a"
    assert sent.body["dimensions"] == 4


def test_cost_is_recorded_per_prompt_token(upstream, serve):
    server = serve(config(upstream))
    answer = server.client().embeddings.create(model="embed", input=["x" * 400, "y" * 40])
    tokens = answer.usage.prompt_tokens
    assert tokens == 110
    record = server.records()[-1]
    assert (
        record["requested_model"] == "embed" and record["deployment"] == "emb-a" and record["status"] == 200
    )
    assert record["prompt_tokens"] == tokens and record["completion_tokens"] == 0
    assert record["cost"] == pytest.approx(tokens * PRICE["input"] / 1e6)


def test_falls_back_to_the_next_embeddings_deployment(upstream, serve):
    server = serve(config(upstream))
    upstream.set("emb-a", Behaviour(status=500))
    raw = server.client().embeddings.with_raw_response.create(model="embed", input=["a", "b"])
    assert raw.headers["x-pointsman-model"] == "emb-b" and len(raw.parse().data) == 2
    record = server.records()[-1]
    assert [(a["deployment"], a["status"]) for a in record["attempts"]] == [("emb-a", 500), ("emb-b", 200)]
    assert record["cost"] == pytest.approx(2 * 0.02 / 1e6)

    upstream.set("emb-b", Behaviour(status=503))
    with pytest.raises(openai.APIStatusError) as caught:
        server.client().embeddings.create(model="embed", input="a")
    assert caught.value.status_code == 503 and "all deployments failed" in caught.value.message


def test_weighted_strategy_spreads_embeddings_over_deployments(upstream, serve):
    server = serve(config(upstream))
    client = server.client()
    answered = {
        client.embeddings.with_raw_response.create(model="embed-spread", input="x").headers[
            "x-pointsman-model"
        ]
        for _ in range(12)
    }
    assert answered == {"emb-a", "emb-b"}


def test_chat_and_embeddings_models_do_not_mix(upstream, serve):
    server = serve(config(upstream))
    client = server.client()
    with pytest.raises(openai.BadRequestError, match="'auto' is a chat model and cannot serve embeddings"):
        client.embeddings.create(model="auto", input="hi")
    with pytest.raises(openai.BadRequestError, match="'embed' is an embeddings model and cannot serve chat"):
        client.chat.completions.create(model="embed", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="'emb-a' is an embeddings model"):
        client.responses.create(model="emb-a", input="hi")
    assert upstream.calls("gpt") == 0 and upstream.calls("emb-a") == 0
    assert [r["status"] for r in server.records()] == [400, 400, 400]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "embed"}, "input"),
        ({"model": "embed", "input": ""}, "input"),
        ({"model": "embed", "input": []}, "input"),
        ({"model": "embed", "input": [1.5]}, "input[0]"),
        ({"model": "embed", "input": "hi", "dimensions": 0}, "dimensions"),
        ({"model": "embed", "input": "hi", "dimensions": "4"}, "dimensions"),
        ({"model": "embed", "input": "hi", "stream": True}, "stream"),
        ({"model": "embed", "input": "hi", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_bad_bodies_get_a_400_naming_the_field(upstream, serve, body, param):
    server = serve(config(upstream))
    request = urllib.request.Request(
        server.url + "/v1/embeddings",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    answer = json.loads(caught.value.read())
    assert caught.value.code == 400 and answer["error"]["param"] == param
    assert answer["error"]["message"].startswith(param)
    record = server.records()[-1]
    assert record["status"] == 400 and record["request_id"] == caught.value.headers["x-pointsman-request-id"]
    assert upstream.calls("emb-a") == 0


def test_budgets_hold_for_embeddings(upstream, serve):
    server = serve(config(upstream, budgets={"global": {"amount": 0.00001, "period": "day"}}))
    client = server.client()
    # 4,000 characters: about 1,000 tokens, $0.0005 at emb-a's price, over the $0.00001 budget.
    with pytest.raises(openai.RateLimitError, match="budget exhausted"):
        client.embeddings.create(model="embed", input="word " * 800)
    assert upstream.calls("emb-a") == 0
    assert client.embeddings.create(model="embed", input="tiny").data


def test_config_check_keeps_embeddings_and_chat_apart(upstream):
    base = config(upstream)
    bad = {
        **base,
        "deployments": [
            *base["deployments"],
            deployment(upstream, "claude-emb", provider="anthropic", mode="embeddings"),
        ],
        "models": {
            "auto": {"deployments": ["gpt", "emb-a"]},
            "embed": {"type": "embeddings", "strategy": "rules", "deployments": ["emb-a", "gpt"]},
        },
    }
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    problems = "\n".join(caught.value.problems)
    assert "deployments[3].mode: provider 'anthropic' has no embeddings API" in problems
    assert (
        "models.auto.deployments[1]: deployment 'emb-a' has mode 'embeddings' "
        "but model 'auto' has type 'chat'"
    ) in problems
    assert "models.embed.strategy: 'rules' cannot route embeddings" in problems
    assert (
        "models.embed.deployments[1]: deployment 'gpt' has mode 'chat' but model 'embed' has type" in problems
    )


def test_models_list_says_which_models_serve_embeddings(upstream, serve):
    server = serve(config(upstream))
    listed = {m.id: m.model_extra["pointsman"] for m in server.client().models.list().data}
    assert listed["embed"]["type"] == "embeddings" and listed["auto"]["type"] == "chat"
    assert listed["emb-a"]["mode"] == "embeddings" and listed["gpt"]["mode"] == "chat"


def test_fake_embeddings_endpoint_parses_with_the_official_client(upstream):
    client = openai.OpenAI(base_url=f"{upstream.url}/emb/v1", api_key="sk-test", max_retries=0)
    # The client asks for base64 by default and decodes it; floats come back as they are.
    packed = client.embeddings.create(model="m", input=["one", "two"])
    plain = client.embeddings.create(model="m", input=["one", "two"], encoding_format="float")
    for decoded, floats in zip(packed.data, plain.data, strict=True):
        assert decoded.embedding == pytest.approx(floats.embedding, abs=1e-6)
    assert packed.data[0].embedding == pytest.approx(embedding_of("one"), abs=1e-6)
    assert packed.usage.prompt_tokens == 2 and packed.model == "m"
    upstream.set("emb", Behaviour(status=429, retry_after=3))
    with pytest.raises(openai.RateLimitError) as caught:
        client.embeddings.create(model="m", input="x")
    assert caught.value.response.headers["retry-after"] == "3"


def test_balance_by_cost_sends_embeddings_to_the_cheapest(upstream, serve):
    cfg = config(upstream)
    cfg["models"]["embed"] = {
        "type": "embeddings",
        "strategy": "balance",
        "deployments": ["emb-a", "emb-b"],
        "options": {"method": "cost"},
    }
    server = serve(cfg)
    raw = server.client().embeddings.with_raw_response.create(model="embed", input="x")
    assert raw.headers["x-pointsman-model"] == "emb-b" and raw.headers["x-pointsman-route"].startswith(
        "balance"
    )


def test_virtual_keys_hold_for_embeddings(upstream, serve, monkeypatch):
    monkeypatch.setenv("POINTSMAN_MASTER_KEY", "mk-test")
    server = serve(config(upstream))
    request = urllib.request.Request(
        server.url + "/admin/keys",
        data=json.dumps({"name": "indexer", "models": ["embed"]}).encode(),
        method="POST",
        headers={"content-type": "application/json", "authorization": "Bearer mk-test"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        key = json.loads(response.read())["key"]
    client = server.client(api_key=key)
    assert client.embeddings.create(model="embed", input="x").data
    with pytest.raises(openai.PermissionDeniedError, match="may not use model 'embed-spread'"):
        client.embeddings.create(model="embed-spread", input="x")
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="sk-unknown").embeddings.create(model="embed", input="x")
    record = server.records()[-3]
    assert record["key_id"] is not None and record["status"] == 200 and record["cost"] > 0


def test_pii_rules_hold_for_embeddings_inputs(upstream, serve):
    masking = serve(config(upstream, policies={"pii": {"rules": [{"kinds": ["email"], "action": "mask"}]}}))
    masking.client().embeddings.create(model="embed", input=["mail jane.doe@example.com", "nothing here"])
    sent = upstream.requests("emb-a")[-1].body["input"]
    assert sent == ["mail [EMAIL_1]", "nothing here"]
    masking.client().embeddings.create(model="embed", input="call jane.doe@example.com")
    assert upstream.requests("emb-a")[-1].body["input"] == "call [EMAIL_1]"

    refusing = serve(
        config(upstream, policies={"pii": {"rules": [{"kinds": ["email"], "action": "refuse"}]}})
    )
    with pytest.raises(openai.BadRequestError, match="email"):
        refusing.client().embeddings.create(model="embed", input=["ok", "jane.doe@example.com"])
    assert upstream.calls("emb-a") == 2
