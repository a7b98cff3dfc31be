"""The OpenAI Responses API in the router's one internal shape (OpenAI chat completions) and
back: the request schema checked at the edge, the request translated to a chat request, and a
chat completion (or its stream of chunks) translated into a Response (or its typed events).

What has no chat equivalent is refused with a 400 naming the field rather than dropped:
stored state (`previous_response_id`, `conversation`, item references), background runs,
prompt templates and built-in tools."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from pointsman.embeddings import schema_error
from pointsman.errors import InvalidRequest

Json = dict[str, Any]


class _Shape(BaseModel):
    # Fields the API has but pointsman does not translate (ids, statuses, annotations) are kept.
    model_config = ConfigDict(extra="allow")


class InputText(_Shape):
    type: Literal["input_text"]
    text: str


class InputImage(_Shape):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: str = "auto"


class InputFile(_Shape):
    type: Literal["input_file"]
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class OutputText(_Shape):
    type: Literal["output_text"]
    text: str


class Refusal(_Shape):
    type: Literal["refusal"]
    refusal: str


_PART_TYPES = ("input_text", "input_image", "input_file", "output_text", "refusal")
Part = Annotated[
    InputText | InputImage | InputFile | OutputText | Refusal,
    Field(discriminator="type"),
]


class MessageItem(_Shape):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]


class FunctionCallItem(_Shape):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str


class FunctionCallOutputItem(_Shape):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[Part]


class ReasoningItem(_Shape):
    # A model's earlier reasoning: chat completions cannot carry it, so it is left out.
    type: Literal["reasoning"]


_ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")


def _item_type(value: Any) -> Any:
    # Messages may leave `type` out ("easy input messages").
    if isinstance(value, dict):
        return value.get("type", "message")
    return getattr(value, "type", None)


Item = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(
        _item_type,
        custom_error_type="unsupported_item",
        custom_error_message=(
            "unsupported input item type; pointsman translates these item types: " + ", ".join(_ITEM_TYPES)
        ),
    ),
]


class FunctionTool(_Shape):
    type: Literal["function"]
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: Json | None = None
    strict: bool | None = None


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")],
    Discriminator(
        _item_type,
        custom_error_type="unsupported_tool",
        custom_error_message="only function tools are supported (type: function)",
    ),
]


class ToolChoiceFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    name: str = Field(min_length=1)


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: Json | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextSettings(_Shape):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningSettings(_Shape):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None


class ResponsesRequest(_Shape):
    """`POST /v1/responses`. Fields pointsman does not translate (e.g. `store`, `include`)
    are accepted and reach only deployments that speak the Responses API."""

    model: str = Field(min_length=1)
    input: str | list[Item]
    instructions: str | None = None
    stream: bool | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    text: TextSettings | None = None
    reasoning: ReasoningSettings | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    background: bool | None = None
    prompt: Any = None


_LABELS = frozenset(
    [
        *_ITEM_TYPES,
        *_PART_TYPES,
        "function",
        "ToolChoiceFunction",
        "TextFormat",
        "literal['none','auto','required']",
    ]
)
# Fields that need state pointsman does not keep, with what to do instead.
_STATEFUL = {
    "previous_response_id": "pointsman does not store responses: send the whole conversation in `input`",
    "conversation": "pointsman does not store conversations: send the whole conversation in `input`",
    "prompt": "stored prompt templates are not supported: send the prompt in `instructions` and `input`",
}


def parse_request(body: Any) -> ResponsesRequest:
    """The validated request; a 400 naming the field otherwise."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        # Strict: JSON types as the API defines them (no "5" for 5, no "yes" for true).
        request = ResponsesRequest.model_validate(body, strict=True)
    except ValidationError as exc:
        raise schema_error(exc, _LABELS) from None
    for field, advice in _STATEFUL.items():
        if getattr(request, field) is not None:
            raise _field_error(field, f"{field} is not supported: {advice}", "unsupported_parameter")
    if request.background:
        raise _field_error("background", "background responses are not supported", "unsupported_parameter")
    if isinstance(request.input, list):
        if not request.input:
            raise _field_error("input", "input: must not be an empty array")
        for i, item in enumerate(request.input):
            if isinstance(item, MessageItem) and item.role == "assistant" and isinstance(item.content, list):
                for j, part in enumerate(item.content):
                    if not isinstance(part, (OutputText, Refusal)):
                        raise _field_error(
                            f"input[{i}].content[{j}]",
                            f"input[{i}].content[{j}]: assistant messages hold output_text or refusal parts",
                        )
    elif not request.input:
        raise _field_error("input", "input: must not be empty")
    fmt = request.text.format if request.text is not None else None
    if fmt is not None and fmt.type == "json_schema" and (not fmt.name or fmt.schema_ is None):
        raise _field_error("text.format", "text.format: a json_schema format needs `name` and `schema`")
    return request


