"""A real loopback HTTP server that plays OpenAI- and Anthropic-style LLM deployments.

The first path segment names a simulated deployment; each deployment answers according to its
`Behaviour` (latency, streaming pace, errors, hangs, resets, mid-stream failures, tool calls).
The module reads top to bottom: behaviour, prompt reading, the two API dialects, the server.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import math
import random
import re
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import orjson
from aiohttp import web

Json = dict[str, Any]


@dataclass(slots=True)
class Behaviour:
    """How one simulated deployment answers; the defaults answer successfully at once.

    latency_s: delay before the response headers (streaming: before the first byte).
    tokens_per_s: streaming pace between chunks (0 = as fast as possible).
    reply: the answer text (default: a short text naming the deployment, echoing a short prompt).
    status: if not 200, answer with this status and an error body in the API's own shape.
    body: answer with exactly these bytes (as JSON, with `status`) instead of a generated answer.
    retry_after: seconds sent as a `Retry-After` header on error answers.
    hang: accept the request and never answer.
    reset: abort the TCP connection without any response.
    fail_after_chunks: streaming only: send this many content chunks, then abort the connection.
    context_window: answer 400 "context length exceeded" when the prompt estimate exceeds it.
    failure_rate, failure_status: this share of requests fails with that status (seeded RNG).
    script: behaviours consumed one per generation request before this one applies again.
    tool_call, tool_arguments: call the offered tool with these JSON arguments.
    logprob: the log-probability reported for every word when the request asks for logprobs.
    """

    latency_s: float = 0.0
    tokens_per_s: float = 0.0
    reply: str | None = None
    status: int = 200
    body: bytes | None = None
    retry_after: float | None = None
    hang: bool = False
    reset: bool = False
    fail_after_chunks: int | None = None
    context_window: int | None = None
    failure_rate: float = 0.0
    failure_status: int = 500
    script: list[Behaviour] = field(default_factory=list)
    tool_call: bool = True
    tool_arguments: str = "{}"
    logprob: float = -0.1


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One HTTP request as a deployment received it (header names lower-cased)."""

    path: str
    headers: dict[str, str]
    body: Json


# --- Reading the prompt (both APIs share the message shapes this needs) -----------------------

_CHARS_PER_TOKEN = 4
_IMAGE_TOKENS = 85
_IMAGE_PARTS = frozenset({"image", "image_url", "input_image"})
_TOOL_CALL_TOKENS = 10
_ECHO_MAX_WORDS = 8
# Each word keeps the whitespace before it (as tokenizers do), so joining the pieces restores it.
_WORD = re.compile(r"\s*\S+")


def _measure(content: Any) -> tuple[int, int]:
    # (characters of text, images) in a message content, a system prompt or a tool result.
    if isinstance(content, str):
        return len(content), 0
    chars = images = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind in _IMAGE_PARTS:
                images += 1
            elif kind == "tool_result":
                inner_chars, inner_images = _measure(part.get("content"))
                chars, images = chars + inner_chars, images + inner_images
            elif kind == "tool_use":
                chars += len(orjson.dumps(part.get("input", {})))
            elif isinstance(text := part.get("text"), str):
                chars += len(text)
    return chars, images


