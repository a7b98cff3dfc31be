"""Translation between OpenAI Chat Completions shapes and Anthropic Messages shapes.

Pure functions over plain dicts: no I/O and no SDK imports. The OpenAI shape is the router's
internal shape; the Anthropic provider calls the `to_anthropic_*` / `from_anthropic_*` pair on the
way out and back, and the inbound Anthropic endpoint uses the reverse pair.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

__all__ = [
    "AnthropicStreamTranslator",
    "OpenAIToAnthropicStream",
    "TranslationError",
    "UpstreamStreamError",
    "anthropic_error_status",
    "from_anthropic_request",
    "from_anthropic_response",
    "is_context_length_error",
    "to_anthropic_request",
    "to_anthropic_response",
]

_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_ERROR_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    # Anthropic's own 529 is unknown to most HTTP clients; 503 means the same and is retried.
    "overloaded_error": 503,
}
_CONTEXT_LENGTH_MARKERS = (
    "prompt is too long",
    "exceed context limit",
    "exceeds the context window",
    "context length",
)


class TranslationError(ValueError):
    """A request or response that cannot be expressed in the other API's shape."""


class UpstreamStreamError(Exception):
    """An `error` event received in the middle of an Anthropic stream."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message

    @property
    def status(self) -> int:
        """The HTTP status this error would have had as a plain response."""
        return anthropic_error_status(self.error_type)


# --- OpenAI request -> Anthropic request ---------------------------------------------------------


def to_anthropic_request(
    body: dict[str, Any], model_id: str, default_max_tokens: int = 4096
) -> dict[str, Any]:
    """Translate an OpenAI chat request into an Anthropic Messages request for `model_id`.

    Fields Anthropic has no equivalent for are dropped; anything whose meaning would be lost
    (n > 1, audio, legacy function calling, unknown roles, malformed tool arguments) raises
    `TranslationError`.
    """
    n = body.get("n")
    if n is not None and n > 1:
        raise TranslationError(
            f"n={n} is not supported: Anthropic models return one choice per request"
        )
    if body.get("functions") or body.get("function_call"):
        raise TranslationError(
            "legacy `functions`/`function_call` are not supported; use `tools` and `tool_choice`"
        )
    if "audio" in (body.get("modalities") or []) or body.get("audio"):
        raise TranslationError("audio output is not supported by Anthropic models")

    system_parts: list[str] = []
    messages: list[dict[str, Any]] = []
    for position, message in enumerate(body.get("messages") or []):
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"), f"messages[{position}]")
            if text:
                system_parts.append(text)
        elif role == "user":
            blocks = _user_blocks(message.get("content"), f"messages[{position}]")
            _append_turn(messages, "user", blocks)
        elif role == "assistant":
            _append_turn(messages, "assistant", _assistant_blocks(message, position))
        elif role == "tool":
            _append_turn(messages, "user", [_tool_result_block(message, position)])
        elif role == "function":
            raise TranslationError(
                f"messages[{position}]: the legacy `function` role is not supported; "
                "use `tool` messages with `tool_call_id`"
            )
        else:
            raise TranslationError(f"messages[{position}]: unknown role {role!r}")

    response_format_line = _response_format_instruction(body.get("response_format"))
    if response_format_line:
        system_parts.append(response_format_line)

    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    out: dict[str, Any] = {
        "model": model_id,
        "max_tokens": default_max_tokens if max_tokens is None else max_tokens,
        "messages": messages,
    }
    if system_parts:
        out["system"] = "\n\n".join(system_parts)

    tools, tool_choice = _tools_and_choice(body)
    if tools:
        out["tools"] = tools
        if tool_choice is not None:
            out["tool_choice"] = tool_choice

    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif stop:
        out["stop_sequences"] = list(stop)
    temperature = body.get("temperature")
    if temperature is not None:
        # OpenAI accepts 0..2, Anthropic 0..1.
        out["temperature"] = min(float(temperature), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    if body.get("stream") is not None:
        out["stream"] = bool(body["stream"])
    user = body.get("user") or body.get("safety_identifier")
    if user:
        out["metadata"] = {"user_id": user}
    return out


def _append_turn(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    # Anthropic requires user/assistant alternation, so same-role neighbours become one turn.
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _text_of(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") != "text":
            raise TranslationError(
                f"{where}: only text parts are allowed here, got {part.get('type')!r}"
            )
        texts.append(part.get("text", ""))
    return "\n\n".join(texts)


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for index, part in enumerate(content):
        block = _content_part_block(part, f"{where}.content[{index}]")
        if block is not None:
            blocks.append(block)
    return blocks


def _content_part_block(part: dict[str, Any], where: str) -> dict[str, Any] | None:
    kind = part.get("type")
    block: dict[str, Any]
    if kind in ("text", "refusal"):
        text = part.get(kind, "")
        if not text:
            # Anthropic rejects empty text blocks.
            return None
        block = {"type": "text", "text": text}
    elif kind == "image_url":
        image_url = part.get("image_url")
        url = image_url.get("url", "") if isinstance(image_url, dict) else image_url or ""
        block = {"type": "image", "source": _image_source(url, where)}
    elif kind == "file":
        block = _document_block(part.get("file") or {}, where)
    elif kind == "input_audio":
        raise TranslationError(f"{where}: audio input is not supported by Anthropic models")
    else:
        raise TranslationError(f"{where}: unsupported content part type {kind!r}")
    # Honour prompt-cache breakpoints that OpenAI-format clients attach Anthropic-style.
    if part.get("cache_control"):
        block["cache_control"] = part["cache_control"]
    return block


def _image_source(url: str, where: str) -> dict[str, Any]:
    if url.startswith("data:"):
        media_type, data = _parse_data_url(url, where)
        if media_type not in _IMAGE_MEDIA_TYPES:
            raise TranslationError(
                f"{where}: image type {media_type!r} is not supported; "
                f"use one of {', '.join(sorted(_IMAGE_MEDIA_TYPES))}"
            )
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise TranslationError(f"{where}: image_url must be a data: URL or an http(s) URL")


def _document_block(file: dict[str, Any], where: str) -> dict[str, Any]:
    file_data = file.get("file_data")
    if not file_data:
        raise TranslationError(
            f"{where}: file parts need inline `file_data`; file ids are not supported"
        )
    if file_data.startswith("data:"):
        media_type, data = _parse_data_url(file_data, where)
    else:
        media_type, data = "application/pdf", file_data
    if media_type != "application/pdf":
        raise TranslationError(f"{where}: only PDF files are supported, got {media_type!r}")
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": media_type, "data": data},
    }
    if file.get("filename"):
        block["title"] = file["filename"]
    return block


def _parse_data_url(url: str, where: str) -> tuple[str, str]:
    header, sep, data = url[len("data:") :].partition(",")
    media_type, _, encoding = header.partition(";")
    if not sep or encoding != "base64":
        raise TranslationError(
            f"{where}: data URLs must be base64-encoded (data:<type>;base64,...)"
        )
    return media_type.lower(), data


def _assistant_blocks(message: dict[str, Any], position: int) -> list[dict[str, Any]]:
    where = f"messages[{position}]"
    if message.get("function_call"):
        raise TranslationError(
            f"{where}: legacy `function_call` is not supported; use `tool_calls`"
        )
    if message.get("audio"):
        raise TranslationError(f"{where}: assistant audio is not supported by Anthropic models")
    blocks = _user_blocks(message.get("content"), where)
    for index, call in enumerate(message.get("tool_calls") or []):
        call_where = f"{where}.tool_calls[{index}]"
        if call.get("type", "function") != "function":
            raise TranslationError(f"{call_where}: only function tool calls are supported")
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _parse_arguments(function.get("arguments"), call_where),
            }
        )
    return blocks


def _parse_arguments(arguments: Any, where: str) -> dict[str, Any]:
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments)
    except (TypeError, json.JSONDecodeError) as exc:
        raise TranslationError(
            f"{where}: function.arguments is not valid JSON ({exc}): {str(arguments)[:200]!r}"
        ) from exc
    if not isinstance(parsed, dict):
        raise TranslationError(
            f"{where}: function.arguments must be a JSON object, got {type(parsed).__name__}"
        )
    return parsed


def _tool_result_block(message: dict[str, Any], position: int) -> dict[str, Any]:
    where = f"messages[{position}]"
    tool_call_id = message.get("tool_call_id")
    if not tool_call_id:
        raise TranslationError(f"{where}: tool messages need a `tool_call_id`")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content:
        block["content"] = _user_blocks(content, where)
    return block


def _response_format_instruction(response_format: Any) -> str:
    if not isinstance(response_format, dict):
        return ""
    kind = response_format.get("type")
    if kind == "json_object":
        return "Respond only with a single valid JSON object and no other text."
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is None:
            return "Respond only with a single valid JSON object and no other text."
        return (
            "Respond only with JSON that conforms to this JSON Schema, and no other text:\n"
            + json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
        )
    return ""


def _tools_and_choice(body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    tools = [_anthropic_tool(tool, index) for index, tool in enumerate(body.get("tools") or [])]
    choice = body.get("tool_choice")
    translated: dict[str, Any] | None
    if choice is None:
        translated = None
    elif choice == "auto":
        translated = {"type": "auto"}
    elif choice == "required":
        translated = {"type": "any"}
    elif choice == "none":
        translated = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        translated = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names = {(t.get("function") or {}).get("name") for t in allowed.get("tools") or []}
        # Anthropic has no allow-list, so offer only the allowed tools.
        tools = [tool for tool in tools if tool["name"] in names]
        translated = {"type": "any" if allowed.get("mode") == "required" else "auto"}
    else:
        raise TranslationError(f"tool_choice {choice!r} is not supported")
    if body.get("parallel_tool_calls") is False and tools:
        translated = translated or {"type": "auto"}
        if translated["type"] != "none":
            translated["disable_parallel_tool_use"] = True
    return tools, translated


def _anthropic_tool(tool: dict[str, Any], index: int) -> dict[str, Any]:
    if tool.get("type", "function") != "function":
        raise TranslationError(
            f"tools[{index}]: only function tools are supported, got {tool.get('type')!r}"
        )
    function = tool.get("function") or {}
    if not function.get("name"):
        raise TranslationError(f"tools[{index}]: function.name is required")
    out: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or dict(_EMPTY_SCHEMA)
    if tool.get("cache_control"):
        out["cache_control"] = tool["cache_control"]
    return out


# --- Anthropic response -> OpenAI response -------------------------------------------------------


def from_anthropic_response(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """Translate an Anthropic message into an OpenAI `chat.completion` reported as `model`."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in resp.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": _compact_json(block.get("input") or {}),
                    },
                }
            )
        # thinking, redacted_thinking and server-tool blocks have no OpenAI counterpart.
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": resp.get("id") or _new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(resp.get("stop_reason")),
            }
        ],
        "usage": _openai_usage(resp.get("usage") or {}),
    }


