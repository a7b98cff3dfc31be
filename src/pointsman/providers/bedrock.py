"""Amazon Bedrock's Converse and ConverseStream APIs, translated to and from the internal OpenAI
shape. Requests are signed with SigV4 from AWS's standard credential chain (environment, shared
config and credentials files, SSO, container and instance roles) by botocore, and streamed answers
are read with botocore's event-stream parser. Needs the `bedrock` extra (botocore)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote

import orjson

from pointsman.config import Deployment
from pointsman.providers.base import (
    Completion,
    Provider,
    StreamUsage,
    UpstreamError,
    client_error,
    parse_retry_after,
)
from pointsman.providers.content import RequestNotTranslatable, parse_data_url
from pointsman.providers.http import HTTPClient
from pointsman.providers.openai import DONE

try:  # the optional `bedrock` extra
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.eventstream import EventStreamBuffer
except ImportError:  # pragma: no cover - checked when a bedrock deployment is made
    botocore = None

Json = dict[str, Any]

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# Exceptions a ConverseStream may send instead of an event, and the HTTP status each stands for.
_STREAM_EXCEPTIONS = {
    "throttlingException": 429,
    "serviceUnavailableException": 503,
    "internalServerException": 500,
    "modelStreamErrorException": 502,
    "validationException": 400,
}
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_CONTEXT = re.compile(r"too long|too many (input )?tokens|context (length|window)|maximum context", re.I)


def _blocks(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[Json] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"text": str(part["text"])})
        elif kind == "image_url":
            image = part.get("image_url")
            mime, data = parse_data_url(str((image.get("url") if isinstance(image, dict) else image) or ""))
            if mime not in _IMAGE_FORMATS:
                raise RequestNotTranslatable(
                    f"image type {mime} is not supported by Bedrock (png, jpeg, gif, webp)"
                )
            blocks.append({"image": {"format": _IMAGE_FORMATS[mime], "source": {"bytes": data}}})
        else:
            raise RequestNotTranslatable(f"content part type {kind!r} is not supported for Bedrock")
    return blocks


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(
        p.get("text", "") for p in content or () if isinstance(p, dict) and p.get("type") == "text"
    )


def to_converse_request(body: Json, max_output_tokens: int | None) -> Json:
    """The Converse body for an OpenAI chat completions body."""
    system: list[Json] = []
    messages: list[Json] = []

    def add(role: str, blocks: list[Json]) -> None:
        if not blocks:
            return
        if messages and messages[-1]["role"] == role:  # Converse wants turns to alternate
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    given = body.get("messages")
    if not isinstance(given, list) or not given:
        raise RequestNotTranslatable("messages must be a non-empty list")
    for message in given:
        if not isinstance(message, dict):
            raise RequestNotTranslatable("each message must be an object")
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            if _text(content):
                system.append({"text": _text(content)})
        elif role == "user":
            add("user", _blocks(content))
        elif role == "assistant":
            blocks = _blocks(content)
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                try:
                    arguments = orjson.loads(function.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    raise RequestNotTranslatable("tool call arguments are not valid JSON") from None
                blocks.append(
                    {
                        "toolUse": {
                            "toolUseId": call.get("id"),
                            "name": function.get("name"),
                            "input": arguments,
                        }
                    }
                )
            add("assistant", blocks)
        elif role == "tool":
            text = _text(content)
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError:
                parsed = None
            result = [{"json": parsed}] if isinstance(parsed, dict) else [{"text": text}]
            add("user", [{"toolResult": {"toolUseId": message.get("tool_call_id"), "content": result}}])
        else:
            raise RequestNotTranslatable(f"message role {role!r} is not supported for Bedrock")
    request: Json = {"messages": messages}
    if system:
        request["system"] = system
    inference: Json = {}
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or max_output_tokens
    if limit:
        inference["maxTokens"] = limit
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP")):
        if body.get(ours) is not None:
            inference[theirs] = body[ours]
    stop = body.get("stop")
    if stop:
        inference["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if inference:
        request["inferenceConfig"] = inference
    tools = [t.get("function") or {} for t in body.get("tools") or () if t.get("type") == "function"]
    if tools:
        specs = []
        for function in tools:
            spec: Json = {
                "name": function.get("name"),
                "inputSchema": {"json": function.get("parameters") or {"type": "object"}},
            }
            if function.get("description"):
                spec["description"] = function["description"]
            specs.append({"toolSpec": spec})
        config: Json = {"tools": specs}
        choice = body.get("tool_choice")
        if choice == "required":
            config["toolChoice"] = {"any": {}}
        elif isinstance(choice, dict):
            config["toolChoice"] = {"tool": {"name": (choice.get("function") or {}).get("name")}}
        elif choice == "auto":
            config["toolChoice"] = {"auto": {}}
        request["toolConfig"] = config
    return request


def _usage(usage: Any) -> Json:
    usage = usage if isinstance(usage, dict) else {}
    prompt, completion = usage.get("inputTokens") or 0, usage.get("outputTokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def from_converse_response(answer: Json, model: str) -> Json:
    """An OpenAI chat completion for a Converse answer."""
    texts: list[str] = []
    calls: list[Json] = []
    for block in ((answer.get("output") or {}).get("message") or {}).get("content") or ():
        if "text" in block:
            texts.append(str(block["text"]))
        elif "toolUse" in block:
            use = block["toolUse"]
            calls.append(
                {
                    "id": use.get("toolUseId"),
                    "type": "function",
                    "function": {
                        "name": use.get("name"),
                        "arguments": orjson.dumps(use.get("input") or {}).decode(),
                    },
                }
            )
    message: Json = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-bedrock{time.time_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": STOP_REASONS.get(str(answer.get("stopReason")), "stop"),
            }
        ],
        "usage": _usage(answer.get("usage")),
    }


def is_converse_answer(answer: Any) -> bool:
    """A cheap shape check of a 200's body: `output.message.content`, a list of blocks."""
    output = answer.get("output") if isinstance(answer, dict) else None
    message = output.get("message") if isinstance(output, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    return isinstance(content, list) and all(isinstance(block, dict) for block in content)


def error_from_bedrock(status: int, raw: bytes, headers: dict[str, str]) -> UpstreamError:
    """An UpstreamError for a Bedrock error answer (`x-amzn-errortype` and `{"message": ...}`)."""
    message = raw[:300].decode("utf-8", "replace")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        message = str(parsed.get("message") or parsed.get("Message") or message)
    kind = headers.get("x-amzn-errortype", "").split(":", 1)[0]
    if kind:
        message = f"{kind}: {message}"
    if status == 424:  # ModelErrorException: the model failed, not the request
        status = 502
    context = status == 400 and bool(_CONTEXT.search(message))
    return UpstreamError(
        "context_length" if context else "http",
        message,
        status=status,
        retry_after=parse_retry_after(headers.get("retry-after")),
        body=parsed,
    )


class ConverseStreamTranslator:
    """ConverseStream events to OpenAI chunk objects."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.ident = f"chatcmpl-bedrock{time.time_ns()}"
        self.created = int(time.time())
        self.tools: dict[int, int] = {}  # content block index -> tool call index
        self.finish: str | None = None
        self.usage: Json | None = None

    def _chunk(self, delta: Json, finish: str | None = None) -> Json:
        return {
            "id": self.ident,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def feed(self, kind: str, data: Json) -> list[Json]:
        if kind == "messageStart":
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "contentBlockStart":
            use = (data.get("start") or {}).get("toolUse")
            if use:
                index = self.tools[data.get("contentBlockIndex", 0)] = len(self.tools)
                return [
                    self._chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": index,
                                    "id": use.get("toolUseId"),
                                    "type": "function",
                                    "function": {"name": use.get("name"), "arguments": ""},
                                }
                            ]
                        }
                    )
                ]
        elif kind == "contentBlockDelta":
            delta = data.get("delta") or {}
            if "text" in delta:
                return [self._chunk({"content": delta["text"]})]
            if "toolUse" in delta:
                index = self.tools.get(data.get("contentBlockIndex", 0), 0)
                return [
                    self._chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": index,
                                    "function": {"arguments": delta["toolUse"].get("input", "")},
                                }
                            ]
                        }
                    )
                ]
        elif kind == "messageStop":
            self.finish = STOP_REASONS.get(str(data.get("stopReason")), "stop")
        elif kind == "metadata":
            self.usage = _usage(data.get("usage"))
        return []

    def close(self) -> list[Json]:
        if self.finish is None:
            raise UpstreamError("protocol", "Bedrock stream ended before messageStop")
        out = [self._chunk({}, self.finish)]
        if self.include_usage and self.usage is not None:
            out.append({**self._chunk({}), "choices": [], "usage": self.usage})
        return out


class BedrockProvider(Provider):
    def __init__(self, deployment: Deployment, client: HTTPClient) -> None:
        super().__init__(deployment, client)
        if botocore is None:
            raise RuntimeError("provider: bedrock needs botocore: pip install 'pointsman[bedrock]'")
        base = deployment.api_base.rstrip("/")
        model = quote(deployment.model, safe="")
        self.url = f"{base}/model/{model}/converse"
        self.stream_url = f"{base}/model/{model}/converse-stream"
        self.session = botocore.session.Session(profile=deployment.aws_profile)
        self.region = deployment.aws_region or self.session.get_config_variable("region") or "us-east-1"
        self.credentials: Any = None

    async def _signed(self, url: str, payload: bytes) -> dict[str, str]:
        """SigV4 headers for this call, from AWS's credential chain (resolved once, off the loop:
        the chain may read files or ask the instance metadata service; refreshed the same way)."""
        credentials = self.credentials
        if credentials is None or getattr(credentials, "refresh_needed", lambda: False)():
            try:
                credentials = await asyncio.to_thread(self._resolve)
            except Exception as exc:  # botocore's errors: a missing profile, a failed refresh, ...
                raise UpstreamError("http", f"AWS credentials: {exc}", status=401) from None
        if credentials is None:
            raise UpstreamError(
                "http", "no AWS credentials found for this deployment (AWS's standard chain)", status=401
            )
        frozen = credentials.get_frozen_credentials()
        request = AWSRequest(
            method="POST",
            url=url,
            data=payload,
            headers={"content-type": "application/json", **self.deployment.headers},
        )
        SigV4Auth(frozen, "bedrock", self.region).add_auth(request)
        return dict(request.headers.items())

    def _resolve(self) -> Any:
        credentials = self.session.get_credentials()
        if credentials is not None:
            credentials.get_frozen_credentials()  # refreshes now, here, not on the event loop
        self.credentials = credentials
        return credentials

    def _payload(self, body: Json) -> bytes:
        try:
            return orjson.dumps(to_converse_request(body, self.deployment.max_output_tokens))
        except (RequestNotTranslatable, AttributeError, TypeError) as exc:
            raise UpstreamError("http", f"cannot translate for Bedrock: {exc}", status=400) from None

    async def complete(self, body: Json) -> Completion:
        payload = self._payload(body)
        response = await self._post(self.url, payload, await self._signed(self.url, payload), stream=False)
        try:
            raw = await response.read()
        except BaseException as exc:
            response.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise client_error(exc) from None
        if response.status != 200:
            raise error_from_bedrock(response.status, raw, response.headers)
        try:
            native = orjson.loads(raw)
            if not is_converse_answer(native):
                raise TypeError
            answer = from_converse_response(native, str(body.get("model") or self.deployment.model))
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            raise UpstreamError("protocol", "Bedrock answered 200 with an unreadable body") from None
        usage = answer["usage"]
        return Completion(orjson.dumps(answer), usage["prompt_tokens"], usage["completion_tokens"])

    async def stream(self, body: Json, usage: StreamUsage) -> AsyncGenerator[bytes, None]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        translator = ConverseStreamTranslator(str(body.get("model") or self.deployment.model), include_usage)
        payload = self._payload(body)
        headers = await self._signed(self.stream_url, payload)
        response = await self._post(self.stream_url, payload, headers, stream=True)
        try:
            if response.status != 200:
                raw = await response.read()
                raise error_from_bedrock(response.status, raw, response.headers)
            events = EventStreamBuffer()
            async for data in response.chunks():
                events.add_data(data)
                for message in events:
                    headers = message.headers
                    if headers.get(":message-type") != "event":
                        kind = str(headers.get(":exception-type") or headers.get(":error-code") or "error")
                        detail = orjson.loads(message.payload or b"{}").get("message", "")
                        raise UpstreamError(
                            "protocol",
                            f"upstream stream error: {kind}: {detail}",
                            status=_STREAM_EXCEPTIONS.get(kind, 500),
                        )
                    chunks = translator.feed(
                        str(headers.get(":event-type")), orjson.loads(message.payload or b"{}")
                    )
                    for chunk in chunks:
                        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            for chunk in translator.close():
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            if translator.usage:
                usage.prompt_tokens = translator.usage["prompt_tokens"]
                usage.completion_tokens = translator.usage["completion_tokens"]
            yield DONE
        except (UpstreamError, asyncio.CancelledError, GeneratorExit):
            response.close()
            raise
        except Exception as exc:
            response.close()
            raise client_error(exc) from None
        response.release()