def _estimate_prompt_tokens(body: Json) -> int:
    chars, images = _measure(body.get("system"))
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        message_chars, message_images = _measure(message.get("content"))
        chars, images = chars + message_chars, images + message_images
        for call in message.get("tool_calls") or ():
            chars += len(call.get("function", {}).get("arguments") or "")
    return -(-chars // _CHARS_PER_TOKEN) + images * _IMAGE_TOKENS


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(
                p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        return ""
    return ""


def _default_reply(name: str, messages: list[Any]) -> str:
    said = _last_user_text(messages).split()
    if 0 < len(said) <= _ECHO_MAX_WORDS:
        return f"Simulated answer from {name}. You said: {' '.join(said)}"
    return f"Simulated answer from {name}."


@dataclass(slots=True)
class _Answer:
    # What the simulated model says, before a dialect renders it.

    ident: int
    model: str
    pieces: list[str]  # the reply's words, each with its whitespace
    finish: str  # "stop", "length" or "tool"
    tool: str | None
    tool_arguments: str
    prompt_tokens: int
    completion_tokens: int
    logprob: float

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _compose(
    name: str, body: Json, behaviour: Behaviour, dialect: _Dialect, prompt_tokens: int, ident: int
) -> _Answer:
    model = body.get("model")
    model = model if isinstance(model, str) else name
    tool = dialect.tool(body) if behaviour.tool_call else None
    if tool is not None:
        return _Answer(
            ident,
            model,
            [],
            "tool",
            tool,
            behaviour.tool_arguments,
            prompt_tokens,
            _TOOL_CALL_TOKENS,
            behaviour.logprob,
        )
    reply = behaviour.reply
    pieces = _WORD.findall(reply if reply is not None else _default_reply(name, body["messages"]))
    finish = "stop"
    max_tokens = dialect.max_tokens(body)
    if max_tokens is not None and max_tokens < len(pieces):
        pieces = pieces[: max(max_tokens, 0)]
        finish = "length"
    return _Answer(
        ident, model, pieces, finish, None, "", prompt_tokens, len(pieces), behaviour.logprob
    )


def _slices(text: str, size: int = 8) -> list[str]:
    # Tool arguments arrive in several deltas, as from a real model, so clients must accumulate.
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


@dataclass(slots=True)
class _Frames:
    # A streamed answer; `content` holds one frame per word (or tool-argument slice).

    head: list[bytes]
    content: list[bytes]
    tail: list[bytes]


class _Dialect(Protocol):
    def error(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None
    ) -> bytes: ...
    def invalid(self, body: Json) -> bytes | None: ...
    def context_error(self, prompt_tokens: int, window: int) -> bytes: ...
    def tool(self, body: Json) -> str | None: ...
    def max_tokens(self, body: Json) -> int | None: ...
    def render(self, answer: _Answer, body: Json) -> bytes: ...
    def frames(self, answer: _Answer, body: Json) -> _Frames: ...
    def models(self, name: str) -> bytes: ...


# --- OpenAI Chat Completions ------------------------------------------------------------------

_OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("requests", "rate_limit_exceeded"),
}
_OPENAI_FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}


class _OpenAI:
    def error(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None
    ) -> bytes:
        fallback = ("server_error", None) if status >= 500 else ("invalid_request_error", None)
        kind, default_code = _OPENAI_ERRORS.get(status, fallback)
        error = {"message": message, "type": kind, "param": param, "code": code or default_code}
        return orjson.dumps({"error": error})

    def invalid(self, body: Json) -> bytes | None:
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return self.error(
                400,
                "Missing required parameter: 'messages'.",
                code="missing_required_parameter",
                param="messages",
            )
        return None

    def context_error(self, prompt_tokens: int, window: int) -> bytes:
        message = (
            f"This model's maximum context length is {window} tokens. However, your messages "
            f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
        )
        return self.error(400, message, code="context_length_exceeded", param="messages")

    def tool(self, body: Json) -> str | None:
        tools, choice = body.get("tools"), body.get("tool_choice")
        if not tools or choice == "none" or body["messages"][-1].get("role") == "tool":
            return None
        if isinstance(choice, dict) and (forced := (choice.get("function") or {}).get("name")):
            return str(forced)
        return str((tools[0].get("function") or {}).get("name") or tools[0].get("name"))

    def max_tokens(self, body: Json) -> int | None:
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        return limit if isinstance(limit, int) else None

    def _logprobs(self, answer: _Answer, pieces: list[str]) -> Json:
        return {"content": [_logprob_entry(p, answer.logprob) for p in pieces], "refusal": None}

    def _usage(self, answer: _Answer) -> Json:
        return {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        }

    def _call(self, answer: _Answer, arguments: str) -> Json:
        function = {"name": answer.tool, "arguments": arguments}
        return {"id": f"call_fake{answer.ident:016d}", "type": "function", "function": function}

    def render(self, answer: _Answer, body: Json) -> bytes:
        message: Json = {"role": "assistant", "content": answer.text}
        if answer.tool is not None:
            message["content"] = None
            message["tool_calls"] = [self._call(answer, answer.tool_arguments)]
        logprobs = self._logprobs(answer, answer.pieces) if body.get("logprobs") is True else None
        choice = {
            "index": 0,
            "message": message,
            "finish_reason": _OPENAI_FINISH[answer.finish],
            "logprobs": logprobs,
        }
        return orjson.dumps(
            {
                "id": f"chatcmpl-fake{answer.ident:016d}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": answer.model,
                "choices": [choice],
                "usage": self._usage(answer),
                "system_fingerprint": None,
            }
        )

    def frames(self, answer: _Answer, body: Json) -> _Frames:
        base = {
            "id": f"chatcmpl-fake{answer.ident:016d}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": answer.model,
            "system_fingerprint": None,
        }

        def chunk(delta: Json, finish: str | None = None, logprobs: Json | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

        if answer.tool is not None:
            start = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"index": 0, **self._call(answer, "")}],
            }
            content = [chunk(start)] + [
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
                for part in _slices(answer.tool_arguments)
            ]
        else:
            with_logprobs = body.get("logprobs") is True
            content = [
                chunk(
                    {"role": "assistant", "content": piece} if i == 0 else {"content": piece},
                    logprobs=self._logprobs(answer, [piece]) if with_logprobs else None,
                )
                for i, piece in enumerate(answer.pieces or [""])
            ]
        tail = [chunk({}, _OPENAI_FINISH[answer.finish])]
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {**base, "choices": [], "usage": self._usage(answer)}
            tail.append(b"data: " + orjson.dumps(usage) + b"\n\n")
        tail.append(b"data: [DONE]\n\n")
        return _Frames([], content, tail)

    def models(self, name: str) -> bytes:
        model = {"id": name, "object": "model", "created": 0, "owned_by": "pointsman-testing"}
        return orjson.dumps({"object": "list", "data": [model]})


