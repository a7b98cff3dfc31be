"""Streams between the two shapes: `AnthropicStreamTranslator` turns an Anthropic deployment's
events into OpenAI chunks; `OpenAIToAnthropicStream` turns the router's OpenAI chunks into the
events of the inbound `/v1/messages` face."""

from __future__ import annotations

import time
from typing import Any

from pointsman.providers.anthropic_request import new_id
from pointsman.providers.anthropic_response import (
    anthropic_error_status,
    anthropic_usage,
    finish_reason_for,
    openai_usage,
    stop_reason_for,
)


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


# --- Anthropic stream -> OpenAI chunks -----------------------------------------------------------


class AnthropicStreamTranslator:
    """Turns the events of one Anthropic message stream into OpenAI `chat.completion.chunk`s."""

    def __init__(self, model: str, include_usage: bool = False) -> None:
        self.model = model
        self.include_usage = include_usage
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self._id = new_id("chatcmpl-")
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
            self.finish_reason = finish_reason_for((data.get("delta") or {}).get("stop_reason"))
            return [self._chunk({}, finish_reason=self.finish_reason)]
        if event == "message_stop":
            if self.include_usage and self.usage is not None:
                return [self._envelope([], usage=self.usage)]
            return []
        if event == "error":
            error = data.get("error") or {}
            raise UpstreamStreamError(error.get("type", "api_error"), error.get("message", "stream error"))
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
        self.usage = openai_usage(self._anthropic_usage)

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope([choice])

    def _envelope(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
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
            self._usage.update(anthropic_usage(chunk["usage"]))
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
        stop_reason = stop_reason_for(self._finish_reason, bool(self._tool_blocks))
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
            "id": chunk_id or new_id("msg_"),
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
                "id": call.get("id") or new_id("toolu_"),
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
