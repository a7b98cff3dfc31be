"""Chat requests between the OpenAI Chat Completions shape (the router's internal one) and the
Anthropic Messages shape: `to_anthropic_request` on the way out to an Anthropic deployment,
`from_anthropic_request` for the inbound `/v1/messages` face. Pure functions over plain dicts."""

from __future__ import annotations

import json
import uuid
from typing import Any

_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


class TranslationError(ValueError):
    """A request or response that cannot be expressed in the other API's shape."""


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def openai_tool_call(block: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic `tool_use` block as an OpenAI tool call."""
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": _compact_json(block.get("input") or {})},
    }


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
        raise TranslationError(f"n={n} is not supported: Anthropic models return one choice per request")
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
            raise TranslationError(f"{where}: only text parts are allowed here, got {part.get('type')!r}")
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
        raise TranslationError(f"{where}: file parts need inline `file_data`; file ids are not supported")
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
        raise TranslationError(f"{where}: data URLs must be base64-encoded (data:<type>;base64,...)")
    return media_type.lower(), data


def _assistant_blocks(message: dict[str, Any], position: int) -> list[dict[str, Any]]:
    where = f"messages[{position}]"
    if message.get("function_call"):
        raise TranslationError(f"{where}: legacy `function_call` is not supported; use `tool_calls`")
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
                "input": parse_arguments(function.get("arguments"), call_where),
            }
        )
    return blocks


def parse_arguments(arguments: Any, where: str) -> dict[str, Any]:
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
        return "Respond only with JSON that conforms to this JSON Schema, and no other text:\n" + json.dumps(
            schema, separators=(",", ":"), ensure_ascii=False
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
        raise TranslationError(f"tools[{index}]: only function tools are supported, got {tool.get('type')!r}")
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
        file: dict[str, Any] = {"file_data": f"data:{source.get('media_type')};base64,{source.get('data')}"}
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
            tool_calls.append(openai_tool_call(block))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # OpenAI requests carry no reasoning history.
        else:
            raise TranslationError(f"{where}.content[{index}]: content block type {kind!r} is not supported")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _openai_tool(tool: dict[str, Any], index: int) -> dict[str, Any]:
    if tool.get("type") not in (None, "custom"):
        raise TranslationError(f"tools[{index}]: Anthropic server tool {tool.get('type')!r} is not supported")
    function: dict[str, Any] = {"name": tool.get("name")}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool.get("input_schema") or dict(_EMPTY_SCHEMA)
    return {"type": "function", "function": function}