def _logprob_entry(token: str, logprob: float) -> Json:
    top = {"token": token, "logprob": logprob, "bytes": list(token.encode())}
    return {**top, "top_logprobs": [top]}


# --- Anthropic Messages -----------------------------------------------------------------------

_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}


def _event(kind: str, data: Json) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class _Anthropic:
    def error(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None
    ) -> bytes:
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        kind = _ANTHROPIC_ERRORS.get(status, fallback)
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})

    def invalid(self, body: Json) -> bytes | None:
        if not isinstance(body.get("max_tokens"), int):
            return self.error(400, "max_tokens: Field required")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return self.error(400, "messages: Field required")
        return None

    def context_error(self, prompt_tokens: int, window: int) -> bytes:
        return self.error(400, f"prompt is too long: {prompt_tokens} tokens > {window} maximum")

    def tool(self, body: Json) -> str | None:
        tools, choice = body.get("tools"), body.get("tool_choice") or {}
        if not tools or choice.get("type") == "none" or _answers_tool(body["messages"][-1]):
            return None
        if choice.get("type") == "tool" and choice.get("name"):
            return str(choice["name"])
        return str(tools[0].get("name"))

    def max_tokens(self, body: Json) -> int | None:
        return int(body["max_tokens"])

    def _block(self, answer: _Answer, *, empty: bool = False) -> Json:
        # `empty`: the block as content_block_start announces it, before any delta.
        if answer.tool is None:
            return {"type": "text", "text": "" if empty else answer.text}
        return {
            "type": "tool_use",
            "id": f"toolu_fake{answer.ident:016d}",
            "name": answer.tool,
            "input": {} if empty else orjson.loads(answer.tool_arguments),
        }

    def _message(self, answer: _Answer, content: list[Json], stop: str | None, out: int) -> Json:
        return {
            "id": f"msg_fake{answer.ident:016d}",
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": out},
        }

    def render(self, answer: _Answer, body: Json) -> bytes:
        block = self._block(answer)
        stop = _ANTHROPIC_STOP[answer.finish]
        return orjson.dumps(self._message(answer, [block], stop, answer.completion_tokens))

    def frames(self, answer: _Answer, body: Json) -> _Frames:
        head = [
            _event(
                "message_start",
                {
                    "type": "message_start",
                    "message": self._message(answer, [], None, 1),
                },
            ),
            _event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": self._block(answer, empty=True),
                },
            ),
            _event("ping", {"type": "ping"}),
        ]
        if answer.tool is None:
            deltas = [{"type": "text_delta", "text": piece} for piece in answer.pieces]
        else:
            deltas = [
                {"type": "input_json_delta", "partial_json": part}
                for part in _slices(answer.tool_arguments)
            ]
        content = [
            _event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
            for d in deltas
        ]
        tail = [
            _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": _ANTHROPIC_STOP[answer.finish], "stop_sequence": None},
                    "usage": {"output_tokens": answer.completion_tokens},
                },
            ),
            _event("message_stop", {"type": "message_stop"}),
        ]
        return _Frames(head, content, tail)

    def models(self, name: str) -> bytes:
        model = {
            "type": "model",
            "id": name,
            "display_name": name,
            "created_at": "2025-01-01T00:00:00Z",
        }
        return orjson.dumps({"data": [model], "has_more": False, "first_id": name, "last_id": name})


