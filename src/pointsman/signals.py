"""Cheap, pure facts about a request, each computed at most once and only when asked for."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

# Tokens an image part costs at low detail; a floor that keeps window checks honest.
IMAGE_TOKENS = 85
# Characters per token for English-like text with common BPE vocabularies.
CHARS_PER_TOKEN = 4
# Per-message framing tokens (role markers, separators) in chat formats.
MESSAGE_OVERHEAD_TOKENS = 4


def message_text(content: Any) -> str:
    """The text of a message's `content`, whether a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


class Signals:
    """Lazily computed request facts shared by policies, strategies and the record."""

    def __init__(self, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> None:
        self.body = body
        self.headers: Mapping[str, str] = headers or {}

    @cached_property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @cached_property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return message_text(message.get("content"))
        return ""

    @cached_property
    def image_count(self) -> int:
        count = 0
        for message in self.messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                count += sum(
                    1 for p in content if isinstance(p, dict) and p.get("type") == "image_url"
                )
        return count

    @property
    def has_images(self) -> bool:
        return self.image_count > 0

    @cached_property
    def has_tools(self) -> bool:
        return bool(self.body.get("tools")) and self.body.get("tool_choice") != "none"

    @cached_property
    def wants_json(self) -> bool:
        fmt = self.body.get("response_format")
        return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")

    @cached_property
    def estimated_tokens(self) -> int:
        """Prompt tokens, estimated from characters (a calibrated tokenizer comes with rules)."""
        chars = 0
        for message in self.messages:
            if not isinstance(message, dict):
                continue
            chars += len(message_text(message.get("content")))
            for call in message.get("tool_calls") or ():
                chars += len(str(call.get("function", {}).get("arguments", "")))
        tools = self.body.get("tools")
        if tools:
            chars += len(str(tools))
        return (
            -(-chars // CHARS_PER_TOKEN)
            + MESSAGE_OVERHEAD_TOKENS * len(self.messages)
            + IMAGE_TOKENS * self.image_count
        )

    @cached_property
    def max_output_tokens(self) -> int:
        value = self.body.get("max_completion_tokens") or self.body.get("max_tokens") or 0
        return value if isinstance(value, int) else 0

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())
