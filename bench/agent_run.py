"""A scripted multi-agent run through pointsman: a planner, a coder working a tool loop, a
reviewer and a summariser, 24 steps, over the OpenAI and the Anthropic API. Each step's record
shows the role and stage signals and the tier chosen; the run's cost is set against sending every
step to the premium model.

    python -m bench.agent_run            # both APIs, simulated deployments (src/pointsman/data/agents.yaml)
    python -m bench.agent_run --json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from pointsman.router import Router
from pointsman.server import ServerThread
from pointsman.store import read_records
from pointsman.testing import Behaviour, FakeUpstream

PREMIUM = "sim-premium"
TASK = "Add input validation to the signup form and make the test suite pass."
PLANNER = "You are the planner of a coding team. Break the task into small steps and decide who does each."
CODER = "You write and run code with the tools you are given."
REVIEWER = "You review the coder's changes for bugs and missing tests."
SUMMARISER = "Summarise the work done so far for the team lead in three sentences."
FILES = [
    "forms.py",
    "validators.py",
    "test_forms.py",
    "test_validators.py",
    "views.py",
    "urls.py",
    "test_views.py",
    "README.md",
]

OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "code_write_file",
            "description": "write a file",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "text": {"type": "string"}},
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "code_run_tests",
            "description": "run the test suite",
            "parameters": {"type": "object", "properties": {}},
        },
    },
]
ANTHROPIC_TOOLS = [
    {
        "name": t["function"]["name"],
        "description": t["function"]["description"],
        "input_schema": t["function"]["parameters"],
    }
    for t in OPENAI_TOOLS
]


def config_path() -> Path:
    return Path(str(resources.files("pointsman") / "data" / "agents.yaml"))


class OpenAIAgent:
    """The agent loop over the OpenAI API (the official client)."""

    def __init__(self, base_url: str, model: str) -> None:
        from openai import OpenAI

        self.client = OpenAI(base_url=f"{base_url}/v1", api_key="agent", max_retries=0)
        self.model = model

    def ask(self, system: str, user: str, session: str) -> str:
        answer = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            extra_headers={"x-pointsman-session": session},
        )
        return answer.choices[0].message.content or ""

    def tool_step(self, instruction: str, session: str) -> int:
        """One tool round trip: the model calls a tool, the tool's output goes back. 2 requests."""
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": CODER},
            {"role": "user", "content": instruction},
        ]
        first = self.client.chat.completions.create(
            model=self.model,
            messages=messages,
            tools=OPENAI_TOOLS,
            extra_headers={"x-pointsman-session": session},
        )
        call = first.choices[0].message.tool_calls[0]
        messages += [
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "ok: 14 passed"},
        ]
        second = self.client.chat.completions.create(
            model=self.model,
            messages=messages,
            tools=OPENAI_TOOLS,
            extra_headers={"x-pointsman-session": session},
        )
        assert second.choices[0].message.content
        return 2


class AnthropicAgent:
    """The same loop over the Anthropic Messages API (the official client)."""

    def __init__(self, base_url: str, model: str) -> None:
        from anthropic import Anthropic

        self.client = Anthropic(base_url=base_url, api_key="agent", max_retries=0)
        self.model = model

    def ask(self, system: str, user: str, session: str) -> str:
        message = self.client.messages.create(
            model=self.model,
            max_tokens=512,
            system=system,
            messages=[{"role": "user", "content": user}],
            extra_headers={"x-pointsman-session": session},
        )
        return "".join(b.text for b in message.content if b.type == "text")

    def tool_step(self, instruction: str, session: str) -> int:
        messages: list[dict[str, Any]] = [{"role": "user", "content": instruction}]
        first = self.client.messages.create(
            model=self.model,
            max_tokens=512,
            system=CODER,
            tools=ANTHROPIC_TOOLS,
            messages=messages,
            extra_headers={"x-pointsman-session": session},
        )
        use = next(b for b in first.content if b.type == "tool_use")
        messages += [
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "ok: 14 passed"}],
            },
        ]
        second = self.client.messages.create(
            model=self.model,
            max_tokens=512,
            system=CODER,
            tools=ANTHROPIC_TOOLS,
            messages=messages,
            extra_headers={"x-pointsman-session": session},
        )
        assert second.stop_reason == "end_turn"
        return 2


