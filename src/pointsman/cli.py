"""The `pointsman` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pointsman import __version__

# Each subcommand imports what it needs when it runs, so that `pointsman --help` starts fast.


def _serve(args: argparse.Namespace) -> int:
    import gc
    import os

    import uvicorn

    # The records writer thread shares the GIL with the event loop: hand it back every 0.5 ms
    # (CPython's default is 5 ms), so a flush never holds a request up for long.
    sys.setswitchinterval(0.0005)

    from pointsman.config import ConfigError
    from pointsman.inbound import DeadlineProtocol, configure
    from pointsman.router import Router
    from pointsman.server import create_app

    if args.workers < 1:
        print("--workers: expected a positive number", file=sys.stderr)
        return 2
    upstream = None
    config_path = args.config
    if config_path is None:
        from pointsman.demo import demo_config_path, start_simulated_upstream

        upstream = start_simulated_upstream()
        config_path = demo_config_path()
        print(
            "pointsman: no --config given, serving the bundled DEMO setup: every deployment is a\n"
            f"simulated upstream on {upstream.url}. To route to real providers, write a config\n"
            "(see README, 'Configure real providers') and run: pointsman serve --config FILE",
            file=sys.stderr,
        )
    try:
        router = Router.from_config(config_path, db=args.db)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    from pointsman.config import unpriced_deployments
    from pointsman.prices import describe_unpriced

    unpriced = unpriced_deployments(router.config)
    if unpriced:
        print(f"pointsman: warning: {describe_unpriced(unpriced)}", file=sys.stderr)
    host = args.host or router.config.server.host
    port = args.port if args.port is not None else router.config.server.port
    workers = f" with {args.workers} worker processes" if args.workers > 1 else ""
    print(f"pointsman {__version__}: serving on http://{host}:{port}/v1{workers}", file=sys.stderr)
    from pointsman.access import describe_auth

    print(f"pointsman: {describe_auth(router.config)}", file=sys.stderr)
    # Client connections' deadlines: uvicorn's for idle keep-alive, the protocol's for the rest
    # (set on the class itself: worker processes get it by name).
    timeouts = router.config.server.timeouts
    configure(timeouts)
    # Nothing reads the client address or scheme, so X-Forwarded-* rewriting is work for nothing.
    options: dict[str, Any] = dict(
        host=host,
        port=port,
        log_level=args.log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        http=DeadlineProtocol,
        loop="auto",
        timeout_keep_alive=timeouts.keep_alive,
    )
    try:
        if args.workers == 1:
            app = create_app(router)
            # What start-up built (config, models, tables) lives as long as the process: out of
            # the collector's way, so a full collection does not walk it mid-request.
            gc.freeze()
            uvicorn.run(app, workers=1, **options)
        else:
            # Each worker process builds its own router (own connections, state and record
            # writer; records share one SQLite file in WAL mode) from the same config.
            if router.store is not None:
                router.store.close()
            os.environ["POINTSMAN_CONFIG"] = str(Path(config_path).resolve())
            if args.db:
                os.environ["POINTSMAN_DB"] = str(Path(args.db).resolve())
            uvicorn.run(
                "pointsman.server:app_from_environment",
                factory=True,
                workers=args.workers,
                **options,
            )
    finally:
        if upstream is not None:
            upstream.stop()
    return 0


def _config_check(args: argparse.Namespace) -> int:
    import pointsman.router  # noqa: F401  (it imports every layer that registers a config check)
    from pointsman.config import ConfigError, load_config

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"{args.file}: {line}")
        return 1
    print(
        f"{args.file}: ok ({len(config.deployments)} deployments, {len(config.models)} virtual models)"
    )
    from pointsman.config import unpriced_deployments
    from pointsman.prices import describe_unpriced

    unpriced = unpriced_deployments(config)
    if unpriced:
        print(f"{args.file}: warning: {describe_unpriced(unpriced)}")
    from pointsman.access import describe_auth

    print(f"{args.file}: {describe_auth(config)}")
    if args.prices:
        _print_prices(config)
    return 0


def _price_rows(config: Any) -> list[dict[str, Any]]:
    return [
        {
            "deployment": d.name,
            "provider": d.provider,
            "model": d.model,
            "input_per_mtok": d.price.input,
            "output_per_mtok": d.price.output,
            "source": d.price_source,
        }
        for d in config.deployments
    ]


def _print_prices(config: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="effective prices (USD per million tokens)")
    for name in ("deployment", "provider", "model", "input", "output", "source"):
        table.add_column(name, justify="right" if name in ("input", "output") else "left")
    for row in _price_rows(config):
        unknown = row["source"] == "unknown"
        table.add_row(
            row["deployment"], row["provider"], row["model"],
            "?" if unknown else f"{row['input_per_mtok']:g}",
            "?" if unknown else f"{row['output_per_mtok']:g}",
            row["source"],
        )  # fmt: skip
    Console().print(table)
    print("source: config (price: in the file), catalogue (genai-prices), unknown (counted as free)")


def _models(args: argparse.Namespace) -> int:
    from pointsman.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({
            "deployments": _price_rows(config),
            "models": {name: list(vm.deployments) for name, vm in config.models.items()},
        }, indent=2))  # fmt: skip
    else:
        _print_prices(config)
    return 0


def _logs(args: argparse.Namespace) -> int:
    from pointsman.store import default_db_path, read_records

    db = Path(args.db) if args.db else default_db_path()
    if not db.exists():
        print(f"no records yet: {db} does not exist", file=sys.stderr)
        return 1
    since = time.time() - _duration(args.since) if args.since else None
    until = time.time() - _duration(args.until) if args.until else None
    records = read_records(
        db, limit=args.limit, model=args.model, since=since, until=until, key=args.key,
        reason=args.reason, region=args.region, status=args.status, team=args.team, user=args.user,
    )
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(records)} most recent requests ({db})")
    for column in (
        "time",
        "request id",
        "model",
        "route",
        "answered by",
        "status",
        "tokens",
        "cost $",
        "ms",
        "error",
    ):
        # Ids stay whole (they are what one greps for); the error column gives way instead.
        table.add_column(column, no_wrap=column != "error", min_width=28 if column == "request id" else None)
    for r in records:
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(r["ts"])),
            r["request_id"],
            r["requested_model"] or "",
            r["route"] or "",
            r["deployment"] or "",
            str(r["status"]),
            f"{r['prompt_tokens']}/{r['completion_tokens']}",
            f"{r['cost']:.6f}",
            f"{r['latency_ms']:.0f}",
            (r["error"] or "")[:60],
        )
    Console().print(table)
    return 0


def _key_store(args: argparse.Namespace) -> Any:
    from pointsman.config import load_config
    from pointsman.keys import KeyStore, PostgresKeyStore
    from pointsman.store import default_db_path

    path = args.db
    if path is None and args.config:
        store = load_config(args.config).store
        if store.url:
            return PostgresKeyStore(store.url, store.db_schema)
        path = store.path
    return KeyStore(path or default_db_path())


def _keys_create(args: argparse.Namespace) -> int:
    from pointsman.errors import PointsmanError

    spec: dict[str, Any] = {"budget_period": args.period}
    if args.models:
        spec["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in ("tier", "region", "rpm", "tpm", "budget"):
        if getattr(args, name) is not None:
            spec[name] = getattr(args, name)
    if args.max_parallel is not None:
        spec["max_parallel"] = args.max_parallel
    if args.read_only:
        spec["scopes"] = ["dashboard"]
    metadata = {k: v for k, v in (("team", args.team), ("application", args.app)) if v}
    if metadata:
        spec["metadata"] = metadata
    expires_at = time.time() + _duration(args.expires_in) if args.expires_in else None
    store = _key_store(args)
    try:
        secret, key = store.create(args.name, spec, expires_at)
    except PointsmanError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"key": secret, **key.public()}, indent=2))
    else:
        print(f"created {key.id} ({key.name}); the key is shown only now:\n{secret}")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    keys = _key_store(args).list()
    if args.json:
        print(json.dumps([k.public() for k in keys], indent=2))
        return 0
    for k in keys:
        state = "active" if k.active() else ("revoked" if k.revoked_at else "expired")
        budget = f"${k.budget:g}/{k.budget_period}" if k.budget is not None else "no budget"
        models = ",".join(k.models) or "all models"
        scope = "  read-only" if not k.can("chat") else ""
        print(f"{k.id}  {k.name:<20} {k.prefix}…  {state:<8} {models}  {budget}{scope}")
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    key = _key_store(args).revoke(args.key_id)
    if key is None:
        print(f"error: no key {args.key_id!r}", file=sys.stderr)
        return 1
    print(json.dumps(key.public(), indent=2) if args.json else f"revoked {key.id} ({key.name})")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pointsman.config import ConfigError, load_config
    from pointsman.report import PlotUnavailable, build_summary, plot, print_summary
    from pointsman.store import default_db_path

    try:
        config = load_config(args.config) if args.config else None
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    configured = config.store.path if config is not None else None
    db = Path(args.db or configured or default_db_path())
    if not db.exists():
        print(f"no records yet: {db} does not exist", file=sys.stderr)
        return 1
    now = time.time()
    since = now - _duration(args.since)
    until = now - _duration(args.until) if args.until else now
    summary = build_summary(db, config, since, until + 1e-3)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    if args.png:
        try:
            written = plot(summary, args.png)
        except PlotUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {written}", file=sys.stderr)
    return 0


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return float(text[:-1]) * units[text[-1]]
    raise SystemExit(f"--since: expected a duration like 30m, 12h or 7d, got {text!r}")


def _route(args: argparse.Namespace) -> int:
    from pointsman.config import ConfigError
    from pointsman.router import Router

    if (args.prompt is None) == (args.file is None):
        print("error: give a prompt or --file (one of them)", file=sys.stderr)
        return 2
    try:
        router = Router.from_config(args.config, records=False) if args.config else _demo_router()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    headers = {}
    for item in args.header or ():
        name, _, value = item.partition("=")
        headers[name.strip().lower()] = value.strip()
    requests = _route_requests(args)
    if requests is None:
        return 2
    failed = 0
    rows = []
    for label, body in requests:
        report = _explanation(router, {"model": args.model, **body}, headers)
        failed += "error" in report
        rows.append((label, report))
        if "error" in report and not args.file:
            print(f"error: {report['error']}", file=sys.stderr)
            if not args.json:
                continue
        if args.json:
            print(json.dumps(report, indent=None if args.file else 2, ensure_ascii=False))
        elif args.explain or not args.file:
            _print_explanation(label if args.file else None, report, args.explain)
    if args.file and not args.json and not args.explain:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{len(rows)} prompts from {args.file}")
        for column in ("prompt", "route", "plan"):
            table.add_column(column)
        for label, report in rows:
            table.add_row(
                label[:60],
                report.get("route") or report.get("error", ""),
                " -> ".join(report.get("plan", [])),
            )
        Console().print(table)
    return 1 if failed and not args.file else 0


def _route_requests(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]] | None:
    """(label, request body) per prompt: the argument, or each line of --file (plain text,
    or JSON objects with `prompt` or `messages`)."""
    if args.prompt is not None:
        return [(args.prompt, {"messages": [{"role": "user", "content": args.prompt}]})]
    try:
        lines = Path(args.file).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return None
    requests = []
    for line in lines:
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            row = json.loads(line)
            messages = row.get("messages") or [{"role": "user", "content": row.get("prompt", "")}]
            label = row.get("id") or str(messages[-1].get("content", ""))
            requests.append((label, {"messages": messages}))
        else:
            requests.append((line, {"messages": [{"role": "user", "content": line}]}))
    return requests


def _explanation(router: Any, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """Every signal, each policy's verdict on each candidate, the strategy's ranking and the
    final plan, for one request (no model is called)."""
    from pointsman.errors import PointsmanError
    from pointsman.policies import explain_policies

    report: dict[str, Any] = {"model": body["model"]}
    signals = router.analyse(body, headers)
    try:
        decision, _ = router.route(body, headers, signals=signals)
    except PointsmanError as exc:
        report["error"] = exc.message
        report["status"] = exc.status
        decision = None
    report["signals"] = signals.explain()
    model = body["model"]
    if model in router.strategies:
        pool, policies = router._pools[model], router.policies
    elif model in router.config._by_name():
        pool, policies = [router.config.deployment(model)], router.governance
    else:
        pool, policies = [], ()
    report["policies"] = explain_policies(pool, signals, policies)
    strategy = router.strategies.get(model)
    if strategy is not None and hasattr(strategy, "evaluate"):
        report["rules"] = [{"rule": name, "matches": hit} for name, hit in strategy.evaluate(signals)]
    if decision is not None:
        report.update({k: v for k, v in decision.as_dict().items() if k != "signals"})
        report["strategy"] = {
            "name": decision.strategy,
            "reason": decision.reason,
            "scores": decision.scores,
            "notes": [r for r in decision.reasons if r.split(":", 1)[0] not in {p.name for p in policies}],
        }
        report["plan"] = decision.plan
    return report


def _print_explanation(label: str | None, report: dict[str, Any], full: bool) -> None:
    if label is not None:
        print(f"prompt: {label[:100]}")
    if "error" in report:
        print(f"refused ({report['status']}): {report['error']}")
    else:
        print(f"route: {report['route']}\nplan:  {' -> '.join(report['plan'])}")
    if not full:
        return
    print("signals:")
    for name, value in report["signals"].items():
        print(f"  {name}: {value}")
    print("policies:")
    for row in report["policies"]:
        verdict = "kept" if row["verdict"] == "keep" else "removed"
        print(f"  {row['policy']}: {verdict} {row['deployment']}: {row['reason']}")
    if "rules" in report:
        print("rules (in evaluation order):")
        for row in report["rules"]:
            print(f"  {row['rule']}: {'matches' if row['matches'] else 'no match'}")
    if "strategy" in report:
        print(f"strategy: {report['strategy']['name']} ({report['strategy']['reason']})")
        for note in report["strategy"]["notes"]:
            print(f"  {note}")
        for name, score in report["strategy"]["scores"].items():
            print(f"  score {name}: {score:.3f}")
    print()


def _demo_router() -> Any:
    import os

    from pointsman.demo import demo_config_path
    from pointsman.router import Router

    os.environ.setdefault("POINTSMAN_SIM_URL", "http://127.0.0.1:9")
    return Router.from_config(demo_config_path(), records=False)


def _demo(args: argparse.Namespace) -> int:
    if args.learned:
        from pointsman.learning.replay import run_learned_demo

        return run_learned_demo(json_output=args.json, requests=args.requests, seed=args.seed)
    from pointsman.demo import run_demo

    return run_demo(json_output=args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pointsman", description="An LLM router.")
    parser.add_argument("--version", action="version", version=f"pointsman {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI-compatible server")
    serve.add_argument("--config", help="config YAML (default: the bundled demo setup)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--db", help="SQLite file for request records")
    serve.add_argument("--log-level", default="warning")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port (default 1; each runs its own event loop)",
    )
    serve.set_defaults(func=_serve)

    config = sub.add_parser("config", help="config file tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file")
    check.add_argument("--prices", action="store_true", help="list each deployment's price and its source")
    check.set_defaults(func=_config_check)

    models = sub.add_parser("models", help="each deployment's effective price and where it came from")
    models.add_argument("--config", required=True, help="config YAML")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=_models)

    logs = sub.add_parser("logs", help="print recent request records")
    logs.add_argument("--db", help="SQLite file (default: the user data directory)")
    logs.add_argument("--limit", type=int, default=20)
    logs.add_argument("--model", help="only requests for this virtual model or deployment")
    logs.add_argument("--since", help="only this recent, e.g. 30m, 12h, 7d")
    logs.add_argument("--until", help="only older than this, e.g. 1h")
    logs.add_argument("--key", help="only this virtual key id (or key fingerprint)")
    logs.add_argument("--reason", help="only this reason code or route, e.g. code or conditions:code")
    logs.add_argument("--region", help="only requests answered in this region")
    logs.add_argument("--status", type=int, help="only this HTTP status")
    logs.add_argument("--team", help="only keys of this team")
    logs.add_argument("--user", help="only this `user`")
    logs.add_argument("--json", action="store_true")
    logs.set_defaults(func=_logs)

    keys = sub.add_parser("keys", help="virtual keys: create, list, revoke")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (its secret is printed once)")
    create.add_argument("name")
    create.add_argument("--models", help="comma-separated models the key may use (default: all)")
    create.add_argument("--tier")
    create.add_argument("--region", help="residency: only deployments in this region")
    create.add_argument("--rpm", type=int)
    create.add_argument("--tpm", type=int)
    create.add_argument("--max-parallel", type=int)
    create.add_argument("--budget", type=float, help="US dollars per --period")
    create.add_argument("--period", choices=("day", "week", "month"), default="month")
    create.add_argument("--expires-in", help="e.g. 30d, 12h")
    create.add_argument("--team")
    create.add_argument("--app")
    create.add_argument(
        "--read-only", action="store_true", help="a dashboard key: may read /dashboard, may not send requests"
    )
    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    for p in (create, listing, revoke):
        p.add_argument("--db", help="SQLite file shared with the server (default: the config's store.path)")
        p.add_argument("--config", help="config YAML whose store.path holds the keys")
        p.add_argument("--json", action="store_true")
    create.set_defaults(func=_keys_create)
    listing.set_defaults(func=_keys_list)
    revoke.set_defaults(func=_keys_revoke)

    report = sub.add_parser(
        "report", help="the dashboard's summary of the records in the terminal, and as a PNG"
    )
    report.add_argument("--since", default="7d", help="window start, e.g. 12h, 7d (default 7d)")
    report.add_argument("--until", help="window end, e.g. 1h ago (default: now)")
    report.add_argument("--db", help="SQLite records (default: the config's store.path, else the user's)")
    report.add_argument("--config", help="config YAML: prices for the premium baseline; team, global budgets")
    report.add_argument("--png", help="also draw the charts into this PNG file (needs matplotlib)")
    report.add_argument("--json", action="store_true", help="print the summary as JSON")
    report.set_defaults(func=_report)

    route = sub.add_parser("route", help="show where a prompt would go, without calling a model")
    route.add_argument("prompt", nargs="?")
    route.add_argument(
        "--file", help="route every line of this file (text, or JSON with prompt/messages)"
    )
    route.add_argument(
        "--header", action="append", help="a request header, e.g. x-pointsman-region=eu"
    )
    route.add_argument("--config", help="config YAML (default: the bundled demo setup)")
    route.add_argument(
        "--model", default="auto", help="virtual model or deployment (default: auto)"
    )
    route.add_argument(
        "--explain",
        action="store_true",
        help="print every signal, each policy's verdict, the strategy's ranking and the plan",
    )
    route.add_argument("--json", action="store_true")
    route.set_defaults(func=_route)

    demo = sub.add_parser("demo", help="run a mixed workload through simulated deployments")
    demo.add_argument("--json", action="store_true")
    demo.add_argument(
        "--learned",
        action="store_true",
        help="replay held-out MMLU and GSM8K prompts through the learned router; "
        "print cost saved and quality kept from the recorded outcomes",
    )
    demo.add_argument("--requests", type=int, default=200, help="--learned: prompts to replay (default 200)")
    demo.add_argument("--seed", type=int, default=0, help="--learned: seed of the prompt sample")
    demo.set_defaults(func=_demo)

    try:
        from pointsman.learning.commands import register
    except ImportError:
        pass
    else:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
