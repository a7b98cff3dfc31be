"""A request's body is analysed once: one `Signals` is made where it enters and shared by
admission (a tpm key's token estimate), routing, dispatch, the Anthropic stream translator and
the record. Counted through real requests to a served pointsman, from the official clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from pointsman.signals import Signals
from tests.conftest import deployment
from tests.test_keys_budgets import MASTER, new_key

HELLO = [{"role": "user", "content": "hello there, how are you today?"}]


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Signals]]:
    """Every `Signals` constructed while the test runs (the real constructor still runs)."""
    instances: list[Signals] = []
    construct = Signals.__init__

    def counted(self: Signals, *args: Any, **kwargs: Any) -> None:
        instances.append(self)
        construct(self, *args, **kwargs)

    monkeypatch.setattr(Signals, "__init__", counted)
    yield instances


def config(upstream: Any) -> dict[str, Any]:
    return {
        "router": {"backoff_base_s": 0.0},
        "deployments": [
            deployment(upstream, "us-gpt", region="us"),
            deployment(upstream, "eu-claude", provider="anthropic", region="eu"),
        ],
        "models": {"auto": {"deployments": ["us-gpt", "eu-claude"]}},
    }


def test_a_chat_request_is_analysed_once(upstream, serve, made):
    server = serve(config(upstream))
    made.clear()
    answer = server.client().chat.completions.create(model="auto", messages=HELLO)
    assert answer.choices[0].message.content and len(made) == 1
    made.clear()
    chunks = list(server.client().chat.completions.create(model="auto", messages=HELLO, stream=True))
    assert chunks and len(made) == 1
    records = server.records()
    assert [r["status"] for r in records] == [200, 200] and all(r["language"] == "en" for r in records)


def test_a_streamed_anthropic_message_is_analysed_once(upstream, serve, made):
    server = serve(config(upstream))
    client = anthropic.Anthropic(base_url=server.url, api_key="sk-ant-test", max_retries=0)
    made.clear()
    with client.messages.stream(model="auto", max_tokens=50, messages=HELLO) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert events[0].type == "message_start" and final.content[0].text
    assert len(made) == 1
    # The translator's input estimate is the one routing used (the capability check reads it).
    routed = server.records()[-1]["decision"]["signals"]
    assert events[0].message.usage.input_tokens == routed["estimated_tokens"] > 0


def test_a_tpm_limited_key_shares_its_estimate_with_routing(upstream, serve, made, monkeypatch):
    monkeypatch.setenv("POINTSMAN_MASTER_KEY", MASTER)
    server = serve(
        {**config(upstream), "policies": {"residency": {"allow": {"eu": ["eu"], "us": ["us", "eu"]}}}}
    )
    # The key's region reaches routing through the same Signals that admission estimated with.
    client = server.client(api_key=new_key(server, name="eu-app", tpm=400, region="eu")["key"])
    long = [{"role": "user", "content": "word " * 300}]
    made.clear()
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=long)
    assert raw.headers["x-pointsman-model"] == "eu-claude" and len(made) == 1
    made.clear()
    with pytest.raises(openai.RateLimitError, match="400 tokens per minute"):
        client.chat.completions.create(model="auto", messages=long)
    assert len(made) == 1
    assert [r["status"] for r in server.records()] == [200, 429]