def script(agent: Any, session: str) -> int:
    """Plan, then per file a tool round trip, reviews and summaries: returns the step count."""
    steps = 0
    plan = agent.ask(PLANNER, TASK, session)
    steps += 1
    for i, name in enumerate(FILES):
        steps += agent.tool_step(f"Step {i + 1} of the plan ({plan[:40]}...): update {name}.", session)
        if i % 2 == 1:
            agent.ask(REVIEWER, f"Review the change to {name} and {FILES[i - 1]}.", session)
            steps += 1
    agent.ask(PLANNER, f"Re-plan after the reviews: {TASK}", session)
    agent.ask(SUMMARISER, "Tests pass; validation added to forms.py and validators.py.", session)
    agent.ask(SUMMARISER, "Write the release note for the signup validation change.", session)
    return steps + 3


def _tier(reasons: list[str]) -> str | None:
    """The tier a rule or the tiers model chose, as the decision's reasons state it."""
    for reason in reasons:
        found = re.search(r"\(tiers?:(\w+)\)", reason)
        if found:
            return found.group(1)
    return None


def run(model: str = "claude-sonnet-5") -> dict[str, Any]:
    """Both APIs against simulated deployments; returns per-step records and the cost summary."""
    results: dict[str, Any] = {}
    with FakeUpstream(seed=0) as upstream, tempfile.TemporaryDirectory() as tmp:
        os.environ["POINTSMAN_SIM_URL"] = upstream.url
        upstream.set(PREMIUM, Behaviour(latency_s=0.01))
        for api, agent_class in (("openai", OpenAIAgent), ("anthropic", AnthropicAgent)):
            db = Path(tmp) / f"{api}.db"
            router = Router.from_config(config_path(), db=db)
            with ServerThread(router) as server:
                steps = script(agent_class(server.url, model), f"{api}-session")
            router.close()
            records = list(reversed(read_records(db, limit=1000)))
            premium = router.config.deployment(PREMIUM).price
            cost = sum(r["cost"] for r in records)
            premium_cost = sum(
                (r["prompt_tokens"] * premium.input + r["completion_tokens"] * premium.output) / 1e6
                for r in records
            )
            results[api] = {
                "steps": steps,
                "failed": sum(r["status"] != 200 for r in records),
                "cost": cost,
                "premium_cost": premium_cost,
                "saving": 1 - cost / premium_cost if premium_cost else 0.0,
                "records": [
                    {
                        "role": (r["decision"]["signals"] or {}).get("role"),
                        "stage": (r["decision"]["signals"] or {}).get("stage"),
                        "route": r["route"],
                        "tier": _tier(r["decision"]["reasons"]),
                        "deployment": r["deployment"],
                        "cost": r["cost"],
                    }
                    for r in records
                ],
            }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="claude-sonnet-5", help="the model name the agent is configured with"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run(args.model)
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "agent_run.json").write_text(json.dumps(results, indent=2))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for api, r in results.items():
        print(f"\n{api} API: {r['steps']} steps, {r['failed']} failed")
        print(
            f"{'#':>3} {'role':<11} {'stage':<12} {'route':<18} {'tier':<9} {'deployment':<12} {'cost $':>10}"
        )
        for i, step in enumerate(r["records"], 1):
            print(
                f"{i:>3} {step['role'] or '-':<11} {step['stage'] or '-':<12} {step['route']:<18} "
                f"{step['tier'] or '-':<9} {step['deployment']:<12} {step['cost']:>10.6f}"
            )
        print(
            f"cost ${r['cost']:.6f} against ${r['premium_cost']:.6f} with every step on {PREMIUM}: "
            f"{r['saving']:.0%} saved"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