def _field_error(param: str, message: str, code: str = "invalid_request") -> InvalidRequest:
    error = InvalidRequest(message, code=code)
    error.param = param
    return error


# -- request: Responses -> chat ----------------------------------------------------------------


def to_chat_request(request: ResponsesRequest) -> Json:
    """The chat completions request that asks the same of a model."""
    messages: list[Json] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    if isinstance(request.input, str):
        messages.append({"role": "user", "content": request.input})
    else:
        for item in request.input:
            _add_item(messages, item)
        if len(messages) == (1 if request.instructions else 0):
            raise _field_error("input", "input: holds no message, function call or function call output")
    chat: Json = {"model": request.model, "messages": messages}
    if request.tools:
        chat["tools"] = [_chat_tool(tool) for tool in request.tools]
    choice = request.tool_choice
    if isinstance(choice, ToolChoiceFunction):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif choice is not None:
        chat["tool_choice"] = choice
    if request.parallel_tool_calls is not None and request.tools:
        chat["parallel_tool_calls"] = request.parallel_tool_calls
    if request.max_output_tokens is not None:
        chat["max_completion_tokens"] = request.max_output_tokens
    # `metadata` stays out: chat completions accept it only with `store`, which pointsman never sets.
    # Fields chat completions share, sent only when the client set them.
    for field in ("temperature", "top_p", "user", "service_tier", "prompt_cache_key", "safety_identifier"):
        value = getattr(request, field)
        if value is not None:
            chat[field] = value
    if request.text is not None and request.text.verbosity is not None:
        chat["verbosity"] = request.text.verbosity
    fmt = request.text.format if request.text is not None else None
    if fmt is not None and fmt.type == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        schema: Json = {"name": fmt.name, "schema": fmt.schema_}
        if fmt.strict is not None:
            schema["strict"] = fmt.strict
        if fmt.description:
            schema["description"] = fmt.description
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    if request.reasoning is not None and request.reasoning.effort is not None:
        chat["reasoning_effort"] = request.reasoning.effort
    if request.stream:
        chat["stream"] = True
        # response.completed carries usage: ask every upstream for it.
        chat["stream_options"] = {"include_usage": True}
    return chat


def _add_item(messages: list[Json], item: Any) -> None:
    if isinstance(item, MessageItem):
        role = item.role
        if isinstance(item.content, str):
            messages.append({"role": role, "content": item.content})
        elif role == "assistant":
            text = "".join(p.text if isinstance(p, OutputText) else "" for p in item.content)
            refusal = "".join(p.refusal if isinstance(p, Refusal) else "" for p in item.content)
            message: Json = {"role": "assistant", "content": text}
            if refusal:
                message["refusal"] = refusal
            messages.append(message)
        elif role in ("system", "developer"):
            # System prompts are text in every upstream API.
            messages.append({"role": role, "content": "".join(_part_text(p) for p in item.content)})
        else:
            messages.append({"role": role, "content": [_chat_part(p) for p in item.content]})
    elif isinstance(item, FunctionCallItem):
        call = {
            "id": item.call_id,
            "type": "function",
            "function": {"name": item.name, "arguments": item.arguments},
        }
        last = messages[-1] if messages else None
        # Calls made in one turn belong to one assistant message (with its text, if any).
        if last is not None and last["role"] == "assistant" and "tool_calls" not in last:
            last["tool_calls"] = [call]
        elif last is not None and last["role"] == "assistant":
            last["tool_calls"].append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif isinstance(item, FunctionCallOutputItem):
        output = item.output
        content = output if isinstance(output, str) else "".join(_part_text(p) for p in output)
        messages.append({"role": "tool", "tool_call_id": item.call_id, "content": content})
    # Reasoning items have no chat equivalent and are left out.


def _part_text(part: Any) -> str:
    if isinstance(part, (InputText, OutputText)):
        return part.text
    if isinstance(part, Refusal):
        return part.refusal
    return ""


