"""provider: bedrock. The loopback Converse fake is held to boto3's bedrock-runtime client (which
also proves the fake's SigV4 check and event-stream framing), then the adapter is driven through
`pointsman serve` with the official openai client."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import openai
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from pointsman.testing.bedrock_upstream import BedrockUpstream, Behaviour

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ACCESS, SECRET = "AKIDPOINTSMANTEST", "pointsman-test-secret"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "today's weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def last_record(server: Any) -> dict[str, Any]:
    """The newest record; a streamed request is recorded just after its last byte is sent."""
    deadline = time.monotonic() + 5
    while not (records := server.records()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return records[-1]


@pytest.fixture(scope="module")
def _bedrock_server() -> Iterator[BedrockUpstream]:
    with BedrockUpstream(credentials={ACCESS: SECRET}) as fake:
        yield fake


@pytest.fixture
def bedrock(_bedrock_server: BedrockUpstream, monkeypatch, tmp_path) -> BedrockUpstream:
    """The fake, reset; AWS's credential chain sees only these environment credentials."""
    _bedrock_server.reset()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return _bedrock_server


def runtime(fake: BedrockUpstream, secret: str = SECRET) -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=fake.url,
        aws_access_key_id=ACCESS,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


# --- the fake speaks Bedrock's wire protocol, as boto3 reads it ---------------------------------


def test_fake_answers_boto3_converse_with_text_usage_and_stop_reason(bedrock):
    answer = runtime(bedrock).converse(
        modelId=HAIKU,
        messages=[{"role": "user", "content": [{"text": "Hello there"}]}],
        system=[{"text": "Be brief."}],
        inferenceConfig={"maxTokens": 100},
    )
    assert answer["output"]["message"]["content"] == [
        {"text": f"Simulated answer from {HAIKU}. You said: Hello there"}
    ]
    assert answer["stopReason"] == "end_turn"
    assert answer["usage"]["outputTokens"] == 8
    sent = bedrock.requests(HAIKU)[0]
    assert sent.path == "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS}/")


def test_fake_streams_event_stream_frames_boto3_decodes(bedrock):
    answer = runtime(bedrock).converse_stream(
        modelId=HAIKU, messages=[{"role": "user", "content": [{"text": "Hi you"}]}]
    )
    events = list(answer["stream"])
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == f"Simulated answer from {HAIKU}. You said: Hi you"
    assert events[0] == {"messageStart": {"role": "assistant"}}
    assert {"messageStop": {"stopReason": "end_turn"}} in events
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 8


def test_fake_calls_a_tool_and_reads_its_result_with_an_image_turn(bedrock):
    client = runtime(bedrock)
    tools = {
        "tools": [
            {"toolSpec": {"name": "get_weather", "inputSchema": {"json": TOOL["function"]["parameters"]}}}
        ]
    }
    bedrock.set(HAIKU, Behaviour(tool_arguments='{"city": "Lima"}'))
    question = {
        "role": "user",
        "content": [
            {"text": "Weather where this photo was taken?"},
            {"image": {"format": "png", "source": {"bytes": base64.b64decode(PNG)}}},
        ],
    }
    first = client.converse(modelId=HAIKU, messages=[question], toolConfig=tools)
    use = first["output"]["message"]["content"][0]["toolUse"]
    assert (
        first["stopReason"] == "tool_use"
        and use["name"] == "get_weather"
        and use["input"] == {"city": "Lima"}
    )
    second = client.converse(
        modelId=HAIKU,
        toolConfig=tools,
        messages=[
            question,
            first["output"]["message"],
            {
                "role": "user",
                "content": [
                    {"toolResult": {"toolUseId": use["toolUseId"], "content": [{"json": {"sky": "grey"}}]}}
                ],
            },
        ],
    )
    assert second["output"]["message"]["content"][0]["text"].startswith(
        f"Simulated answer from {HAIKU}. I see 1 image(s)."
    )


