"""Hard constraints that remove deployments a request must not (or cannot) reach. Each policy
keeps a candidate or says why it removed it.

Policies run before any strategy, so a plan (primary and every fallback) only ever holds
deployments that every policy kept: a residency or PII rule cannot be relaxed by failover.
Capability checks apply to virtual models only; the governance policies (residency, PII,
access lists, user tiers, price) apply to explicit deployment requests too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pointsman.config import Deployment
from pointsman.errors import PIIRefused
from pointsman.keys import key_fingerprint
from pointsman.pii import Masker
from pointsman.signals import Signals

if TYPE_CHECKING:
    from pointsman.config import AccessRule, Config, PIIRule, PoliciesSettings


class Policy(Protocol):
    name: str
    # Governance policies also judge requests that name a deployment explicitly.
    governance: bool

    def reject(self, deployment: Deployment, signals: Signals) -> str | None:
        """Why `deployment` may not serve this request, or None to keep it."""
        ...


class CapabilityPolicy:
    """Images only to vision deployments, audio only to audio ones, tools only to tool-capable
    ones, JSON mode only to those that support it, and nothing larger than a deployment's
    context window (estimated prompt tokens plus max_tokens)."""

    name = "capability"
    governance = False

    def reject(self, deployment: Deployment, signals: Signals) -> str | None:
        caps = deployment.capabilities
        if signals.has_images and not caps.vision:
            return "no vision capability (request has images)"
        if signals.has_audio and not caps.audio:
            return "no audio capability (request has audio)"
        if signals.has_tools and not caps.tools:
            return "no tool capability (request has tools)"
        if signals.wants_json and not caps.json_output:
            return "no JSON output capability (request asks for JSON)"
        needed = signals.estimated_tokens + signals.max_output_tokens
        if needed > deployment.context_window:
            return f"context window {deployment.context_window} < estimated {needed} tokens"
        return None


def _matches(deployment: Deployment, patterns: Sequence[str]) -> bool:
    """A deployment matches a list of names and `tag:<tag>` entries."""
    for pattern in patterns:
        if pattern.startswith("tag:"):
            if pattern[4:] in deployment.tags:
                return True
        elif pattern == deployment.name:
            return True
    return False


class ResidencyPolicy:
    """A request with a region (from the caller's metadata, the `x-pointsman-region` header,
    or the config's default) reaches only deployments hosted where that region allows."""

    name = "residency"
    governance = True

    def __init__(self, default_region: str | None, allow: dict[str, tuple[str, ...]]) -> None:
        self.default_region = default_region.lower() if default_region else None
        self.allow = {k.lower(): frozenset(r.lower() for r in v) for k, v in allow.items()}

    def region(self, signals: Signals) -> str | None:
        return signals.region or self.default_region

    def reject(self, deployment: Deployment, signals: Signals) -> str | None:
        region = self.region(signals)
        if region is None:
            return None
        allowed = self.allow.get(region) or frozenset((region,))
        hosted = deployment.region.lower() if deployment.region else None
        if hosted in allowed:
            return None
        where = f"hosted in {hosted}" if hosted else "no region declared"
        return f"{where}; a {region} request may only reach {', '.join(sorted(allowed))}"


class PIIPolicy:
    """Per rule on the kinds of personal data found: `route` keeps only approved deployments,
    `mask` and `refuse` are handled by the router (see `PIIGuard`)."""

    name = "pii"
    governance = True

    def __init__(self, rules: Sequence[PIIRule]) -> None:
        self.routes = [(frozenset(r.kinds), tuple(r.deployments)) for r in rules if r.action == "route"]

    def reject(self, deployment: Deployment, signals: Signals) -> str | None:
        found = signals.pii_kinds
        if not found:
            return None
        for kinds, approved in self.routes:
            hit = kinds & found
            if hit and not _matches(deployment, approved):
                return f"not approved for {', '.join(sorted(hit))} data"
        return None


class AccessPolicy:
    """Allow and deny lists per key, user, role or tier: every matching entry applies; a
    deployment must be on each matching `allow` list (when it has one) and on no `deny` list."""

    name = "access"
    governance = True

    def __init__(self, rules: Sequence[AccessRule], *, name: str = "access") -> None:
        self.name = name
        self.rules = []
        for r in rules:
            match = {
                "key": key_fingerprint(r.key) if r.key else None,
                "user": r.user,
                "role": r.role.lower() if r.role else None,
                "tier": r.tier.lower() if r.tier else None,
            }
            self.rules.append(({k: v for k, v in match.items() if v}, r.allow, r.deny, r.label))

    def reject(self, deployment: Deployment, signals: Signals) -> str | None:
        for match, allow, deny, label in self.rules:
            if not all(_caller(signals, k) == v for k, v in match.items()):
                continue
            if deny and _matches(deployment, deny):
                return f"denied for {label}"
            if allow and not _matches(deployment, allow):
                return f"not on the allow list for {label}"
        return None


def _caller(signals: Signals, field: str) -> str | None:
    if field == "tier":
        return signals.user_tier
    if field == "role":
        return signals.role
    if field == "key":
        return signals.key
    return signals.user


class UserTierPolicy:
    """Per user tier (from metadata or `x-pointsman-tier`; `default_tier` when none): allow and
    deny lists (so free users never reach premium models) and a maximum price per request."""

    name = "user_tier"
    governance = True

    def __init__(self, settings: PoliciesSettings) -> None:
        self.tiers = {k.lower(): v for k, v in settings.user_tiers.items()}
        self.default = settings.default_user_tier.lower() if settings.default_user_tier else None
        self.assumed_output = settings.assumed_output_tokens

    def reject(self, deployment: Deployment, signals: Signals) -> str | None:
        tier = signals.user_tier or self.default
        rules = self.tiers.get(tier) if tier else None
        if rules is None:
            return None
        if rules.deny and _matches(deployment, rules.deny):
            return f"not available to the {tier} tier"
        if rules.allow and not _matches(deployment, rules.allow):
            return f"not available to the {tier} tier"
        if rules.max_price is not None:
            price = estimated_price(deployment, signals, self.assumed_output)
            if price > rules.max_price:
                return f"estimated ${price:.4f} exceeds the {tier} tier's ${rules.max_price:g} per request"
        return None


def estimated_price(deployment: Deployment, signals: Signals, assumed_output: int) -> float:
    """USD for this request on `deployment`: estimated prompt tokens, plus max_tokens (or the
    assumed answer length when the request sets none)."""
    output = signals.max_output_tokens or assumed_output
    return deployment.cost(signals.estimated_tokens, output)


class MaxPricePolicy:
    """No deployment whose estimated price for this request exceeds the configured maximum."""

    name = "max_price"
    governance = True

    def __init__(self, limit: float, assumed_output: int) -> None:
        self.limit, self.assumed_output = limit, assumed_output

    def reject(self, deployment: Deployment, signals: Signals) -> str | None:
        price = estimated_price(deployment, signals, self.assumed_output)
        if price > self.limit:
            return f"estimated ${price:.4f} exceeds the maximum of ${self.limit:g} per request"
        return None


DEFAULT_POLICIES: tuple[Policy, ...] = (CapabilityPolicy(),)


def build_policies(config: Config) -> tuple[Policy, ...]:
    """The policies a config asks for, capability first."""
    settings = config.policies
    policies: list[Policy] = []
    if settings.capabilities:
        policies.append(CapabilityPolicy())
    # Always on: a request that carries a region (from its key or a header) is held to it even
    # when the config has no residency section.
    residency = settings.residency
    policies.append(
        ResidencyPolicy(residency.region if residency else None, dict(residency.allow) if residency else {})
    )
    if settings.pii is not None and any(r.action == "route" for r in settings.pii.rules):
        policies.append(PIIPolicy(settings.pii.rules))
    if settings.access:
        policies.append(AccessPolicy(settings.access))
    if settings.user_tiers:
        policies.append(UserTierPolicy(settings))
    if settings.max_price is not None:
        policies.append(MaxPricePolicy(settings.max_price, settings.assumed_output_tokens))
    return tuple(policies)


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


def explain_policies(
    candidates: Sequence[Deployment], signals: Signals, policies: Sequence[Policy]
) -> list[dict[str, str]]:
    """Every policy's verdict on every candidate (for `--explain`)."""
    rows = []
    for deployment in candidates:
        for policy in policies:
            why = policy.reject(deployment, signals)
            rows.append(
                {
                    "deployment": deployment.name,
                    "policy": policy.name,
                    "verdict": "keep" if why is None else "remove",
                    "reason": why or "ok",
                }
            )
    return rows


class PIIGuard:
    """The PII rules that act on the request itself rather than on candidates: `refuse`
    stops it with a 400; `mask` replaces the values with placeholders before any upstream sees
    them, and the router puts the originals back into the answer."""

    def __init__(self, rules: Sequence[PIIRule]) -> None:
        self.refuse = frozenset(k for r in rules if r.action == "refuse" for k in r.kinds)
        self.mask = frozenset(k for r in rules if r.action == "mask" for k in r.kinds)

    def screen(self, signals: Signals) -> None:
        if not self.refuse:
            return
        hit = signals.pii_kinds & self.refuse
        if hit:
            raise PIIRefused(
                f"the request contains personal data that may not be sent to any model "
                f"({', '.join(sorted(hit))}); remove it and retry"
            )

    def masker(self, signals: Signals, reasons: list[str]) -> Any:
        """A `pointsman.pii.Masker` for this request, or None when there is nothing to mask."""
        if not self.mask or not signals.pii_kinds & self.mask:
            return None
        masker = Masker(signals.pii, self.mask)
        kinds = sorted({f.kind for f in masker.findings})
        reasons.append(f"pii: masked {len(masker.originals)} value(s) ({', '.join(kinds)}) before sending")
        return masker
