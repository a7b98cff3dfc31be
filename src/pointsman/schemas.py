"""The shapes of the bodies the server accepts, checked at the edge before anything else runs.

Each model is open (`extra="allow"`: providers and SDKs add fields, and those pass through) but
strict about the known fields' JSON types, so a wrongly shaped body is the client's 400 naming
the field, never an upstream's error charged to a deployment or a crash further in. The same
models are the request bodies of `GET /openapi.json`. The Responses and embeddings bodies have
their models next to their translations (`responses_format`, `embeddings`); they are named here
so that one module lists every inbound shape.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from pointsman.embeddings import EmbeddingsRequest, schema_error
from pointsman.errors import InvalidRequest
from pointsman.responses_format import ResponsesRequest

Json = dict[str, Any]

__all__ = [
    "ChatRequest",
    "CountTokensRequest",
    "EmbeddingsRequest",
    "FeedbackRequest",
    "MessagesRequest",
    "ResponsesRequest",
    "validate_chat",
    "validate_messages",
]


class _Open(BaseModel):
    # Fields pointsman does not know pass through untouched.
    model_config = ConfigDict(extra="allow")


def _tag(known: frozenset[str]) -> Any:
    """A discriminator: the `type` of a part when pointsman knows it, else "other" (a part type
    it does not know is the upstream's to judge)."""

    def tag(value: Any) -> str:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return f"type={kind}" if isinstance(kind, str) and kind in known else "type=other"

    return tag


class TypedObject(_Open):
    type: str


def _none_of(known: frozenset[str]) -> Any:
    """JSON Schema for a union's catch-all member: any `type` but the known ones, so the union
    is a `oneOf` whose members never overlap (pydantic picks the member by the discriminator)."""

    def extra(schema: dict[str, Any]) -> None:
        schema["properties"]["type"]["not"] = {"enum": sorted(known)}

    return extra


# -- OpenAI chat completions --------------------------------------------------------------------


class TextPart(_Open):
    type: Literal["text"]
    text: str


class ImageURL(_Open):
    url: str
    detail: str | None = None


class ImagePart(_Open):
    type: Literal["image_url"]
    image_url: ImageURL


class AudioPart(_Open):
    type: Literal["input_audio"]
    input_audio: Json


class FilePart(_Open):
    type: Literal["file"]
    file: Json


class RefusalPart(_Open):
    type: Literal["refusal"]
    refusal: str


_CHAT_PARTS = frozenset({"text", "image_url", "input_audio", "file", "refusal"})


class OtherPart(TypedObject):
    model_config = ConfigDict(json_schema_extra=_none_of(_CHAT_PARTS))

ContentPart = Annotated[
    Annotated[TextPart, Tag("type=text")]
    | Annotated[ImagePart, Tag("type=image_url")]
    | Annotated[AudioPart, Tag("type=input_audio")]
    | Annotated[FilePart, Tag("type=file")]
    | Annotated[RefusalPart, Tag("type=refusal")]
    | Annotated[OtherPart, Tag("type=other")],
    Discriminator(_tag(_CHAT_PARTS)),
]


class FunctionCall(_Open):
    name: str
    arguments: str


class ToolCall(_Open):
    id: str | None = None
    type: str | None = None
    function: FunctionCall


class ChatMessage(_Open):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(_Open):
    name: str
    description: str | None = None
    parameters: Json | None = None
    strict: bool | None = None


class NotFunction(TypedObject):
    model_config = ConfigDict(json_schema_extra=_none_of(frozenset({"function"})))


class ChatFunctionTool(_Open):
    type: Literal["function"]
    function: FunctionDefinition


ChatTool = Annotated[
    Annotated[ChatFunctionTool, Tag("type=function")] | Annotated[NotFunction, Tag("type=other")],
    Discriminator(_tag(frozenset({"function"}))),
]


class NamedFunction(_Open):
    name: str


class ChatToolChoiceFunction(_Open):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Annotated[
    Annotated[ChatToolChoiceFunction, Tag("type=function")] | Annotated[NotFunction, Tag("type=other")],
    Discriminator(_tag(frozenset({"function"}))),
]


class StreamOptions(_Open):
    include_usage: bool | None = None


class ResponseFormat(_Open):
    type: str


class ChatRequest(_Open):
    """`POST /v1/chat/completions`."""

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    tools: list[ChatTool] | None = None
    tool_choice: str | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    response_format: ResponseFormat | None = None
    metadata: Json | None = None
    user: str | None = None


# -- Anthropic messages ---------------------------------------------------------------------------


class TextBlock(_Open):
    type: Literal["text"]
    text: str


class Source(_Open):
    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class ImageBlock(_Open):
    type: Literal["image"]
    source: Source


class DocumentBlock(_Open):
    type: Literal["document"]
    source: Source
    title: str | None = None


class ToolUseBlock(_Open):
    type: Literal["tool_use"]
    id: str
    name: str
    input: Json


_RESULT_BLOCKS = frozenset({"text", "image", "document"})


class OtherResultBlock(TypedObject):
    model_config = ConfigDict(json_schema_extra=_none_of(_RESULT_BLOCKS))

ToolResultContent = Annotated[
    Annotated[TextBlock, Tag("type=text")]
    | Annotated[ImageBlock, Tag("type=image")]
    | Annotated[DocumentBlock, Tag("type=document")]
    | Annotated[OtherResultBlock, Tag("type=other")],
    Discriminator(_tag(_RESULT_BLOCKS)),
]


class ToolResultBlock(_Open):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ToolResultContent] | None = None
    is_error: bool | None = None


