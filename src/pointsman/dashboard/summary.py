"""The summary the dashboard draws and `pointsman report` prints, computed from the request
records of a time window: traffic, cost against an always-premium baseline, shares per
deployment and tier, latency percentiles, error and fallback rates, budget burn, recent
decisions with their explanation, and the routing-fairness view (tiers and deployments by
detected language and by key)."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pointsman.budgets import Budget, BudgetLedger
from pointsman.config import Config, Deployment
from pointsman.keys import KeyStore, VirtualKey
from pointsman.store import WINDOW_FIELDS

# The record columns a summary reads: never the stored prompts and answers.
FIELDS = WINDOW_FIELDS

# Chart buckets: the smallest of these that cuts the records' time span into at most MAX_BUCKETS.
BUCKETS_S = (1, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 60
RECENT = 25
QUANTILES = (50, 90, 99)
def read_keys(path: str | Path) -> list[VirtualKey]:
    """The virtual keys kept beside the records (none if the file has no key table)."""
    path = Path(path)
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'keys'").fetchone()
    finally:
        db.close()
    if not found:
        return []
    store = KeyStore(path)
    try:
        return store.list()
    finally:
        store.close()


def recorded_spend(path: str | Path) -> Callable[[str, float], float]:
    """`spent_since(scope, start)` over a records file, for a ledger outside a running server."""

    def spent_since(scope: str, start: float) -> float:
        kind, _, value = scope.partition(":")
        column = {"key": "key_id", "team": "team", "user": "user"}.get(kind)
        sql = "SELECT COALESCE(SUM(cost), 0) FROM requests WHERE ts >= ?"
        args: list[Any] = [start]
        if column is not None:
            sql += f" AND {column} = ?"
            args.append(value)
        db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
        try:
            return float(db.execute(sql, args).fetchone()[0])
        except sqlite3.OperationalError:  # no records table yet
            return 0.0
        finally:
            db.close()

    return spent_since


def premium_deployment(config: Config | None) -> Deployment | None:
    """The most expensive configured deployment (input plus output price per million tokens);
    None when nothing has a price."""
    if config is None:
        return None
    priced = [d for d in config.deployments if d.price.input + d.price.output > 0]
    return max(priced, key=lambda d: d.price.input + d.price.output) if priced else None


def percentiles(values: list[float], quantiles: Iterable[int] = QUANTILES) -> dict[str, float | None]:
    """pXX of `values` with linear interpolation between ranks (numpy's default method)."""
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for q in quantiles:
        if not ordered:
            out[f"p{q}"] = None
            continue
        rank = (len(ordered) - 1) * q / 100
        low = int(rank)
        high = min(low + 1, len(ordered) - 1)
        out[f"p{q}"] = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return out


def tier_of(record: Mapping[str, Any]) -> str | None:
    """The tier a routed request went to: the reason code under the `tiers` strategy, else the
    whole route (strategy:reason); None for requests refused before routing."""
    route = record.get("route")
    if not route:
        return None
    if route.startswith("tiers:"):
        return str(record.get("reason") or route)
    return str(route)


def _tier(record: Mapping[str, Any]) -> str:
    """The tier of a routed request (one with a route)."""
    return tier_of(record) or ""


def fell_back(record: Mapping[str, Any]) -> bool:
    """Answered, but only after another deployment failed."""
    answered = record.get("deployment")
    if record.get("status") != 200 or not answered:
        return False
    return any(
        a.get("error") and a.get("deployment") != answered and a.get("role", "answer") == "answer"
        for a in record.get("attempts") or ()
    )


def key_label(record: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """A key's name when known, else its id or fingerprint; "(no key)" without one."""
    ident = record.get("key_id") or record.get("api_key")
    if not ident:
        return "(no key)"
    return names.get(ident, ident)


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _series(records: list[dict[str, Any]], premium: Deployment | None) -> dict[str, Any]:
    if not records:
        return {"bucket_s": BUCKETS_S[0], "t": [], "requests": [], "errors": [], "fallbacks": [],
                "cost": [], "baseline": []}  # fmt: skip
    first, last = records[0]["ts"], records[-1]["ts"]
    bucket = next((b for b in BUCKETS_S if (last - first) / b < MAX_BUCKETS), BUCKETS_S[-1])
    start = first - first % bucket
    count = int((last - start) // bucket) + 1
    series: dict[str, Any] = {"bucket_s": bucket, "t": [start + i * bucket for i in range(count)]}
    for name in ("requests", "errors", "fallbacks", "cost", "baseline"):
        series[name] = [0] * count if name in ("requests", "errors", "fallbacks") else [0.0] * count
    for r in records:
        i = int((r["ts"] - start) // bucket)
        series["requests"][i] += 1
        series["errors"][i] += r["status"] != 200
        series["fallbacks"][i] += fell_back(r)
        series["cost"][i] += r["cost"] or 0.0
        series["baseline"][i] += _baseline(r, premium)
    return series


def _baseline(record: Mapping[str, Any], premium: Deployment | None) -> float:
    if premium is None or record.get("status") != 200:
        return 0.0
    return premium.cost(record.get("prompt_tokens") or 0, record.get("completion_tokens") or 0)


def _fairness(
    routed: list[dict[str, Any]],
    group: Callable[[dict[str, Any]], str],
    tiers: list[str],
    deployments: list[str],
) -> list[dict[str, Any]]:
    """Per group (largest first): its requests, tier and deployment counts, cost per request,
    error rate, and `skew`: how far its tier mix is from everyone's (total variation distance,
    0..1)."""
    overall = Counter(_tier(r) for r in routed)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in routed:
        groups[group(r)].append(r)
    rows = [
        _group(name, members, tiers, deployments, overall, len(routed)) for name, members in groups.items()
    ]
    rows.sort(key=lambda row: (-row["requests"], row["group"]))
    return rows


def _group(
    name: str,
    members: list[dict[str, Any]],
    tiers: list[str],
    deployments: list[str],
    overall: Counter[str],
    total: int,
) -> dict[str, Any]:
    tier_counts = Counter(_tier(r) for r in members)
    deployment_counts = Counter(r["deployment"] for r in members if r["deployment"])
    n = len(members)
    return {
        "group": name,
        "requests": n,
        "tiers": {t: tier_counts[t] for t in tiers},
        "deployments": {d: deployment_counts[d] for d in deployments},
        "cost_per_request": _ratio(sum(r["cost"] or 0.0 for r in members), n),
        "error_rate": _ratio(sum(r["status"] != 200 for r in members), n),
        "skew": 0.5 * sum(abs(_ratio(tier_counts[t], n) - _ratio(overall[t], total)) for t in tiers),
    }


def _recent(records: list[dict[str, Any]], names: Mapping[str, str], limit: int) -> list[dict[str, Any]]:
    out = []
    for r in reversed(records[-limit:]):
        decision = r.get("decision") or {}
        out.append(
            {
                "request_id": r["request_id"],
                "ts": r["ts"],
                "key": key_label(r, names),
                "user": r.get("user"),
                "model": r.get("requested_model"),
                "route": r.get("route"),
                "tier": tier_of(r),
                "deployment": r.get("deployment"),
                "status": r.get("status"),
                "error": r.get("error"),
                "language": r.get("language"),
                "cost": r.get("cost") or 0.0,
                "latency_ms": r.get("latency_ms"),
                "fallback": fell_back(r),
                "plan": decision.get("plan") or [],
                "reasons": decision.get("reasons") or [],
                "attempts": [
                    {k: a.get(k) for k in ("deployment", "role", "status", "error", "latency_ms")}
                    for a in r.get("attempts") or ()
                ],
            }
        )
    return out


def summarise(
    records: list[dict[str, Any]],
    *,
    since: float,
    until: float,
    config: Config | None = None,
    names: Mapping[str, str] | None = None,
    recent: int = RECENT,
) -> dict[str, Any]:
    """The summary of `records` (oldest first, as `read_window` returns them). `config` gives
    the prices of the baseline; `names` labels keys by id or fingerprint."""
    names = names or {}
    premium = premium_deployment(config)
    answered = [r for r in records if r["status"] == 200]
    routed = [r for r in records if r.get("route")]
    requests = len(records)
    errors = requests - len(answered)
    fallbacks = sum(fell_back(r) for r in records)
    cost = sum(r["cost"] or 0.0 for r in records)
    baseline = sum(_baseline(r, premium) for r in records) if premium is not None else None

    served = Counter(r["deployment"] for r in answered if r["deployment"])
    failed: Counter[str] = Counter()
    for r in records:
        for a in r.get("attempts") or ():
            if a.get("error") and a.get("role", "answer") != "judge":
                failed[a["deployment"]] += 1
    by_deployment: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in answered:
        if r["deployment"]:
            by_deployment[r["deployment"]].append(r)
    deployment_names = sorted(set(served) | set(failed), key=lambda d: (-served[d], d))
    deployments = [
        {
            "name": d,
            "requests": served[d],
            "share": _ratio(served[d], len(answered)),
            "failed_attempts": failed[d],
            "cost": sum(r["cost"] or 0.0 for r in by_deployment[d]),
            "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in by_deployment[d]),
            "completion_tokens": sum(r["completion_tokens"] or 0 for r in by_deployment[d]),
            "latency_p50_ms": percentiles([r["latency_ms"] for r in by_deployment[d]], (50,))["p50"],
        }
        for d in deployment_names
    ]
    tier_counts = Counter(_tier(r) for r in routed)
    tier_names = sorted(tier_counts, key=lambda t: (-tier_counts[t], t))
    tiers = [
        {
            "name": t,
            "requests": tier_counts[t],
            "share": _ratio(tier_counts[t], len(routed)),
            "cost": sum(r["cost"] or 0.0 for r in routed if tier_of(r) == t),
        }
        for t in tier_names
    ]

    def values(column: str) -> list[float]:
        return [r[column] for r in answered if r.get(column) is not None]

    latency = {
        name: {**percentiles(values(column)), "count": len(values(column))}
        for name, column in (
            ("total", "latency_ms"),
            ("first_token", "first_token_ms"),
            ("upstream", "upstream_ms"),
            ("overhead", "overhead_ms"),
        )
    }
    served_names = [d for d in deployment_names if served[d]]
    return {
        "since": since,
        "until": until,
        "generated_at": time.time(),
        "premium": premium.name if premium is not None else None,
        "totals": {
            "requests": requests,
            "answered": len(answered),
            "errors": errors,
            "error_rate": _ratio(errors, requests),
            "fallbacks": fallbacks,
            "fallback_rate": _ratio(fallbacks, len(answered)),
            "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in records),
            "completion_tokens": sum(r["completion_tokens"] or 0 for r in records),
            "cost": cost,
            "baseline_cost": baseline,
            "saving": baseline - cost if baseline is not None else None,
            "saving_rate": _ratio(baseline - cost, baseline) if baseline else None,
        },
        "errors_by_status": {
            str(status): n
            for status, n in sorted(Counter(r["status"] for r in records if r["status"] != 200).items())
        },
        "cache": cache_summary(records),
        "series": _series(records, premium),
        "deployments": deployments,
        "tiers": tiers,
        "latency": latency,
        "fairness": {
            "tiers": tier_names,
            "deployments": served_names,
            "overall": _group("everyone", routed, tier_names, served_names, tier_counts, len(routed)),
            "by_language": _fairness(routed, lambda r: r.get("language") or "und", tier_names, served_names),
            "by_key": _fairness(routed, lambda r: key_label(r, names), tier_names, served_names),
        },
        "recent": _recent(records, names, recent),
    }


def cache_summary(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The response cache's part: hits, misses (stored answers), bypasses, the hit rate among
    the requests that looked the cache up, and the dollars hits saved."""
    counts = Counter(r.get("cache") for r in records if r.get("cache"))
    hits, misses = counts["hit"], counts["miss"]
    return {
        "hits": hits,
        "misses": misses,
        "bypasses": counts["bypass"] + counts["refresh"],
        "hit_rate": _ratio(hits, hits + misses),
        "saved": sum(r.get("saved_cost") or 0.0 for r in records if r.get("cache") == "hit"),
    }


def budget_burn(
    keys: Iterable[VirtualKey], config: Config | None, ledger: BudgetLedger
) -> list[dict[str, Any]]:
    """Spend this period against each budget: every active key's that has one, then the teams'
    and the global one from the config."""
    now = ledger.clock()
    budgets: list[tuple[str, str | None, Budget]] = [
        ("key", key.id, Budget(f"key:{key.id}", key.name, key.budget, key.budget_period))
        for key in keys
        if key.budget is not None and key.active(now)
    ]
    if config is not None:
        for team, limit in config.budgets.teams.items():
            budgets.append(("team", None, Budget(f"team:{team}", team, limit.amount, limit.period)))
        if config.budgets.total is not None:
            total = config.budgets.total
            budgets.append(("global", None, Budget("global", "global", total.amount, total.period)))
    rows = []
    for scope, key_id, budget in budgets:
        spent = ledger.spent(budget)
        rows.append(
            {
                "scope": scope,
                "name": budget.label,
                "key_id": key_id,
                "amount": budget.amount,
                "period": budget.period,
                "resets_at": ledger.resets_at(budget),
                "spent": spent,
                "remaining": ledger.remaining(budget),
                "burn": _ratio(spent, budget.amount) if budget.amount else float(spent > 0),
            }
        )
    return rows


def key_names(keys: Iterable[VirtualKey], master_fingerprint: str | None = None) -> dict[str, str]:
    """Labels for the fairness and recent views: key id to name, the master key's fingerprint to
    "master key"."""
    names = {k.id: k.name for k in keys}
    if master_fingerprint:
        names[master_fingerprint] = "master key"
    return names
