"""Token prices from a maintained catalogue (the `genai-prices` package, whose data ships in its
wheel: nothing is fetched at run time), for deployments whose config gives no `price:`."""

from __future__ import annotations

from functools import cache
from urllib.parse import urlsplit

# pointsman provider kind -> the catalogue's provider id.
_CATALOGUE_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google", "bedrock": "aws"}
# Priced on a short request: long prompts cross into some models' dearer long-context tier.
_SAMPLE = 1000
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@cache
def catalogue_price(provider: str, model: str, api_base: str = "") -> tuple[float, float] | None:
    """(input, output) US dollars per million tokens for `model` served by `provider`, or None
    when the catalogue does not know the pair. An OpenAI-compatible `api_base` that the catalogue
    recognises (Groq, Together, OpenRouter, ...) selects that provider's prices."""
    # Imported here: the catalogue costs about a second to import, and configs that price every
    # deployment never need it.
    from genai_prices import Usage, calc_price

    lookups: list[dict[str, str]] = []
    host = urlsplit(api_base).hostname or ""
    if provider == "openai" and host and host not in _LOOPBACK and host != "api.openai.com":
        lookups.append({"provider_api_url": api_base})
    if provider in _CATALOGUE_PROVIDERS:
        lookups.append({"provider_id": _CATALOGUE_PROVIDERS[provider]})
    for where in lookups:
        try:
            prompt = calc_price(Usage(input_tokens=_SAMPLE), model, **where)  # type: ignore[call-overload]
            answer = calc_price(Usage(output_tokens=_SAMPLE), model, **where)  # type: ignore[call-overload]
        except LookupError:
            continue
        scale = 1_000_000 // _SAMPLE
        return round(float(prompt.total_price) * scale, 6), round(float(answer.total_price) * scale, 6)
    return None


def describe_unpriced(names: list[str]) -> str:
    """The warning for deployments with neither a configured nor a catalogue price."""
    return (
        f"no known price for deployment(s) {', '.join(names)}: they count as free, so cost-aware "
        "routing prefers them, budgets never charge them, and savings figures leave them out; "
        "set `price: {input: ..., output: ...}` (USD per million tokens) to fix"
    )