class ThinkingBlock(_Open):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Open):
    type: Literal["redacted_thinking"]
    data: str


_BLOCKS = frozenset({"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"})


class OtherBlock(TypedObject):
    model_config = ConfigDict(json_schema_extra=_none_of(_BLOCKS))

ContentBlock = Annotated[
    Annotated[TextBlock, Tag("type=text")]
    | Annotated[ImageBlock, Tag("type=image")]
    | Annotated[DocumentBlock, Tag("type=document")]
    | Annotated[ToolUseBlock, Tag("type=tool_use")]
    | Annotated[ToolResultBlock, Tag("type=tool_result")]
    | Annotated[ThinkingBlock, Tag("type=thinking")]
    | Annotated[RedactedThinkingBlock, Tag("type=redacted_thinking")]
    | Annotated[OtherBlock, Tag("type=other")],
    Discriminator(_tag(_BLOCKS)),
]


class AnthropicMessage(_Open):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class AnthropicTool(_Open):
    name: str = Field(min_length=1)
    type: str | None = None
    description: str | None = None
    input_schema: Json | None = None


class ToolChoiceTool(_Open):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceMode(_Open):
    type: Literal["auto", "any", "none"]
    disable_parallel_tool_use: bool | None = None


AnthropicToolChoice = Annotated[
    Annotated[ToolChoiceTool, Tag("type=tool")] | Annotated[ToolChoiceMode, Tag("type=other")],
    Discriminator(_tag(frozenset({"tool"}))),
]


class AnthropicMetadata(_Open):
    user_id: str | None = None


