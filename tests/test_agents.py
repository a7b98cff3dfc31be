"""Agents: role- and stage-aware routing, drop-in use from LangChain and the official clients,
tool loops under both APIs, and the scripted multi-agent run."""

from __future__ import annotations

import os
from typing import Any

import pytest
from bench.agent_run import PLANNER, run

from pointsman.testing import Behaviour
from tests.conftest import deployment


def agents_config(upstream: Any) -> dict[str, Any]:
    return {
        "router": {"backoff_base_s": 0.0},
        "deployments": [
            deployment(upstream, "premium", provider="anthropic", price={"input": 3, "output": 15}),
            deployment(upstream, "mid", price={"input": 0.4, "output": 1.6}),
            deployment(upstream, "mini", price={"input": 0.1, "output": 0.4}),
        ],
        "signals": {
            "roles": {
                "planner": {"system_pattern": r"(?i)\byou are the planner\b"},
                "coder": {"tool_prefix": "code_"},
            }
        },
        "models": {
            "agent": {
                "strategy": "rules",
                "deployments": ["mid"],
                "options": {
                    "rules": [
                        {
                            "name": "planning",
                            "when": {"role": "planner"},
                            "then": {"deployments": ["premium", "mid"]},
                        },
                        {
                            "name": "tool_loop",
                            "when": {"stage": "tool_result"},
                            "then": {"deployments": ["mini", "mid"]},
                        },
                        {
                            "name": "coding",
                            "when": {"role": "coder"},
                            "then": {"deployments": ["mid", "premium"]},
                        },
                    ]
                },
            },
        },
        "aliases": {"gpt-*": "agent", "claude-*": "agent"},
    }


CODE_TOOL = {
    "type": "function",
    "function": {
        "name": "code_run_tests",
        "description": "run the tests",
        "parameters": {"type": "object", "properties": {}},
    },
}


def test_role_from_system_prompt_header_and_tool_prefix(upstream, serve):
    server = serve(agents_config(upstream))
    client = server.client()

    def routed(**kwargs: Any) -> str:
        raw = client.chat.completions.with_raw_response.create(model="agent", **kwargs)
        return raw.headers["x-pointsman-route"]

    assert routed(messages=[{"role": "system", "content": PLANNER}, {"role": "user", "content": "go"}]) == (
        "rules:planning"
    )
    assert (
        routed(messages=[{"role": "user", "content": "go"}], extra_headers={"x-pointsman-role": "planner"})
        == "rules:planning"
    )
    assert routed(messages=[{"role": "user", "content": "go"}], tools=[CODE_TOOL]) == "rules:coding"
    signals = [r["decision"]["signals"] for r in server.records()]
    assert [s["role"] for s in signals] == ["planner", "planner", "coder"]


def test_role_from_the_keys_metadata(upstream, serve, monkeypatch):
    monkeypatch.setenv("POINTSMAN_MASTER_KEY", "mk")
    server = serve(agents_config(upstream))
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{server.url}/admin/keys",
        method="POST",
        data=json.dumps({"name": "planner-agent", "metadata": {"role": "planner"}}).encode(),
        headers={"authorization": "Bearer mk", "content-type": "application/json"},
    )
    secret = json.loads(urllib.request.urlopen(request).read())["key"]
    raw = server.client(api_key=secret).chat.completions.with_raw_response.create(
        model="agent",
        messages=[{"role": "user", "content": "go"}],
        extra_headers={"x-pointsman-role": "summariser"},  # the key's role wins
    )
    assert raw.headers["x-pointsman-route"] == "rules:planning"


def test_tool_result_turn_is_its_own_stage_in_an_openai_tool_loop(upstream, serve):
    server = serve(agents_config(upstream))
    client = server.client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "run the tests"}]
    first = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=messages, tools=[CODE_TOOL]
    )
    call = first.parse().choices[0].message.tool_calls[0]
    messages += [
        first.parse().choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "14 passed"},
    ]
    second = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=messages, tools=[CODE_TOOL]
    )
    assert first.headers["x-pointsman-model"] == "mid" and second.headers["x-pointsman-model"] == "mini"
    stages = [r["decision"]["signals"]["stage"] for r in server.records()]
    assert stages == ["first_turn", "tool_result"]


def test_anthropic_tool_loop_round_trip(upstream, serve):
    import anthropic

    server = serve(agents_config(upstream))
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    tools = [{"name": "code_run_tests", "description": "run the tests", "input_schema": {"type": "object"}}]
    first = client.messages.create(
        model="claude-opus-9",
        max_tokens=100,
        tools=tools,
        messages=[{"role": "user", "content": "run the tests"}],
    )
    use = next(b for b in first.content if b.type == "tool_use")
    second = client.messages.with_raw_response.create(
        model="claude-opus-9",
        max_tokens=100,
        tools=tools,
        messages=[
            {"role": "user", "content": "run the tests"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "14 passed"}],
            },
        ],
    )
    assert second.headers["x-pointsman-model"] == "mini" and second.parse().stop_reason == "end_turn"


