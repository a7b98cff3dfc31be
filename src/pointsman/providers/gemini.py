"""Google Gemini's native API (`generateContent`, `streamGenerateContent?alt=sse`), translated to and
from the internal OpenAI shape. API-key auth (`x-goog-api-key`); no SDK needed."""

from __future__ import annotations

import asyncio
import base64
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

Json = dict[str, Any]

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
# OpenAI sampling options and their generationConfig names.
_GENERATION = {
    "temperature": "temperature",
    "top_p": "topP",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "n": "candidateCount",
}
_DURATION = re.compile(r"([\d.]+)s")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _parts(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        return []
    parts: list[Json] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            parts.append({"text": str(part.get("text", ""))})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            mime, data = parse_data_url(str(url or ""))
            parts.append({"inlineData": {"mimeType": mime, "data": data}})
        else:
            raise RequestNotTranslatable(f"content part type {kind!r} is not supported for Gemini")
    return parts


def _arguments(raw: Any) -> Json:
    if isinstance(raw, dict):
        return raw
    try:
        parsed = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        raise RequestNotTranslatable("tool call arguments are not valid JSON") from None
    if not isinstance(parsed, dict):
        raise RequestNotTranslatable("tool call arguments must be a JSON object")
    return parsed


def _tool_result(content: Any) -> Json:
    # functionResponse.response is an object: a JSON object result passes as is, anything else
    # is wrapped.
    text = _text_of(content)
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"result": text}


