"""`pointsman report`: the dashboard's summary in the terminal (rich tables) and as a PNG
(matplotlib, the optional `report` extra)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pointsman.budgets import BudgetLedger
from pointsman.config import Config
from pointsman.dashboard.summary import (
    budget_burn,
    key_names,
    read_keys,
    recorded_spend,
    summarise,
)
from pointsman.keys import key_fingerprint
from pointsman.store import read_window


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def build_summary(db: str | Path, config: Config | None, since: float, until: float) -> dict[str, Any]:
    """The summary of the records in `db` between `since` and `until`, budgets included."""
    keys = read_keys(db)
    master_env = config.auth.master_key_env if config is not None else "POINTSMAN_MASTER_KEY"
    names = key_names(keys, key_fingerprint(os.environ.get(master_env)))
    summary = summarise(read_window(db, since, until), since=since, until=until, config=config, names=names)
    summary["budgets"] = budget_burn(keys, config, BudgetLedger(recorded_spend(db), time.time))
    return summary


# -- formatting: the dashboard's JavaScript follows the same rules -------------------------------


def money(value: float | None) -> str:
    if value is None:
        return "–"
    size = abs(value)
    digits = 2 if size == 0 or size >= 0.1 else 4 if size >= 0.001 else 6
    return f"{'-' if value < 0 else ''}${size:.{digits}f}"


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.1f}"


# -- terminal ------------------------------------------------------------------------------------


def print_summary(summary: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = summary["totals"]
    window = (
        f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(summary['since']))} to "
        f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(summary['until']))}"
    )
    console.print(f"[bold]pointsman report[/bold]  {window}")
    headline = Table(show_header=False, box=None, pad_edge=False)
    headline.add_column(style="dim")
    headline.add_column(justify="right")
    headline.add_row("requests", f"{t['requests']:,} ({t['answered']:,} answered)")
    headline.add_row("cost", money(t["cost"]))
    if t["baseline_cost"] is not None:
        headline.add_row(f"always {summary['premium']}", money(t["baseline_cost"]))
        headline.add_row("saving", f"[green]{money(t['saving'])}[/green] ({pct(t['saving_rate'])})")
    else:
        headline.add_row("saving", "[dim]needs prices: pass --config[/dim]")
    statuses = ", ".join(f"{code} × {n}" for code, n in summary["errors_by_status"].items())
    headline.add_row(
        "error rate", f"{pct(t['error_rate'])} ({t['errors']:,}{'; ' + statuses if statuses else ''})"
    )
    headline.add_row(
        "fallback rate", f"{pct(t['fallback_rate'])} ({t['fallbacks']:,} answered after a failover)"
    )
    cache = summary.get("cache")
    if cache and cache["hits"] + cache["misses"] + cache["bypasses"]:
        headline.add_row(
            "cache",
            f"{cache['hits']:,} hits, {cache['misses']:,} misses, {cache['bypasses']:,} bypassed; "
            f"hit rate {pct(cache['hit_rate'])}, saved [green]{money(cache['saved'])}[/green]",
        )
    console.print(headline)

    table = Table(title="share per deployment", title_justify="left")
    for name in ("deployment", "requests", "share", "failed attempts", "cost", "p50 ms"):
        table.add_column(name, justify="left" if name == "deployment" else "right")
    for d in summary["deployments"]:
        table.add_row(d["name"], f"{d['requests']:,}", pct(d["share"]), f"{d['failed_attempts']:,}",
                      money(d["cost"]), ms(d["latency_p50_ms"]))  # fmt: skip
    console.print(table)

    table = Table(
        title="share per tier (tier under the tiers strategy, else the route)", title_justify="left"
    )
    for name in ("tier / route", "requests", "share", "cost"):
        table.add_column(name, justify="left" if name == "tier / route" else "right")
    for tier in summary["tiers"]:
        table.add_row(tier["name"], f"{tier['requests']:,}", pct(tier["share"]), money(tier["cost"]))
    console.print(table)

    table = Table(title="latency of answered requests (ms)", title_justify="left")
    for name in ("", "p50", "p90", "p99", "count"):
        table.add_column(name, justify="left" if not name else "right")
    for key, label in (("total", "total"), ("first_token", "first token"), ("upstream", "upstream"),
                       ("overhead", "router overhead")):  # fmt: skip
        row = summary["latency"][key]
        table.add_row(label, ms(row["p50"]), ms(row["p90"]), ms(row["p99"]), f"{row['count']:,}")
    console.print(table)

    if summary["budgets"]:
        table = Table(title="budget burn (this period)", title_justify="left")
        for name in ("budget", "spent", "limit", "burn", "resets"):
            table.add_column(name, justify="left" if name == "budget" else "right")
        for b in summary["budgets"]:
            colour = "red" if b["burn"] >= 1 else "yellow" if b["burn"] >= 0.8 else "green"
            label = b["name"] if b["scope"] == "key" else f"{b['scope']} {b['name']}"
            table.add_row(label, money(b["spent"]), f"{money(b['amount'])} / {b['period']}",
                          f"[{colour}]{pct(b['burn'])}[/{colour}]",
                          time.strftime("%Y-%m-%d %H:%M", time.localtime(b["resets_at"])))  # fmt: skip
        console.print(table)

    fairness = summary["fairness"]
    for kind, rows in (("language", fairness["by_language"]), ("key", fairness["by_key"])):
        if not rows:
            continue
        table = Table(
            title=f"routing fairness by {kind}: share of each group's requests", title_justify="left"
        )
        table.add_column(kind)
        table.add_column("requests", justify="right")
        for name in fairness["tiers"]:
            table.add_column(name, justify="right", header_style="bold blue")
        for name in fairness["deployments"]:
            table.add_column(name, justify="right", header_style="bold green")
        for name in ("cost/request", "errors", "skew"):
            table.add_column(name, justify="right")
        for g in [fairness["overall"], *rows]:
            n = g["requests"]
            everyone = g is fairness["overall"]
            skew = (
                ""
                if everyone
                else f"[red]{pct(g['skew'])}[/red]"
                if g["skew"] >= 0.25 and n >= 5
                else pct(g["skew"])
            )
            table.add_row(
                g["group"], f"{n:,}",
                *(pct(g["tiers"][tier] / n) for tier in fairness["tiers"]),
                *(pct(g["deployments"][d] / n) for d in fairness["deployments"]),
                money(g["cost_per_request"]), pct(g["error_rate"]),
                skew,
                style="bold" if everyone else None,
            )  # fmt: skip
        console.print(table)

    if summary["recent"]:
        table = Table(title="recent decisions", title_justify="left")
        for name in ("time", "key", "model", "route", "answered by", "status", "cost", "plan and attempts"):
            table.add_column(name, justify="right" if name == "cost" else "left", overflow="fold")
        for r in summary["recent"][:10]:
            failed = [f"{a['deployment']}: {a['error']}" for a in r["attempts"] if a["error"]]
            why = " → ".join(r["plan"]) or (r["error"] or "")
            if failed:
                why += "\nfailed: " + "; ".join(failed)
            table.add_row(
                time.strftime("%H:%M:%S", time.localtime(r["ts"])), r["key"], r["model"] or "–",
                r["route"] or "–",
                (r["deployment"] or "–") + (" (fallback)" if r["fallback"] else ""), str(r["status"]),
                money(r["cost"]), why,
            )  # fmt: skip
        console.print(table)


# -- PNG -----------------------------------------------------------------------------------------


def plot(summary: dict[str, Any], path: str | Path) -> Path:
    """Draw the summary's charts into one PNG; raises PlotUnavailable without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable("--png needs matplotlib: pip install 'pointsman[report]'") from None

    # A Figure with its own Agg canvas: no pyplot, so no global backend or state is touched.
    figure = Figure(figsize=(15, 9), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    t = summary["totals"]
    headline = f"{t['requests']:,} requests · cost {money(t['cost'])}"
    if t["saving"] is not None:
        headline += f" · saving {money(t['saving'])} ({pct(t['saving_rate'])}) vs always {summary['premium']}"
    headline += f" · errors {pct(t['error_rate'])} · fallbacks {pct(t['fallback_rate'])}"
    window = time.strftime("%Y-%m-%d %H:%M", time.localtime(summary["since"]))
    # A bare "$" would start matplotlib's maths mode.
    figure.suptitle(f"pointsman report since {window}\n{headline}".replace("$", r"\$"), fontsize=12)
    axes = figure.subplots(2, 3)
    series = summary["series"]
    times = [time.strftime("%m-%d %H:%M:%S" if series["bucket_s"] < 60 else "%m-%d %H:%M", time.localtime(x))
             for x in series["t"]]  # fmt: skip
    positions = list(range(len(times)))
    step = max(1, len(times) // 8)

    ax = axes[0][0]
    ok = [n - e for n, e in zip(series["requests"], series["errors"], strict=True)]
    ax.bar(positions, ok, color="#2f6fde", label="answered")
    ax.bar(positions, series["errors"], bottom=ok, color="#d4452f", label="errors")
    ax.plot(positions, series["fallbacks"], color="#d98a00", marker=".", label="fallbacks")
    ax.set_title(f"traffic per {_bucket_name(series['bucket_s'])}")
    ax.set_xticks(positions[::step], times[::step], rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=8)

    ax = axes[0][1]
    # Running totals at the bucket edges, from zero at the first bucket's start.
    edges = [p - 0.5 for p in range(len(times) + 1)]
    cost = _cumulative(series["cost"])
    ax.plot(edges, cost, color="#1f9d61", marker=".", label="cost")
    ax.fill_between(edges, cost, color="#1f9d61", alpha=0.15)
    if summary["premium"]:
        ax.plot(edges, _cumulative(series["baseline"]), color="#7f8c8d", linestyle="--", marker=".",
                label=f"always {summary['premium']}")  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.set_title("cumulative cost (USD)")
    ax.set_xticks(positions[::step], times[::step], rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=8)

    deployments, tiers = summary["deployments"], summary["tiers"]
    _barh(axes[0][2], [d["name"] for d in deployments], [d["requests"] for d in deployments],
          "requests per deployment", "#2f6fde")  # fmt: skip
    _barh(axes[1][0], [x["name"] for x in tiers], [x["requests"] for x in tiers],
          "requests per tier / route", "#8e44ad")  # fmt: skip

    ax = axes[1][1]
    latency = summary["latency"]
    names = ("p50", "p90", "p99")
    for i, (key, colour) in enumerate((("total", "#2f6fde"), ("overhead", "#d98a00"))):
        values = [latency[key][q] or 0.0 for q in names]
        ax.bar([j + i * 0.4 for j in range(3)], values, width=0.4, color=colour, label=key)
    ax.set_xticks([j + 0.2 for j in range(3)], names)
    ax.set_title("latency (ms): total and router overhead")
    ax.legend(fontsize=8)

    budgets = summary["budgets"]
    ax = axes[1][2]
    if budgets:
        burns = [min(b["burn"], 1.5) * 100 for b in budgets]
        colours = [
            "#d4452f" if b["burn"] >= 1 else "#d98a00" if b["burn"] >= 0.8 else "#1f9d61" for b in budgets
        ]
        labels = [b["name"] if b["scope"] == "key" else f"{b['scope']} {b['name']}" for b in budgets]
        ax.barh(labels, burns, color=colours)
        for i, b in enumerate(budgets):
            ax.annotate(f" {pct(b['burn'])} of {money(b['amount'])}/{b['period']}".replace("$", r"\$"),
                        (burns[i], i), va="center", fontsize=8)  # fmt: skip
        ax.set_xlim(0, max(110.0, max(burns) * 1.1))
        ax.axvline(100, color="#657085", linewidth=1, linestyle=":")
        ax.invert_yaxis()
        ax.set_title("budget burn this period (%)")
    else:
        ax.set_axis_off()
        ax.set_title("budget burn: no budgets")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _barh(ax: Any, labels: list[str], values: list[int], title: str, colour: str) -> None:
    ax.set_title(title)
    if not labels:
        ax.set_axis_off()
        return
    ax.barh(labels, values, color=colour)
    ax.invert_yaxis()
    for i, value in enumerate(values):
        ax.annotate(f" {value:,}", (value, i), va="center", fontsize=8)


def _cumulative(values: list[float]) -> list[float]:
    out, total = [0.0], 0.0
    for value in values:
        total += value
        out.append(total)
    return out


def _bucket_name(seconds: int) -> str:
    for size, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return name if count == 1 else f"{count} {name}s"
    return f"{seconds} s"