class CountTokensRequest(_Open):
    """`POST /v1/messages/count_tokens`."""

    model: str = Field(min_length=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    thinking: Json | None = None


class MessagesRequest(CountTokensRequest):
    """`POST /v1/messages`."""

    max_tokens: int = Field(ge=1)
    metadata: AnthropicMetadata | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None


# -- feedback --------------------------------------------------------------------------------


class FeedbackRequest(BaseModel):
    """`POST /v1/feedback` (checked by `feedback.parse_feedback`, which names each field's rule)."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1)
    score: float | None = Field(None, ge=0, le=1)
    thumbs: Literal["up", "down"] | None = None
    comment: str | None = Field(None, max_length=10_000)


# -- checks -----------------------------------------------------------------------------------------

# The discriminators' tags, which pydantic puts in an error's path but are no field.
_LABELS = frozenset(f"type={kind}" for kind in {*_CHAT_PARTS, *_BLOCKS, "function", "tool", "other"})
_chat = ChatRequest.__pydantic_validator__
_messages = MessagesRequest.__pydantic_validator__
_count_tokens = CountTokensRequest.__pydantic_validator__


def validate_chat(body: Any) -> None:
    """Raise a 400 naming the first wrongly shaped field of a chat completions body."""
    _check(_chat, body)


def validate_messages(body: Any, *, count_tokens: bool = False) -> None:
    """Raise a 400 naming the first wrongly shaped field of an Anthropic messages body."""
    _check(_count_tokens if count_tokens else _messages, body)


def _check(validator: Any, body: Any) -> None:
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        # Strict: JSON types as the APIs define them (no "5" for 5, no "yes" for true).
        validator.validate_python(body, strict=True)
    except ValidationError as exc:
        error = schema_error(exc, _LABELS)
        # pydantic names its model classes; a client knows JSON objects.
        error.message = _INSTANCE.sub("an object", error.message)
        error.args = (error.message,)
        raise error from None


_INSTANCE = re.compile(r"a valid dictionary or instance of \w+")


# -- OpenAPI ------------------------------------------------------------------------------------------

# (path, summary, body model, API whose error shape it answers in)
_OPERATIONS: tuple[tuple[str, str, type[BaseModel], str], ...] = (
    ("/v1/chat/completions", "Create a chat completion (routed)", ChatRequest, "openai"),
    ("/v1/responses", "Create a response (OpenAI Responses API, routed)", ResponsesRequest, "openai"),
    ("/v1/embeddings", "Create embeddings (routed)", EmbeddingsRequest, "openai"),
    ("/v1/messages", "Create a message (Anthropic Messages API, routed)", MessagesRequest, "anthropic"),
    ("/v1/messages/count_tokens", "Estimate a message's input tokens", CountTokensRequest, "anthropic"),
    ("/v1/feedback", "Rate an answered request", FeedbackRequest, "openai"),
)
_ERRORS: dict[str, Json] = {
    "OpenAIError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
    "AnthropicError": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
_cached: Json | None = None


def openapi_schema() -> Json:
    """The server's OpenAPI 3.1 description: the public routes, with the request bodies above."""
    global _cached
    if _cached is not None:
        return _cached
    from importlib.metadata import version

    from pydantic.json_schema import models_json_schema

    _, defs = models_json_schema(
        [(model, "validation") for _, _, model, _ in _OPERATIONS],
        ref_template="#/components/schemas/{model}",
    )
    schemas: Json = {**defs.get("$defs", {}), **_ERRORS}
    paths: Json = {}
    for path, summary, model, api in _OPERATIONS:
        shape = "AnthropicError" if api == "anthropic" else "OpenAIError"
        error = {"application/json": {"schema": {"$ref": f"#/components/schemas/{shape}"}}}
        failure = {"description": "error", "content": error}
        body = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
        paths[path] = {
            "post": {
                "summary": summary,
                "operationId": path.strip("/").replace("/", "_"),
                "requestBody": {"required": True, "content": body},
                "responses": {
                    "200": {"description": "the answer (JSON, or server-sent events when streaming)"},
                    "4XX": failure,
                    "5XX": failure,
                },
            }
        }
    for path, summary in (
        ("/v1/models", "List the virtual models and deployments"),
        ("/healthz", "Liveness"),
        ("/readyz", "Readiness: deployments cooling down, degraded dependencies"),
        ("/openapi.json", "This description"),
    ):
        paths[path] = {
            "get": {
                "summary": summary,
                "operationId": path.strip("/").replace("/", "_").replace(".", "_"),
                "responses": {"200": {"description": "JSON"}, "503": {"description": "not ready"}},
            }
        }
    _cached = {
        "openapi": "3.1.0",
        "info": {"title": "pointsman", "version": version("pointsman")},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "x-api-key": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "security": [{}, {"bearer": []}, {"x-api-key": []}],
    }
    return _cached
