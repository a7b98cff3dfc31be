"""The CPU cost of the edge's body check on the benchmark's chat request (`harness.chat_body`)
and on a tool-using conversation: microseconds per validation, best of several repeats.

    python -m bench.validation_cost [--number 20000] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import timeit
from pathlib import Path
from typing import Any

import orjson

from bench.harness import chat_body
from pointsman.dispatch import validate_chat_body
from pointsman.schemas import validate_chat, validate_messages

TOOLS_BODY: dict[str, Any] = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "You call tools."},
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ],
    "tools": [
        {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    ],
    "tool_choice": "auto",
}
MESSAGES_BODY: dict[str, Any] = {
    "model": "auto",
    "max_tokens": 128,
    "system": "You are concise.",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
}


def per_call_us(check: Any, body: Any, number: int) -> float:
    return min(timeit.repeat(lambda: check(body), number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="validations per repeat")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    chat = orjson.loads(chat_body())
    rows = [
        ("chat (bench request): minimal check", validate_chat_body, chat),
        ("chat (bench request): schema", validate_chat, chat),
        ("chat with tools: minimal check", validate_chat_body, TOOLS_BODY),
        ("chat with tools: schema", validate_chat, TOOLS_BODY),
        ("anthropic messages: schema", validate_messages, MESSAGES_BODY),
    ]
    figures = {name: round(per_call_us(check, body, args.number), 3) for name, check, body in rows}
    for name, us in figures.items():
        print(f"{name:40s} {us:6.2f} us")
    if args.out is not None:
        args.out.write_text(json.dumps({"number": args.number, "us_per_check": figures}, indent=2))


if __name__ == "__main__":
    main()