def _chat_part(part: Any) -> Json:
    if isinstance(part, (InputText, OutputText)):
        return {"type": "text", "text": part.text}
    if isinstance(part, InputImage):
        if part.image_url is None:
            raise InvalidRequest("input_image: only image_url images are supported (no file_id)")
        image: Json = {"url": part.image_url}
        if part.detail in ("low", "high", "auto"):
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    if isinstance(part, InputFile):
        file = {
            k: v
            for k, v in (
                ("file_data", part.file_data),
                ("file_id", part.file_id),
                ("filename", part.filename),
            )
            if v is not None
        }
        return {"type": "file", "file": file}
    assert isinstance(part, Refusal)
    return {"type": "text", "text": part.refusal}


def _chat_tool(tool: FunctionTool) -> Json:
    function: Json = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = tool.parameters if tool.parameters is not None else {"type": "object"}
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


# -- answer: chat -> Responses -----------------------------------------------------------------


def _usage(usage: Any) -> Json | None:
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


class ResponseShell:
    """The Response object around one request's output: ids, echoed settings, status."""

    def __init__(self, request: ResponsesRequest, response_id: str) -> None:
        self.request = request
        self.id = response_id
        self.created_at = int(time.time())
        self._items = 0

    def item_id(self, prefix: str) -> str:
        self._items += 1
        return f"{prefix}_{self.id.removeprefix('resp_')}{self._items:03d}"

    def render(
        self,
        status: str,
        output: list[Json],
        usage: Json | None,
        finish: str | None = None,
        error: Json | None = None,
    ) -> Json:
        request = self.request
        reason = _INCOMPLETE.get(finish or "")
        if status == "completed" and reason is not None:
            status = "incomplete"
        fmt = request.text.format if request.text is not None else None
        choice = request.tool_choice
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": {"reason": reason} if status == "incomplete" else None,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "model": request.model,
            "output": output,
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": None,
            "reasoning": {"effort": request.reasoning.effort if request.reasoning else None, "summary": None},
            "store": False,
            "temperature": request.temperature,
            "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}},
            "tool_choice": choice.model_dump() if isinstance(choice, BaseModel) else (choice or "auto"),
            "tools": [t.model_dump(exclude_none=True) for t in request.tools or ()],
            "top_p": request.top_p,
            "truncation": "disabled",
            "usage": usage,
            "user": request.user,
            "metadata": request.metadata or {},
        }