# --- OpenAI Responses -------------------------------------------------------------------------


def _responses_view(body: Json) -> Json:
    # The Responses request seen as chat-like messages, for the prompt estimate and the echo.
    items = body.get("input")
    items = [{"role": "user", "content": items}] if isinstance(items, str) else items
    messages: list[Json] = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            content = item.get("content")
            if isinstance(content, list):
                content = [
                    {"type": "text", "text": p.get("text", "")} if "text" in p else p
                    for p in content
                    if isinstance(p, dict)
                ]
            messages.append({"role": item.get("role"), "content": content})
        elif kind == "function_call":
            call = {"function": {"name": item.get("name"), "arguments": item.get("arguments") or ""}}
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": item.get("output")})
    return {**body, "messages": messages, "system": body.get("instructions")}


class _Responses(_OpenAI):
    def invalid(self, body: Json) -> bytes | None:
        if not body.get("input"):
            return self.error(
                400, "Missing required parameter: 'input'.", code="missing_required_parameter", param="input"
            )
        return None

    def tool(self, body: Json) -> str | None:
        tools, choice = body.get("tools"), body.get("tool_choice")
        if not tools or choice == "none" or (body["messages"] and body["messages"][-1].get("role") == "tool"):
            return None
        if isinstance(choice, dict) and choice.get("name"):
            return str(choice["name"])
        return str(tools[0].get("name"))

    def max_tokens(self, body: Json) -> int | None:
        limit = body.get("max_output_tokens")
        return limit if isinstance(limit, int) else None

    def _item(self, answer: _Answer, text: str, arguments: str, status: str) -> Json:
        if answer.tool is not None:
            return {
                "type": "function_call",
                "id": f"fc_fake{answer.ident:016d}",
                "call_id": f"call_fake{answer.ident:016d}",
                "name": answer.tool,
                "arguments": arguments,
                "status": status,
            }
        content = [] if status == "in_progress" else [self._text_part(text)]
        return {
            "type": "message",
            "id": f"msg_fake{answer.ident:016d}",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def _text_part(self, text: str) -> Json:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _response(self, answer: _Answer, body: Json, status: str, output: list[Json]) -> Json:
        done = status != "in_progress"
        if done and answer.finish == "length":
            status = "incomplete"
        usage = {
            "input_tokens": answer.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": answer.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        }
        return {
            "id": f"resp_fake{answer.ident:016d}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": answer.model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "store": body.get("store", True),
            "temperature": body.get("temperature"),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p"),
            "truncation": "disabled",
            "usage": usage if done else None,
            "metadata": body.get("metadata") or {},
        }

    def render(self, answer: _Answer, body: Json) -> bytes:
        item = self._item(answer, answer.text, answer.tool_arguments, "completed")
        return orjson.dumps(self._response(answer, body, "completed", [item]))

    def frames(self, answer: _Answer, body: Json) -> _Frames:
        sequence = itertools.count()

        def event(kind: str, **data: Any) -> bytes:
            return _event(kind, {"type": kind, "sequence_number": next(sequence), **data})

        pending = self._response(answer, body, "in_progress", [])
        head = [event("response.created", response=pending), event("response.in_progress", response=pending)]
        started = self._item(answer, "", "", "in_progress")
        head.append(event("response.output_item.added", output_index=0, item=started))
        where: Json = {"item_id": started["id"], "output_index": 0}
        if answer.tool is not None:
            content = [
                event("response.function_call_arguments.delta", **where, delta=part)
                for part in _slices(answer.tool_arguments)
            ]
            arguments = answer.tool_arguments
            name = answer.tool
            tail = [event("response.function_call_arguments.done", **where, name=name, arguments=arguments)]
        else:
            empty = self._text_part("")
            head.append(event("response.content_part.added", **where, content_index=0, part=empty))
            content = [
                event("response.output_text.delta", **where, content_index=0, delta=piece, logprobs=[])
                for piece in answer.pieces or [""]
            ]
            done = self._text_part(answer.text)
            tail = [
                event("response.output_text.done", **where, content_index=0, text=answer.text, logprobs=[]),
                event("response.content_part.done", **where, content_index=0, part=done),
            ]
        item = self._item(answer, answer.text, answer.tool_arguments, "completed")
        tail.append(event("response.output_item.done", output_index=0, item=item))
        final = self._response(answer, body, "completed", [item])
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        tail.append(event(kind, response=final))
        return _Frames(head, content, tail)


# --- OpenAI Embeddings ------------------------------------------------------------------------

_EMBEDDING_DIMENSIONS = 8


def embedding_of(text: str | list[int], dimensions: int = _EMBEDDING_DIMENSIONS) -> list[float]:
    """The fake's vector for one input: the same input always gets the same unit vector."""
    seed = orjson.dumps(text)
    raw = b""
    counter = 0
    while len(raw) < 4 * dimensions:
        raw += hashlib.blake2b(seed + counter.to_bytes(4, "little"), digest_size=64).digest()
        counter += 1
    values = [int.from_bytes(raw[4 * i : 4 * i + 4], "little") / 2**31 - 1.0 for i in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _embeddings(body: Json) -> web.Response:
    inputs = body.get("input")
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or any(i in ("", []) for i in inputs):
        message = "'$.input' is invalid: expected a non-empty string or array."
        return _json(400, _OPENAI.error(400, message, param="input"))
    dimensions = body.get("dimensions")
    dimensions = dimensions if isinstance(dimensions, int) and dimensions > 0 else _EMBEDDING_DIMENSIONS
    data = []
    tokens = 0
    for index, item in enumerate(inputs):
        tokens += len(item) if isinstance(item, list) else -(-len(str(item)) // _CHARS_PER_TOKEN)
        vector = embedding_of(item, dimensions)
        encoded: Any = vector
        if body.get("encoding_format") == "base64":
            # Little-endian float32, as the OpenAI API sends (and its client decodes) them.
            encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    payload = {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return _json(200, orjson.dumps(payload))


def _answers_tool(message: Any) -> bool:
    content = message.get("content") if isinstance(message, dict) else None
    return isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") == "tool_result" for part in content
    )


_OPENAI, _ANTHROPIC, _RESPONSES_API = _OpenAI(), _Anthropic(), _Responses()


# --- The server -------------------------------------------------------------------------------

_CHAT, _MESSAGES, _MODELS = "chat", "messages", "models"
_EMBEDDINGS, _RESPONSES = "embeddings", "responses"
_ENDPOINTS = {
    "v1/responses": _RESPONSES,
    "responses": _RESPONSES,
    "v1/embeddings": _EMBEDDINGS,
    "embeddings": _EMBEDDINGS,
    "v1/chat/completions": _CHAT,
    "chat/completions": _CHAT,
    "v1/messages": _MESSAGES,
    "messages": _MESSAGES,
    "v1/models": _MODELS,
    "models": _MODELS,
}
_JSON_HEADERS = {"Content-Type": "application/json"}
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_SHUTDOWN_TIMEOUT_S = 0.25


def _endpoint(rest: str) -> str | None:
    endpoint = _ENDPOINTS.get(rest)
    if endpoint is None and rest.startswith("openai/deployments/"):
        return _CHAT if rest.endswith("/chat/completions") else None
    return endpoint


def _json(status: int, payload: bytes, headers: dict[str, str] = _JSON_HEADERS) -> web.Response:
    return web.Response(body=payload, status=status, headers=headers)


async def _until_cancelled() -> NoReturn:
    # The server cancels a handler when its client goes away (handler_cancellation=True).
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")


async def _abort(request: web.BaseRequest) -> NoReturn:
    transport = request.transport
    if transport is not None:
        # abort() drops buffered bytes: let the chunks already written reach the client first.
        while transport.get_write_buffer_size():
            await asyncio.sleep(0.001)
        transport.abort()
    await _until_cancelled()


class _Deployment:
    __slots__ = ("behaviour", "script_pos", "calls", "received")

    def __init__(self, behaviour: Behaviour, keep_requests: int) -> None:
        self.behaviour = behaviour
        self.script_pos = 0
        self.calls = 0
        # Raw (path, headers, body); header decoding waits until a test asks, off the hot path.
        self.received: deque[tuple[str, Any, Json]] = deque(maxlen=keep_requests)


class FakeUpstream:
    """A loopback HTTP server speaking the OpenAI Chat Completions and Anthropic Messages APIs.

    `{url}/{name}/v1/chat/completions`, `{url}/{name}/v1/messages`, `{url}/{name}/v1/models`,
    `{url}/{name}/v1/embeddings` and `{url}/{name}/v1/responses` (the OpenAI Responses API)
    are served for every deployment name; `set(name, Behaviour(...))` scripts how one answers.
    Run it in its own thread (`start`/`stop`, or `with`) or in a running loop (`astart`/`astop`).
    Each deployment remembers its last `keep_requests` requests. All methods are thread-safe.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, seed: int = 0, *, keep_requests: int = 10_000
    ) -> None:
        self.host = host
        self.port = port
        self._seed = seed
        self._keep_requests = keep_requests
        self._lock = threading.Lock()
        self._deployments: dict[str, _Deployment] = {}
        self._rng = random.Random(seed)
        self._ids = itertools.count(1)
        self._runner: web.ServerRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. "http://127.0.0.1:43123"."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # Scripting and inspection, called from the test thread.

    def set(self, name: str, behaviour: Behaviour) -> None:
        """Make deployment `name` answer with `behaviour` (its script starts from the top)."""
        with self._lock:
            deployment = self._deployment(name)
            deployment.behaviour = behaviour
            deployment.script_pos = 0

    def behaviour(self, name: str) -> Behaviour:
        """The behaviour set for `name`, or a default `Behaviour()`."""
        with self._lock:
            deployment = self._deployments.get(name)
            return deployment.behaviour if deployment else Behaviour()

    def calls(self, name: str) -> int:
        """How many HTTP requests reached deployment `name` (any of its endpoints)."""
        with self._lock:
            deployment = self._deployments.get(name)
            return deployment.calls if deployment else 0

    def requests(self, name: str) -> list[ReceivedRequest]:
        """The requests deployment `name` received, oldest first."""
        with self._lock:
            deployment = self._deployments.get(name)
            received = list(deployment.received) if deployment else []
        return [
            ReceivedRequest(
                path,
                {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers},
                body,
            )
            for path, raw_headers, body in received
        ]

    def reset(self) -> None:
        """Forget all behaviours, counters and received requests (and restart the RNG)."""
        with self._lock:
            self._deployments.clear()
            self._rng = random.Random(self._seed)

    def _deployment(self, name: str) -> _Deployment:
        deployment = self._deployments.get(name)
        if deployment is None:
            deployment = self._deployments[name] = _Deployment(Behaviour(), self._keep_requests)
        return deployment

    def _arrive(
        self, name: str, request: web.BaseRequest, body: Json, generating: bool
    ) -> tuple[Behaviour, bool]:
        # Count and record a request; return the behaviour it meets and whether it fails.
        with self._lock:
            deployment = self._deployment(name)
            deployment.calls += 1
            deployment.received.append((request.path, request.raw_headers, body))
            behaviour = deployment.behaviour
            if not generating:
                return behaviour, False
            if deployment.script_pos < len(behaviour.script):
                behaviour = behaviour.script[deployment.script_pos]
                deployment.script_pos += 1
            failing = behaviour.failure_rate > 0 and self._rng.random() < behaviour.failure_rate
            return behaviour, failing

    # Serving.

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        name, _, rest = path[1:].partition("/")
        endpoint = _endpoint(rest.rstrip("/"))
        if endpoint is None:
            if path == "/healthz":
                return web.Response(text="ok")
            return _json(404, _OPENAI.error(404, f"Unknown path {path}."))
        anthropic = endpoint == _MESSAGES or (
            endpoint == _MODELS and "anthropic-version" in request.headers
        )
        dialect: _Dialect = _ANTHROPIC if anthropic else _OPENAI
        if endpoint == _RESPONSES:
            dialect = _RESPONSES_API
        if request.method != ("GET" if endpoint == _MODELS else "POST"):
            return _json(405, dialect.error(405, f"Method {request.method} not allowed."))

        body: Any = {}
        if endpoint != _MODELS:
            raw = await request.content.read()
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                self._arrive(name, request, {}, generating=False)
                return _json(400, dialect.error(400, "The request body is not a JSON object."))
        behaviour, failing = self._arrive(name, request, body, generating=endpoint != _MODELS)

        if behaviour.reset:
            await _abort(request)
        if behaviour.hang:
            await _until_cancelled()
        if behaviour.latency_s > 0:
            await asyncio.sleep(behaviour.latency_s)
        status = behaviour.failure_status if failing else behaviour.status
        if behaviour.body is not None:
            return _json(status, behaviour.body)
        if status != 200:
            return self._error(dialect, status, name, behaviour.retry_after)
        if endpoint == _MODELS:
            return _json(200, dialect.models(name))

        if endpoint == _EMBEDDINGS:
            return _embeddings(body)
        if endpoint == _RESPONSES:
            body = _responses_view(body)
        invalid = dialect.invalid(body)
        if invalid is not None:
            return _json(400, invalid)
        prompt_tokens = _estimate_prompt_tokens(body)
        window = behaviour.context_window
        if window is not None and prompt_tokens > window:
            return _json(400, dialect.context_error(prompt_tokens, window))
        answer = _compose(name, body, behaviour, dialect, prompt_tokens, next(self._ids))
        if body.get("stream") is True:
            return await self._stream(request, dialect.frames(answer, body), behaviour)
        return _json(200, dialect.render(answer, body))

    def _error(
        self, dialect: _Dialect, status: int, name: str, retry_after: float | None
    ) -> web.Response:
        headers = _JSON_HEADERS
        if retry_after is not None:
            seconds = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
            headers = {**_JSON_HEADERS, "Retry-After": seconds}
        message = f"Simulated error {status} from deployment {name}."
        return _json(status, dialect.error(status, message), headers)

    async def _stream(
        self, request: web.BaseRequest, frames: _Frames, behaviour: Behaviour
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        failing = behaviour.fail_after_chunks is not None
        content = frames.content[: behaviour.fail_after_chunks] if failing else frames.content
        tail = [] if failing else frames.tail
        if behaviour.tokens_per_s > 0:
            pause = 1.0 / behaviour.tokens_per_s
            await response.write(b"".join(frames.head))
            for i, frame in enumerate(content):
                if i:
                    await asyncio.sleep(pause)
                await response.write(frame)
            await response.write(b"".join(tail))
        else:
            await response.write(b"".join([*frames.head, *content, *tail]))
        if failing:
            await _abort(request)
        await response.write_eof()
        return response

    # Lifecycle.

    async def astart(self) -> None:
        """Start serving inside the running event loop; returns once listening."""
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=1024)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def astop(self) -> None:
        """Stop serving; requests still open are cut off."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def start(self) -> None:
        """Start serving in a daemon thread with its own event loop; returns once listening."""
        loop = _new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.astart())
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                started.set()
            loop.run_forever()

        thread = threading.Thread(target=serve, name="pointsman-fake-upstream", daemon=True)
        thread.start()
        started.wait()
        if failure:
            thread.join()
            loop.close()
            raise failure[0]
        self._loop, self._thread = loop, thread

    def stop(self) -> None:
        """Stop the server started by `start`."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.astop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> FakeUpstream:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeUpstream:
        await self.astart()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.astop()


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
