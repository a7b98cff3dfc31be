"""Provider adapters: each calls one kind of upstream API and speaks OpenAI shapes inward."""

from __future__ import annotations

import aiohttp

from pointsman.config import Deployment
from pointsman.providers.base import Completion, Provider, StreamUsage, UpstreamError


def make_provider(deployment: Deployment, session: aiohttp.ClientSession) -> Provider:
    if deployment.provider == "anthropic":
        from pointsman.providers.anthropic import AnthropicProvider

        return AnthropicProvider(deployment, session)
    from pointsman.providers.openai import OpenAIProvider

    return OpenAIProvider(deployment, session)


__all__ = ["Completion", "Provider", "StreamUsage", "UpstreamError", "make_provider"]