def _message_item(item_id: str, text: str, status: str = "completed", refusal: str | None = None) -> Json:
    content: list[Json] = []
    if text or not refusal:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> Json:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def to_response(completion: Json, shell: ResponseShell) -> Json:
    """The Response for a chat completion."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    output: list[Json] = []
    text = message.get("content")
    text = text if isinstance(text, str) else ""
    calls = message.get("tool_calls") or []
    refusal = message.get("refusal")
    if text or refusal or not calls:
        output.append(_message_item(shell.item_id("msg"), text, refusal=refusal))
    for call in calls:
        function = call.get("function") or {}
        output.append(
            _call_item(
                shell.item_id("fc"),
                str(call.get("id") or shell.item_id("call")),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
            )
        )
    return shell.render("completed", output, _usage(completion.get("usage")), choice.get("finish_reason"))


class _OpenCall:
    __slots__ = ("item_id", "output_index", "call_id", "name", "arguments")

    def __init__(self, item_id: str, output_index: int, call_id: str, name: str) -> None:
        self.item_id = item_id
        self.output_index = output_index
        self.call_id = call_id
        self.name = name
        self.arguments: list[str] = []


class ChatToResponsesStream:
    """Turns a chat completion stream (parsed chunks) into the Responses API's typed events:
    `start()` first, `feed(chunk)` per chunk, then `finish()`, or `fail(message)` when the
    upstream broke off. Each returns a list of (event type, payload)."""

    def __init__(self, shell: ResponseShell) -> None:
        self.shell = shell
        self.sequence = 0
        self.output: list[Json] = []
        self.usage: Json | None = None
        self.finish_reason: str | None = None
        self._text_item: tuple[str, int] | None = None
        self._text: list[str] = []
        self._calls: dict[int, _OpenCall] = {}
        self._open_call: _OpenCall | None = None

    def _event(self, kind: str, payload: Json) -> tuple[str, Json]:
        event = (kind, {"type": kind, "sequence_number": self.sequence, **payload})
        self.sequence += 1
        return event

    def start(self) -> list[tuple[str, Json]]:
        skeleton = self.shell.render("in_progress", [], None)
        return [
            self._event("response.created", {"response": skeleton}),
            self._event("response.in_progress", {"response": skeleton}),
        ]

    def feed(self, chunk: Json) -> list[tuple[str, Json]]:
        events: list[tuple[str, Json]] = []
        if isinstance(chunk.get("usage"), dict):
            self.usage = _usage(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                events += self._text_delta(text)
            for call in delta.get("tool_calls") or ():
                events += self._call_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _text_delta(self, text: str) -> list[tuple[str, Json]]:
        events = self._close_call()
        if self._text_item is None:
            item_id, index = self.shell.item_id("msg"), len(self.output)
            self.output.append({})  # its slot; filled when the item is done
            self._text_item = (item_id, index)
            self._text = []
            events.append(
                self._event(
                    "response.output_item.added",
                    {
                        "output_index": index,
                        "item": _message_item(item_id, "", "in_progress") | {"content": []},
                    },
                )
            )
            events.append(
                self._event(
                    "response.content_part.added",
                    {
                        "item_id": item_id,
                        "output_index": index,
                        "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                    },
                )
            )
        item_id, index = self._text_item
        self._text.append(text)
        events.append(
            self._event(
                "response.output_text.delta",
                {
                    "item_id": item_id,
                    "output_index": index,
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                },
            )
        )
        return events

    def _close_text(self) -> list[tuple[str, Json]]:
        if self._text_item is None:
            return []
        item_id, index = self._text_item
        self._text_item = None
        text = "".join(self._text)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item = _message_item(item_id, text)
        self.output[index] = item
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        return [
            self._event("response.output_text.done", {**where, "text": text, "logprobs": []}),
            self._event("response.content_part.done", {**where, "part": part}),
            self._event("response.output_item.done", {"output_index": index, "item": item}),
        ]

    def _call_delta(self, call: Any) -> list[tuple[str, Json]]:
        if not isinstance(call, dict):
            return []
        position = call.get("index", 0)
        function = call.get("function") or {}
        events: list[tuple[str, Json]] = []
        current = self._calls.get(position)
        if current is None:
            events += self._close_text() + self._close_call()
            index = len(self.output)
            self.output.append({})
            current = _OpenCall(
                self.shell.item_id("fc"),
                index,
                str(call.get("id") or self.shell.item_id("call")),
                str(function.get("name") or ""),
            )
            self._calls[position] = self._open_call = current
            item = _call_item(current.item_id, current.call_id, current.name, "", "in_progress")
            events.append(self._event("response.output_item.added", {"output_index": index, "item": item}))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            current.arguments.append(arguments)
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    {"item_id": current.item_id, "output_index": current.output_index, "delta": arguments},
                )
            )
        return events

    def _close_call(self) -> list[tuple[str, Json]]:
        current, self._open_call = self._open_call, None
        if current is None:
            return []
        arguments = "".join(current.arguments)
        item = _call_item(current.item_id, current.call_id, current.name, arguments)
        self.output[current.output_index] = item
        where = {"item_id": current.item_id, "output_index": current.output_index}
        return [
            self._event(
                "response.function_call_arguments.done",
                {**where, "name": current.name, "arguments": arguments},
            ),
            self._event("response.output_item.done", {"output_index": current.output_index, "item": item}),
        ]

    def finish(self) -> list[tuple[str, Json]]:
        events = self._close_text() + self._close_call()
        if not self.output:
            # Nothing was said: still one (empty) message, as a non-streamed answer has.
            events += self._text_delta("")[:2] + self._close_text()
        response = self.shell.render("completed", self.output, self.usage, self.finish_reason)
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        return [*events, self._event(kind, {"response": response})]

    def fail(self, message: str, code: str = "server_error") -> list[tuple[str, Json]]:
        error = {"code": code, "message": message}
        output = [item for item in self.output if item]
        response = self.shell.render("failed", output, self.usage, error=error)
        return [
            self._event("error", {"code": code, "message": message, "param": None}),
            self._event("response.failed", {"response": response}),
        ]


def sse(kind: str, payload: Json) -> bytes:
    """One server-sent event as the Responses API frames it."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