def test_fake_errors_read_as_bedrock_exceptions(bedrock):
    bedrock.set(HAIKU, Behaviour(status=429, retry_after=3))
    with pytest.raises(ClientError) as throttled:
        runtime(bedrock).converse(modelId=HAIKU, messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert throttled.value.response["Error"]["Code"] == "ThrottlingException"
    assert throttled.value.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "3"
    with pytest.raises(ClientError) as forged:
        runtime(bedrock, secret="not-the-secret").converse(
            modelId=SONNET, messages=[{"role": "user", "content": [{"text": "x"}]}]
        )
    assert forged.value.response["Error"]["Code"] == "InvalidSignatureException"
    with pytest.raises(ClientError) as invalid:
        runtime(bedrock).converse(
            modelId=SONNET, messages=[{"role": "assistant", "content": [{"text": "x"}]}]
        )
    assert invalid.value.response["Error"]["Code"] == "ValidationException"


# --- the adapter, through pointsman serve, with the official openai client ----------------------


def bedrock_deployment(fake: BedrockUpstream, name: str, model: str, **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "provider": "bedrock",
        "model": model,
        "aws_region": "us-east-1",
        "api_base": fake.url,
        "capabilities": {"vision": True},
        "timeouts": {"connect": 2, "first_byte": 2, "inter_chunk": 2, "total": 5},
    }
    entry.update(fields)
    return entry


def config(fake: BedrockUpstream) -> dict[str, Any]:
    return {
        "router": {"backoff_base_s": 0.0, "max_retry_wait_s": 0.0},
        "deployments": [bedrock_deployment(fake, "haiku", HAIKU), bedrock_deployment(fake, "sonnet", SONNET)],
        "models": {"auto": {"deployments": ["haiku", "sonnet"]}},
    }


def test_chat_completion_through_bedrock_is_signed_translated_and_catalogue_priced(bedrock, serve):
    server = serve(config(bedrock))
    answer = server.client().chat.completions.create(
        model="auto",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second one"},
        ],
        max_tokens=50,
    )
    assert answer.choices[0].message.content == f"Simulated answer from {HAIKU}. You said: second one"
    assert answer.choices[0].finish_reason == "stop"
    sent = bedrock.requests(HAIKU)[0]
    assert sent.body["system"] == [{"text": "Be brief."}]
    assert [m["role"] for m in sent.body["messages"]] == ["user", "assistant", "user"]
    assert sent.body["inferenceConfig"] == {"maxTokens": 50}
    assert (
        f"Credential={ACCESS}/" in sent.headers["authorization"]
        and "/us-east-1/bedrock/" in sent.headers["authorization"]
    )
    # Claude 3 Haiku on Bedrock: $0.25 / $1.25 per million tokens, from the catalogue.
    expected = (answer.usage.prompt_tokens * 0.25 + answer.usage.completion_tokens * 1.25) / 1e6
    assert last_record(server)["cost"] == pytest.approx(expected)


def test_temporary_credentials_send_their_session_token(bedrock, serve, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-from-sts")
    serve(config(bedrock)).client().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert bedrock.requests(HAIKU)[0].headers["x-amz-security-token"] == "session-token-from-sts"


def test_streamed_bedrock_answer_arrives_as_openai_chunks_with_usage(bedrock, serve):
    server = serve(config(bedrock))
    chunks = list(
        server.client().chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "stream please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Simulated answer from {HAIKU}. You said: stream please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == 8
    assert bedrock.requests(HAIKU)[0].path.endswith("/converse-stream")
    assert last_record(server)["completion_tokens"] == 8


def test_tool_call_round_trip_through_bedrock(bedrock, serve):
    bedrock.set(HAIKU, Behaviour(tool_arguments='{"city": "Paris"}'))
    client = serve(config(bedrock)).client()
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(
        model="auto", messages=messages, tools=[TOOL], tool_choice="required"
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'},
    ]
    second = client.chat.completions.create(model="auto", messages=messages, tools=[TOOL])
    assert second.choices[0].message.content.startswith("Simulated answer")
    sent = bedrock.requests(HAIKU)
    assert sent[0].body["toolConfig"]["toolChoice"] == {"any": {}}
    assert sent[0].body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {
        "json": TOOL["function"]["parameters"]
    }
    result = sent[1].body["messages"][2]["content"][0]["toolResult"]
    assert result == {"toolUseId": call.id, "content": [{"json": {"sky": "sunny"}}]}


def test_streamed_tool_call_through_bedrock_accumulates_arguments(bedrock, serve):
    bedrock.set(HAIKU, Behaviour(tool_arguments='{"city": "Reykjavik", "unit": "celsius"}'))
    stream = (
        serve(config(bedrock))
        .client()
        .chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "Weather?"}], tools=[TOOL], stream=True
        )
    )
    chunks = [c for c in stream if c.choices]
    calls = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or ()]
    assert calls[0].function.name == "get_weather" and len(calls) > 2
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {
        "city": "Reykjavik",
        "unit": "celsius",
    }
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_image_data_url_reaches_bedrock_as_image_bytes(bedrock, serve):
    answer = (
        serve(config(bedrock))
        .client()
        .chat.completions.create(
            model="auto",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    ],
                }
            ],
        )
    )
    assert "I see 1 image(s)" in answer.choices[0].message.content
    block = bedrock.requests(HAIKU)[0].body["messages"][0]["content"][1]
    assert block == {"image": {"format": "png", "source": {"bytes": PNG}}}


def test_throttled_bedrock_fails_over_and_cools_down_for_retry_after(bedrock, serve):
    bedrock.set(HAIKU, Behaviour(status=429, retry_after=30))
    client = serve(config(bedrock)).client()
    first = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert first.headers["x-pointsman-model"] == "sonnet"
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "again"}])
    assert bedrock.calls(HAIKU) == 1 and bedrock.calls(SONNET) == 2


def test_bedrock_server_errors_fail_over(bedrock, serve):
    bedrock.set(HAIKU, Behaviour(status=503))
    answer = (
        serve(config(bedrock))
        .client()
        .chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    )
    assert answer.choices[0].message.content.startswith(f"Simulated answer from {SONNET}")


