"""The Responses API as an upstream (deployments with `api: responses`): a chat request
translated to a Responses request, and a Response (or its typed event stream) translated back
to a chat completion (or its chunks)."""

from __future__ import annotations

import time
from typing import Any

Json = dict[str, Any]


def from_chat_request(chat: Json) -> Json:
    """The Responses request that asks the same as a chat request (stored nowhere upstream)."""
    items: list[Json] = []
    for message in chat.get("messages") or ():
        items.extend(_items_of(message))
    out: Json = {"model": chat.get("model"), "input": items, "store": False}
    tools = [
        {"type": "function", **(tool.get("function") or {})}
        for tool in chat.get("tools") or ()
        if isinstance(tool, dict) and tool.get("type") == "function"
    ]
    if tools:
        out["tools"] = tools
    choice = chat.get("tool_choice")
    if isinstance(choice, dict):
        out["tool_choice"] = {"type": "function", "name": (choice.get("function") or {}).get("name")}
    elif choice is not None:
        out["tool_choice"] = choice
    limit = chat.get("max_completion_tokens") or chat.get("max_tokens")
    if limit is not None:
        out["max_output_tokens"] = limit
    for field in ("temperature", "top_p", "user", "parallel_tool_calls"):
        if chat.get(field) is not None:
            out[field] = chat[field]
    fmt = chat.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        out["text"] = {"format": {"type": "json_schema", **(fmt.get("json_schema") or {})}}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        out["text"] = {"format": {"type": "json_object"}}
    if chat.get("reasoning_effort") is not None:
        out["reasoning"] = {"effort": chat["reasoning_effort"]}
    if chat.get("stream"):
        out["stream"] = True
    return out


def _items_of(message: Any) -> list[Json]:
    if not isinstance(message, dict):
        return []
    role, content = message.get("role"), message.get("content")
    if role == "tool":
        text = content if isinstance(content, str) else _chat_text(content)
        return [{"type": "function_call_output", "call_id": message.get("tool_call_id"), "output": text}]
    items: list[Json] = []
    if role == "assistant":
        text = content if isinstance(content, str) else _chat_text(content)
        if text:
            items.append({"type": "message", "role": "assistant", "content": text})
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments") or "",
                }
            )
        return items
    if isinstance(content, list):
        return [{"type": "message", "role": role, "content": [_response_part(p) for p in content]}]
    return [{"type": "message", "role": role, "content": content if content is not None else ""}]


def _chat_text(content: Any) -> str:
    if not isinstance(content, list):
        return ""
    return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


def _response_part(part: Any) -> Json:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        detail = image.get("detail", "auto") if isinstance(image, dict) else "auto"
        return {"type": "input_image", "image_url": url, "detail": detail}
    if kind == "file":
        return {"type": "input_file", **(part.get("file") or {})}
    return {"type": "input_text", "text": part.get("text", "") if isinstance(part, dict) else str(part)}


def _finish_reason(response: Json, called: bool) -> str:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if called else "stop"


def chat_usage(usage: Any) -> Json:
    """A Response's usage in chat completions' terms."""
    usage = usage if isinstance(usage, dict) else {}
    prompt = int(usage.get("input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
        },
        "completion_tokens_details": {
            "reasoning_tokens": (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0
        },
    }


def to_chat_completion(response: Json) -> Json:
    """The chat completion a Response amounts to (text, function calls, finish, usage)."""
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[Json] = []
    for item in response.get("output") or ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for part in item.get("content") or ():
                if part.get("type") == "output_text":
                    texts.append(part.get("text") or "")
                elif part.get("type") == "refusal":
                    refusals.append(part.get("refusal") or "")
        elif item.get("type") == "function_call":
            calls.append(
                {
                    "id": item.get("call_id"),
                    "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""},
                }
            )
    message: Json = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if refusals:
        message["refusal"] = "".join(refusals)
    if calls:
        message["tool_calls"] = calls
    return {
        "id": str(response.get("id") or ""),
        "object": "chat.completion",
        "created": int(response.get("created_at") or time.time()),
        "model": response.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _finish_reason(response, bool(calls)),
                "logprobs": None,
            }
        ],
        "usage": chat_usage(response.get("usage")),
    }


class ResponsesToChatStream:
    """Turns a Responses API event stream (parsed events) into chat completion chunks."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.usage: Json | None = None
        self._id = ""
        self._created = int(time.time())
        self._calls: dict[int, int] = {}  # output_index -> tool_calls index
        self._started = False

    def _chunk(self, delta: Json, finish: str | None = None) -> Json:
        if not self._started:
            delta = {"role": "assistant", **delta}
            self._started = True
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
            "choices": [choice],
        }

    def feed(self, event: Json) -> list[Json]:
        """Chat chunks for one event; raises ValueError for a failed response."""
        kind = event.get("type")
        if kind == "response.created":
            self._id = str((event.get("response") or {}).get("id") or "")
            return []
        if kind == "response.output_text.delta":
            return [self._chunk({"content": event.get("delta") or ""})]
        if kind == "response.output_item.added" and (event.get("item") or {}).get("type") == "function_call":
            item = event["item"]
            position = self._calls[event.get("output_index", 0)] = len(self._calls)
            call = {
                "index": position,
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""},
            }
            return [self._chunk({"content": None, "tool_calls": [call]})]
        if kind == "response.function_call_arguments.delta":
            position = self._calls.get(event.get("output_index", 0), 0)
            call = {"index": position, "function": {"arguments": event.get("delta") or ""}}
            return [self._chunk({"tool_calls": [call]})]
        if kind in ("response.completed", "response.incomplete"):
            response = event.get("response") or {}
            self.usage = chat_usage(response.get("usage"))
            chunks = [self._chunk({}, _finish_reason(response, bool(self._calls)))]
            if self.include_usage:
                chunks.append({**self._chunk({}), "choices": [], "usage": self.usage})
            return chunks
        if kind in ("response.failed", "error"):
            error = (event.get("response") or {}).get("error") or event
            raise ValueError(str(error.get("message") or "the upstream response failed"))
        return []