def to_gemini_request(body: Json, max_output_tokens: int | None) -> Json:
    """The `generateContent` body for an OpenAI chat completions body."""
    system: list[Json] = []
    contents: list[Json] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for the results

    def add(role: str, parts: list[Json]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:  # Gemini wants turns to alternate
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestNotTranslatable("messages must be a non-empty list")
    for message in messages:
        if not isinstance(message, dict):
            raise RequestNotTranslatable("each message must be an object")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = _text_of(content)
            if text:
                system.append({"text": text})
        elif role == "user":
            add("user", _parts(content))
        elif role == "assistant":
            parts = _parts(content)
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                name = str(function.get("name") or "")
                names[str(call.get("id"))] = name
                parts.append({"functionCall": {"name": name, "args": _arguments(function.get("arguments"))}})
            add("model", parts)
        elif role == "tool":
            call_id = str(message.get("tool_call_id"))
            if call_id not in names:
                raise RequestNotTranslatable(f"tool result {call_id!r} answers no earlier tool call")
            add("user", [{"functionResponse": {"name": names[call_id], "response": _tool_result(content)}}])
        else:
            raise RequestNotTranslatable(f"message role {role!r} is not supported for Gemini")
    if not contents:
        raise RequestNotTranslatable("the conversation has no user or assistant content")
    request: Json = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    generation: Json = {k2: body[k] for k, k2 in _GENERATION.items() if body.get(k) is not None}
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or max_output_tokens
    if limit:
        generation["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        generation["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_object":
        generation["responseMimeType"] = "application/json"
    elif response_format.get("type") == "json_schema":
        generation["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema:
            generation["responseJsonSchema"] = schema
    if generation:
        request["generationConfig"] = generation
    tools = [t.get("function") for t in body.get("tools") or () if t.get("type") == "function"]
    if tools:
        declarations = []
        for function in tools:
            declaration: Json = {"name": function.get("name")}
            if function.get("description"):
                declaration["description"] = function["description"]
            if function.get("parameters"):
                declaration["parametersJsonSchema"] = function["parameters"]
            declarations.append(declaration)
        request["tools"] = [{"functionDeclarations": declarations}]
    choice = body.get("tool_choice")
    if choice is not None and tools:
        config: Json
        if choice == "none":
            config = {"mode": "NONE"}
        elif choice == "required":
            config = {"mode": "ANY"}
        elif isinstance(choice, dict):
            config = {"mode": "ANY", "allowedFunctionNames": [(choice.get("function") or {}).get("name")]}
        else:
            config = {"mode": "AUTO"}
        request["toolConfig"] = {"functionCallingConfig": config}
    return request


def _usage(metadata: Any) -> Json:
    metadata = metadata if isinstance(metadata, dict) else {}
    prompt = metadata.get("promptTokenCount") or 0
    # Thinking tokens are billed as output.
    completion = (metadata.get("candidatesTokenCount") or 0) + (metadata.get("thoughtsTokenCount") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _call_id() -> str:
    return "call_" + base64.b32encode(time.time_ns().to_bytes(8, "big")).decode().lower().rstrip("=")


def _message(parts: Any) -> tuple[str | None, list[Json]]:
    texts: list[str] = []
    calls: list[Json] = []
    for part in parts:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if "text" in part:
            texts.append(str(part["text"]))
        elif "functionCall" in part:
            call = part["functionCall"]
            calls.append(
                {
                    "id": call.get("id") or f"{_call_id()}{len(calls)}",
                    "type": "function",
                    "function": {
                        "name": call.get("name"),
                        "arguments": orjson.dumps(call.get("args") or {}).decode(),
                    },
                }
            )
    return ("".join(texts) if texts or not calls else None), calls


def _finish(candidate: Json, has_calls: bool) -> str:
    if has_calls:
        return "tool_calls"
    return FINISH_REASONS.get(str(candidate.get("finishReason")), "stop")


def from_gemini_response(answer: Json, model: str) -> Json:
    """An OpenAI chat completion for a `generateContent` answer."""
    choices = []
    for index, candidate in enumerate(answer.get("candidates") or ()):
        text, calls = _message((candidate.get("content") or {}).get("parts") or ())
        message: Json = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": index, "message": message, "finish_reason": _finish(candidate, bool(calls))})
    if not choices:  # the prompt itself was blocked (promptFeedback.blockReason)
        choices.append(
            {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"}
        )
    return {
        "id": "chatcmpl-" + str(answer.get("responseId") or _call_id()),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": _usage(answer.get("usageMetadata")),
    }


def is_gemini_answer(answer: Any) -> bool:
    """A cheap shape check of a 200's body: candidates (a list of objects), or none with the
    prompt feedback that says why (a blocked prompt)."""
    if not isinstance(answer, dict):
        return False
    candidates = answer.get("candidates")
    if isinstance(candidates, list) and candidates:
        return all(isinstance(candidate, dict) for candidate in candidates)
    return candidates in (None, []) and isinstance(answer.get("promptFeedback"), dict)


def error_from_gemini(status: int, raw: bytes, retry_after: str | None) -> UpstreamError:
    """An UpstreamError for a Gemini error answer (`{"error": {code, message, status, details}}`)."""
    message = raw[:300].decode("utf-8", "replace")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    wait = parse_retry_after(retry_after)
    reasons: set[str] = set()
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        message = str(error.get("message") or message)
        for detail in error.get("details") or ():
            if not isinstance(detail, dict):
                continue
            reasons.add(str(detail.get("reason")))
            delay = _DURATION.fullmatch(str(detail.get("retryDelay") or ""))
            if delay and wait is None:  # google.rpc.RetryInfo
                wait = float(delay.group(1))
    kind = "http"
    if status == 400 and "API_KEY_INVALID" in reasons:
        status = 401  # Gemini answers a bad key with 400: it is the deployment's fault, not the request's
    elif status == 400 and re.search(
        r"input token count|exceeds the maximum number of tokens", message, re.I
    ):
        kind = "context_length"
    return UpstreamError(kind, message, status=status, retry_after=wait, body=parsed)


class GeminiStreamTranslator:
    """Gemini stream chunks (whole `GenerateContentResponse`s) to OpenAI chunk objects."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.ident = "chatcmpl-" + _call_id()
        self.created = int(time.time())
        self.started = False
        self.calls = 0
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

    def feed(self, data: Json) -> list[Json]:
        out: list[Json] = []
        if not self.started:
            self.started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        if data.get("usageMetadata"):
            self.usage = _usage(data["usageMetadata"])
        candidates = data.get("candidates") or ()
        if not candidates and (data.get("promptFeedback") or {}).get("blockReason"):
            self.finish = "content_filter"
        for candidate in candidates[:1]:
            for part in (candidate.get("content") or {}).get("parts") or ():
                if not isinstance(part, dict) or part.get("thought"):
                    continue
                if part.get("text"):
                    out.append(self._chunk({"content": part["text"]}))
                elif "functionCall" in part:
                    call = part["functionCall"]
                    out.append(
                        self._chunk(
                            {
                                "tool_calls": [
                                    {
                                        "index": self.calls,
                                        "id": call.get("id") or f"{_call_id()}{self.calls}",
                                        "type": "function",
                                        "function": {
                                            "name": call.get("name"),
                                            "arguments": orjson.dumps(call.get("args") or {}).decode(),
                                        },
                                    }
                                ]
                            }
                        )
                    )
                    self.calls += 1
            if candidate.get("finishReason"):
                self.finish = _finish(candidate, self.calls > 0)
        return out

    def close(self) -> list[Json]:
        """The final chunks once the upstream stream has ended."""
        if self.finish is None:
            raise UpstreamError("protocol", "Gemini stream ended without a finish reason")
        out = [self._chunk({}, self.finish)]
        if self.include_usage and self.usage is not None:
            out.append({**self._chunk({}), "choices": [], "usage": self.usage})
        return out


class GeminiProvider(Provider):
    def __init__(self, deployment: Deployment, client: HTTPClient) -> None:
        super().__init__(deployment, client)
        base = deployment.api_base.rstrip("/")
        if not re.search(r"/v1(beta|alpha)?\d*$", base):
            base += "/v1beta"
        model = deployment.model.removeprefix("models/")
        self.url = f"{base}/models/{quote(model, safe='')}:generateContent"
        self.stream_url = f"{base}/models/{quote(model, safe='')}:streamGenerateContent?alt=sse"
        self.headers = {"content-type": "application/json", **deployment.headers}
        if deployment.api_key:
            self.headers.setdefault("x-goog-api-key", deployment.api_key)

    def _payload(self, body: Json) -> bytes:
        try:
            return orjson.dumps(to_gemini_request(body, self.deployment.max_output_tokens))
        except (RequestNotTranslatable, AttributeError, TypeError) as exc:
            raise UpstreamError("http", f"cannot translate for Gemini: {exc}", status=400) from None

    async def complete(self, body: Json) -> Completion:
        payload = self._payload(body)
        response = await self._post(self.url, payload, self.headers, stream=False)
        try:
            raw = await response.read()
        except BaseException as exc:
            response.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise client_error(exc) from None
        if response.status != 200:
            raise error_from_gemini(response.status, raw, response.headers.get("retry-after"))
        try:
            native = orjson.loads(raw)
            if not is_gemini_answer(native):
                raise TypeError
            answer = from_gemini_response(native, str(body.get("model") or self.deployment.model))
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            raise UpstreamError("protocol", "Gemini answered 200 with an unreadable body") from None
        usage = answer["usage"]
        return Completion(orjson.dumps(answer), usage["prompt_tokens"], usage["completion_tokens"])

    async def stream(self, body: Json, usage: StreamUsage) -> AsyncGenerator[bytes, None]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        translator = GeminiStreamTranslator(str(body.get("model") or self.deployment.model), include_usage)
        payload = self._payload(body)
        response = await self._post(self.stream_url, payload, self.headers, stream=True)
        try:
            if response.status != 200:
                raw = await response.read()
                raise error_from_gemini(response.status, raw, response.headers.get("retry-after"))
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue
                data = orjson.loads(line[5:])
                if isinstance(data, dict) and isinstance(data.get("error"), dict):
                    error = data["error"]
                    raise UpstreamError(
                        "protocol", f"upstream stream error: {error.get('message')}", status=error.get("code")
                    )
                for chunk in translator.feed(data):
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