@pytest.mark.parametrize("body", [b'{"hello":"world"}', b'{"output":{"message":5}}', b'{"output":{}}'])
def test_a_bedrock_200_that_is_not_an_answer_fails_over(bedrock, serve, body):
    bedrock.set(HAIKU, Behaviour(body=body))
    server = serve(config(bedrock))
    answer = server.client().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content.startswith(f"Simulated answer from {SONNET}")
    assert "unreadable" in server.records()[-1]["attempts"][0]["error"]


def test_wrong_aws_credentials_are_the_deployments_fault_and_fail_over(bedrock, serve, tmp_path, monkeypatch):
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[stale]\naws_access_key_id = {ACCESS}\naws_secret_access_key = rotated-away\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    cfg = config(bedrock)
    cfg["deployments"][0]["aws_profile"] = "stale"
    server = serve(cfg)
    answer = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.headers["x-pointsman-model"] == "sonnet"
    assert bedrock.calls(HAIKU) == 1
    assert "InvalidSignatureException" in str(last_record(server)["attempts"])


def test_request_bedrock_refuses_goes_back_to_the_client_as_400(bedrock, serve):
    server = serve(config(bedrock))
    with pytest.raises(openai.BadRequestError):
        server.client().chat.completions.create(
            model="auto", messages=[{"role": "assistant", "content": "I speak first"}]
        )
    assert bedrock.calls(SONNET) == 0


def test_a_bedrock_stream_cut_midway_is_an_error_to_the_client(bedrock, serve):
    bedrock.set(HAIKU, Behaviour(fail_after_chunks=3, reply="a b c d e f g h"))
    server = serve(config(bedrock))
    with pytest.raises(openai.APIError):
        for _ in server.client().chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            pass
    assert last_record(server)["status"] == 502


def test_an_exception_inside_a_bedrock_event_stream_ends_the_stream_with_an_error(bedrock):
    import asyncio

    from aiohttp import web

    from pointsman.config import Deployment
    from pointsman.providers import HTTPClient, StreamUsage, UpstreamError, make_provider
    from pointsman.testing.bedrock_upstream import event, exception_event

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/vnd.amazon.eventstream"})
        await response.prepare(request)
        await response.write(event("messageStart", {"role": "assistant"}))
        await response.write(exception_event("modelStreamErrorException", "the model broke"))
        await response.write_eof()
        return response

    async def main() -> tuple[list[bytes], UpstreamError]:
        app = web.Application()
        app.router.add_post("/model/{model}/converse-stream", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        client = HTTPClient()
        provider = make_provider(
            Deployment(name="b", provider="bedrock", model=HAIKU, api_base=f"http://127.0.0.1:{port}",
                       aws_region="us-east-1"),
            client,
        )  # fmt: skip
        received: list[bytes] = []
        try:
            async for chunk in provider.stream(
                {"messages": [{"role": "user", "content": "x"}]}, StreamUsage()
            ):
                received.append(chunk)
        except UpstreamError as exc:
            return received, exc
        finally:
            await client.close()
            await runner.cleanup()
        raise AssertionError("the stream ended without an error")

    received, error = asyncio.run(main())
    assert len(received) == 1 and b'"role":"assistant"' in received[0]
    assert "modelStreamErrorException: the model broke" in error.message and error.status == 502


def test_a_missing_aws_profile_is_the_deployments_fault_and_fails_over(bedrock, serve):
    cfg = config(bedrock)
    cfg["deployments"][0]["aws_profile"] = "no-such-profile"
    server = serve(cfg)
    answer = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.headers["x-pointsman-model"] == "sonnet"
    assert "AWS credentials" in str(last_record(server)["attempts"]) and "no-such-profile" in str(
        last_record(server)["attempts"]
    )
    assert bedrock.calls(HAIKU) == 0


def test_no_aws_credentials_anywhere_is_a_503_that_says_so(bedrock, serve, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    server = serve({"deployments": [bedrock_deployment(bedrock, "haiku", HAIKU)]})
    with pytest.raises(openai.APIStatusError) as caught:
        server.client().chat.completions.create(model="haiku", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 503 and "no AWS credentials found" in caught.value.message
    assert bedrock.calls(HAIKU) == 0


def test_a_bedrock_deployment_needs_a_region_or_an_endpoint():
    from pointsman.config import ConfigError, load_config

    entry = {"name": "haiku", "provider": "bedrock", "model": HAIKU}
    with pytest.raises(ConfigError) as caught:
        load_config({"deployments": [entry]})
    assert caught.value.problems == [
        "deployments[0]: provider bedrock needs aws_region (or an api_base endpoint)"
    ]
    regional = load_config({"deployments": [{**entry, "aws_region": "eu-central-1"}]}).deployments[0]
    assert regional.api_base == "https://bedrock-runtime.eu-central-1.amazonaws.com"


def test_a_prompt_too_long_for_bedrock_fails_over_to_a_larger_window(bedrock, serve):
    bedrock.set(HAIKU, Behaviour(context_window=50))
    cfg = config(bedrock)
    cfg["deployments"][0]["context_window"] = 100_000
    cfg["deployments"][1]["context_window"] = 200_000
    answer = serve(cfg).client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "word " * 400}]
    )
    assert answer.headers["x-pointsman-model"] == "sonnet"
    assert bedrock.calls(HAIKU) == 1
