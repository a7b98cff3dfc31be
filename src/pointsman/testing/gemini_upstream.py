"""A loopback fake of Google's Gemini API (`generateContent`, `streamGenerateContent?alt=sse`),
answering in its real wire format; the official `google-genai` client runs against it in tests.

    with GeminiUpstream(api_key="k") as fake:
        fake.set("gemini-2.5-flash", Behaviour(status=429, retry_after=7))
        # base URL: fake.url
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import orjson
from aiohttp import web

from pointsman.testing.loopback import Json, LoopbackServer, Reply, Turn, compose
from pointsman.testing.upstream import Behaviour

_PATH = re.compile(r"/v1(?:beta|alpha)?/models/([^/:]+):(generateContent|streamGenerateContent)")
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}


def error_body(code: int, message: str, details: list[Json] | None = None) -> bytes:
    """Google's error shape: `{"error": {code, message, status, details}}`."""
    error: Json = {"code": code, "message": message, "status": _STATUS.get(code, "UNKNOWN")}
    if details:
        error["details"] = details
    return orjson.dumps({"error": error})


def _json(status: int, payload: bytes) -> web.Response:
    return web.Response(body=payload, status=status, content_type="application/json")


def _invalid(body: Any) -> str | None:
    """What is wrong with a generateContent body, as the real API would refuse it."""
    contents = body.get("contents") if isinstance(body, dict) else None
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role") not in (None, "user", "model", "function"):
            return f"* GenerateContentRequest.contents[{i}].role: Please use a valid role: user, model."
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
        for part in parts:
            inline = part.get("inlineData") if isinstance(part, dict) else None
            if inline is not None:
                try:
                    base64.b64decode(inline.get("data", ""), validate=True)
                except (binascii.Error, ValueError):
                    return f"* GenerateContentRequest.contents[{i}]: Base64 decoding failed for inline data"
    return None


def _turn(body: Json) -> Turn:
    chars = images = 0
    last_text = ""
    answering = False
    for content in body["contents"]:
        texts = []
        answering = False
        for part in content.get("parts") or ():
            if "text" in part:
                texts.append(str(part["text"]))
                chars += len(str(part["text"]))
            elif "inlineData" in part:
                images += 1
            elif "functionResponse" in part:
                answering = True
                chars += len(orjson.dumps(part["functionResponse"]))
        if content.get("role", "user") == "user" and texts:
            last_text = " ".join(texts)
    for part in (body.get("systemInstruction") or {}).get("parts") or ():
        chars += len(str(part.get("text", "")))
    tools = [
        d.get("name") for tool in body.get("tools") or () for d in tool.get("functionDeclarations") or ()
    ]
    generation = body.get("generationConfig") or {}
    return Turn(last_text, chars, images, tools, answering, generation.get("maxOutputTokens"))


def _usage(reply: Reply) -> Json:
    return {
        "promptTokenCount": reply.prompt_tokens,
        "candidatesTokenCount": reply.completion_tokens,
        "totalTokenCount": reply.prompt_tokens + reply.completion_tokens,
    }


def _parts(reply: Reply) -> list[Json]:
    if reply.tool is not None:
        return [{"functionCall": {"name": reply.tool, "args": orjson.loads(reply.tool_arguments or "{}")}}]
    return [{"text": "".join(reply.words)}]


class GeminiUpstream(LoopbackServer):
    """Serves `/v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`.
    With `api_key` set, requests need it in `x-goog-api-key` (or `?key=`): a missing key is
    403 PERMISSION_DENIED and a wrong one 400 API_KEY_INVALID, as Google answers."""

    thread_name = "pointsman-fake-gemini"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None) -> None:
        super().__init__(host, port)
        self.api_key = api_key

    def __enter__(self) -> GeminiUpstream:
        self.start()
        return self

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        match = _PATH.fullmatch(request.path)
        if match is None or request.method != "POST":
            return _json(404, error_body(404, f"Requested entity was not found: {request.path}"))
        model, method = match.group(1), match.group(2)
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        behaviour = self.arrive(model, request, body if isinstance(body, dict) else {})
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if self.api_key is not None and not key:
            return _json(
                403,
                error_body(
                    403,
                    "Method doesn't allow unregistered callers (callers without established identity). "
                    "Please use API Key or other form of API consumer identity to call this API.",
                ),
            )
        if self.api_key is not None and key != self.api_key:
            return _json(
                400,
                error_body(
                    400,
                    "API key not valid. Please pass a valid API key.",
                    [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                            "domain": "googleapis.com",
                        }
                    ],
                ),
            )
        await self.wait_as_told(request, behaviour)
        if behaviour.body is not None:
            return _json(behaviour.status, behaviour.body)
        if behaviour.status != 200:
            details = None
            if behaviour.retry_after is not None:
                details = [
                    {
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": f"{behaviour.retry_after:g}s",
                    }
                ]
            message = f"Simulated error {behaviour.status} from model {model}."
            return _json(behaviour.status, error_body(behaviour.status, message, details))
        problem = _invalid(body)
        if problem is not None:
            return _json(400, error_body(400, problem))
        assert isinstance(body, dict)
        reply = compose(model, _turn(body), behaviour)
        window = behaviour.context_window
        if window is not None and reply.prompt_tokens > window:
            message = (
                f"The input token count ({reply.prompt_tokens}) exceeds the maximum number of tokens "
                f"allowed ({window})."
            )
            return _json(400, error_body(400, message))
        ident = f"fake-gemini-{self.next_id()}"
        if method == "generateContent":
            return _json(
                200,
                orjson.dumps(
                    {
                        "candidates": [
                            {
                                "content": {"role": "model", "parts": _parts(reply)},
                                "finishReason": _FINISH[reply.finish],
                                "index": 0,
                            }
                        ],
                        "usageMetadata": _usage(reply),
                        "modelVersion": model,
                        "responseId": ident,
                    }
                ),
            )
        if request.query.get("alt") != "sse":
            return _json(
                400, error_body(400, "this fake serves streams as server-sent events only (alt=sse)")
            )
        frames: list[Json] = []
        if reply.tool is not None:
            frames.append(
                {"candidates": [{"content": {"role": "model", "parts": _parts(reply)}, "index": 0}]}
            )
        else:
            for word in reply.words:
                frames.append(
                    {"candidates": [{"content": {"role": "model", "parts": [{"text": word}]}, "index": 0}]}
                )
        last: Json = (
            frames[-1]
            if frames
            else {"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}}]}
        )
        last["candidates"][0]["finishReason"] = _FINISH[reply.finish]
        last["usageMetadata"] = _usage(reply)
        if not frames:
            frames.append(last)
        for frame in frames:
            frame["modelVersion"] = model
            frame["responseId"] = ident
        encoded = [b"data: " + orjson.dumps(f) + b"\r\n\r\n" for f in frames]
        return await self.send_stream(request, {"Content-Type": "text/event-stream"}, encoded, behaviour)


__all__ = ["Behaviour", "GeminiUpstream", "error_body"]
