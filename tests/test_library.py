"""The library face: Router.from_config, acompletion, completion, decide."""

from __future__ import annotations

import asyncio

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from pointsman import Router
from pointsman.errors import ModelNotFound, UpstreamFailed
from pointsman.testing import Behaviour
from tests.conftest import deployment

HELLO = [{"role": "user", "content": "hello"}]


def make_config(upstream):
    return {
        "router": {"backoff_base_s": 0.0},
        "deployments": [
            deployment(upstream, "a"),
            deployment(upstream, "b", capabilities={"vision": True}),
        ],
        "models": {
            "auto": {
                "strategy": "conditions",
                "deployments": ["a", "b"],
                "options": {
                    "conditions": [{"name": "code", "when": {"keywords": ["python"]}, "use": ["b"]}]
                },
            }
        },
    }


@pytest.fixture
def router(upstream, tmp_path):
    r = Router.from_config(make_config(upstream), db=tmp_path / "lib.db")
    yield r
    r.close()


def test_acompletion_returns_an_openai_chat_completion(router, upstream):
    async def main():
        try:
            return await router.acompletion("auto", HELLO)
        finally:
            await router.aclose()

    answer = asyncio.run(main())
    assert isinstance(answer, ChatCompletion)
    assert answer.choices[0].message.content.startswith("Simulated answer from a")


def test_acompletion_streams_chunks(router):
    async def main():
        try:
            stream = await router.acompletion("auto", HELLO, stream=True)
            return [chunk async for chunk in stream]
        finally:
            await router.aclose()

    chunks = asyncio.run(main())
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("Simulated answer")


def test_blocking_completion_with_failover(router, upstream):
    upstream.set("a", Behaviour(status=500))
    answer = router.completion("auto", HELLO)
    assert answer.choices[0].message.content.startswith("Simulated answer from b")
    text = "".join(
        c.choices[0].delta.content or "" for c in router.completion("auto", HELLO, stream=True)
    )
    assert text.startswith("Simulated answer from b")


def test_blocking_completion_raises_router_errors(router, upstream):
    with pytest.raises(ModelNotFound):
        router.completion("nope", HELLO)
    upstream.set("a", Behaviour(status=500))
    upstream.set("b", Behaviour(status=500))
    with pytest.raises(UpstreamFailed, match="all deployments failed"):
        router.completion("auto", HELLO)


def test_library_mid_stream_failure_raises(router, upstream):
    upstream.set("a", Behaviour(fail_after_chunks=1, reply="a b c d e"))
    with pytest.raises(openai.APIError):
        for _ in router.completion("auto", HELLO, stream=True):
            pass


def test_decide_explains_without_calling_a_model(router, upstream):
    decision = router.decide(
        {"model": "auto", "messages": [{"role": "user", "content": "python sort?"}]}
    )
    assert decision.plan == ["b"] and decision.route == "conditions:code"
    image = {
        "model": "auto",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
                ],
            }
        ],
    }
    decision = router.decide(image)
    assert decision.plan == ["b"]
    assert decision.reasons == ["capability: removed a: no vision capability (request has images)"]
    assert upstream.calls("a") == upstream.calls("b") == 0


def test_completion_records_each_request(router, upstream, tmp_path):
    from pointsman.store import read_records

    router.completion("auto", HELLO)
    router.store.flush()
    (record,) = read_records(tmp_path / "lib.db")
    assert record["deployment"] == "a" and record["status"] == 200 and record["cost"] > 0
