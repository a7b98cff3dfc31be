"""The OpenAI embeddings request as pointsman accepts it: checked at the edge, then passed
through to OpenAI-compatible embeddings deployments."""

from __future__ import annotations

import reprlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pointsman.config import join_path
from pointsman.errors import InvalidRequest

# OpenAI's own limit on the number of inputs in one embeddings request.
MAX_INPUTS = 2048


class EmbeddingsRequest(BaseModel):
    """`POST /v1/embeddings`; unknown fields pass through to the upstream untouched."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(None, gt=0)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value:
                raise ValueError("must not be an empty string")
            return value
        if not value:
            raise ValueError("must not be an empty array")
        if len(value) > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} inputs per request, got {len(value)}")
        for i, item in enumerate(value):
            if item == "" or item == []:
                raise ValueError(f"item {i} is empty")
        return value


def validate_embeddings_body(body: Any) -> None:
    """Raise a 400 naming the first field that is wrong (`param` set to it)."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    if "stream" in body:
        failure = InvalidRequest("stream: embeddings requests cannot be streamed", code="invalid_stream")
        failure.param = "stream"
        raise failure
    try:
        EmbeddingsRequest.model_validate(body, strict=True)
    except ValidationError as exc:
        raise schema_error(exc) from None


def schema_error(exc: ValidationError, labels: frozenset[str] = frozenset()) -> InvalidRequest:
    """A 400 for a request body that failed its schema: the deepest problem, named by its path
    (`input[2].call_id: Field required`), with that path as the error's `param`. `labels` are
    the tags of the schema's tagged unions, which pydantic puts in the path but are no field."""
    errors = exc.errors()
    if not errors:
        return InvalidRequest("request body is invalid")
    # A union's failures come one per member; the member that got furthest says the most.
    error = max(errors, key=lambda e: len(e["loc"]))
    path = ""
    for part in error["loc"]:
        # Union members show up in the path by type name ("str", "list[str]"): not a field.
        if isinstance(part, str) and ("[" in part or part in _TYPE_NAMES or part in labels):
            continue
        path = join_path(path, part)
    path = path or "(body)"
    failure = InvalidRequest(f"{path}: {_describe(error)}", code="invalid_request")
    failure.param = path
    return failure


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "list", "dict"})
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 60, 4, 4, 2


def _describe(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "Field required"
    if kind == "extra_forbidden":
        return "unknown parameter"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    return f"{error['msg']} (got {_SHORT.repr(error['input'])})"
