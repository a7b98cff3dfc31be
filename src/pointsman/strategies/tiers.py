"""Complexity tiers: a weighted score of the request's signals, mapped to tiers (simple,
standard, complex, reasoning, or your own), each with its deployments.

The score is ``bias + sum(weight * dimension)`` over dimensions in 0..1 (``output_length`` is
-1..1): `length` (log of estimated tokens), `code`, `math`, `reasoning`, `multi_step`,
`constraints`, `structure`, `output_length`, `chat` (small talk; a negative weight), `tools`,
`depth`, `images`, `json`. Each tier covers scores below its `up_to`; the last has none. The
distance to the nearest boundary gives a confidence; a request below `min_confidence` is never
sent below the `safe_tier`. With `sticky`, a short follow-up keeps the tier of its conversation.
Weights and boundaries default to those of the shipped `data/tiers-default.yaml`.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from pointsman.signals import Signals, estimate_tokens, message_text
from pointsman.strategies.base import Ranking, Strategy

if TYPE_CHECKING:
    from pointsman.config import Deployment

DIMENSIONS = (
    "length",
    "code",
    "math",
    "reasoning",
    "analysis",
    "multi_step",
    "constraints",
    "structure",
    "output_length",
    "chat",
    "tools",
    "depth",
    "images",
    "json",
)
# `length` is 0 at this many tokens and 1 at `LENGTH_FULL`, on a log scale.
LENGTH_FLOOR = 4
LENGTH_FULL = 6000


@cache
def shipped_defaults() -> dict[str, Any]:
    """The `options` of the tiers model in the shipped default config."""
    text = resources.files("pointsman").joinpath("data/tiers-default.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    options: dict[str, Any] = data["models"]["auto"]["options"]
    return options


def dimensions(signals: Signals) -> dict[str, float]:
    """The request's value on every dimension, each 0..1 (`output_length` -1..1)."""
    tokens = signals.estimated_tokens
    length = (
        0.0
        if tokens <= LENGTH_FLOOR
        else min(1.0, math.log(tokens / LENGTH_FLOOR) / math.log(LENGTH_FULL / LENGTH_FLOOR))
    )
    return {
        "length": length,
        "code": signals.code,
        "math": signals.math,
        "reasoning": signals.reasoning,
        "analysis": signals.analysis,
        "multi_step": signals.multi_step,
        "constraints": signals.constraints,
        "structure": signals.structure,
        "output_length": signals.output_length,
        "chat": signals.chat,
        "tools": min(1.0, signals.tool_count / 5),
        "depth": min(1.0, max(0, signals.turns - 1) / 6),
        "images": 1.0 if signals.has_images else 0.0,
        "json": 1.0 if signals.wants_json else 0.0,
    }


class TierSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    deployments: tuple[str, ...] = ()
    # The tier takes scores below this; the last tier takes the rest. Default: the shipped
    # boundary of a tier with the same name.
    up_to: float | None = None
    # Optional gate: a request reaches this tier only if at least one of these dimensions is at
    # its minimum (else it gets the tier below). Default: the shipped gate of the same name.
    requires: dict[str, float] | None = None


class StickyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = False
    # "short_followups": a follow-up whose last message is at most `max_followup_tokens` keeps
    # its conversation's tier. "conversation": every later turn keeps it (agents' tool loops
    # included) until the ttl runs out, unless its own score escalates to a higher tier.
    keep: Literal["short_followups", "conversation"] = "short_followups"
    # A follow-up whose last message is at most this long keeps its conversation's tier.
    max_followup_tokens: int = Field(60, ge=1)
    ttl_s: float = Field(1800.0, gt=0)
    max_conversations: int = Field(10_000, ge=1)


class TiersOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tiers: dict[str, TierSpec] = Field(default_factory=dict)
    weights: dict[str, float] = Field(default_factory=dict)
    bias: float | None = None
    # Confidence is the distance to the nearest boundary over this scale, capped at 1.
    confidence_scale: float | None = Field(None, gt=0)
    min_confidence: float | None = Field(None, ge=0, le=1)
    # A tier name, or "upper" for the higher of the two tiers around the nearest boundary.
    safe_tier: str | None = None
    sticky: StickyOptions = StickyOptions()


@dataclass(slots=True)
class TierChoice:
    """Where a request's score put it, and why."""

    tier: str
    scored_tier: str
    score: float
    confidence: float
    contributions: dict[str, float] = field(default_factory=dict)
    ambiguous: bool = False
    sticky: bool = False
    # The tier the score reached but whose `requires` the request did not meet.
    gated: str | None = None

    def describe(self) -> str:
        top = sorted(self.contributions.items(), key=lambda kv: -abs(kv[1]))[:5]
        parts = ", ".join(f"{k} {v:+.3f}" for k, v in top if v)
        text = f"score {self.score:.3f} ({parts or 'no cues'})"
        if self.gated:
            text += f", short of {self.gated}'s requirements"
        text += f" -> {self.scored_tier}, confidence {self.confidence:.2f}"
        if self.ambiguous and self.tier != self.scored_tier:
            text += f"; ambiguous, safe tier {self.tier}"
        if self.sticky:
            text += f"; follow-up keeps the conversation's tier {self.tier}"
        return text