def test_tier_sticks_for_a_conversation_unless_it_escalates(upstream, serve):
    config = agents_config(upstream)
    config["models"]["tiered"] = {
        "strategy": "tiers",
        "options": {
            "tiers": {
                "simple": {"deployments": ["mini"]},
                "standard": {"deployments": ["mid"]},
                "complex": {"deployments": ["premium"]},
                "reasoning": {"deployments": ["premium"]},
            },
            "sticky": {"enabled": True, "keep": "conversation", "ttl_s": 60},
        },
    }
    server = serve(config)
    client = server.client()
    session = {"x-pointsman-session": "conv-1"}
    hard = (
        "Prove step by step that the sum of the first n odd numbers is n squared, then analyse "
        "the trade-offs of induction versus a direct combinatorial argument in detail."
    )
    history = [{"role": "user", "content": hard}]

    def ask(text: str) -> str:
        history.append({"role": "user", "content": text})
        raw = client.chat.completions.with_raw_response.create(
            model="tiered", messages=list(history), extra_headers=session
        )
        history.append({"role": "assistant", "content": raw.parse().choices[0].message.content})
        return raw.headers["x-pointsman-model"]

    history.pop()
    first = ask(hard)
    assert first == "premium"
    # Later turns, however light, keep the conversation's tier.
    assert ask("ok thanks") == "premium"
    assert ask("and the base case?") == "premium"
    # A new conversation starting light is not affected.
    raw = client.chat.completions.with_raw_response.create(
        model="tiered",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-pointsman-session": "c2"},
    )
    assert raw.headers["x-pointsman-model"] == "mini"


def test_langchain_chat_openai_through_pointsman(upstream, serve):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    server = serve(agents_config(upstream))
    llm = ChatOpenAI(model="gpt-4o-mini", base_url=f"{server.url}/v1", api_key="sk-x", max_retries=0)
    assert llm.invoke("hello").content.startswith("Simulated answer from mid")
    streamed = "".join(chunk.content for chunk in llm.stream("hello"))
    assert streamed.startswith("Simulated answer from mid")
    with_tools = llm.bind_tools([CODE_TOOL])
    messages: list[Any] = [HumanMessage("run the tests")]
    ai = with_tools.invoke(messages)
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "code_run_tests"
    messages += [ai, ToolMessage("14 passed", tool_call_id=ai.tool_calls[0]["id"])]
    final = with_tools.invoke(messages)
    assert final.content and not final.tool_calls
    assert server.records()[-1]["deployment"] == "mini"


def test_langchain_chat_anthropic_through_pointsman(upstream, serve):
    from langchain_anthropic import ChatAnthropic
    from langchain_core.messages import HumanMessage, ToolMessage

    server = serve(agents_config(upstream))
    llm = ChatAnthropic(
        model="claude-haiku-9", base_url=server.url, api_key="sk-ant-x", max_retries=0, max_tokens=200
    )
    assert llm.invoke("hello").content.startswith("Simulated answer from mid")
    streamed = "".join(str(chunk.content) for chunk in llm.stream("hello") if isinstance(chunk.content, str))
    assert "Simulated answer from mid" in streamed
    with_tools = llm.bind_tools([CODE_TOOL])
    messages: list[Any] = [HumanMessage("run the tests")]
    ai = with_tools.invoke(messages)
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "code_run_tests"
    messages += [ai, ToolMessage("14 passed", tool_call_id=ai.tool_calls[0]["id"])]
    final = with_tools.invoke(messages)
    assert not final.tool_calls
    assert server.records()[-1]["deployment"] == "mini"


def test_failover_keeps_an_agent_running_when_its_provider_fails(upstream, serve):
    server = serve(agents_config(upstream))
    upstream.set("premium", Behaviour(status=529))
    raw = server.client().chat.completions.with_raw_response.create(
        model="agent", messages=[{"role": "system", "content": PLANNER}, {"role": "user", "content": "plan"}]
    )
    assert raw.headers["x-pointsman-model"] == "mid"


def test_scripted_agent_run_over_both_apis():
    saved = os.environ.get("POINTSMAN_SIM_URL")
    try:
        results = run()
    finally:
        if saved is None:
            os.environ.pop("POINTSMAN_SIM_URL", None)
        else:
            os.environ["POINTSMAN_SIM_URL"] = saved
    for api in ("openai", "anthropic"):
        r = results[api]
        assert r["steps"] >= 20 and len(r["records"]) == r["steps"] and r["failed"] == 0
        roles = {s["role"] for s in r["records"]}
        stages = {s["stage"] for s in r["records"]}
        tiers = {s["tier"] for s in r["records"]}
        assert {"planner", "coder", "reviewer", "summariser"} <= roles
        assert {"first_turn", "tool_result"} <= stages
        assert {"simple", "standard", "complex"} <= tiers
        assert all(s["deployment"] == "sim-mini" for s in r["records"] if s["stage"] == "tool_result")
        assert all(s["deployment"] == "sim-premium" for s in r["records"] if s["role"] == "planner")
        assert 0 < r["cost"] < r["premium_cost"]
    assert results["openai"]["records"] == [
        {**s, "cost": pytest.approx(s["cost"])} for s in results["anthropic"]["records"]
    ]
