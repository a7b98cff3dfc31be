"""A loopback fake of Amazon Bedrock's Converse and ConverseStream APIs
(`POST /model/{modelId}/converse` and `/converse-stream`), answering in their real wire format:
JSON, and AWS's binary event-stream framing for streams. It checks each request's SigV4
signature with botocore against the credentials it was given. boto3's `bedrock-runtime` client
runs against it in tests.

    with BedrockUpstream(credentials={"AKIDTEST": "secret"}) as fake:
        fake.set("anthropic.claude-3-haiku-20240307-v1:0", Behaviour(status=429))
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from pointsman.testing.loopback import Json, LoopbackServer, Reply, Turn, compose
from pointsman.testing.upstream import Behaviour

_PATH = re.compile(r"/model/([^/]+)/(converse|converse-stream)")
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})"
)
_ERRORS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}


def encode_event(headers: dict[str, str], payload: bytes) -> bytes:
    """One message in AWS's event-stream framing (string headers only), as Bedrock sends it:
    total length, headers length, prelude CRC32, headers, payload, message CRC32."""
    encoded = b"".join(
        struct.pack("!B", len(name))
        + name.encode()
        + b"\x07"
        + struct.pack("!H", len(value))
        + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack("!II", 16 + len(encoded) + len(payload), len(encoded))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack("!I", binascii.crc32(message))


def event(kind: str, data: Json) -> bytes:
    return encode_event(
        {":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
        orjson.dumps(data),
    )


def exception_event(kind: str, message: str) -> bytes:
    return encode_event(
        {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"},
        orjson.dumps({"message": message}),
    )


def _error(
    status: int, message: str, kind: str | None = None, retry_after: float | None = None
) -> web.Response:
    kind = kind or _ERRORS.get(status, "InternalServerException")
    headers = {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    return web.Response(
        body=orjson.dumps({"message": message}),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _invalid(body: Any) -> str | None:
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        return (
            "1 validation error detected: Value at 'messages' failed to satisfy constraint: "
            "Member must not be null"
        )
    previous = None
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f"Value at 'messages.{i + 1}.member.role' failed to satisfy constraint: user, assistant"
        if role == previous:
            return "A conversation must alternate between user and assistant roles."
        previous = role
        content = message.get("content")
        if not isinstance(content, list) or not content:
            return f"The content field in the Message object at messages.{i} is empty."
        for block in content:
            if "text" in block and not str(block["text"]).strip():
                return (
                    "The text field in the ContentBlock object is blank. "
                    "Add text to the text field, and try again."
                )
            image = block.get("image")
            if image is not None:
                try:
                    base64.b64decode(image["source"]["bytes"], validate=True)
                except (KeyError, TypeError, binascii.Error, ValueError):
                    return "Invalid image: the bytes could not be decoded"
    if messages[0]["role"] != "user":
        return "A conversation must start with a user message."
    return None


def _turn(body: Json) -> Turn:
    chars = images = 0
    last_text = ""
    answering = False
    for message in body["messages"]:
        texts = []
        answering = False
        for block in message["content"]:
            if "text" in block:
                texts.append(str(block["text"]))
                chars += len(str(block["text"]))
            elif "image" in block:
                images += 1
            elif "toolResult" in block:
                answering = True
                chars += len(orjson.dumps(block["toolResult"]))
        if message["role"] == "user" and texts:
            last_text = " ".join(texts)
    for block in body.get("system") or ():
        chars += len(str(block.get("text", "")))
    tools = [
        t["toolSpec"]["name"] for t in (body.get("toolConfig") or {}).get("tools") or () if "toolSpec" in t
    ]
    return Turn(
        last_text, chars, images, tools, answering, (body.get("inferenceConfig") or {}).get("maxTokens")
    )


class BedrockUpstream(LoopbackServer):
    """Serves Converse and ConverseStream for any model id. With `credentials` (access key ->
    secret key), every request must carry a valid SigV4 signature by one of them for service
    `bedrock`; a missing, unknown or wrong signature is refused with 403 as AWS refuses it."""

    thread_name = "pointsman-fake-bedrock"

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, credentials: dict[str, str] | None = None
    ) -> None:
        super().__init__(host, port)
        self.credentials = credentials

    def __enter__(self) -> BedrockUpstream:
        self.start()
        return self

    def _refusal(self, request: web.BaseRequest, raw: bytes) -> web.Response | None:
        """403 unless the request is signed with SigV4 by known credentials."""
        if self.credentials is None:
            return None
        match = _AUTHORIZATION.fullmatch(request.headers.get("authorization", ""))
        if match is None:
            return _error(403, "Missing Authentication Token", "MissingAuthenticationTokenException")
        access_key, _, region, service, signed, signature = match.groups()
        secret = self.credentials.get(access_key)
        if secret is None:
            return _error(
                403, "The security token included in the request is invalid.", "UnrecognizedClientException"
            )
        names = signed.split(";")
        copy = AWSRequest(
            method=request.method,
            url=f"http://{request.host}{request.raw_path}",
            headers={name: request.headers.get(name, "") for name in names},
            data=raw,
        )
        copy.context["timestamp"] = request.headers.get("x-amz-date", "")
        signer = SigV4Auth(
            Credentials(access_key, secret, request.headers.get("x-amz-security-token")), service, region
        )
        canonical = signer.canonical_request(copy)
        expected = signer.signature(signer.string_to_sign(copy, canonical), copy)
        if service != "bedrock" or expected != signature:
            return _error(
                403,
                "The request signature we calculated does not match the signature you provided.",
                "InvalidSignatureException",
            )
        return None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        match = _PATH.fullmatch(request.path)
        if match is None or request.method != "POST":
            return _error(
                404, f"Unknown operation {request.method} {request.path}", "UnknownOperationException"
            )
        model, operation = unquote(match.group(1)), match.group(2)
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        behaviour = self.arrive(model, request, body if isinstance(body, dict) else {})
        refusal = self._refusal(request, raw)
        if refusal is not None:
            return refusal
        await self.wait_as_told(request, behaviour)
        if behaviour.body is not None:
            return web.Response(body=behaviour.body, status=behaviour.status, content_type="application/json")
        if behaviour.status != 200:
            message = f"Simulated error {behaviour.status} from model {model}."
            return _error(behaviour.status, message, retry_after=behaviour.retry_after)
        problem = _invalid(body)
        if problem is not None:
            return _error(400, problem)
        assert isinstance(body, dict)
        reply = compose(model, _turn(body), behaviour)
        if behaviour.context_window is not None and reply.prompt_tokens > behaviour.context_window:
            return _error(400, "Input is too long for requested model.")
        usage = {
            "inputTokens": reply.prompt_tokens,
            "outputTokens": reply.completion_tokens,
            "totalTokens": reply.prompt_tokens + reply.completion_tokens,
        }
        tool_id = f"tooluse_fake{self.next_id()}"
        if operation == "converse":
            content: list[Json] = [{"text": "".join(reply.words)}]
            if reply.tool is not None:
                arguments = orjson.loads(reply.tool_arguments or "{}")
                content = [{"toolUse": {"toolUseId": tool_id, "name": reply.tool, "input": arguments}}]
            return web.Response(
                body=orjson.dumps(
                    {
                        "output": {"message": {"role": "assistant", "content": content}},
                        "stopReason": _STOP[reply.finish],
                        "usage": usage,
                        "metrics": {"latencyMs": 1},
                    }
                ),
                content_type="application/json",
            )
        return await self.send_stream(
            request,
            {"Content-Type": "application/vnd.amazon.eventstream"},
            _frames(reply, tool_id, usage),
            behaviour,
        )


def _frames(reply: Reply, tool_id: str, usage: Json) -> list[bytes]:
    frames = [event("messageStart", {"role": "assistant"})]
    if reply.tool is not None:
        frames.append(
            event(
                "contentBlockStart",
                {
                    "contentBlockIndex": 0,
                    "start": {"toolUse": {"toolUseId": tool_id, "name": reply.tool}},
                },
            )
        )
        arguments = reply.tool_arguments or "{}"
        for i in range(0, len(arguments), 8):  # arguments arrive in slices, as from a real model
            frames.append(
                event(
                    "contentBlockDelta",
                    {
                        "contentBlockIndex": 0,
                        "delta": {"toolUse": {"input": arguments[i : i + 8]}},
                    },
                )
            )
    else:
        for word in reply.words:
            frames.append(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": word}}))
    frames.append(event("contentBlockStop", {"contentBlockIndex": 0}))
    frames.append(event("messageStop", {"stopReason": _STOP[reply.finish]}))
    frames.append(event("metadata", {"usage": usage, "metrics": {"latencyMs": 1}}))
    return frames


__all__ = ["Behaviour", "BedrockUpstream", "encode_event", "event", "exception_event"]