class _Conversations:
    """Tier last chosen per conversation, bounded in count and age."""

    def __init__(self, capacity: int, ttl_s: float) -> None:
        self.capacity, self.ttl_s = capacity, ttl_s
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[1] < time.monotonic():
                del self._items[key]
                return None
            return item[0]

    def put(self, key: str, tier: str) -> None:
        with self._lock:
            self._items[key] = (tier, time.monotonic() + self.ttl_s)
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


class TiersStrategy(Strategy):
    """Scores the request's complexity and sends it to the deployments of its tier; when none of
    those survived the policies, the next tier up (then down) serves."""

    name = "tiers"
    Options = TiersOptions
    options: TiersOptions

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        defaults = shipped_defaults()
        o = self.options
        self.weights: dict[str, float] = {**defaults["weights"], **o.weights}
        self.bias: float = o.bias if o.bias is not None else defaults.get("bias", 0.0)
        self.scale: float = o.confidence_scale or defaults["confidence_scale"]
        self.min_confidence: float = (
            o.min_confidence if o.min_confidence is not None else defaults["min_confidence"]
        )
        self.safe_tier: str = o.safe_tier or defaults["safe_tier"]
        shipped = {name: spec.get("up_to") for name, spec in defaults["tiers"].items()}
        self.names: list[str] = list(o.tiers) or list(shipped)
        self.deployments: dict[str, tuple[str, ...]] = {
            n: (o.tiers[n].deployments if n in o.tiers else ()) for n in self.names
        }
        self.requires: dict[str, dict[str, float]] = {}
        for n in self.names:
            spec = o.tiers.get(n)
            gate = spec.requires if spec is not None and spec.requires is not None else None
            if gate is None:
                gate = defaults["tiers"].get(n, {}).get("requires") if n in shipped else None
            if gate:
                self.requires[n] = dict(gate)
        self.bounds: list[float] = []
        for n in self.names[:-1]:
            up_to = o.tiers[n].up_to if n in o.tiers else None
            self.bounds.append(up_to if up_to is not None else (shipped.get(n) or math.inf))
        sticky = o.sticky
        self._conversations = (
            _Conversations(sticky.max_conversations, sticky.ttl_s) if sticky.enabled else None
        )

    # -- config checks -------------------------------------------------------------------------

    def referenced(self) -> set[str]:
        return {n for names in self.deployments.values() for n in names}

    def check(self, path: str) -> list[str]:
        problems: list[str] = []
        if not self.options.tiers:
            problems.append(f"{path}.tiers: name at least one tier and its deployments")
        for name, spec in self.options.tiers.items():
            problems += self.check_names(f"{path}.tiers.{name}.deployments", spec.deployments)
        for i, (name, bound) in enumerate(zip(self.names[:-1], self.bounds, strict=True)):
            if bound == math.inf:
                problems.append(f"{path}.tiers.{name}.up_to: every tier but the last needs one")
            elif i and bound <= self.bounds[i - 1]:
                problems.append(
                    f"{path}.tiers.{name}.up_to: boundaries must increase ({bound} <= {self.bounds[i - 1]})"
                )
        last = self.names[-1] if self.names else None
        if last and last in self.options.tiers and self.options.tiers[last].up_to is not None:
            problems.append(f"{path}.tiers.{last}.up_to: the last tier takes every higher score")
        for tier, gate in self.requires.items():
            for name in gate:
                if name not in DIMENSIONS:
                    problems.append(
                        f"{path}.tiers.{tier}.requires.{name}: unknown dimension (expected one "
                        f"of: {', '.join(DIMENSIONS)})"
                    )
        for name in self.options.weights:
            if name not in DIMENSIONS:
                problems.append(
                    f"{path}.weights.{name}: unknown dimension (expected one of: {', '.join(DIMENSIONS)})"
                )
        if self.safe_tier != "upper" and self.safe_tier not in self.names:
            problems.append(
                f"{path}.safe_tier: unknown tier {self.safe_tier!r} "
                f"(expected 'upper' or one of: {', '.join(self.names)})"
            )
        return problems

    # -- scoring -------------------------------------------------------------------------------

    def score(self, signals: Signals) -> tuple[float, dict[str, float]]:
        dims = signals.memo("tier_dimensions", lambda: dimensions(signals))
        contributions = {k: w * dims[k] for k, w in self.weights.items() if k in dims}
        return self.bias + sum(contributions.values()), contributions

    def classify(self, signals: Signals) -> TierChoice:
        """The request's tier (after ambiguity and stickiness), computed once per request."""
        return signals.memo(("tiers", id(self)), lambda: self._classify(signals))  # type: ignore[no-any-return]

    def _classify(self, signals: Signals) -> TierChoice:
        score, contributions = self.score(signals)
        index = 0
        while index < len(self.bounds) and score >= self.bounds[index]:
            index += 1
        distances = [abs(score - b) for b in self.bounds]
        nearest = min(range(len(distances)), key=distances.__getitem__) if distances else None
        confidence = min(1.0, distances[nearest] / self.scale) if nearest is not None else 1.0
        gated = None
        while index > 0 and self.names[index] in self.requires:
            gate = self.requires[self.names[index]]
            dims = signals.memo("tier_dimensions", lambda: dimensions(signals))
            if any(dims.get(k, 0.0) >= v for k, v in gate.items()):
                break
            gated = self.names[index]
            index -= 1
        choice = TierChoice(self.names[index], self.names[index], score, confidence, contributions)
        choice.gated = gated
        if nearest is not None and confidence < self.min_confidence:
            choice.ambiguous = True
            safe = nearest + 1 if self.safe_tier == "upper" else self.names.index(self.safe_tier)
            if safe > index:
                choice.tier = self.names[safe]
        if self._conversations is not None:
            self._stick(signals, choice)
        return choice

    def _stick(self, signals: Signals, choice: TierChoice) -> None:
        assert self._conversations is not None
        key = _conversation_key(signals)
        if key is None:
            return
        if signals.turns >= 2:
            remembered = self._conversations.get(key)
            short = (
                self.options.sticky.keep == "conversation"
                or estimate_tokens(signals.last_user_text) <= self.options.sticky.max_followup_tokens
            )
            if (
                short
                and remembered in self.names
                and self.names.index(remembered) > self.names.index(choice.tier)
            ):
                choice.tier, choice.sticky = remembered, True
        self._conversations.put(key, choice.tier)

    # -- ranking -------------------------------------------------------------------------------

    def rank(self, candidates: Sequence[Deployment], signals: Signals) -> Ranking:
        choice = self.classify(signals)
        ranking = self.rank_tier(choice.tier, candidates)
        ranking.notes.insert(0, f"tiers: {choice.describe()}")
        return ranking

    def rank_tier(self, tier: str, candidates: Sequence[Deployment]) -> Ranking:
        """The deployments of `tier` that survived; if none did, the nearest tier up, then down."""
        alive = {d.name for d in candidates}
        start = self.names.index(tier)
        ladder = self.names[start:] + self.names[:start][::-1]
        notes: list[str] = []
        for name in ladder:
            order = [n for n in self.deployments[name] if n in alive]
            if order:
                return Ranking(order, name, notes=notes)
            notes.append(f"tiers: no deployment of tier {name} survived the policies")
        return Ranking([], tier, notes=notes)


