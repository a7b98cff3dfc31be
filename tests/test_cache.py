"""The response cache through a real server on loopback, with the official openai client:
repeated requests are answered from the cache at no cost, anything that could change the
answer (a parameter, the tenant) misses, streams replay as valid streams, clients can bypass or
refresh it, entries expire, and replicas share it through Redis."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
import uuid
from typing import Any

import anthropic
import pytest

from pointsman.cache import StreamAssembler, completion_events
from pointsman.cli import main
from pointsman.dashboard.summary import summarise
from pointsman.report import money
from pointsman.testing import Behaviour
from tests.conftest import deployment

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def cache_config(upstream: Any, **cache: Any) -> dict[str, Any]:
    return {
        "deployments": [deployment(upstream, "small")],
        "models": {"auto": {"deployments": ["small"], "cache": cache}, "plain": {"deployments": ["small"]}},
    }


def ask(client: Any, **params: Any) -> tuple[str, dict[str, str], Any]:
    """The answer text, the response headers and the raw response of one chat request."""
    params.setdefault("model", "auto")
    params.setdefault("messages", QUESTION)
    params.setdefault("temperature", 0)
    raw = client.chat.completions.with_raw_response.create(**params)
    completion = raw.parse()
    return completion.choices[0].message.content, dict(raw.headers), completion


def redis_available() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
        return True
    except OSError:
        return False


def test_repeated_request_is_answered_from_cache_at_no_cost(upstream, serve):
    server = serve(cache_config(upstream))
    client = server.client()
    first, first_headers, _ = ask(client)
    second, second_headers, _ = ask(client)
    assert upstream.calls("small") == 1
    assert first_headers["x-pointsman-cache"] == "miss"
    assert second_headers["x-pointsman-cache"] == "hit"
    assert second == first
    miss, hit = server.records()
    assert miss["cache"] == "miss" and miss["cost"] > 0
    assert hit["cache"] == "hit" and hit["cost"] == 0
    assert hit["saved_cost"] == pytest.approx(miss["cost"])
    assert hit["status"] == 200 and hit["deployment"] is None


def test_changed_parameter_or_message_is_a_miss(upstream, serve):
    server = serve(cache_config(upstream))
    client = server.client()
    ask(client)
    assert ask(client, max_tokens=50)[1]["x-pointsman-cache"] == "miss"
    assert (
        ask(client, messages=[{"role": "user", "content": "What is the capital of Spain?"}])[1][
            "x-pointsman-cache"
        ]
        == "miss"
    )
    assert upstream.calls("small") == 3
    # What does not change the answer is not part of the key.
    assert ask(client, user="someone-else")[1]["x-pointsman-cache"] == "hit"


def test_identical_request_of_another_tenant_is_a_miss(upstream, serve):
    server = serve(cache_config(upstream))
    ask(server.client(api_key="sk-tenant-a"))
    _, headers, _ = ask(server.client(api_key="sk-tenant-b"))
    assert headers["x-pointsman-cache"] == "miss"
    assert upstream.calls("small") == 2
    assert ask(server.client(api_key="sk-tenant-a"))[1]["x-pointsman-cache"] == "hit"


def test_shared_scope_answers_every_tenant(upstream, serve):
    server = serve(cache_config(upstream, scope="shared"))
    ask(server.client(api_key="sk-tenant-a"))
    assert ask(server.client(api_key="sk-tenant-b"))[1]["x-pointsman-cache"] == "hit"
    assert upstream.calls("small") == 1


def test_streamed_hit_arrives_as_a_valid_stream(upstream, serve):
    server = serve(cache_config(upstream))
    client = server.client()
    streamed_miss = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="auto", messages=QUESTION, temperature=0, stream=True
        )
        if chunk.choices
    )
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=QUESTION, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-pointsman-cache"] == "hit"
    chunks = list(raw.parse())
    assert upstream.calls("small") == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == streamed_miss
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    # The streamed miss was stored whole: a plain request gets the same answer from the cache.
    text, headers, _ = ask(client)
    assert headers["x-pointsman-cache"] == "hit" and text == streamed_miss


def test_bypass_and_refresh_headers(upstream, serve):
    server = serve(cache_config(upstream))
    client = server.client()
    assert ask(client, extra_headers={"cache-control": "no-store"})[1]["x-pointsman-cache"] == "bypass"
    # no-store stored nothing: the next plain request still misses.
    assert ask(client)[1]["x-pointsman-cache"] == "miss"
    assert ask(client)[1]["x-pointsman-cache"] == "hit"
    assert ask(client, extra_headers={"x-pointsman-cache": "bypass"})[1]["x-pointsman-cache"] == "bypass"
    assert upstream.calls("small") == 3
    # Refresh skips the lookup and replaces the entry with the new answer.
    upstream.set("small", Behaviour(reply="a fresher answer"))
    text, headers, _ = ask(client, extra_headers={"cache-control": "no-cache"})
    assert headers["x-pointsman-cache"] == "bypass" and text == "a fresher answer"
    assert ask(client)[0] == "a fresher answer"
    assert upstream.calls("small") == 4
    assert [r["cache"] for r in server.records()] == ["bypass", "miss", "hit", "bypass", "refresh", "hit"]


def test_unknown_cache_header_value_is_a_clear_400(upstream, serve):
    import openai

    server = serve(cache_config(upstream))
    with pytest.raises(openai.BadRequestError) as caught:
        ask(server.client(), extra_headers={"x-pointsman-cache": "sometimes"})
    assert "x-pointsman-cache" in caught.value.message
    assert caught.value.response.headers["x-pointsman-request-id"]
    assert upstream.calls("small") == 0
    assert server.records()[-1]["status"] == 400


def test_entries_expire_after_their_ttl(upstream, serve):
    server = serve(cache_config(upstream, ttl_s=0.3))
    client = server.client()
    ask(client)
    assert ask(client)[1]["x-pointsman-cache"] == "hit"
    time.sleep(0.4)
    assert ask(client)[1]["x-pointsman-cache"] == "miss"
    assert upstream.calls("small") == 2


def test_sampled_requests_are_not_cached_unless_the_policy_says_so(upstream, serve):
    server = serve(cache_config(upstream))
    client = server.client()
    for _ in range(2):
        assert ask(client, temperature=0.7)[1]["x-pointsman-cache"] == "bypass"
    # No temperature means the API's default of 1: not deterministic either.
    assert ask(client, temperature=None)[1]["x-pointsman-cache"] == "bypass"
    assert upstream.calls("small") == 3
    always = serve(cache_config(upstream, policy="always")).client()
    ask(always, temperature=0.7)
    assert ask(always, temperature=0.7)[1]["x-pointsman-cache"] == "hit"


def test_models_without_a_cache_block_are_never_cached(upstream, serve):
    server = serve(cache_config(upstream))
    client = server.client()
    ask(client, model="plain")
    _, headers, _ = ask(client, model="plain")
    assert "x-pointsman-cache" not in headers
    assert upstream.calls("small") == 2


def test_anthropic_messages_share_the_cache(upstream, serve):
    server = serve(cache_config(upstream))
    client = anthropic.Anthropic(base_url=server.url, api_key="sk-client", max_retries=0)
    params = {"model": "auto", "max_tokens": 64, "messages": QUESTION, "extra_body": {"temperature": 0}}
    first = client.messages.with_raw_response.create(**params)
    second = client.messages.with_raw_response.create(**params)
    assert second.headers["x-pointsman-cache"] == "hit"
    assert second.parse().content[0].text == first.parse().content[0].text
    assert upstream.calls("small") == 1


def test_anthropic_streamed_hit_is_a_valid_messages_stream(upstream, serve):
    server = serve(cache_config(upstream))
    client = anthropic.Anthropic(base_url=server.url, api_key="sk-client", max_retries=0)
    params = {"model": "auto", "max_tokens": 64, "messages": QUESTION, "extra_body": {"temperature": 0}}
    texts = []
    for _ in range(2):
        with client.messages.stream(**params) as stream:
            texts.append("".join(stream.text_stream))
            final = stream.get_final_message()
        assert final.stop_reason == "end_turn"
    assert texts[0] and texts[1] == texts[0]
    assert upstream.calls("small") == 1
    assert [r["cache"] for r in server.records()] == ["miss", "hit"]


def test_summary_counts_hits_and_what_they_saved(upstream, serve):
    server = serve(cache_config(upstream))
    client = server.client()
    for _ in range(3):
        ask(client)
    records = server.records()
    cache = summarise(records, since=0, until=time.time() + 1)["cache"]
    assert cache["hits"] == 2 and cache["misses"] == 1
    assert cache["hit_rate"] == pytest.approx(2 / 3)
    assert cache["saved"] == pytest.approx(2 * records[0]["cost"])


def test_stream_events_and_assembly_round_trip():
    body = (
        b'{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
        b'"message":{"role":"assistant","content":null,"tool_calls":[{"id":"t1","type":"function",'
        b'"function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}'
    )
    assembler = StreamAssembler()
    for event in completion_events(body, include_usage=True):
        assembler.feed(event)
    rebuilt = assembler.completion()
    assert rebuilt is not None
    import orjson

    answer = orjson.loads(rebuilt)
    assert answer["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert answer["usage"]["total_tokens"] == 5


@pytest.mark.skipif(not redis_available(), reason="Redis is not running on 127.0.0.1:6379")
def test_answer_from_one_replica_is_a_hit_on_the_other(upstream, serve):
    config = cache_config(upstream)
    config["state"] = {"url": "redis://127.0.0.1:6379/0", "prefix": f"pm-cache-{uuid.uuid4().hex[:8]}"}
    one, two = serve(config), serve(config)
    text, headers, _ = ask(one.client())
    assert headers["x-pointsman-cache"] == "miss"
    again, headers, _ = ask(two.client())
    assert headers["x-pointsman-cache"] == "hit" and again == text
    assert upstream.calls("small") == 1


def test_unreachable_redis_makes_the_cache_miss_never_fail(upstream, serve):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    config = cache_config(upstream)
    config["state"] = {"url": f"redis://127.0.0.1:{dead}/0", "prefix": f"pm-cache-{uuid.uuid4().hex[:8]}"}
    server = serve(config)
    client = server.client()
    for _ in range(2):
        text, headers, _ = ask(client)
        assert text and headers["x-pointsman-cache"] == "miss"
    assert upstream.calls("small") == 2
    with urllib.request.urlopen(f"{server.url}/readyz", timeout=5) as response:
        ready = json.loads(response.read())
    assert ready["status"] == "degraded" and "cache" in ready["degraded"]


MASTER = "mk-cache-master"


def create_key(server: Any, **spec: Any) -> str:
    request = urllib.request.Request(
        f"{server.url}/admin/keys",
        method="POST",
        data=json.dumps(spec).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {MASTER}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["key"])


def test_virtual_keys_share_their_teams_cache_and_may_opt_out(upstream, serve, monkeypatch):
    monkeypatch.setenv("POINTSMAN_MASTER_KEY", MASTER)
    server = serve(cache_config(upstream))
    alice = create_key(server, name="alice", metadata={"team": "search"})
    bob = create_key(server, name="bob", metadata={"team": "search"})
    carol = create_key(server, name="carol", metadata={"team": "billing"})
    dave = create_key(server, name="dave", metadata={"team": "search", "cache": "off"})
    ask(server.client(api_key=alice))
    assert ask(server.client(api_key=bob))[1]["x-pointsman-cache"] == "hit"
    assert ask(server.client(api_key=carol))[1]["x-pointsman-cache"] == "miss"
    assert "x-pointsman-cache" not in ask(server.client(api_key=dave))[1]
    assert upstream.calls("small") == 3
    hit = server.records()[1]
    assert hit["team"] == "search" and hit["cache"] == "hit" and hit["cost"] == 0


def test_opted_in_policy_caches_only_keys_that_opted_in(upstream, serve, monkeypatch):
    monkeypatch.setenv("POINTSMAN_MASTER_KEY", MASTER)
    server = serve(cache_config(upstream, keys="opted_in"))
    opted = create_key(server, name="opted", metadata={"cache": "on"})
    other = create_key(server, name="other")
    for _ in range(2):
        ask(server.client(api_key=other))
    assert ask(server.client(api_key=opted))[1]["x-pointsman-cache"] == "miss"
    assert ask(server.client(api_key=opted))[1]["x-pointsman-cache"] == "hit"
    assert upstream.calls("small") == 3


def test_dashboard_summary_and_report_show_hits_and_savings(upstream, serve, monkeypatch, capsys):
    monkeypatch.setenv("POINTSMAN_MASTER_KEY", MASTER)
    server = serve(cache_config(upstream))
    client = server.client(api_key=create_key(server, name="app"))
    for _ in range(4):
        ask(client)
    records = server.records()
    request = urllib.request.Request(
        f"{server.url}/dashboard/api/summary?since=1h", headers={"authorization": f"Bearer {MASTER}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        cache = json.loads(response.read())["cache"]
    assert cache["hits"] == 3 and cache["misses"] == 1 and cache["hit_rate"] == pytest.approx(0.75)
    assert cache["saved"] == pytest.approx(3 * records[0]["cost"])
    assert main(["report", "--since", "1h", "--db", str(server.db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cache"]["hits"] == 3
    assert main(["report", "--since", "1h", "--db", str(server.db)]) == 0
    out = capsys.readouterr().out
    assert "3 hits, 1 misses" in out and "hit rate 75.0%" in out and money(cache["saved"]) in out


def test_cache_settings_are_validated_with_the_key_named(upstream):
    from pointsman.config import ConfigError, load_config

    with pytest.raises(ConfigError) as caught:
        load_config(cache_config(upstream, ttl_s=-1, scope="everyone"))
    problems = "\n".join(caught.value.problems)
    assert "models.auto.cache.ttl_s" in problems and "models.auto.cache.scope" in problems
    config = cache_config(upstream)
    config["cache"] = {"backend": "redis"}
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.problems == ["cache.backend: 'redis' needs state.url (the Redis the replicas share)"]


def test_memory_cache_keeps_only_the_most_recently_used_entries(upstream, serve):
    config = cache_config(upstream)
    config["cache"] = {"max_entries": 2}
    client = serve(config).client()
    questions = [[{"role": "user", "content": f"Question number {i}?"}] for i in range(3)]
    for messages in questions:
        ask(client, messages=messages)
    # The first question was the least recently used of three: evicted; the last two stay.
    assert ask(client, messages=questions[2])[1]["x-pointsman-cache"] == "hit"
    assert ask(client, messages=questions[1])[1]["x-pointsman-cache"] == "hit"
    assert ask(client, messages=questions[0])[1]["x-pointsman-cache"] == "miss"
    assert upstream.calls("small") == 4