def _finish_reason(stop_reason: str | None) -> str:
    return _FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def _openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    cache_read = usage.get("cache_read_input_tokens") or 0
    prompt = (
        (usage.get("input_tokens") or 0)
        + (usage.get("cache_creation_input_tokens") or 0)
        + cache_read
    )
    completion = usage.get("output_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# --- Anthropic stream -> OpenAI chunks -----------------------------------------------------------


class AnthropicStreamTranslator:
    """Turns the events of one Anthropic message stream into OpenAI `chat.completion.chunk`s."""

    def __init__(self, model: str, include_usage: bool = False) -> None:
        self.model = model
        self.include_usage = include_usage
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self._id = _new_id("chatcmpl-")
        self._created = int(time.time())
        self._anthropic_usage: dict[str, Any] = {}
        self._tool_indexes: dict[int, int] = {}  # Anthropic block index -> OpenAI tool index

    def feed(self, event: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        """Return the chunks to emit for one Anthropic SSE event (often none or one)."""
        if event == "message_start":
            message = data.get("message") or {}
            self._id = message.get("id") or self._id
            self._record_usage(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if event == "content_block_start":
            return self._block_start(data.get("index", 0), data.get("content_block") or {})
        if event == "content_block_delta":
            return self._block_delta(data.get("index", 0), data.get("delta") or {})
        if event == "message_delta":
            self._record_usage(data.get("usage") or {})
            self.finish_reason = _finish_reason((data.get("delta") or {}).get("stop_reason"))
            return [self._chunk({}, finish_reason=self.finish_reason)]
        if event == "message_stop":
            if self.include_usage and self.usage is not None:
                return [self._envelope([], usage=self.usage)]
            return []
        if event == "error":
            error = data.get("error") or {}
            raise UpstreamStreamError(
                error.get("type", "api_error"), error.get("message", "stream error")
            )
        # ping, content_block_stop and event types added later carry nothing to translate.
        return []

    def _block_start(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if block.get("type") == "tool_use":
            tool_index = len(self._tool_indexes)
            self._tool_indexes[index] = tool_index
            call = {
                "index": tool_index,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if kind == "input_json_delta" and delta.get("partial_json") and index in self._tool_indexes:
            call = {
                "index": self._tool_indexes[index],
                "function": {"arguments": delta["partial_json"]},
            }
            return [self._chunk({"tool_calls": [call]})]
        # thinking, signature and citations deltas have no OpenAI counterpart.
        return []

    def _record_usage(self, usage: dict[str, Any]) -> None:
        # message_delta counts are cumulative and omit fields that did not change.
        self._anthropic_usage.update({k: v for k, v in usage.items() if v is not None})
        self.usage = _openai_usage(self._anthropic_usage)

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope([choice])

    def _envelope(
        self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = usage
        return chunk


# --- Errors --------------------------------------------------------------------------------------


def anthropic_error_status(error_type: str) -> int:
    """The HTTP status for an Anthropic error type (overloaded becomes 503, unknown 500)."""
    return _ERROR_STATUSES.get(error_type, 500)


def is_context_length_error(status: int, body: dict[str, Any]) -> bool:
    """Whether an Anthropic error response says the prompt does not fit the context window."""
    if status != 400 or not isinstance(body, dict):
        return False
    error = body.get("error")
    message = error.get("message", "") if isinstance(error, dict) else body.get("message", "")
    message = str(message).lower()
    return any(marker in message for marker in _CONTEXT_LENGTH_MARKERS)


# --- Anthropic request -> OpenAI request (inbound Anthropic endpoint) ----------------------------


def from_anthropic_request(body: dict[str, Any]) -> dict[str, Any]:
    """Translate an Anthropic Messages request into an OpenAI chat request."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        text = _text_of(system, "system")
        if text:
            messages.append({"role": "system", "content": text})
    for position, message in enumerate(body.get("messages") or []):
        role = message.get("role")
        where = f"messages[{position}]"
        if role == "user":
            messages.extend(_openai_user_messages(message.get("content"), where))
        elif role == "assistant":
            messages.append(_openai_assistant_message(message.get("content"), where))
        else:
            raise TranslationError(f"{where}: unknown role {role!r}")

    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_completion_tokens"] = body["max_tokens"]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stream"):
        out["stream"] = True
        # Anthropic streams always report usage; ask the OpenAI side for it too.
        out["stream_options"] = {"include_usage": True}
    user_id = (body.get("metadata") or {}).get("user_id")
    if user_id:
        out["user"] = user_id

    tools = [_openai_tool(tool, index) for index, tool in enumerate(body.get("tools") or [])]
    if tools:
        out["tools"] = tools
    choice = body.get("tool_choice")
    if choice:
        kind = choice.get("type")
        if kind == "auto":
            out["tool_choice"] = "auto"
        elif kind == "any":
            out["tool_choice"] = "required"
        elif kind == "none":
            out["tool_choice"] = "none"
        elif kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        else:
            raise TranslationError(f"tool_choice type {kind!r} is not supported")
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    return out


def _openai_user_messages(content: Any, where: str) -> list[dict[str, Any]]:
    # tool_result blocks become `tool` messages, which must come straight after the assistant turn.
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(content or []):
        block_where = f"{where}.content[{index}]"
        if block.get("type") == "tool_result":
            tool_messages.append(
                {
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id"),
                    "content": _tool_result_text(block.get("content"), block_where),
                }
            )
        else:
            parts.append(_openai_part(block, block_where))
    out = tool_messages
    if parts:
        if len(parts) == 1 and parts[0]["type"] == "text":
            out.append({"role": "user", "content": parts[0]["text"]})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _tool_result_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for block in content:
        if block.get("type") != "text":
            raise TranslationError(
                f"{where}: tool results may only contain text here, got {block.get('type')!r}"
            )
        texts.append(block.get("text", ""))
    return "\n".join(texts)


def _openai_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    kind = block.get("type")
    source = block.get("source") or {}
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    if kind == "image":
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        elif source.get("type") == "url":
            url = source.get("url", "")
        else:
            raise TranslationError(f"{where}: image source {source.get('type')!r} is not supported")
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "document" and source.get("type") == "base64":
        file: dict[str, Any] = {
            "file_data": f"data:{source.get('media_type')};base64,{source.get('data')}"
        }
        if block.get("title"):
            file["filename"] = block["title"]
        return {"type": "file", "file": file}
    raise TranslationError(f"{where}: content block type {kind!r} is not supported")


def _openai_assistant_message(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for index, block in enumerate(content or []):
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": _compact_json(block.get("input") or {}),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # OpenAI requests carry no reasoning history.
        else:
            raise TranslationError(
                f"{where}.content[{index}]: content block type {kind!r} is not supported"
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _openai_tool(tool: dict[str, Any], index: int) -> dict[str, Any]:
    if tool.get("type") not in (None, "custom"):
        raise TranslationError(
            f"tools[{index}]: Anthropic server tool {tool.get('type')!r} is not supported"
        )
    function: dict[str, Any] = {"name": tool.get("name")}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool.get("input_schema") or dict(_EMPTY_SCHEMA)
    return {"type": "function", "function": function}


# --- OpenAI response -> Anthropic response -------------------------------------------------------


def to_anthropic_response(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """Translate an OpenAI `chat.completion` into an Anthropic message reported as `model`."""
    choices = resp.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = message.get("content") or message.get("refusal")
    if text:
        content.append({"type": "text", "text": text})
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or _new_id("toolu_"),
                "name": function.get("name"),
                "input": _parse_arguments(function.get("arguments"), f"tool_calls[{index}]"),
            }
        )
    finish_reason = choice.get("finish_reason")
    if message.get("refusal") and not message.get("content"):
        finish_reason = "content_filter"
    return {
        "id": resp.get("id") or _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(finish_reason, bool(message.get("tool_calls"))),
        "stop_sequence": None,
        "usage": _anthropic_usage(resp.get("usage") or {}),
    }


def _stop_reason(finish_reason: str | None, has_tool_calls: bool) -> str:
    # Some OpenAI-compatible servers report "stop" even when the turn ends in tool calls.
    if has_tool_calls and finish_reason in (None, "stop"):
        return "tool_use"
    return _STOP_REASONS.get(finish_reason or "stop", "end_turn")


def _anthropic_usage(usage: dict[str, Any]) -> dict[str, Any]:
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "input_tokens": max((usage.get("prompt_tokens") or 0) - cached, 0),
        "output_tokens": usage.get("completion_tokens") or 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


# --- OpenAI chunks -> Anthropic stream (inbound Anthropic endpoint) ------------------------------


class OpenAIToAnthropicStream:
    """Turns OpenAI `chat.completion.chunk`s into a complete Anthropic SSE event sequence."""

    def __init__(self, model: str, input_tokens: int = 0) -> None:
        self.model = model
        self._usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": 0}
        self._started = False
        self._finished = False
        self._finish_reason: str | None = None
        self._usage_seen = False
        self._next_block = 0
        self._open_kind: str | None = None  # the open block, if any, is the last one opened
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool index -> Anthropic block index

    def feed(self, chunk: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Return the (event name, data) pairs to emit for one OpenAI chunk."""
        if self._finished:
            return []
        events = self._start(chunk.get("id"))
        if chunk.get("usage"):
            self._usage_seen = True
            self._usage.update(_anthropic_usage(chunk["usage"]))
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if text:
                events += self._text(text)
            for call in delta.get("tool_calls") or []:
                events += self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
                events += self._close_block()
        # With include_usage the usage chunk is the last one; without it, finish() ends the stream.
        if self._finish_reason and self._usage_seen:
            events += self.finish()
        return events

    def finish(self) -> list[tuple[str, dict[str, Any]]]:
        """Return the closing events (message_delta, message_stop) unless already sent."""
        if self._finished:
            return []
        events = self._start(None) + self._close_block()
        self._finished = True
        usage = {"output_tokens": self._usage["output_tokens"]}
        if self._usage_seen:
            usage["input_tokens"] = self._usage["input_tokens"]
            usage["cache_read_input_tokens"] = self._usage["cache_read_input_tokens"]
        stop_reason = _stop_reason(self._finish_reason, bool(self._tool_blocks))
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": usage,
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def _start(self, chunk_id: str | None) -> list[tuple[str, dict[str, Any]]]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": chunk_id or _new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._usage["input_tokens"], "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _text(self, text: str) -> list[tuple[str, dict[str, Any]]]:
        events = []
        if self._open_kind != "text":
            events += self._open({"type": "text", "text": ""}, "text")
        events.append(self._delta(self._next_block - 1, {"type": "text_delta", "text": text}))
        return events

    def _tool_call(self, call: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events = []
        tool_index = call.get("index", 0)
        function = call.get("function") or {}
        if tool_index not in self._tool_blocks:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or _new_id("toolu_"),
                "name": function.get("name") or "",
                "input": {},
            }
            events += self._open(block, "tool_use")
            self._tool_blocks[tool_index] = self._next_block - 1
        if function.get("arguments"):
            delta = {"type": "input_json_delta", "partial_json": function["arguments"]}
            events.append(self._delta(self._tool_blocks[tool_index], delta))
        return events

    def _open(self, block: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any]]]:
        events = self._close_block()
        start = {"type": "content_block_start", "index": self._next_block, "content_block": block}
        events.append(("content_block_start", start))
        self._open_kind = kind
        self._next_block += 1
        return events

    def _close_block(self) -> list[tuple[str, dict[str, Any]]]:
        if self._open_kind is None:
            return []
        self._open_kind = None
        stop = {"type": "content_block_stop", "index": self._next_block - 1}
        return [("content_block_stop", stop)]

    @staticmethod
    def _delta(index: int, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        data = {"type": "content_block_delta", "index": index, "delta": delta}
        return ("content_block_delta", data)
