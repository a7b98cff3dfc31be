"""What the translating adapters (Gemini, Bedrock) share about OpenAI content parts."""

from __future__ import annotations

import base64
import binascii
import re

_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)


class RequestNotTranslatable(ValueError):
    """The OpenAI-shaped request uses something this upstream API cannot express."""


def parse_data_url(url: str) -> tuple[str, str]:
    """(mime type, base64 data) of a `data:<mime>;base64,<data>` URL; other URLs are refused,
    since neither Gemini nor Bedrock fetches images by URL."""
    match = _DATA_URL.fullmatch(url.strip())
    if match is None:
        raise RequestNotTranslatable(
            "images must be sent inline as data:<mime>;base64,<data> URLs for this deployment"
        )
    data = match.group(2).strip()
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestNotTranslatable("an image data: URL is not valid base64") from None
    return match.group(1), data