def _conversation_key(signals: Signals) -> str | None:
    """The conversation a request belongs to: its session id, else its caller and opening."""
    session = signals.session
    if session:
        return "s:" + session
    for message in signals.messages:
        if isinstance(message, dict) and message.get("role") == "user":
            opening = message_text(message.get("content"))[:500]
            caller = f"{signals.key or ''}\x00{signals.user or ''}\x00"
            return "o:" + hashlib.blake2b((caller + opening).encode(), digest_size=12).hexdigest()
    return None


# -- the labelled set ----------------------------------------------------------------------------


def labelled_prompts() -> list[dict[str, Any]]:
    """The shipped labelled prompt set: id, expected tier, category, language, and a `prompt`
    or a `messages` conversation (optionally a number of `tools` offered)."""
    import json

    text = resources.files("pointsman").joinpath("data/tier-prompts.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def labelled_request(row: dict[str, Any]) -> dict[str, Any]:
    """The chat request a labelled row stands for."""
    messages = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
    body: dict[str, Any] = {"model": "auto", "messages": messages}
    if row.get("tools"):
        body["tools"] = [
            {"type": "function", "function": {"name": f"tool_{i}", "parameters": {"type": "object"}}}
            for i in range(row["tools"])
        ]
    return body


def evaluate(
    strategy: TiersStrategy, rows: list[dict[str, Any]] | None = None
) -> list[tuple[dict[str, Any], TierChoice]]:
    """Each labelled row with the tier `strategy` gives it. A conversation is routed turn by
    turn, as a client would send it, so stickiness sees its earlier turns."""
    results = []
    for row in rows if rows is not None else labelled_prompts():
        body = labelled_request(row)
        messages = body["messages"]
        for end in range(1, len(messages)):
            if messages[end - 1]["role"] == "user" and end < len(messages):
                strategy.classify(Signals({**body, "messages": messages[:end]}))
        results.append((row, strategy.classify(Signals(body))))
    return results
