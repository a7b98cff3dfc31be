"""The `pointsman` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pointsman import __version__


def _serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from pointsman.config import ConfigError
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
    host = args.host or router.config.server.host
    port = args.port if args.port is not None else router.config.server.port
    workers = f" with {args.workers} worker processes" if args.workers > 1 else ""
    print(f"pointsman {__version__}: serving on http://{host}:{port}/v1{workers}", file=sys.stderr)
    # Nothing reads the client address or scheme, so X-Forwarded-* rewriting is work for nothing.
    options: dict[str, Any] = dict(
        host=host,
        port=port,
        log_level=args.log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        http="httptools",
        loop="auto",
    )
    try:
        if args.workers == 1:
            uvicorn.run(create_app(router), workers=1, **options)
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
    return 0


def _logs(args: argparse.Namespace) -> int:
    from pointsman.store import default_db_path, read_records

    db = Path(args.db) if args.db else default_db_path()
    if not db.exists():
        print(f"no records yet: {db} does not exist", file=sys.stderr)
        return 1
    since = time.time() - _duration(args.since) if args.since else None
    records = read_records(db, limit=args.limit, model=args.model, since=since)
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


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return float(text[:-1]) * units[text[-1]]
    raise SystemExit(f"--since: expected a duration like 30m, 12h or 7d, got {text!r}")


def _route(args: argparse.Namespace) -> int:
    from pointsman.config import ConfigError
    from pointsman.errors import PointsmanError
    from pointsman.router import Router

    try:
        router = Router.from_config(args.config, records=False) if args.config else _demo_router()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        decision = router.decide(
            {"model": args.model, "messages": [{"role": "user", "content": args.prompt}]}
        )
    except PointsmanError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(decision.as_dict(), indent=2))
    else:
        print(f"route: {decision.route}\nplan:  {' -> '.join(decision.plan)}")
        if args.explain:
            for reason in decision.reasons:
                print(f"  {reason}")
    return 0


def _demo_router() -> Any:
    import os

    from pointsman.demo import demo_config_path
    from pointsman.router import Router

    os.environ.setdefault("POINTSMAN_SIM_URL", "http://127.0.0.1:9")
    return Router.from_config(demo_config_path(), records=False)


def _demo(args: argparse.Namespace) -> int:
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
    check.set_defaults(func=_config_check)

    logs = sub.add_parser("logs", help="print recent request records")
    logs.add_argument("--db", help="SQLite file (default: the user data directory)")
    logs.add_argument("--limit", type=int, default=20)
    logs.add_argument("--model", help="only requests for this virtual model or deployment")
    logs.add_argument("--since", help="only this recent, e.g. 30m, 12h, 7d")
    logs.add_argument("--json", action="store_true")
    logs.set_defaults(func=_logs)

    route = sub.add_parser("route", help="show where a prompt would go, without calling a model")
    route.add_argument("prompt")
    route.add_argument("--config", help="config YAML (default: the bundled demo setup)")
    route.add_argument(
        "--model", default="auto", help="virtual model or deployment (default: auto)"
    )
    route.add_argument("--explain", action="store_true", help="print every reason")
    route.add_argument("--json", action="store_true")
    route.set_defaults(func=_route)

    demo = sub.add_parser("demo", help="run a mixed workload through simulated deployments")
    demo.add_argument("--json", action="store_true")
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
