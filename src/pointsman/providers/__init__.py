"""Provider adapters: each calls one kind of upstream API and speaks OpenAI shapes inward."""

from __future__ import annotations

from pointsman.config import Deployment
from pointsman.providers.base import Completion, Provider, StreamUsage, UpstreamError
from pointsman.providers.http import HTTPClient


# Each adapter module loads when a deployment first uses it (the Anthropic translator is large).
def make_provider(deployment: Deployment, client: HTTPClient) -> Provider:
    if deployment.provider == "anthropic":
        from pointsman.providers.anthropic import AnthropicProvider

        return AnthropicProvider(deployment, client)
    if deployment.provider == "gemini":
        from pointsman.providers.gemini import GeminiProvider

        return GeminiProvider(deployment, client)
    if deployment.provider == "bedrock":
        from pointsman.providers.bedrock import BedrockProvider

        return BedrockProvider(deployment, client)
    from pointsman.providers.openai import OpenAIEmbeddingsProvider, OpenAIProvider

    if deployment.api == "responses":
        from pointsman.providers.responses import ResponsesProvider

        return ResponsesProvider(deployment, client)
    if deployment.mode == "embeddings":
        return OpenAIEmbeddingsProvider(deployment, client)
    return OpenAIProvider(deployment, client)


__all__ = ["Completion", "HTTPClient", "Provider", "StreamUsage", "UpstreamError", "make_provider"]
