"""Judges for cascades: decide whether a cheap model's answer is good enough to return, or the
request should escalate to the next (stronger) deployment of the plan."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from pointsman.answers import REFUSAL_PATTERNS, arithmetic_error
from pointsman.config import CascadeSettings, Config, register_check
from pointsman.signals import message_text


@dataclass(slots=True)
class Verdict:
    accepted: bool
    judge: str
    reason: str
    score: float | None = None
    # What judging itself cost (an LLM judge's call), and who judged.
    cost: float = 0.0
    judged_by: str | None = None


def answer_text(answer: dict[str, Any]) -> str:
    choices = answer.get("choices") or [{}]
    return (choices[0].get("message") or {}).get("content") or ""


class RulesJudge:
    """Rejects empty, cut-off, refusing or 'I don't know' answers, and JSON that fails the
    schema the request asked for."""

    name = "rules"

    def __init__(
        self,
        extra_patterns: tuple[str, ...] = (),
        require_pattern: str | None = None,
        check_arithmetic: bool = False,
    ) -> None:
        self.pattern = re.compile("|".join((*REFUSAL_PATTERNS, *extra_patterns)), re.I)
        self.required = re.compile(require_pattern, re.I) if require_pattern else None
        self.check_arithmetic = check_arithmetic

    @classmethod
    def from_settings(cls, settings: CascadeSettings) -> RulesJudge:
        return cls(settings.reject_patterns, settings.require_pattern, settings.check_arithmetic)

    def __call__(self, answer: dict[str, Any], request: dict[str, Any]) -> Verdict:
        choice = (answer.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        if message.get("tool_calls"):
            return Verdict(True, self.name, "tool_call")
        text = (message.get("content") or "").strip()
        if not text:
            return Verdict(False, self.name, "empty_answer")
        if choice.get("finish_reason") == "length":
            return Verdict(False, self.name, "cut_off")
        if self.pattern.search(text):
            return Verdict(False, self.name, "refusal_or_unsure")
        if self.required is not None and not self.required.search(text):
            return Verdict(False, self.name, "missing_required_pattern")
        if self.check_arithmetic and arithmetic_error(text):
            return Verdict(False, self.name, "arithmetic_error")
        fmt = request.get("response_format") or {}
        if fmt.get("type") in ("json_object", "json_schema"):
            try:
                data = orjson.loads(text)
            except orjson.JSONDecodeError:
                return Verdict(False, self.name, "invalid_json")
            schema = (fmt.get("json_schema") or {}).get("schema")
            problem = schema_problem(data, schema) if schema else None
            if problem:
                return Verdict(False, self.name, f"schema_mismatch: {problem}")
        return Verdict(True, self.name, "passed")


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_problem(data: Any, schema: dict[str, Any], path: str = "$") -> str | None:
    """The first way `data` breaks the JSON-schema subset models are asked for (type,
    required, properties, items, enum); None if it fits."""
    expected = schema.get("type")
    if isinstance(expected, str) and expected in _TYPES:
        ok = isinstance(data, _TYPES[expected]) and not (
            expected in ("integer", "number") and isinstance(data, bool)
        )
        if not ok:
            return f"{path} should be {expected}"
    if "enum" in schema and data not in schema["enum"]:
        return f"{path} should be one of {schema['enum']}"
    if isinstance(data, dict):
        for key in schema.get("required", ()):
            if key not in data:
                return f"{path}.{key} is required"
        for key, sub in (schema.get("properties") or {}).items():
            if key in data and isinstance(sub, dict):
                problem = schema_problem(data[key], sub, f"{path}.{key}")
                if problem:
                    return problem
    if isinstance(data, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(data):
            problem = schema_problem(item, schema["items"], f"{path}[{i}]")
            if problem:
                return problem
    return None


class LogprobJudge:
    """Accepts answers whose mean token log-probability reaches `min_logprob`; answers from
    upstreams that return no logprobs pass (nothing to judge by)."""

    name = "logprobs"

    def __init__(self, min_logprob: float) -> None:
        self.min_logprob = min_logprob

    def __call__(self, answer: dict[str, Any], request: dict[str, Any]) -> Verdict:
        choice = (answer.get("choices") or [{}])[0]
        tokens = ((choice.get("logprobs") or {}).get("content")) or []
        values = [t["logprob"] for t in tokens if isinstance(t, dict) and "logprob" in t]
        if not values:
            return Verdict(True, self.name, "no_logprobs")
        mean = sum(values) / len(values)
        accepted = mean >= self.min_logprob
        return Verdict(accepted, self.name, "confident" if accepted else "low_confidence", mean)


JUDGE_PROMPT = (
    "You grade answers. Rate how well the ANSWER serves the REQUEST on a scale of 1 to 10 "
    "(10: correct and complete; 1: wrong, empty or a refusal). Reply with the number only.\n\n"
    "REQUEST:\n{request}\n\nANSWER:\n{answer}"
)


@dataclass(slots=True)
class JudgeReply:
    text: str
    cost: float
    deployment: str


class LLMJudge:
    """Asks a configured deployment to grade the answer 1-10; `ask` sends one chat request
    and returns the reply text."""

    name = "llm"

    def __init__(self, min_score: float, ask: Callable[[dict[str, Any]], Awaitable[JudgeReply]]) -> None:
        self.min_score = min_score
        self.ask = ask

    async def __call__(self, answer: dict[str, Any], request: dict[str, Any]) -> Verdict:
        conversation = "\n".join(
            f"{m.get('role')}: {message_text(m.get('content'))}" for m in request.get("messages", [])
        )
        prompt = JUDGE_PROMPT.format(request=conversation[-6000:], answer=answer_text(answer)[-4000:])
        reply = await self.ask({"messages": [{"role": "user", "content": prompt}], "max_tokens": 5})
        found = re.search(r"\d+(?:\.\d+)?", reply.text)
        if not found:
            return Verdict(False, self.name, "unreadable_grade", None, reply.cost, reply.deployment)
        score = float(found.group())
        accepted = score >= self.min_score and not math.isnan(score)
        reason = "graded_good" if accepted else "graded_poor"
        return Verdict(accepted, self.name, reason, score, reply.cost, reply.deployment)


class VerifierJudge:
    """A trained verifier (`pointsman.learning.verifier`) scores the answer's probability of
    being right from the prompt and the answer (its final answer, form, length, hedging,
    refusals, format and arithmetic checks, the rule judges' verdicts, token logprobs when
    the upstream returned them); an answer scoring below `threshold` escalates."""

    name = "verifier"

    def __init__(
        self,
        artifact: Any,
        threshold: float,
        ask_second: Callable[[dict[str, Any]], Awaitable[JudgeReply]] | None = None,
    ) -> None:
        self.artifact = artifact
        self.threshold = threshold
        # A second cheap opinion: another deployment's (or another sample's) answer to the
        # same request; agreement of the final answers is a feature.
        self.ask_second = ask_second

    def __call__(self, answer: dict[str, Any], request: dict[str, Any]) -> Verdict | Awaitable[Verdict]:
        choice = (answer.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        if message.get("tool_calls"):
            return Verdict(True, self.name, "tool_call")
        if self.ask_second is not None:
            return self._with_second(answer, request)
        return self.verdict(answer, request)

    async def _with_second(self, answer: dict[str, Any], request: dict[str, Any]) -> Verdict:
        assert self.ask_second is not None
        body = {k: v for k, v in request.items() if k not in ("stream", "stream_options", "logprobs", "n")}
        reply = await self.ask_second(body)
        verdict = self.verdict(answer, request, reply.text)
        verdict.cost, verdict.judged_by = reply.cost, reply.deployment
        return verdict

    def verdict(self, answer: dict[str, Any], request: dict[str, Any], second: str | None = None) -> Verdict:
        """The verdict on `answer`, given the second opinion's text when there is one."""
        choice = (answer.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        tokens = ((choice.get("logprobs") or {}).get("content")) or []
        try:
            logprobs = [t["logprob"] for t in tokens]
        except (KeyError, TypeError):  # an upstream's odd entries: keep the readable ones
            logprobs = [t.get("logprob") for t in tokens if isinstance(t, dict)]
        fmt = request.get("response_format") or {}
        score = self.artifact.score(
            last_user_text(request),
            message.get("content") or "",
            finish_reason=choice.get("finish_reason"),
            logprobs=logprobs or None,
            second=second,
            json_requested=fmt.get("type") in ("json_object", "json_schema"),
        )
        accepted = score >= self.threshold
        return Verdict(accepted, self.name, "likely_right" if accepted else "likely_wrong", score)


def last_user_text(request: dict[str, Any]) -> str:
    """The text of the request's last user message (what a verifier was trained on)."""
    for message in reversed(request.get("messages") or ()):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def load_verifier_judge(
    settings: CascadeSettings, ask_second: Callable[[dict[str, Any]], Awaitable[JudgeReply]] | None = None
) -> VerifierJudge:
    """The verifier judge of `settings`, its threshold resolved from the target given;
    raises ValueError (the verifier's own error) naming what is wrong."""
    # Loaded only when configured: the learning package (numpy models) stays off `import pointsman`.
    from pointsman.learning.verifier import VerifierTarget, load_verifier

    options = settings.verifier
    artifact = load_verifier(options.artifact)
    if options.second_opinion and not artifact.second_opinion:
        raise ValueError(
            f"second_opinion: the verifier {options.artifact!r} was trained without second answers, so "
            "it would ignore this one: train it on examples with a `second` answer, or drop second_opinion"
        )
    if artifact.second_opinion and not options.second_opinion:
        raise ValueError(
            f"second_opinion: the verifier {options.artifact!r} was trained with a second cheap answer "
            "per prompt: name the deployment that gives it"
        )
    if options.threshold is not None:
        threshold = options.threshold
    elif (
        options.escalation_share is not None or options.quality is not None or options.cost_share is not None
    ):
        target = VerifierTarget(options.escalation_share, options.quality, options.cost_share)
        threshold = artifact.threshold_for(target)
    else:
        threshold = artifact.threshold
    return VerifierJudge(artifact, threshold, ask_second)


def check_cascade(path: str, settings: CascadeSettings) -> list[str]:
    """Config problems of a cascade, one line each, in the config's path style."""
    if "verifier" not in settings.judges:
        return []
    try:
        load_verifier_judge(settings)
    except ValueError as exc:
        return [f"{path}.verifier: {exc}"]
    return []


class Cascade:
    """The judges of one route, applied in order; the first rejection decides."""

    def __init__(
        self,
        settings: CascadeSettings,
        ask_judge: Callable[[dict[str, Any]], Awaitable[JudgeReply]] | None,
        ask_second: Callable[[dict[str, Any]], Awaitable[JudgeReply]] | None = None,
    ) -> None:
        self.settings = settings
        self.judges: list[Any] = []
        for name in settings.judges:
            if name == "rules":
                self.judges.append(RulesJudge.from_settings(settings))
            elif name == "logprobs":
                self.judges.append(LogprobJudge(settings.min_logprob))
            elif name == "llm" and ask_judge is not None:
                self.judges.append(LLMJudge(settings.min_score, ask_judge))
            elif name == "verifier":
                self.judges.append(load_verifier_judge(settings, ask_second))
        self.wants_logprobs = "logprobs" in settings.judges or any(
            isinstance(j, VerifierJudge) and j.artifact.uses_logprobs and settings.verifier.logprobs
            for j in self.judges
        )

    async def judge(self, answer: dict[str, Any], request: dict[str, Any]) -> list[Verdict]:
        """Each judge's verdict in order, stopping at the first rejection."""
        verdicts = []
        for judge in self.judges:
            result = judge(answer, request)
            verdict = await result if not isinstance(result, Verdict) else result
            verdicts.append(verdict)
            if not verdict.accepted:
                break
        return verdicts


def completion_as_stream(answer: dict[str, Any], include_usage: bool) -> list[bytes]:
    """A judged (buffered) chat completion as the SSE chunk events of a stream, so a streaming
    client of a cascade receives the accepted answer in the shape it asked for."""
    base = {
        "id": answer.get("id") or "chatcmpl-pointsman",
        "object": "chat.completion.chunk",
        "created": answer.get("created") or 0,
        "model": answer.get("model") or "",
        "system_fingerprint": answer.get("system_fingerprint"),
    }
    events = []
    finishes = []
    for choice in answer.get("choices") or ():
        message = dict(choice.get("message") or {})
        delta: dict[str, Any] = {
            "role": message.pop("role", "assistant"),
            "content": message.pop("content", None),
        }
        calls = message.pop("tool_calls", None)
        if calls:
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls)]
        delta.update({k: v for k, v in message.items() if v is not None})
        index = choice.get("index", 0)
        events.append(
            {
                **base,
                "choices": [
                    {
                        "index": index,
                        "delta": delta,
                        "logprobs": choice.get("logprobs"),
                        "finish_reason": None,
                    }
                ],
            }
        )
        finishes.append(
            {
                "index": index,
                "delta": {},
                "logprobs": None,
                "finish_reason": choice.get("finish_reason") or "stop",
            }
        )
    for finish in finishes:
        events.append({**base, "choices": [finish]})
    if include_usage and answer.get("usage") is not None:
        events.append({**base, "choices": [], "usage": answer["usage"]})
    return [b"data: " + orjson.dumps(event) + b"\n\n" for event in events] + [b"data: [DONE]\n\n"]


@register_check
def _check_cascades(config: Config) -> list[str]:
    """Each cascade's verifier loads and its target resolves, as it will at serving."""
    return [
        problem
        for name, model in config.models.items()
        if model.cascade is not None
        for problem in check_cascade(f"models.{name}.cascade", model.cascade)
    ]
