"""Hard constraints that remove deployments a request must not (or cannot) reach. Each policy
keeps a candidate or says why it removed it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pointsman.config import Deployment
from pointsman.signals import Signals


class Policy(Protocol):
    name: str

    def reject(self, deployment: Deployment, signals: Signals) -> str | None:
        """Why `deployment` may not serve this request, or None to keep it."""
        ...


class CapabilityPolicy:
    """Images only to vision deployments, tools only to tool-capable ones, JSON mode only to
    those that support it, and nothing larger than a deployment's context window."""

    name = "capability"

    def reject(self, deployment: Deployment, signals: Signals) -> str | None:
        caps = deployment.capabilities
        if signals.has_images and not caps.vision:
            return "no vision capability (request has images)"
        if signals.has_tools and not caps.tools:
            return "no tool capability (request has tools)"
        if signals.wants_json and not caps.json_output:
            return "no JSON output capability (request asks for JSON)"
        needed = signals.estimated_tokens + signals.max_output_tokens
        if needed > deployment.context_window:
            return f"context window {deployment.context_window} < estimated {needed} tokens"
        return None


DEFAULT_POLICIES: tuple[Policy, ...] = (CapabilityPolicy(),)


def apply_policies(
    candidates: Sequence[Deployment],
    signals: Signals,
    policies: Sequence[Policy],
    reasons: list[str],
) -> list[Deployment]:
    """The candidates every policy keeps; a line per removal is appended to `reasons`."""
    kept = []
    for deployment in candidates:
        for policy in policies:
            why = policy.reject(deployment, signals)
            if why is not None:
                reasons.append(f"{policy.name}: removed {deployment.name}: {why}")
                break
        else:
            kept.append(deployment)
    return kept
