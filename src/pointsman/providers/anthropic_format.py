"""The Anthropic translation's public names in one place, for code written before it was split
into `anthropic_request`, `anthropic_response` and `anthropic_stream` (import from those)."""

from __future__ import annotations

from pointsman.providers.anthropic_request import (
    TranslationError,
    from_anthropic_request,
    to_anthropic_request,
)
from pointsman.providers.anthropic_response import (
    anthropic_error_status,
    from_anthropic_response,
    is_context_length_error,
    to_anthropic_response,
)
from pointsman.providers.anthropic_stream import (
    AnthropicStreamTranslator,
    OpenAIToAnthropicStream,
    UpstreamStreamError,
)

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
