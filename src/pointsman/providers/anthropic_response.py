"""Answers and errors between the Anthropic Messages shape and the OpenAI Chat Completions shape:
`from_anthropic_response` for an Anthropic deployment's answer, `to_anthropic_response` for the
inbound `/v1/messages` face, and what an Anthropic error response means."""

from __future__ import annotations

import time
from typing import Any

from pointsman.providers.anthropic_request import new_id, openai_tool_call, parse_arguments

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


# --- Anthropic response -> OpenAI response -------------------------------------------------------


def from_anthropic_response(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """Translate an Anthropic message into an OpenAI `chat.completion` reported as `model`."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in resp.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            tool_calls.append(openai_tool_call(block))
        # thinking, redacted_thinking and server-tool blocks have no OpenAI counterpart.
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": resp.get("id") or new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason_for(resp.get("stop_reason")),
            }
        ],
        "usage": openai_usage(resp.get("usage") or {}),
    }


def finish_reason_for(stop_reason: str | None) -> str:
    return _FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    cache_read = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + (usage.get("cache_creation_input_tokens") or 0) + cache_read
    completion = usage.get("output_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


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
                "id": call.get("id") or new_id("toolu_"),
                "name": function.get("name"),
                "input": parse_arguments(function.get("arguments"), f"tool_calls[{index}]"),
            }
        )
    finish_reason = choice.get("finish_reason")
    if message.get("refusal") and not message.get("content"):
        finish_reason = "content_filter"
    return {
        "id": resp.get("id") or new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason_for(finish_reason, bool(message.get("tool_calls"))),
        "stop_sequence": None,
        "usage": anthropic_usage(resp.get("usage") or {}),
    }


def stop_reason_for(finish_reason: str | None, has_tool_calls: bool) -> str:
    # Some OpenAI-compatible servers report "stop" even when the turn ends in tool calls.
    if has_tool_calls and finish_reason in (None, "stop"):
        return "tool_use"
    return _STOP_REASONS.get(finish_reason or "stop", "end_turn")


def anthropic_usage(usage: dict[str, Any]) -> dict[str, Any]:
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "input_tokens": max((usage.get("prompt_tokens") or 0) - cached, 0),
        "output_tokens": usage.get("completion_tokens") or 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


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
